package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/nvent/nvent/internal/bus"
	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage/sqlite"
)

// Outbox is what the local relay needs of a store that lives in one
// process (the SQLite adapter): its outbox tables in position order, which
// is commit order there (writers are serialised), its checkpoints, and a
// signal after each commit.
type Outbox interface {
	Committed() <-chan struct{}
	ReadOutbox(ctx context.Context, table string, after int64, limit int) ([]sqlite.OutboxRow, error)
	Checkpoint(ctx context.Context, table string) (int64, error)
	SaveCheckpoint(ctx context.Context, table string, position int64) error
}

// Local relays what a SQLite store committed to the bus, with the same
// guarantee as Relay: checkpointed after the acknowledgement, so nothing
// committed is lost by a crash (and duplicates carry their ids). It is for
// one process: there is no lease.
type Local struct {
	*core
	outbox Outbox
}

// NewLocal returns a relay over outbox; see New for b, ready and busGone.
func NewLocal(outbox Outbox, b message.Publisher, cfg Config, log *slog.Logger, m Metrics, ready, busGone <-chan struct{}) *Local {
	return &Local{core: newCore(b, cfg, log, m, ready, busGone), outbox: outbox}
}

// Run relays until ctx ends. Failures are logged and retried.
func (l *Local) Run(ctx context.Context) error {
	if !l.waitReady(ctx) {
		return nil
	}
	l.metrics.Leading(true)
	defer func() { l.metrics.Leading(false); l.lagAt.Store(0) }()
	sources := []source{&localTable{outbox: l.outbox, table: sqlite.OutboxEvents}, &localTable{outbox: l.outbox, table: sqlite.OutboxChanges}}
	for {
		err := l.pump(ctx, sources, l.wait)
		if ctx.Err() != nil {
			return nil
		}
		l.log.Warn("relay round failed; retrying", slog.Any("error", err), slog.Duration("in", l.cfg.ErrorBackoff))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.cfg.ErrorBackoff):
		}
	}
}

// wait returns after a commit in this process, the poll interval (for
// writers in other processes), or the end of ctx.
func (l *Local) wait(ctx context.Context) error {
	t := time.NewTimer(l.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-l.outbox.Committed():
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// localTable is one SQLite outbox table.
type localTable struct {
	outbox Outbox
	table  string
	at     int64
}

func (t *localTable) name() string { return t.table }

func (t *localTable) load(ctx context.Context) (err error) {
	t.at, err = t.outbox.Checkpoint(ctx, t.table)
	return err
}

// lag reports the positions waiting (one read of at most a batch: the
// local store's backlog is small) and the age of the oldest.
func (t *localTable) lag(ctx context.Context) (int64, time.Duration, error) {
	rows, err := t.outbox.ReadOutbox(ctx, t.table, t.at, 1)
	if err != nil || len(rows) == 0 {
		return 0, 0, err
	}
	at := rows[0].At
	if rows[0].Event != nil {
		at = rows[0].Event.TS
	}
	return 1, time.Since(at), nil
}

func (t *localTable) next(ctx context.Context, limit int) ([]*message.Message, func(context.Context) (int64, error), error) {
	rows, err := t.outbox.ReadOutbox(ctx, t.table, t.at, limit)
	if err != nil || len(rows) == 0 {
		return nil, nil, err
	}
	msgs := make([]*message.Message, 0, len(rows))
	for _, r := range rows {
		c, err := changeOf(r)
		if err != nil {
			return nil, nil, fmt.Errorf("error decoding %s row %d: %w", t.table, r.Position, err)
		}
		msg, err := c.Message()
		if err != nil {
			return nil, nil, err
		}
		msgs = append(msgs, msg)
	}
	last := rows[len(rows)-1].Position
	return msgs, func(ctx context.Context) (int64, error) {
		if err := t.outbox.SaveCheckpoint(ctx, t.table, last); err != nil {
			return 0, err
		}
		t.at = last
		return last, nil
	}, nil
}

// changeOf turns an outbox row into the bus change it stands for.
func changeOf(r sqlite.OutboxRow) (bus.Change, error) {
	if r.Event != nil {
		return bus.Change{Kind: bus.KindAppend, ID: r.Event.ID, Event: r.Event, At: r.Event.TS, CorrelationID: r.CorrelationID}, nil
	}
	c := bus.Change{Kind: bus.Kind(r.Kind), ID: r.ID, Collection: r.Collection, DocumentID: r.DocumentID, Key: r.Key, At: r.At,
		CorrelationID: r.CorrelationID}
	switch c.Kind {
	case bus.KindSave:
		c.Document = new(domain.Document)
		return c, json.Unmarshal(r.Body, c.Document)
	case bus.KindKeySet:
		c.Entry = new(domain.KVEntry)
		return c, json.Unmarshal(r.Body, c.Entry)
	}
	return c, nil
}
