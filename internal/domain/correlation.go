package domain

import "context"

type correlationKey struct{}

// WithCorrelationID returns ctx carrying id: the id of the request that
// caused a change, carried from the HTTP request through the store (a
// column of the outbox rows), the bus and the stream (message metadata
// "correlation_id") to the logs of every instance that handles it.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// CorrelationID returns the correlation id ctx carries, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey{}).(string)
	return id
}
