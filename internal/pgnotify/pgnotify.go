// Package pgnotify sends a Postgres NOTIFY after writes commit, outside the
// writing transaction, folding the commits made while one is on its way.
//
// A NOTIFY inside a transaction makes PostgreSQL hold a database-wide lock
// from before that transaction's commit until after its WAL flush, so every
// notifying commit of the database runs one at a time. Sending the NOTIFY
// afterwards, from a transaction of its own that writes nothing (and so
// flushes nothing), keeps commits concurrent; the listener learns of a
// commit one round trip later.
package pgnotify

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// sendTimeout bounds one NOTIFY.
const sendTimeout = 5 * time.Second

// Notifier sends one statement (a SELECT pg_notify(…)) after commits. At
// most one is on its way at a time; Committed calls made meanwhile are
// folded into one more, so a burst of writes costs a handful of
// notifications and no writer waits for one. A failed send is dropped:
// listeners must poll as well. A Notifier is safe for concurrent use; its
// zero value is not usable, use New.
type Notifier struct {
	pool  *pgxpool.Pool
	query string
	args  []any

	mu     sync.Mutex
	flying bool // a goroutine is sending
	again  bool // a commit happened after the send in flight began
	idle   *sync.Cond
}

// New returns a Notifier that runs query with args on pool.
func New(pool *pgxpool.Pool, query string, args ...any) *Notifier {
	n := &Notifier{pool: pool, query: query, args: args}
	n.idle = sync.NewCond(&n.mu)
	return n
}

// Committed records that a write committed; it returns at once.
func (n *Notifier) Committed() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.flying {
		n.again = true
		return
	}
	n.flying = true
	go n.send()
}

func (n *Notifier) send() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
		_, _ = n.pool.Exec(ctx, n.query, n.args...)
		cancel()
		n.mu.Lock()
		if !n.again {
			n.flying = false
			n.idle.Broadcast()
			n.mu.Unlock()
			return
		}
		n.again = false
		n.mu.Unlock()
	}
}

// Wait returns once no NOTIFY is on its way (for a clean Close).
func (n *Notifier) Wait() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for n.flying {
		n.idle.Wait()
	}
}
