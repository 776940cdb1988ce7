package domain

import (
	"encoding/json"
	"time"
)

// Document is a JSON value stored under (Collection, ID). Version starts at 1
// and grows by one with every save; an update may name the version it expects.
type Document struct {
	Collection string          `json:"collection"`
	ID         string          `json:"id"`
	Version    int64           `json:"version"`
	Data       json.RawMessage `json:"data"`
	CreatedAt  time.Time       `json:"createdAt"`
	UpdatedAt  time.Time       `json:"updatedAt"`
}

type documentJSON Document

// MarshalJSON writes times in TimeLayout.
func (d Document) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		documentJSON
		CreatedAt string `json:"createdAt"`
		UpdatedAt string `json:"updatedAt"`
	}{documentJSON(d), FormatTime(d.CreatedAt), FormatTime(d.UpdatedAt)})
}

// SaveOptions control a document save or delete. ExpectedVersion, when set,
// is the version the document must have (0: it must not exist yet) for the
// change to happen; otherwise the change is a conflict and writes nothing.
type SaveOptions struct {
	ExpectedVersion *int64
}

// DefaultListLimit and MaxListLimit bound one page of documents.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// ListOptions page through a collection in id order: After is the cursor
// (the last id of the previous page), Limit the page size.
type ListOptions struct {
	After string
	Limit int
}

// Normalize validates o and fills in defaults.
func (o ListOptions) Normalize() (ListOptions, error) {
	if o.Limit < 0 {
		return o, Errorf(CodeInvalidInput, "limit must not be negative")
	}
	if o.Limit == 0 {
		o.Limit = DefaultListLimit
	}
	if o.Limit > MaxListLimit {
		o.Limit = MaxListLimit
	}
	if o.After != "" {
		if err := ValidateDocumentID(o.After); err != nil {
			return o, Errorf(CodeInvalidInput, "bad cursor: %v", err)
		}
	}
	return o, nil
}

// DocumentPage is one page of a collection. Next is the cursor of the next
// page, empty on the last one.
type DocumentPage struct {
	Items []Document `json:"items"`
	Next  string     `json:"next,omitempty"`
}

// PrepareDocument validates a save and returns the compacted data.
func PrepareDocument(collection, id string, data json.RawMessage, opts SaveOptions) (json.RawMessage, error) {
	if err := ValidateCollection(collection); err != nil {
		return nil, err
	}
	if err := ValidateDocumentID(id); err != nil {
		return nil, err
	}
	if opts.ExpectedVersion != nil && *opts.ExpectedVersion < 0 {
		return nil, Errorf(CodeInvalidInput, "expected version must not be negative")
	}
	if len(data) == 0 {
		return nil, Errorf(CodeInvalidInput, "document data is empty")
	}
	return CompactJSON(data)
}

// CheckVersion returns a conflict error unless a document at version current
// (0: absent) satisfies opts.
func CheckVersion(collection, id string, current int64, opts SaveOptions) error {
	if opts.ExpectedVersion == nil || *opts.ExpectedVersion == current {
		return nil
	}
	if current == 0 {
		return Errorf(CodeConflict, "document %s/%s does not exist; expected version %d", collection, id, *opts.ExpectedVersion)
	}
	return Errorf(CodeConflict, "document %s/%s is at version %d; expected version %d", collection, id, current, *opts.ExpectedVersion)
}

// PageOf makes the page of docs read with one more than limit in id order:
// the extra one, when there, only says that another page follows. Items is
// never nil.
func PageOf(docs []Document, limit int) DocumentPage {
	page := DocumentPage{Items: docs}
	if len(docs) > limit {
		page.Items = docs[:limit]
		page.Next = page.Items[limit-1].ID
	}
	if page.Items == nil {
		page.Items = []Document{}
	}
	return page
}

// ValidateDocumentKey checks a document's collection and id.
func ValidateDocumentKey(collection, id string) error {
	if err := ValidateCollection(collection); err != nil {
		return err
	}
	return ValidateDocumentID(id)
}
