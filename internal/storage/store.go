// Package storage defines the Store: nvent's pure storage layer. A Store
// keeps event streams, documents and key-value entries and knows nothing of
// buses or streams; what it changes reaches other instances through the
// wirings, never from inside an adapter.
//
// Adapters live in subpackages (memory, sqlite, postgres) and all pass the
// one contract suite in storagetest.
package storage

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nvent/nvent/internal/domain"
)

// Store is implemented by every storage adapter. All methods are safe for
// concurrent use. Errors are *domain.Error values (invalid input, conflict,
// not found, too large, unavailable) or, for the unforeseen, plain errors
// that the edges report as internal.
type Store interface {
	// Append stores events at the end of subject, atomically: all or none.
	// Each new event gets the next seq (1, 2, 3 … without gaps), a timestamp,
	// and an id unless it brought one. An event whose id subject already holds
	// is not written again: the stored one is returned in its place. If every
	// event is such a duplicate the call succeeds and writes nothing, whatever
	// ExpectedSeq says; otherwise ExpectedSeq, when set, must equal the
	// subject's current seq or the call fails with a conflict and writes
	// nothing.
	Append(ctx context.Context, subject string, events []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error)

	// Read returns events of subject selected by opts. An unknown subject
	// reads as empty.
	Read(ctx context.Context, subject string, opts domain.ReadOptions) ([]domain.Event, error)

	// SaveDocument creates or replaces a document, bumping its version.
	SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error)
	// GetDocument returns a document or a not-found error.
	GetDocument(ctx context.Context, collection, id string) (domain.Document, error)
	// DeleteDocument removes a document; not found if absent, conflict if
	// opts.ExpectedVersion does not match.
	DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error
	// ListDocuments pages through a collection in id order.
	ListDocuments(ctx context.Context, collection string, opts domain.ListOptions) (domain.DocumentPage, error)

	// GetKey returns a live (unexpired) entry or a not-found error.
	GetKey(ctx context.Context, key string) (domain.KVEntry, error)
	// SetKey stores value under key; ttl > 0 makes it expire, 0 keeps it.
	SetKey(ctx context.Context, key string, value json.RawMessage, ttl time.Duration) (domain.KVEntry, error)
	// DeleteKey removes a key; not found if absent or expired.
	DeleteKey(ctx context.Context, key string) error
	// IncrKey adds delta to the integer under key atomically (an absent or
	// expired key counts as 0) and keeps its expiry. A non-integer value is a
	// conflict.
	IncrKey(ctx context.Context, key string, delta int64) (domain.KVEntry, error)

	// Ping reports whether the backing storage is reachable.
	Ping(ctx context.Context) error
	// Close releases the adapter's resources.
	Close() error
}
