package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pressly/goose/v3"
	sqlitedriver "modernc.org/sqlite"

	"github.com/nvent/nvent/internal/domain"
	"github.com/nvent/nvent/migrations"
)

func newTestStore(t *testing.T) *Store {
	t.Helper()
	return openTest(t, Config{Path: filepath.Join(t.TempDir(), "nvent.db")})
}

// readOutbox returns every row of table after after, failing t on error.
func readOutbox(t *testing.T, s *Store, table string, after int64) []OutboxRow {
	t.Helper()
	rows, err := s.ReadOutbox(t.Context(), table, after, 10_000)
	if err != nil {
		t.Fatalf("ReadOutbox(%s, %d): %v", table, after, err)
	}
	return rows
}

// lastPosition returns the position of the last row of table, 0 if empty.
func lastPosition(t *testing.T, s *Store, table string) int64 {
	t.Helper()
	rows := readOutbox(t, s, table, 0)
	if len(rows) == 0 {
		return 0
	}
	return rows[len(rows)-1].Position
}

// drain empties the Committed channel.
func drain(s *Store) {
	select {
	case <-s.Committed():
	default:
	}
}

// signalled reports whether Committed holds a value, taking it. The signal
// is sent before a write returns, so no waiting is needed.
func signalled(s *Store) bool {
	select {
	case <-s.Committed():
		return true
	default:
		return false
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWritesRecordOneChange makes every kind of successful write and checks
// that each adds exactly one change row, with the fields of the write and
// the body of what the method returned.
func TestWritesRecordOneChange(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	i64 := func(n int64) *int64 { return &n }

	type want struct {
		kind, collection, docID, key string
		body                         any // nil: no body
	}
	steps := []struct {
		name  string
		write func(t *testing.T) want
	}{
		{"create a document", func(t *testing.T) want {
			d, err := s.SaveDocument(ctx, "c", "d1", json.RawMessage(`{ "a": 1 }`), domain.SaveOptions{ExpectedVersion: i64(0)})
			if err != nil {
				t.Fatal(err)
			}
			return want{kind: "save", collection: "c", docID: "d1", body: d}
		}},
		{"replace a document", func(t *testing.T) want {
			d, err := s.SaveDocument(ctx, "c", "d1", json.RawMessage(`{"a":2}`), domain.SaveOptions{ExpectedVersion: i64(1)})
			if err != nil || d.Version != 2 {
				t.Fatalf("SaveDocument: %+v, %v", d, err)
			}
			return want{kind: "save", collection: "c", docID: "d1", body: d}
		}},
		{"save without a version", func(t *testing.T) want {
			d, err := s.SaveDocument(ctx, "c", "d2", json.RawMessage(`[1,"x",null]`), domain.SaveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return want{kind: "save", collection: "c", docID: "d2", body: d}
		}},
		{"delete a document", func(t *testing.T) want {
			if err := s.DeleteDocument(ctx, "c", "d1", domain.SaveOptions{ExpectedVersion: i64(2)}); err != nil {
				t.Fatal(err)
			}
			return want{kind: "delete", collection: "c", docID: "d1"}
		}},
		{"set a key with a ttl", func(t *testing.T) want {
			e, err := s.SetKey(ctx, "k1", json.RawMessage(` 1 `), time.Hour)
			if err != nil || e.ExpiresAt == nil {
				t.Fatalf("SetKey: %+v, %v", e, err)
			}
			return want{kind: "kv.set", key: "k1", body: e}
		}},
		{"set a key without a ttl", func(t *testing.T) want {
			e, err := s.SetKey(ctx, "k2", json.RawMessage(`"s"`), 0)
			if err != nil {
				t.Fatal(err)
			}
			return want{kind: "kv.set", key: "k2", body: e}
		}},
		{"increment a new key", func(t *testing.T) want {
			e, err := s.IncrKey(ctx, "n", 5)
			if err != nil {
				t.Fatal(err)
			}
			return want{kind: "kv.set", key: "n", body: e}
		}},
		{"increment a key with a ttl", func(t *testing.T) want {
			e, err := s.IncrKey(ctx, "k1", -3)
			if err != nil || string(e.Value) != "-2" || e.ExpiresAt == nil {
				t.Fatalf("IncrKey: %+v, %v", e, err)
			}
			return want{kind: "kv.set", key: "k1", body: e}
		}},
		{"delete a key", func(t *testing.T) want {
			if err := s.DeleteKey(ctx, "k2"); err != nil {
				t.Fatal(err)
			}
			return want{kind: "kv.delete", key: "k2"}
		}},
	}

	ids := map[string]bool{}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			before := lastPosition(t, s, OutboxChanges)
			start := domain.Now()
			drain(s)
			w := step.write(t)
			end := domain.Now()
			if !signalled(s) {
				t.Errorf("no Committed signal after the write")
			}
			rows := readOutbox(t, s, OutboxChanges, before)
			if len(rows) != 1 {
				t.Fatalf("the write added %d change rows, want 1: %+v", len(rows), rows)
			}
			r := rows[0]
			if r.Position <= before || r.Event != nil {
				t.Errorf("row at position %d (after %d) with event %v", r.Position, before, r.Event)
			}
			if r.Kind != w.kind || r.Collection != w.collection || r.DocumentID != w.docID || r.Key != w.key {
				t.Errorf("row (kind %q, collection %q, doc %q, key %q), want (%q, %q, %q, %q)",
					r.Kind, r.Collection, r.DocumentID, r.Key, w.kind, w.collection, w.docID, w.key)
			}
			if r.ID == "" || ids[r.ID] {
				t.Errorf("change id %q is empty or not unique", r.ID)
			}
			ids[r.ID] = true
			if r.At.Before(start) || r.At.After(end) || r.At.Location() != time.UTC {
				t.Errorf("change at %v, want a UTC time within [%v, %v]", r.At, start, end)
			}
			switch body := w.body.(type) {
			case nil:
				if r.Body != nil {
					t.Errorf("body %s, want none", r.Body)
				}
			case domain.Document:
				if want := mustJSON(t, body); !bytes.Equal(r.Body, want) {
					t.Errorf("body %s, want %s", r.Body, want)
				}
				var got domain.Document
				if err := json.Unmarshal(r.Body, &got); err != nil {
					t.Fatalf("body %s: %v", r.Body, err)
				}
				if got.Collection != body.Collection || got.ID != body.ID || got.Version != body.Version ||
					!bytes.Equal(got.Data, body.Data) || !got.CreatedAt.Equal(body.CreatedAt) || !got.UpdatedAt.Equal(body.UpdatedAt) {
					t.Errorf("body decodes to %+v, want %+v", got, body)
				}
				if !r.At.Equal(body.UpdatedAt) {
					t.Errorf("change at %v, want the document's updatedAt %v", r.At, body.UpdatedAt)
				}
			case domain.KVEntry:
				if want := mustJSON(t, body); !bytes.Equal(r.Body, want) {
					t.Errorf("body %s, want %s", r.Body, want)
				}
				var got domain.KVEntry
				if err := json.Unmarshal(r.Body, &got); err != nil {
					t.Fatalf("body %s: %v", r.Body, err)
				}
				if got.Key != body.Key || !bytes.Equal(got.Value, body.Value) ||
					(got.ExpiresAt == nil) != (body.ExpiresAt == nil) ||
					(got.ExpiresAt != nil && !got.ExpiresAt.Equal(*body.ExpiresAt)) {
					t.Errorf("body decodes to %+v, want %+v", got, body)
				}
			}
		})
	}
}

