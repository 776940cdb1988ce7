package postgres

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/nvent/nvent/internal/domain"
)

// The document statements. Each save or delete checks the version, writes
// and records the change (a row of changes, for the relay) in one
// statement, so that the change commits if and only if the write does, and
// a write that matches no row records nothing.
//
// Each statement first takes serialiseDocument (the CTE l, which the write
// reads from, so the lock is held before the write begins): the writes of
// one document run one at a time and get their transaction ids in the order
// they write. Without it a writer can get its id before another that then
// writes first (two inserts racing on a new document, one of which turns
// into an update), and a relay reading changes in (tx_id, position) order
// would see the document's versions out of order. A writer that waited for
// the lock still judges its condition against the document as it is then:
// ON CONFLICT, UPDATE and DELETE re-check the newest row version.
//
// The save statements take $1 collection, $2 id, $3 data, $4 now, $5 the
// change id and $6 the correlation id (NULL when empty); updateDocument
// also $7, the expected version.
const (
	// serialiseDocument serialises the writes of document $2 of
	// collection $1 until their transaction ends. It writes nothing, so it
	// gives the transaction no id. ('/' appears in no collection.)
	serialiseDocument = `SELECT pg_advisory_xact_lock(hashtextextended('nvent:doc:' || $1::text || '/' || $2::text, 0))`

	// saveDocument creates the document at version 1 or bumps it.
	saveDocument = `WITH l AS (` + serialiseDocument + `), d AS (
	INSERT INTO documents (collection, id, version, data, created_at, updated_at)
	SELECT $1::text, $2::text, 1, $3::json, $4::timestamptz, $4::timestamptz FROM l
	ON CONFLICT (collection, id) DO UPDATE
		SET version = documents.version + 1, data = EXCLUDED.data, updated_at = EXCLUDED.updated_at
	RETURNING version, created_at, updated_at
)` + recordSave
	// createDocument creates the document only if it does not exist.
	createDocument = `WITH l AS (` + serialiseDocument + `), d AS (
	INSERT INTO documents (collection, id, version, data, created_at, updated_at)
	SELECT $1::text, $2::text, 1, $3::json, $4::timestamptz, $4::timestamptz FROM l
	ON CONFLICT (collection, id) DO NOTHING
	RETURNING version, created_at, updated_at
)` + recordSave
	// updateDocument replaces the document only at version $7.
	updateDocument = `WITH l AS (` + serialiseDocument + `), d AS (
	UPDATE documents SET version = version + 1, data = $3, updated_at = $4
	FROM l WHERE collection = $1 AND id = $2 AND version = $7
	RETURNING version, created_at, updated_at
)` + recordSave
	// recordSave inserts the change of the saved row d, if any, and
	// returns the row. The body is the JSON value that domain.Document
	// marshals to, with the same keys and time format; json_build_object
	// spaces it differently, and data is the stored text, byte for byte.
	recordSave = `, c AS (
	INSERT INTO changes (id, kind, collection, doc_id, body, at, correlation_id)
	SELECT $5, 'save', $1, $2, json_build_object(
		'collection', $1::text, 'id', $2::text, 'version', d.version, 'data', $3::json,
		'createdAt', to_char(d.created_at AT TIME ZONE 'UTC', ` + timeFormat + `),
		'updatedAt', to_char(d.updated_at AT TIME ZONE 'UTC', ` + timeFormat + `)),
		d.updated_at, NULLIF($6::text, '')
	FROM d
)
SELECT version, created_at, updated_at FROM d`
	// deleteDocument deletes the document, at version $3 when $3 is not
	// NULL, and records the change, with id $4 at $5 and the correlation
	// id $6 (NULL when empty). It reports one row (the change) when it
	// deleted the document, none otherwise.
	deleteDocument = `WITH l AS (` + serialiseDocument + `), d AS (
	DELETE FROM documents USING l
	WHERE collection = $1 AND id = $2 AND ($3::bigint IS NULL OR version = $3)
	RETURNING 1
)
INSERT INTO changes (id, kind, collection, doc_id, at, correlation_id)
SELECT $4, 'delete', $1, $2, $5, NULLIF($6::text, '') FROM d`
	documentVersion = `SELECT version FROM documents WHERE collection = $1 AND id = $2`
	getDocument     = `SELECT version, data, created_at, updated_at FROM documents WHERE collection = $1 AND id = $2`
	listDocuments   = `SELECT id, version, data, created_at, updated_at FROM documents
WHERE collection = $1 AND id > $2 ORDER BY id LIMIT $3`

	// timeFormat is the to_char pattern of domain.TimeLayout, for a
	// timestamp in UTC: to_char(t AT TIME ZONE 'UTC', timeFormat) renders
	// the timestamptz t as domain.FormatTime does.
	timeFormat = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`
)

// SaveDocument creates or replaces a document, bumping its version, and
// records a save change holding the document, in one statement (one round
// trip). With opts.ExpectedVersion set, the version check is part of that
// statement; on a mismatch it writes nothing and returns a conflict, after
// a second round trip that reads the version to explain it.
func (s *Store) SaveDocument(ctx context.Context, collection, id string, data json.RawMessage, opts domain.SaveOptions) (domain.Document, error) {
	data, err := domain.PrepareDocument(collection, id, data, opts)
	if err != nil {
		return domain.Document{}, err
	}
	doc := domain.Document{Collection: collection, ID: id, Data: data}
	now, corr := domain.Now(), domain.CorrelationID(ctx)
	var row pgx.Row
	switch {
	case opts.ExpectedVersion == nil:
		row = s.pool.QueryRow(ctx, saveDocument, collection, id, data, now, domain.NewID(), corr)
	case *opts.ExpectedVersion == 0:
		row = s.pool.QueryRow(ctx, createDocument, collection, id, data, now, domain.NewID(), corr)
	default:
		row = s.pool.QueryRow(ctx, updateDocument, collection, id, data, now, domain.NewID(), corr, *opts.ExpectedVersion)
	}
	err = row.Scan(&doc.Version, &doc.CreatedAt, &doc.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Document{}, s.versionConflict(ctx, collection, id, opts)
	}
	if err != nil {
		return domain.Document{}, wrapErr(err, "saving document "+collection+"/"+id)
	}
	s.wake.Committed()
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
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
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

// DeleteDocument removes a document and records a delete change, in one
// statement: not found if absent, a conflict if opts.ExpectedVersion does
// not match (checked in the deleting statement), and then no change.
func (s *Store) DeleteDocument(ctx context.Context, collection, id string, opts domain.SaveOptions) error {
	if err := domain.ValidateDocumentKey(collection, id); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, deleteDocument, collection, id, opts.ExpectedVersion, domain.NewID(), domain.Now(),
		domain.CorrelationID(ctx))
	if err != nil {
		return wrapErr(err, "deleting document "+collection+"/"+id)
	}
	if tag.RowsAffected() == 1 {
		s.wake.Committed()
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
	return domain.PageOf(docs, opts.Limit), nil
}

func notFound(collection, id string) error {
	return domain.Errorf(domain.CodeNotFound, "document %s/%s not found", collection, id)
}
