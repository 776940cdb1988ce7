package pgnotify_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nvent/nvent/internal/pgnotify"
	"github.com/nvent/nvent/internal/testenv"
)

// TestABurstOfCommitsIsFoldedIntoFewNotifications: 100 commits in a row
// reach a listener, as at least one notification and far fewer than 100,
// and Wait returns once the last one was sent.
func TestABurstOfCommitsIsFoldedIntoFewNotifications(t *testing.T) {
	url := testenv.PostgresURL(t)
	ctx := context.Background()
	channel := testenv.Name("nvtest_notify")
	listen, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(ctx)
	if _, err := listen.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	n := pgnotify.New(pool, `SELECT pg_notify($1, 'burst')`, channel)
	for range 100 {
		n.Committed()
	}
	n.Wait()

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	first, err := listen.WaitForNotification(wctx)
	cancel()
	if err != nil {
		t.Fatalf("no notification after 100 commits: %v", err)
	}
	if first.Payload != "burst" {
		t.Fatalf("payload %q", first.Payload)
	}
	// Every send finished before Wait returned; what is still on its way
	// to this connection arrives well within this bound.
	got := 1
	for {
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := listen.WaitForNotification(wctx)
		cancel()
		if err != nil {
			break
		}
		got++
	}
	if got >= 100 {
		t.Fatalf("%d notifications for 100 commits: nothing was folded", got)
	}
	t.Logf("100 commits, %d notifications", got)
}
