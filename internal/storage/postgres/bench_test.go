package postgres_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nvent/nvent/internal/domain"
)

// BenchmarkAppend measures appends of one event: to one subject from one
// goroutine, to one subject from many (they queue on its row lock), and to
// a subject per goroutine.
func BenchmarkAppend(b *testing.B) {
	ev := []domain.NewEvent{{Type: "tick", Data: []byte(`{"n":1}`)}}
	b.Run("OneSubject", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		for b.Loop() {
			if _, err := s.Append(ctx, "bench", ev, domain.AppendOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("OneSubjectParallel", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Append(ctx, "bench", ev, domain.AppendOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("SubjectPerGoroutine", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			subject := fmt.Sprintf("bench:%d", n.Add(1))
			for pb.Next() {
				if _, err := s.Append(ctx, subject, ev, domain.AppendOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("Batch100", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		batch := make([]domain.NewEvent, 100)
		for i := range batch {
			batch[i] = ev[0]
		}
		for b.Loop() {
			if _, err := s.Append(ctx, "bench", batch, domain.AppendOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDocumentsAndKeys measures the document and key writes, each of
// which also records its change: saves of one document from one goroutine
// and from many (they queue on its locks), saves of a document per
// goroutine, and sets and increments of one key.
func BenchmarkDocumentsAndKeys(b *testing.B) {
	data := []byte(`{"n":1}`)
	b.Run("SaveOneDocument", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		for b.Loop() {
			if _, err := s.SaveDocument(ctx, "bench", "d", data, domain.SaveOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SaveOneDocumentParallel", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.SaveDocument(ctx, "bench", "d", data, domain.SaveOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("SaveDocumentPerGoroutine", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			id := fmt.Sprintf("d%d", n.Add(1))
			for pb.Next() {
				if _, err := s.SaveDocument(ctx, "bench", id, data, domain.SaveOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("SetKey", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		for b.Loop() {
			if _, err := s.SetKey(ctx, "k", data, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("IncrKey", func(b *testing.B) {
		s := open(b, testConfig(b))
		ctx := context.Background()
		for b.Loop() {
			if _, err := s.IncrKey(ctx, "n", 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
