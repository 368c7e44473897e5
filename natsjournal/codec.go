package natsjournal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// Headers changecast sets on its messages.
const (
	// hdrOffset is the replication offset durable once this message is
	// stored (the EndLSN of the last whole source transaction).
	hdrOffset = "Changecast-Offset"
	// hdrCommitLSN and hdrIndex place a source change in its
	// transaction.
	hdrCommitLSN = "Changecast-Commit-Lsn"
	hdrIndex     = "Changecast-Index"
	// Gap markers: the lost range and why.
	hdrGapFrom   = "Changecast-Gap-From"
	hdrGapTo     = "Changecast-Gap-To"
	hdrGapReason = "Changecast-Gap-Reason"
	hdrMsgID     = "Nats-Msg-Id"
)

// body is a message's data: the change, its rows as their JSON
// (entities.Row is its JSON), so a change read back encodes to the same
// bytes it did live.
type body struct {
	EntityType  string          `json:"entity_type"`
	Operation   string          `json:"operation"`
	EntityID    string          `json:"entity_id"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	Previous    json.RawMessage `json:"previous,omitempty"`
	Unchanged   []string        `json:"unchanged,omitempty"`
	CommitLSN   uint64          `json:"commit_lsn,omitempty"`
	Index       int             `json:"index,omitempty"`
	Xid         uint32          `json:"xid,omitempty"`
	CommittedAt time.Time       `json:"committed_at"`
}

// encodeMsg makes the message of change c, carrying offset.
func encodeMsg(c *entities.Change, offset entities.LSN, msgID string) (*nats.Msg, error) {
	var payload, previous json.RawMessage
	if c.Payload != nil {
		payload = c.Payload.JSON()
	}
	if c.Previous != nil {
		previous = c.Previous.JSON()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // rows stay the bytes they are
	err := enc.Encode(body{
		EntityType: c.EntityType, Operation: string(c.Operation), EntityID: c.EntityID,
		Payload: payload, Previous: previous, Unchanged: c.Unchanged,
		CommitLSN: uint64(c.CommitLSN), Index: c.Index, Xid: c.Xid, CommittedAt: c.CommitTime.UTC(),
	})
	if err != nil {
		return nil, err
	}
	if !validToken(c.EntityType) || !validToken(string(c.Operation)) {
		return nil, fmt.Errorf("entity type %q or operation %q cannot be a subject token", c.EntityType, c.Operation)
	}
	m := nats.NewMsg(Subject(c.EntityType, c.Operation))
	m.Data = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	m.Header.Set(hdrOffset, strconv.FormatUint(uint64(offset), 10))
	if c.CommitLSN != 0 {
		m.Header.Set(hdrCommitLSN, strconv.FormatUint(uint64(c.CommitLSN), 10))
		m.Header.Set(hdrIndex, strconv.Itoa(c.Index))
	}
	if msgID != "" {
		m.Header.Set(hdrMsgID, msgID)
	}
	return m, nil
}

// changeID is the Nats-Msg-Id of a source change: its place in the
// source's history.
func changeID(c *entities.Change) string {
	return "c:" + strconv.FormatUint(uint64(c.CommitLSN), 10) + ":" + strconv.Itoa(c.Index)
}

func validToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ". *>\t\r\n")
}

// decodeChange reads the change of message seq.
func decodeChange(seq uint64, data []byte) (entities.Change, error) {
	var b body
	if err := json.Unmarshal(data, &b); err != nil {
		return entities.Change{}, fmt.Errorf("message %d: %w", seq, err)
	}
	c := entities.Change{
		EntityType: b.EntityType, Operation: entities.Operation(b.Operation), EntityID: b.EntityID,
		Unchanged: b.Unchanged, CommitLSN: entities.LSN(b.CommitLSN), Index: b.Index, Xid: b.Xid,
		CommitTime: b.CommittedAt.UTC(), Cursor: int64(seq),
	}
	var err error
	if len(b.Payload) > 0 && string(b.Payload) != "null" {
		if c.Payload, err = entities.ParseRow(b.Payload); err != nil {
			return entities.Change{}, fmt.Errorf("message %d: payload: %w", seq, err)
		}
	}
	if len(b.Previous) > 0 && string(b.Previous) != "null" {
		if c.Previous, err = entities.ParseRow(b.Previous); err != nil {
			return entities.Change{}, fmt.Errorf("message %d: previous row: %w", seq, err)
		}
	}
	return c, nil
}

// gapOf reads the gap a marker message records.
func gapOf(seq uint64, h nats.Header, committed time.Time) pipeline.Gap {
	return pipeline.Gap{
		Seq: int64(seq), FromLSN: lsnHeader(h, hdrGapFrom), ToLSN: lsnHeader(h, hdrGapTo),
		Reason: h.Get(hdrGapReason), RecordedAt: committed.UTC(),
	}
}

func lsnHeader(h nats.Header, key string) entities.LSN {
	v, err := strconv.ParseUint(h.Get(key), 10, 64)
	if err != nil {
		return 0
	}
	return entities.LSN(v)
}
