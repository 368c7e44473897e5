package store

import "github.com/changecast/changecast/entities"

// EncodeRow returns the JSON the journal stores for row (nil for a nil
// row): the very bytes the PostgreSQL journal keeps, so another journal
// backend (natsjournal) reads back rows that encode exactly as they did
// live.
func EncodeRow(row entities.Row) ([]byte, error) {
	var e rowEncoder
	return e.encode(row)
}

// DecodeRow splits JSON written by EncodeRow into a Row whose values are
// the raw JSON of each top-level key, as ReadJournal returns them.
func DecodeRow(b []byte) (entities.Row, error) { return decodeRow(b) }
