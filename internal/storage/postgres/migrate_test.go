package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/internal/storage/postgres"
)

func TestMigrator(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := testConfig(t)
	pool, closePool, err := postgres.NewPool(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closePool)
	m := postgres.NewMigrator(pool, cfg, nil)

	// tableExists reports whether the store's events table exists in the
	// test's schema.
	tableExists := func() bool {
		t.Helper()
		var ok bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass('events') IS NOT NULL`).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	status := func() []postgres.MigrationStatus {
		t.Helper()
		st, err := m.Status(ctx)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if len(st) == 0 || st[0].Version != 1 || st[0].Name != "00001_init.sql" {
			t.Fatalf("status = %+v, want the migrations from 00001_init.sql on", st)
		}
		return st
	}

	before := status() // on a schema that did not exist yet
	for _, s := range before {
		if s.Applied {
			t.Fatalf("on a new schema migration %s is applied", s.Name)
		}
	}
	applied, err := m.Up(ctx)
	if err != nil || len(applied) != len(before) {
		t.Fatalf("Up = %+v, %v; want all %d migrations applied", applied, err, len(before))
	}
	for _, s := range status() {
		if !s.Applied || s.AppliedAt.IsZero() {
			t.Fatalf("after Up migration %s = %+v, want applied", s.Name, s)
		}
	}
	if again, err := m.Up(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second Up = %+v, %v; want nothing to do", again, err)
	}

	last := before[len(before)-1].Migration
	undone, err := m.Down(ctx)
	if err != nil || undone != last {
		t.Fatalf("Down = %+v, %v; want %+v rolled back", undone, err, last)
	}
	st := status()
	if st[len(st)-1].Applied {
		t.Fatalf("after Down the last migration is still applied: %+v", st)
	}
	if redo, err := m.Up(ctx); err != nil || len(redo) != 1 || redo[0] != last {
		t.Fatalf("Up after Down = %+v, %v; want %+v again", redo, err, last)
	}

	// Down to nothing, then once more: nothing to roll back is no error.
	for range before {
		if _, err := m.Down(ctx); err != nil {
			t.Fatalf("Down: %v", err)
		}
	}
	if tableExists() {
		t.Fatal("all migrations rolled back but the events table remains")
	}
	if none, err := m.Down(ctx); err != nil || none != (postgres.Migration{}) {
		t.Fatalf("Down with nothing applied = %+v, %v; want the zero Migration", none, err)
	}

	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if !tableExists() {
		t.Fatal("after Up there is no events table")
	}
	if _, err := postgres.New(pool).Append(ctx, "after:migrations", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatalf("append on the re-migrated schema: %v", err)
	}
}

// TestInstancesStartingTogetherOnANewSchema is several `nvent serve`
// processes starting at once against a schema nobody created yet: every
// one of them must come up.
func TestInstancesStartingTogetherOnANewSchema(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	const n = 8
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			<-start
			_, cleanup, err := postgres.Open(ctx, cfg, nil)
			if err == nil {
				cleanup()
			}
			errs <- err
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("an instance failed to start: %v", err)
		}
	}
}
