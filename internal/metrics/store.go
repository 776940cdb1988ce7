package metrics

import (
	"context"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage"
)

// Store counts a storage adapter's appends, their errors and their latency.
type Store struct {
	storage.Store
	m       *Metrics
	adapter string
}

// InstrumentStore wraps inner, labelling its metrics with adapter.
func (m *Metrics) InstrumentStore(inner storage.Store, adapter string) *Store {
	return &Store{Store: inner, m: m, adapter: adapter}
}

// Append implements storage.Store: nvent_appends_total counts the events
// written (not the duplicates), nvent_append_errors_total the failed calls by
// code, nvent_append_duration_seconds every call.
func (s *Store) Append(ctx context.Context, subject string, events []domain.NewEvent, opts domain.AppendOptions) (domain.AppendResult, error) {
	start := time.Now()
	res, err := s.Store.Append(ctx, subject, events, opts)
	s.m.AppendDuration.WithLabelValues(s.adapter).Observe(time.Since(start).Seconds())
	if err != nil {
		s.m.AppendErrors.WithLabelValues(s.adapter, string(domain.ErrorCode(err))).Inc()
		return res, err
	}
	s.m.Appends.WithLabelValues(s.adapter).Add(float64(len(res.Appended())))
	return res, nil
}
