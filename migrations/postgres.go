// Package migrations holds nvent's SQL migrations, embedded in the binary so
// that `nvent migrate` and `nvent serve` need no files beside it.
package migrations

import (
	"embed"
	"io/fs"
)

// PostgresFiles holds the Postgres migrations as postgres/NNNNN_name.sql,
// numbered goose files with `-- +goose Up` and `-- +goose Down` sections.
//
//go:embed postgres/*.sql
var PostgresFiles embed.FS

// Postgres returns the Postgres migrations with the files at the root, the
// layout goose.NewProvider expects.
func Postgres() fs.FS {
	sub, err := fs.Sub(PostgresFiles, "postgres")
	if err != nil {
		// fs.Sub fails only on an invalid path; "postgres" is a valid one.
		panic(err)
	}
	return sub
}