// TestFailedWritesRecordNoChange checks that writes that fail (conflicts,
// missing documents and keys, invalid input) add no change row and do not
// signal Committed.
func TestFailedWritesRecordNoChange(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	i64 := func(n int64) *int64 { return &n }
	if _, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`1`), domain.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetKey(ctx, "text", json.RawMessage(`"x"`), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "s", []domain.NewEvent{{ID: "e1", Type: "t"}}, domain.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	past := toMillis(domain.Now().Add(-time.Minute))
	if _, err := s.writer.ExecContext(ctx, `INSERT INTO kv (key, value, expires_at) VALUES ('expired', '1', ?)`, past); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name  string
		code  domain.Code
		write func() error
	}{
		{"save expecting another version", domain.CodeConflict, func() error {
			_, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`2`), domain.SaveOptions{ExpectedVersion: i64(7)})
			return err
		}},
		{"create an existing document", domain.CodeConflict, func() error {
			_, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`2`), domain.SaveOptions{ExpectedVersion: i64(0)})
			return err
		}},
		{"update a missing document", "", func() error {
			_, err := s.SaveDocument(ctx, "c", "nope", json.RawMessage(`2`), domain.SaveOptions{ExpectedVersion: i64(1)})
			return err
		}},
		{"save invalid JSON", domain.CodeInvalidInput, func() error {
			_, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`{`), domain.SaveOptions{})
			return err
		}},
		{"save to an invalid collection", domain.CodeInvalidInput, func() error {
			_, err := s.SaveDocument(ctx, "", "d", json.RawMessage(`1`), domain.SaveOptions{})
			return err
		}},
		{"delete a missing document", domain.CodeNotFound, func() error {
			return s.DeleteDocument(ctx, "c", "nope", domain.SaveOptions{})
		}},
		{"delete expecting another version", domain.CodeConflict, func() error {
			return s.DeleteDocument(ctx, "c", "d", domain.SaveOptions{ExpectedVersion: i64(3)})
		}},
		{"delete with an invalid id", domain.CodeInvalidInput, func() error {
			return s.DeleteDocument(ctx, "c", "", domain.SaveOptions{})
		}},
		{"set an empty value", domain.CodeInvalidInput, func() error {
			_, err := s.SetKey(ctx, "k", nil, 0)
			return err
		}},
		{"set with a negative ttl", domain.CodeInvalidInput, func() error {
			_, err := s.SetKey(ctx, "k", json.RawMessage(`1`), -time.Second)
			return err
		}},
		{"set an invalid key", domain.CodeInvalidInput, func() error {
			_, err := s.SetKey(ctx, "", json.RawMessage(`1`), 0)
			return err
		}},
		{"increment a value that is not an integer", domain.CodeConflict, func() error {
			_, err := s.IncrKey(ctx, "text", 1)
			return err
		}},
		{"increment an invalid key", domain.CodeInvalidInput, func() error {
			_, err := s.IncrKey(ctx, "", 1)
			return err
		}},
		{"delete a missing key", domain.CodeNotFound, func() error {
			return s.DeleteKey(ctx, "nope")
		}},
		{"delete an expired key", domain.CodeNotFound, func() error {
			return s.DeleteKey(ctx, "expired")
		}},
		{"append expecting another seq", domain.CodeConflict, func() error {
			_, err := s.Append(ctx, "s", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{ExpectedSeq: i64(5)})
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			changes := lastPosition(t, s, OutboxChanges)
			events := lastPosition(t, s, OutboxEvents)
			drain(s)
			err := c.write()
			if err == nil {
				t.Fatalf("the write succeeded")
			}
			if c.code != "" && domain.ErrorCode(err) != c.code {
				t.Fatalf("error %v, want code %s", err, c.code)
			}
			if rows := readOutbox(t, s, OutboxChanges, changes); len(rows) != 0 {
				t.Errorf("the failed write added change rows: %+v", rows)
			}
			if rows := readOutbox(t, s, OutboxEvents, events); len(rows) != 0 {
				t.Errorf("the failed write added events: %+v", rows)
			}
			if signalled(s) {
				t.Errorf("the failed write signalled Committed")
			}
		})
	}
}

