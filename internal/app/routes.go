package app

import (
	"net/http"

	"github.com/nvent/nvent/internal/flows"
	"github.com/nvent/nvent/internal/httpapi"
	"github.com/nvent/nvent/internal/live"
)

// Mount adds to api, besides its own store endpoints, every other route of
// nvent serve: /metrics and the dashboard (open, like the health
// endpoints: they hold no data), the flows API (auth token only), and the
// live endpoints, which a run token may also use within its run (live
// checks the scope of each subscription). This is the one place the
// server's routes are put together, so that a test of authorization over
// api.Routes() sees every endpoint a client can reach.
func Mount(api *httpapi.API, metrics, dashboard http.Handler, fl *flows.API, le *live.Endpoints) {
	api.Handle("GET /metrics", metrics)
	api.Handle("/", dashboard)
	fl.Register(api)
	api.HandleRun("GET /v1/subscribe", http.HandlerFunc(le.SSE), nil)
	api.HandleRun("GET /v1/ws", http.HandlerFunc(le.WS), nil)
}
