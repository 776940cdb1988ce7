package handlers

// WithEvent exposes withEvent to the external tests.
var WithEvent = withEvent
