package migrations

import (
	"embed"
	"io/fs"
)

// SQLiteFiles holds the SQLite migrations: numbered goose files
// (sqlite/00001_init.sql, …) with -- +goose Up and -- +goose Down sections.
//
//go:embed sqlite/*.sql
var SQLiteFiles embed.FS

// SQLite returns the SQLite migrations as a file system rooted at their
// directory, the shape goose.NewProvider reads.
func SQLite() fs.FS {
	sub, err := fs.Sub(SQLiteFiles, "sqlite")
	if err != nil {
		// fs.Sub fails only on an invalid path, and "sqlite" is valid.
		panic(err)
	}
	return sub
}
