package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/nvent/nvent/internal/domain"
)

// SaveDocument implements storage.Store. The version check, the write and
// its save change (the document as returned) happen in one write
// transaction, so of concurrent saves expecting the same version exactly one
// wins, and only the winner records a change. It signals Committed.
func (s *Store) SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error) {
	data, err := domain.PrepareDocument(collection, id, data, opts)
	if err != nil {
		return domain.Document{}, err
	}
	var doc domain.Document
	err = s.writeTx(ctx, "saving a document", func(tx *sql.Tx) error {
		var version, created, updated int64
		err := tx.QueryRowContext(ctx, `SELECT version, created_at, updated_at FROM documents
			WHERE collection = ? AND id = ?`, collection, id).Scan(&version, &created, &updated)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := domain.CheckVersion(collection, id, version, opts); err != nil {
			return err
		}
		now := domain.Now()
		if version == 0 {
			created = toMillis(now)
		}
		// updatedAt never goes back, even if the clock does.
		updated = max(updated, toMillis(now))
		doc = domain.Document{Collection: collection, ID: id, Version: version + 1, Data: data,
			CreatedAt: fromMillis(created), UpdatedAt: fromMillis(updated)}
		_, err = tx.ExecContext(ctx, `INSERT INTO documents (collection, id, version, data, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (collection, id) DO UPDATE SET
				version = excluded.version, data = excluded.data, updated_at = excluded.updated_at`,
			collection, id, doc.Version, string(data), created, updated)
		if err != nil {
			return err
		}
		return s.recordChange(ctx, tx, change{kind: changeSave, collection: collection, docID: id,
			body: doc, at: doc.UpdatedAt})
	})
	if err != nil {
		return domain.Document{}, err
	}
	s.signalCommitted()
	return doc, nil
}

// GetDocument implements storage.Store.
func (s *Store) GetDocument(ctx context.Context, collection, id string) (domain.Document, error) {
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
		return domain.Document{}, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT id, version, data, created_at, updated_at FROM documents
		WHERE collection = ? AND id = ?`, collection, id)
	if err != nil {
		return domain.Document{}, s.fail(ctx, "getting a document", err)
	}
	docs, err := scanDocuments(rows, collection)
	if err != nil {
		return domain.Document{}, s.fail(ctx, "getting a document", err)
	}
	if len(docs) == 0 {
		return domain.Document{}, domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
	}
	return docs[0], nil
}

// DeleteDocument implements storage.Store. The version check, the delete
// and its delete change happen in one write transaction. It signals
// Committed.
func (s *Store) DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
		return err
	}
	err := s.writeTx(ctx, "deleting a document", func(tx *sql.Tx) error {
		var version int64
		err := tx.QueryRowContext(ctx, `SELECT version FROM documents WHERE collection = ? AND id = ?`,
			collection, id).Scan(&version)
		if errors.Is(err, sql.ErrNoRows) {
			return domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
		}
		if err != nil {
			return err
		}
		if err := domain.CheckVersion(collection, id, version, opts); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM documents WHERE collection = ? AND id = ?`, collection, id); err != nil {
			return err
		}
		return s.recordChange(ctx, tx, change{kind: changeDelete, collection: collection, docID: id,
			at: domain.Now()})
	})
	if err != nil {
		return err
	}
	s.signalCommitted()
	return nil
}

// ListDocuments implements storage.Store: one page in id order (bytewise),
// reading one row more than the page to know whether another follows.
func (s *Store) ListDocuments(ctx context.Context, collection string, opts domain.ListOptions) (domain.DocumentPage, error) {
	if err := domain.ValidateCollection(collection); err != nil {
		return domain.DocumentPage{}, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return domain.DocumentPage{}, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT id, version, data, created_at, updated_at FROM documents
		WHERE collection = ? AND id > ? ORDER BY id LIMIT ?`, collection, opts.After, opts.Limit+1)
	if err != nil {
		return domain.DocumentPage{}, s.fail(ctx, "listing documents", err)
	}
	docs, err := scanDocuments(rows, collection)
	if err != nil {
		return domain.DocumentPage{}, s.fail(ctx, "listing documents", err)
	}
	return domain.PageOf(docs, opts.Limit), nil
}

// scanDocuments reads rows of (id, version, data, created_at, updated_at)
// of collection; it returns a non-nil slice.
func scanDocuments(rows *sql.Rows, collection string) ([]domain.Document, error) {
	defer rows.Close()
	out := []domain.Document{}
	for rows.Next() {
		d := domain.Document{Collection: collection}
		var data []byte
		var created, updated int64
		if err := rows.Scan(&d.ID, &d.Version, &data, &created, &updated); err != nil {
			return nil, err
		}
		d.Data, d.CreatedAt, d.UpdatedAt = data, fromMillis(created), fromMillis(updated)
		out = append(out, d)
	}
	return out, rows.Err()
}
