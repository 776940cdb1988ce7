package postgres

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/nvent/nvent/internal/domain"
)

// The document statements. Each save or delete checks the version and
// writes in one statement: a concurrent writer of the same document waits
// for the row lock and then re-checks its condition against the new row.
const (
	// saveDocument creates the document at version 1 or bumps it.
	saveDocument = `INSERT INTO documents (collection, id, version, data, created_at, updated_at)
VALUES ($1, $2, 1, $3, $4, $4)
ON CONFLICT (collection, id) DO UPDATE
	SET version = documents.version + 1, data = EXCLUDED.data, updated_at = EXCLUDED.updated_at
RETURNING version, created_at, updated_at`
	// createDocument creates the document only if it does not exist.
	createDocument = `INSERT INTO documents (collection, id, version, data, created_at, updated_at)
VALUES ($1, $2, 1, $3, $4, $4)
ON CONFLICT (collection, id) DO NOTHING
RETURNING version, created_at, updated_at`
	// updateDocument replaces the document only at version $5.
	updateDocument = `UPDATE documents SET version = version + 1, data = $3, updated_at = $4
WHERE collection = $1 AND id = $2 AND version = $5
RETURNING version, created_at, updated_at`
	deleteDocument = `DELETE FROM documents
WHERE collection = $1 AND id = $2 AND ($3::bigint IS NULL OR version = $3)`
	documentVersion = `SELECT version FROM documents WHERE collection = $1 AND id = $2`
	getDocument     = `SELECT version, data, created_at, updated_at FROM documents WHERE collection = $1 AND id = $2`
	listDocuments   = `SELECT id, version, data, created_at, updated_at FROM documents
WHERE collection = $1 AND id > $2 ORDER BY id LIMIT $3`
)

// SaveDocument creates or replaces a document, bumping its version. With
// opts.ExpectedVersion set, the version check and the write are one
// statement; on a mismatch it writes nothing and returns a conflict.
func (s *Store) SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error) {
	data, err := domain.PrepareDocument(collection, id, data, opts)
	if err != nil {
		return domain.Document{}, err
	}
	doc := domain.Document{Collection: collection, ID: id, Data: data}
	now := domain.Now()
	var row pgx.Row
	switch {
	case opts.ExpectedVersion == nil:
		row = s.pool.QueryRow(ctx, saveDocument, collection, id, data, now)
	case *opts.ExpectedVersion == 0:
		row = s.pool.QueryRow(ctx, createDocument, collection, id, data, now)
	default:
		row = s.pool.QueryRow(ctx, updateDocument, collection, id, data, now, *opts.ExpectedVersion)
	}
	err = row.Scan(&doc.Version, &doc.CreatedAt, &doc.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Document{}, s.versionConflict(ctx, collection, id, opts)
	}
	if err != nil {
		return domain.Document{}, wrapErr(err, "saving document "+collection+"/"+id)
	}
	doc.CreatedAt, doc.UpdatedAt = doc.CreatedAt.UTC(), doc.UpdatedAt.UTC()
	return doc, nil
}

// versionConflict explains why a conditional write matched no row, from
// the document's version now.
func (s *Store) versionConflict(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	current, err := s.version(ctx, collection, id)
	if err != nil {
		return err
	}
	if err := domain.CheckVersion(collection, id, current, opts); err != nil {
		return err
	}
	// It changed back to the expected version in the meantime.
	return domain.Errorf(domain.CodeConflict, "document %s/%s changed concurrently; expected version %d",
		collection, id, *opts.ExpectedVersion)
}

// version returns the document's version, 0 when it does not exist.
func (s *Store) version(ctx context.Context, collection, id string) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, documentVersion, collection, id).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, wrapErr(err, "reading document "+collection+"/"+id)
	}
	return v, nil
}

// GetDocument returns a document or a not-found error.
func (s *Store) GetDocument(ctx context.Context, collection, id string) (domain.Document, error) {
	if err := validateDocument(collection, id); err != nil {
		return domain.Document{}, err
	}
	doc := domain.Document{Collection: collection, ID: id}
	var data []byte
	err := s.pool.QueryRow(ctx, getDocument, collection, id).Scan(&doc.Version, &data, &doc.CreatedAt, &doc.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Document{}, notFound(collection, id)
	}
	if err != nil {
		return domain.Document{}, wrapErr(err, "reading document "+collection+"/"+id)
	}
	doc.Data = data
	doc.CreatedAt, doc.UpdatedAt = doc.CreatedAt.UTC(), doc.UpdatedAt.UTC()
	return doc, nil
}

// DeleteDocument removes a document: not found if absent, a conflict if
// opts.ExpectedVersion does not match (checked in the deleting statement).
func (s *Store) DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	if err := validateDocument(collection, id); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, deleteDocument, collection, id, opts.ExpectedVersion)
	if err != nil {
		return wrapErr(err, "deleting document "+collection+"/"+id)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	current, err := s.version(ctx, collection, id)
	if err != nil {
		return err
	}
	if current == 0 {
		return notFound(collection, id)
	}
	if err := domain.CheckVersion(collection, id, current, opts); err != nil {
		return err
	}
	return domain.Errorf(domain.CodeConflict, "document %s/%s changed concurrently; expected version %d",
		collection, id, *opts.ExpectedVersion)
}

// ListDocuments pages through a collection in id order (byte order). It
// reads one document more than the page holds to know whether a next page
// exists; Next is then the page's last id.
func (s *Store) ListDocuments(ctx context.Context, collection string, opts domain.ListOptions) (domain.DocumentPage, error) {
	if err := domain.ValidateCollection(collection); err != nil {
		return domain.DocumentPage{}, err
	}
	opts, err := opts.Normalize()
	if err != nil {
		return domain.DocumentPage{}, err
	}
	rows, err := s.pool.Query(ctx, listDocuments, collection, opts.After, opts.Limit+1)
	if err != nil {
		return domain.DocumentPage{}, wrapErr(err, "listing collection "+collection)
	}
	docs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Document, error) {
		d := domain.Document{Collection: collection}
		var data []byte
		err := row.Scan(&d.ID, &d.Version, &data, &d.CreatedAt, &d.UpdatedAt)
		d.Data = data
		d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
		return d, err
	})
	if err != nil {
		return domain.DocumentPage{}, wrapErr(err, "listing collection "+collection)
	}
	page := domain.DocumentPage{Items: docs}
	if len(docs) > opts.Limit {
		page.Items = docs[:opts.Limit]
		page.Next = page.Items[opts.Limit-1].ID
	}
	if page.Items == nil {
		page.Items = []domain.Document{}
	}
	return page, nil
}

func validateDocument(collection, id string) error {
	if err := domain.ValidateCollection(collection); err != nil {
		return err
	}
	return domain.ValidateDocumentID(id)
}

func notFound(collection, id string) error {
	return domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
}
