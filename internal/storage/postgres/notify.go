package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// RelayChannel is the channel the store NOTIFYs after its writes commit; its
// payload is the schema written (current_schema() of the pool's
// search_path). internal/relay LISTENs on it.
const RelayChannel = "nvent_relay"

// notifier wakes the relay after writes commit. The NOTIFY is sent from a
// transaction of its own, after the write's commit, never inside it: a
// NOTIFY in a transaction makes PostgreSQL hold a database-wide lock from
// before the commit until after its flush, which serialises every writing
// commit. At most one NOTIFY is on its way at a time; commits that happen
// meanwhile are folded into one more NOTIFY sent after it, so a burst of
// appends costs a handful of notifications, and none of the writers waits
// for one.
//
// A lost notification (Postgres unreachable for a moment) only delays the
// relay until its next poll.
type notifier struct {
	pool *pgxpool.Pool

	mu     sync.Mutex
	flying bool // a goroutine is sending
	again  bool // a commit happened after the send in flight began
}

// committed records that a write committed; it returns at once.
func (n *notifier) committed() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.flying {
		n.again = true
		return
	}
	n.flying = true
	go n.send()
}

func (n *notifier) send() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = n.pool.Exec(ctx, `SELECT pg_notify('`+RelayChannel+`', current_schema())`)
		cancel()
		n.mu.Lock()
		if !n.again {
			n.flying = false
			n.mu.Unlock()
			return
		}
		n.again = false
		n.mu.Unlock()
	}
}