// sameEvent reports whether a and b are the same stored event.
func sameEvent(a, b domain.Event) bool {
	return a.ID == b.ID && a.Subject == b.Subject && a.Seq == b.Seq && a.Type == b.Type &&
		a.RunID == b.RunID && a.FlowName == b.FlowName && a.StepName == b.StepName &&
		a.StepID == b.StepID && a.Attempt == b.Attempt && bytes.Equal(a.Data, b.Data) && a.TS.Equal(b.TS)
}

// TestReadOutbox appends events to several subjects, interleaved with
// document and key writes, and reads both tables back in position order,
// page by page.
func TestReadOutbox(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	var appended []domain.Event
	var changeIDs []string
	for i := range 6 {
		res, err := s.Append(ctx, fmt.Sprintf("s%d", i%2), []domain.NewEvent{
			{Type: "a", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), RunID: "r", FlowName: "f", StepName: "st", StepID: "id", Attempt: 2},
			{Type: "b"},
		}, domain.AppendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, res.Events...)
		if _, err := s.SaveDocument(ctx, "c", fmt.Sprintf("d%d", i), json.RawMessage(`{}`), domain.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.IncrKey(ctx, "n", 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range readOutbox(t, s, OutboxChanges, 0) {
		changeIDs = append(changeIDs, r.ID)
	}
	if len(changeIDs) != 12 {
		t.Fatalf("%d changes, want 12", len(changeIDs))
	}

	for _, limit := range []int{1, 3, 5, 100} {
		t.Run(fmt.Sprintf("events limit %d", limit), func(t *testing.T) {
			var got []domain.Event
			var after int64
			for {
				rows, err := s.ReadOutbox(ctx, OutboxEvents, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) > limit {
					t.Fatalf("%d rows, over the limit %d", len(rows), limit)
				}
				if len(rows) == 0 {
					break
				}
				for _, r := range rows {
					if r.Position <= after || r.Event == nil || r.ID != "" || r.Kind != "" {
						t.Fatalf("row %+v after position %d", r, after)
					}
					after = r.Position
					got = append(got, *r.Event)
				}
			}
			if len(got) != len(appended) {
				t.Fatalf("read %d events, want %d", len(got), len(appended))
			}
			for i := range got {
				if !sameEvent(got[i], appended[i]) {
					t.Errorf("event %d = %+v, want %+v", i, got[i], appended[i])
				}
			}
		})
		t.Run(fmt.Sprintf("changes limit %d", limit), func(t *testing.T) {
			var got []string
			var after int64
			for {
				rows, err := s.ReadOutbox(ctx, OutboxChanges, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(rows) > limit {
					t.Fatalf("%d rows, over the limit %d", len(rows), limit)
				}
				if len(rows) == 0 {
					break
				}
				for _, r := range rows {
					if r.Position <= after || r.Event != nil {
						t.Fatalf("row %+v after position %d", r, after)
					}
					after = r.Position
					got = append(got, r.ID)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(changeIDs) {
				t.Errorf("change ids %v, want %v", got, changeIDs)
			}
		})
	}

	t.Run("kinds in write order", func(t *testing.T) {
		rows := readOutbox(t, s, OutboxChanges, 0)
		for i, r := range rows {
			want := [2]string{"save", "kv.set"}[i%2]
			if r.Kind != want {
				t.Errorf("change %d is %q, want %q", i, r.Kind, want)
			}
		}
	})

	t.Run("from the middle", func(t *testing.T) {
		all := readOutbox(t, s, OutboxEvents, 0)
		rows, err := s.ReadOutbox(ctx, OutboxEvents, all[4].Position, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 3 || rows[0].Position != all[5].Position || rows[2].Position != all[7].Position {
			t.Fatalf("rows %+v, want positions %d..%d", rows, all[5].Position, all[7].Position)
		}
		if rows := readOutbox(t, s, OutboxEvents, all[len(all)-1].Position); len(rows) != 0 {
			t.Fatalf("%d rows after the last, want none", len(rows))
		}
	})
}

func TestOutboxRejectsBadInput(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	for _, table := range []string{"", "documents", "kv", "relay_checkpoints", "Events", "events; DROP TABLE events", "events "} {
		if _, err := s.ReadOutbox(ctx, table, 0, 10); domain.ErrorCode(err) != domain.CodeInvalidInput {
			t.Errorf("ReadOutbox(%q): %v, want invalid input", table, err)
		}
		if _, err := s.Checkpoint(ctx, table); domain.ErrorCode(err) != domain.CodeInvalidInput {
			t.Errorf("Checkpoint(%q): %v, want invalid input", table, err)
		}
		if err := s.SaveCheckpoint(ctx, table, 1); domain.ErrorCode(err) != domain.CodeInvalidInput {
			t.Errorf("SaveCheckpoint(%q): %v, want invalid input", table, err)
		}
	}
	if _, err := s.ReadOutbox(ctx, OutboxEvents, -1, 10); domain.ErrorCode(err) != domain.CodeInvalidInput {
		t.Errorf("ReadOutbox after -1: %v, want invalid input", err)
	}
	for _, limit := range []int{0, -1} {
		if _, err := s.ReadOutbox(ctx, OutboxChanges, 0, limit); domain.ErrorCode(err) != domain.CodeInvalidInput {
			t.Errorf("ReadOutbox with limit %d: %v, want invalid input", limit, err)
		}
	}
	if err := s.SaveCheckpoint(ctx, OutboxEvents, -1); domain.ErrorCode(err) != domain.CodeInvalidInput {
		t.Errorf("SaveCheckpoint(-1): %v, want invalid input", err)
	}
	var n int
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM relay_checkpoints`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d checkpoints stored (%v), want none", n, err)
	}
}

// TestCheckpointRoundTrip stores checkpoints, moves them (also back) and
// reads them after reopening the file.
func TestCheckpointRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.db")
	s := openTest(t, Config{Path: path})
	ctx := t.Context()
	checkpoints := func(s *Store) [2]int64 {
		t.Helper()
		var got [2]int64
		for i, table := range []string{OutboxEvents, OutboxChanges} {
			pos, err := s.Checkpoint(ctx, table)
			if err != nil {
				t.Fatalf("Checkpoint(%s): %v", table, err)
			}
			got[i] = pos
		}
		return got
	}
	if got := checkpoints(s); got != [2]int64{0, 0} {
		t.Fatalf("checkpoints of a new store %v, want none (0)", got)
	}
	drain(s)
	for _, step := range []struct {
		table string
		pos   int64
		want  [2]int64
	}{
		{OutboxEvents, 5, [2]int64{5, 0}},
		{OutboxChanges, 3, [2]int64{5, 3}},
		{OutboxEvents, 9, [2]int64{9, 3}},
		{OutboxChanges, 2, [2]int64{9, 2}}, // stored as given: a rewind
		{OutboxChanges, 7, [2]int64{9, 7}},
	} {
		if err := s.SaveCheckpoint(ctx, step.table, step.pos); err != nil {
			t.Fatalf("SaveCheckpoint(%s, %d): %v", step.table, step.pos, err)
		}
		if got := checkpoints(s); got != step.want {
			t.Fatalf("after SaveCheckpoint(%s, %d): %v, want %v", step.table, step.pos, got, step.want)
		}
	}
	if signalled(s) {
		t.Errorf("SaveCheckpoint signalled Committed")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, Config{Path: path})
	if got := checkpoints(s2); got != [2]int64{9, 7} {
		t.Fatalf("checkpoints after reopening %v, want [9 7]", got)
	}
}

// TestSaveCheckpointPrunesRelayedChanges checks that a changes checkpoint
// deletes exactly the changes at or below it, that an events checkpoint
// deletes nothing, and that positions are not reused after pruning, even
// across a reopen.
func TestSaveCheckpointPrunesRelayedChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.db")
	s := openTest(t, Config{Path: path})
	ctx := t.Context()
	for i := range 5 {
		if _, err := s.SetKey(ctx, fmt.Sprintf("k%d", i), json.RawMessage(`1`), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, "s", []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	changes := readOutbox(t, s, OutboxChanges, 0)
	events := readOutbox(t, s, OutboxEvents, 0)

	if err := s.SaveCheckpoint(ctx, OutboxEvents, events[4].Position); err != nil {
		t.Fatal(err)
	}
	if got := readOutbox(t, s, OutboxEvents, 0); len(got) != 5 {
		t.Fatalf("%d events after an events checkpoint, want all 5 (events are the log)", len(got))
	}
	if got := readOutbox(t, s, OutboxChanges, 0); len(got) != 5 {
		t.Fatalf("%d changes after an events checkpoint, want all 5", len(got))
	}

	if err := s.SaveCheckpoint(ctx, OutboxChanges, changes[2].Position); err != nil {
		t.Fatal(err)
	}
	got := readOutbox(t, s, OutboxChanges, 0)
	if len(got) != 2 || got[0].ID != changes[3].ID || got[1].ID != changes[4].ID {
		t.Fatalf("changes after the checkpoint at %d: %+v, want the last two of %+v", changes[2].Position, got, changes)
	}

	if err := s.SaveCheckpoint(ctx, OutboxChanges, changes[4].Position); err != nil {
		t.Fatal(err)
	}
	if got := readOutbox(t, s, OutboxChanges, 0); len(got) != 0 {
		t.Fatalf("changes after checkpointing the last: %+v, want none", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTest(t, Config{Path: path})
	if err := s2.DeleteKey(ctx, "k0"); err != nil {
		t.Fatal(err)
	}
	got = readOutbox(t, s2, OutboxChanges, 0)
	if len(got) != 1 || got[0].Position <= changes[4].Position || got[0].Kind != "kv.delete" {
		t.Fatalf("the change after pruning everything: %+v, want one above position %d", got, changes[4].Position)
	}
}

// TestCommittedSignalsAfterWrites checks that every kind of write that adds
// events or changes signals Committed before it returns.
func TestCommittedSignalsAfterWrites(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	if signalled(s) {
		t.Fatalf("a new store signalled Committed")
	}
	for _, w := range []struct {
		name  string
		write func() error
	}{
		{"append", func() error {
			_, err := s.Append(ctx, "s", []domain.NewEvent{{ID: "e1", Type: "t"}}, domain.AppendOptions{})
			return err
		}},
		{"append partly stored", func() error {
			_, err := s.Append(ctx, "s", []domain.NewEvent{{ID: "e1", Type: "t"}, {ID: "e2", Type: "t"}}, domain.AppendOptions{})
			return err
		}},
		{"save a document", func() error {
			_, err := s.SaveDocument(ctx, "c", "d", json.RawMessage(`1`), domain.SaveOptions{})
			return err
		}},
		{"delete a document", func() error { return s.DeleteDocument(ctx, "c", "d", domain.SaveOptions{}) }},
		{"set a key", func() error {
			_, err := s.SetKey(ctx, "k", json.RawMessage(`1`), 0)
			return err
		}},
		{"increment a key", func() error {
			_, err := s.IncrKey(ctx, "k", 1)
			return err
		}},
		{"delete a key", func() error { return s.DeleteKey(ctx, "k") }},
	} {
		drain(s)
		if err := w.write(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if !signalled(s) {
			t.Errorf("%s: no Committed signal when the write returned", w.name)
		}
	}
	// An append whose events are all stored already writes nothing.
	drain(s)
	res, err := s.Append(ctx, "s", []domain.NewEvent{{ID: "e1", Type: "t"}, {ID: "e2", Type: "t"}}, domain.AppendOptions{})
	if err != nil || res.Events[1].Seq != 2 {
		t.Fatalf("repeated append: %+v, %v", res, err)
	}
	if signalled(s) {
		t.Errorf("an append that wrote nothing signalled Committed")
	}
}

// TestCommittedDoesNotBlockWriters writes from several goroutines while
// nobody receives from Committed: every write returns, and the commits fold
// into one pending value.
func TestCommittedDoesNotBlockWriters(t *testing.T) {
	s := newTestStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range 25 {
					var err error
					switch i % 3 {
					case 0:
						_, err = s.Append(ctx, fmt.Sprintf("s%d", g), []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{})
					case 1:
						_, err = s.SaveDocument(ctx, "c", fmt.Sprintf("d%d", g), json.RawMessage(`1`), domain.SaveOptions{})
					case 2:
						_, err = s.IncrKey(ctx, fmt.Sprintf("n%d", g), 1)
					}
					if err != nil {
						t.Errorf("write %d of goroutine %d: %v", i, g, err)
						return
					}
				}
			})
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("writers blocked with nobody receiving from Committed")
	}
	if n := len(s.Committed()); n != 1 {
		t.Fatalf("Committed holds %d values after 100 writes, want them folded into 1", n)
	}
}

// TestCommittedWakesARelay runs a relay-shaped reader (wait for Committed,
// then read the outbox after its cursor until empty) against concurrent
// writers: it must see every row once, in position order, without polling.
func TestCommittedWakesARelay(t *testing.T) {
	s := newTestStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const writers, perWriter = 3, 40

	seen := make(chan []int64, 1)
	go func() {
		var positions []int64
		defer func() { seen <- positions }()
		var after int64
		for len(positions) < writers*perWriter {
			select {
			case <-s.Committed():
			case <-ctx.Done():
				return
			}
			for {
				rows, err := s.ReadOutbox(ctx, OutboxEvents, after, 7)
				if err != nil {
					t.Errorf("ReadOutbox: %v", err)
					return
				}
				if len(rows) == 0 {
					break
				}
				for _, r := range rows {
					positions = append(positions, r.Position)
					after = r.Position
				}
			}
		}
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for range perWriter {
				if _, err := s.Append(ctx, fmt.Sprintf("s%d", w), []domain.NewEvent{{Type: "t"}}, domain.AppendOptions{}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	positions := <-seen
	if len(positions) != writers*perWriter {
		t.Fatalf("the relay saw %d events, want %d (it missed a wake-up)", len(positions), writers*perWriter)
	}
	for i := 1; i < len(positions); i++ {
		if positions[i] <= positions[i-1] {
			t.Fatalf("positions out of order at %d: %v", i, positions)
		}
	}
}

// TestRelayMigrationDown rolls the relay migration back and forth on a file
// the Store made: down drops both tables, up restores them.
func TestRelayMigrationDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nvent.db")
	s := openTest(t, Config{Path: path})
	ctx := t.Context()
	if _, err := s.SetKey(ctx, "k", json.RawMessage(`1`), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	connector, err := sqlitedriver.NewConnector(path)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectSQLite3, db, migrations.SQLite(), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	tables := func() string {
		t.Helper()
		var names string
		err := db.QueryRowContext(ctx, `SELECT COALESCE(group_concat(name, ','), '') FROM
			(SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN ('changes', 'relay_checkpoints') ORDER BY name)`).Scan(&names)
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	if got := tables(); got != "changes,relay_checkpoints" {
		t.Fatalf("tables %q before down", got)
	}
	if _, err := p.DownTo(ctx, 1); err != nil {
		t.Fatalf("down to 1: %v", err)
	}
	if got := tables(); got != "" {
		t.Fatalf("tables %q after down, want none", got)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	if got := tables(); got != "changes,relay_checkpoints" {
		t.Fatalf("tables %q after up again", got)
	}
}
