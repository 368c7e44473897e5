package store

import (
	"encoding/binary"
	"io"
	"math"
	"strings"
	"time"

	"github.com/changecast/changecast/entities"
)

// The journal's rows go to COPY in PostgreSQL's binary format, written
// here from each change's fields: the rows are JSON already
// (entities.Row), so a row costs a few appends and no per-value boxing,
// type lookup or encode plan, which pgx's generic CopyFrom spends on every
// value (it was most of the appender's CPU in a backlog drain).
//
// The format (PostgreSQL's COPY documentation, "Binary Format"): a
// signature, a flags word and a header-extension length; then per row the
// field count (int16) and per field its length (int32, -1 for NULL) and
// bytes, each in the column type's binary send format; then -1 as the
// field count. The columns are journalColumns, in order.

// copySignature is the binary COPY header: signature, flags (0: no OIDs),
// header extension length (0).
var copySignature = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// copyJournalSQL copies into the journal in binary format.
var copyJournalSQL = "COPY " + Schema + ".journal (" + strings.Join(journalColumns, ", ") + ") FROM STDIN (FORMAT binary)"

// pgEpochMicros is 2000-01-01 00:00:00 UTC, PostgreSQL's timestamp
// epoch, in microseconds since the Unix epoch.
const pgEpochMicros = 946_684_800_000_000

// textOID is the element type of unchanged (text[]).
const textOID = 25

// journalCopy reads as the binary COPY data of groups' changes, in order.
// Each change's Cursor must already be set: it is the row's seq. Rows are
// appended straight into the reader's buffer; the one that does not fit
// is appended to a buffer of its own (append grows past the reader's),
// and what the read could not take is kept in rest for the next.
type journalCopy struct {
	groups [][]entities.Change
	g, i   int
	rest   []byte // encoded bytes not yet read
	state  int    // 0: the signature is next, 1: rows, 2: done
}

func newJournalCopy(groups [][]entities.Change) *journalCopy {
	return &journalCopy{groups: groups}
}

// Read fills p with the next bytes of the COPY data.
func (j *journalCopy) Read(p []byte) (int, error) {
	n := copy(p, j.rest)
	j.rest = j.rest[n:]
	if len(j.rest) > 0 {
		return n, nil
	}
	if j.state == 0 {
		j.rest = copySignature
		j.state = 1
		m, _ := j.Read(p[n:])
		return n + m, nil
	}
	for n < len(p) && j.state == 1 {
		c := j.next()
		if c == nil {
			j.rest, j.state = copyTrailer, 2
		} else if row := appendJournalRow(p[n:n:len(p)], c); len(row) <= len(p)-n {
			n += len(row) // it fitted: written in place
			continue
		} else {
			j.rest = row // it did not: append moved it to a buffer of its own
		}
		m := copy(p[n:], j.rest)
		n += m
		j.rest = j.rest[m:]
	}
	if n == 0 && j.state == 2 {
		return 0, io.EOF
	}
	return n, nil
}

// copyTrailer ends the rows: a field count of -1.
var copyTrailer = []byte{0xFF, 0xFF}

// next returns the next change, nil after the last.
func (j *journalCopy) next() *entities.Change {
	for j.g < len(j.groups) && j.i >= len(j.groups[j.g]) {
		j.g++
		j.i = 0
	}
	if j.g == len(j.groups) {
		return nil
	}
	j.i++
	return &j.groups[j.g][j.i-1]
}

// appendJournalRow appends c as one binary COPY row of journalColumns.
func appendJournalRow(b []byte, c *entities.Change) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(journalColumns)))
	b = appendInt8(b, c.Cursor)             // seq
	b = appendInt8(b, int64(c.CommitLSN))   // commit_lsn
	b = binary.BigEndian.AppendUint32(b, 4) // tx_index int4
	b = binary.BigEndian.AppendUint32(b, uint32(int32(c.Index)))
	b = appendInt8(b, int64(c.Xid))                    // xid
	b = appendInt8(b, timestamptzMicros(c.CommitTime)) // committed_at
	b = appendText(b, c.EntityType)                    // entity_type
	b = appendText(b, string(c.Operation))             // operation
	b = appendText(b, c.EntityID)                      // entity_id
	b = appendJSON(b, c.Payload)                       // payload
	b = appendJSON(b, c.Previous)                      // previous
	return appendTextArray(b, c.Unchanged)             // unchanged
}

func appendInt8(b []byte, v int64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

func appendText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendJSON appends row's JSON as text (text's binary format is its bytes), or
// NULL for a nil row.
func appendJSON(b []byte, row *entities.Row) []byte {
	if row == nil {
		return binary.BigEndian.AppendUint32(b, math.MaxUint32) // -1: NULL
	}
	data := row.JSON()
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// appendTextArray appends a one-dimensional text[] of ss, NULL when ss is
// nil (an empty, non-nil ss is the empty array).
func appendTextArray(b []byte, ss []string) []byte {
	if ss == nil {
		return binary.BigEndian.AppendUint32(b, math.MaxUint32)
	}
	if len(ss) == 0 {
		b = binary.BigEndian.AppendUint32(b, 12) // no dimensions
		b = binary.BigEndian.AppendUint32(b, 0)  // ndim
		b = binary.BigEndian.AppendUint32(b, 0)  // no NULLs
		return binary.BigEndian.AppendUint32(b, textOID)
	}
	size := 20 // ndim, flags, element type, length and lower bound
	for _, s := range ss {
		size += 4 + len(s)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = binary.BigEndian.AppendUint32(b, 1) // ndim
	b = binary.BigEndian.AppendUint32(b, 0) // no NULLs
	b = binary.BigEndian.AppendUint32(b, textOID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ss))) // length
	b = binary.BigEndian.AppendUint32(b, 1)               // lower bound
	for _, s := range ss {
		b = appendText(b, s)
	}
	return b
}

// timestamptzMicros is t as timestamptz's binary value: microseconds since
// 2000-01-01 UTC, as pgx encodes a time.Time.
func timestamptzMicros(t time.Time) int64 {
	return t.UnixMicro() - pgEpochMicros
}
