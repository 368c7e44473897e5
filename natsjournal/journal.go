// Package natsjournal keeps changecast's journal in a NATS JetStream
// stream instead of PostgreSQL, so any number of changecast processes on
// any number of machines can serve one replication slot's changes.
//
// It implements pipeline.Journal (and its Writer) for the one active
// watcher, and wsapi.Journal (ReadAfter, Horizon) plus a live tail for
// every gateway. Its guarantees match store.Journal's:
//
//   - One message per journaled change, on subject
//     changecast.<entity-type>.<operation>; the stream sequence is the
//     wire cursor, dense and in commit order, because only the single
//     active writer publishes (a session lock elects it, and every batch
//     it publishes expects the stream's last sequence to be the one it
//     knows, so a writer that lost the lock cannot publish).
//   - A source transaction is published as one atomic batch (all or
//     nothing), several small ones together; each message carries a
//     Nats-Msg-Id made of its commit LSN and index, so a repeated publish
//     is dropped by the stream.
//   - The replication offset lives with the data: every message carries
//     the offset that is durable once it is stored, so a new writer reads
//     it back from the stream's last message and a kill -9 at any moment
//     loses and repeats nothing. Positions no change covers (idle WAL) go
//     to a key-value bucket beside the stream, and so does a copy of the
//     offset every few seconds, for a stream that retention emptied.
//   - A transaction larger than the server's atomic batch limit is
//     published as several atomic batches; only the last one moves the
//     offset, and the headers of the others say how far it got, so a
//     restart completes it without repeating a change (readers may see it
//     in parts).
//   - Retention is the stream's own (max age, max messages): the horizon
//     is the stream's first sequence minus one.
//   - A lost slot is recorded as a marker message on subject
//     changecast.event.gap, whose headers hold the lost LSN range: a
//     reader resuming from before it gets a *store.GapError.
//
// Back-fill of tables without REPLICA IDENTITY FULL is not done here:
// their updates and deletes are journaled as PostgreSQL sent them (key
// only, unchanged columns listed), see docs/scale-out.md.
package natsjournal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
)

// Defaults of Config.
const (
	DefaultStream   = "CHANGECAST"
	DefaultMaxBatch = 1000 // nats-server's default max_batch_size
	// SubjectPrefix is the first token of every subject of the stream.
	SubjectPrefix = "changecast"
	// DuplicateWindow is how long the stream remembers message ids.
	DuplicateWindow = 2 * time.Minute
)

// GapSubject is the subject of a gap's marker message: an event create,
// like the PostgreSQL journal's marker row, set apart so readers find
// gaps without reading every event.
const GapSubject = SubjectPrefix + "." + entities.EventEntityType + ".gap"

// metaSource is the stream metadata key naming the watched database the
// stream follows.
const metaSource = "changecast_source"

// Subject returns the subject of a change of entity type typ with
// operation op.
func Subject(typ string, op entities.Operation) string {
	return SubjectPrefix + "." + typ + "." + string(op)
}

// ErrLocked is wrapped by OpenWriter's error when another watcher holds
// the writer lock: Journal.Standby reports true for it.
var ErrLocked = errors.New("another changecast watcher writes this journal")

// Locker elects the journal's single writer.
type Locker interface {
	// TryLock takes the lock without waiting, or fails with an error
	// wrapping ErrLocked when another process holds it.
	TryLock(ctx context.Context) (Lease, error)
}

// Lease is a held writer lock.
type Lease interface {
	// Unlock releases it.
	Unlock() error
}

// Events is where system events are stored (the events table the REST API
// reads); the journal records the changes these writes return.
type Events interface {
	InsertEvent(ctx context.Context, ev entities.Event) (entities.Change, error)
	SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) ([]entities.Change, error)
	DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) ([]entities.Change, error)
}

// Config configures a Journal.
type Config struct {
	// URL lists the NATS servers, comma-separated nats:// URLs. A user
	// and password in it are used, never logged.
	URL string
	// Options add connection options (credentials from a file, a token:
	// cmd/changecast reads them from the environment).
	Options []nats.Option
	// Stream is the stream's name. Default: DefaultStream.
	Stream string
	// Replicas is the stream's replica count (1, 3 or 5). Default 1. An
	// existing stream with fewer is refused.
	Replicas int
	// MaxAge and MaxMsgs are the stream's retention: zero or negative
	// keeps forever, or any number of messages.
	MaxAge  time.Duration
	MaxMsgs int64
	// Source identifies the watched database (store.DB.Identity): the
	// stream records it and a stream that follows another database is
	// refused. Empty skips the check (gateways).
	Source string
	// Locker elects the single writer. Required by OpenWriter.
	Locker Locker
	// Events stores system events. Required by the event writes.
	Events Events
	// MaxBatch is the most messages in one atomic batch: the server's
	// max_batch_size. Default DefaultMaxBatch.
	MaxBatch int
	// Name names the connection (shown by the server).
	Name string
	// Logger receives the journal's logs. Default slog.Default().
	Logger *slog.Logger
}

// Journal is a changecast journal in a JetStream stream. Create it with
// Open; it is safe for concurrent use.
type Journal struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue

	// seen is the highest sequence Tail handed to its sink: ReadAfter
	// must see everything up to it, even from a replica that lags.
	seen atomic.Int64
	// gaps are the gap markers known (cached; gaps are only added).
	gapMu sync.Mutex
	gaps  []pipeline.Gap
	// kvMu orders the offset bucket's writes; kvLSN is the last written.
	kvMu  sync.Mutex
	kvLSN entities.LSN

	tail tailState
}

// Open connects to NATS and makes sure the stream and its offsets bucket
// exist with cfg's settings. An existing stream with other subjects, fewer
// replicas or another source database is refused with what to do.
func Open(ctx context.Context, cfg Config) (*Journal, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if strings.ContainsAny(cfg.Stream, ". *>") {
		return nil, fmt.Errorf("stream name %q: use letters, digits, - and _", cfg.Stream)
	}
	log := cfg.Logger.With("stream", cfg.Stream)
	opts := append([]nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", "err", redactErr(err, cfg.URL))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted()) }),
	}, cfg.Options...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w; start NATS with JetStream enabled (nats-server -js) or fix --journal-url", RedactURL(cfg.URL), redactErr(err, cfg.URL))
	}
	j := &Journal{cfg: cfg, log: log, nc: nc}
	if err := j.open(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return j, nil
}

func (j *Journal) open(ctx context.Context) error {
	js, err := jetstream.New(j.nc)
	if err != nil {
		return err
	}
	j.js = js
	want := jetstream.StreamConfig{
		Name:               j.cfg.Stream,
		Description:        "changecast journal: one message per change, the sequence is the cursor",
		Subjects:           []string{SubjectPrefix + ".>"},
		Storage:            jetstream.FileStorage,
		Replicas:           j.cfg.Replicas,
		MaxAge:             max(j.cfg.MaxAge, 0),
		MaxMsgs:            -1,
		Discard:            jetstream.DiscardOld,
		Duplicates:         DuplicateWindow,
		AllowDirect:        true,
		AllowAtomicPublish: true,
	}
	if j.cfg.MaxMsgs > 0 {
		want.MaxMsgs = j.cfg.MaxMsgs
	}
	if j.cfg.Source != "" {
		want.Metadata = map[string]string{metaSource: j.cfg.Source}
	}
	s, err := js.Stream(ctx, j.cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, want)
		if err != nil {
			return fmt.Errorf("create JetStream stream %s: %w%s", j.cfg.Stream, err, replicasHint(err, j.cfg.Replicas))
		}
		j.log.Info("created the journal stream", "replicas", j.cfg.Replicas)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return fmt.Errorf("NATS at %s has no JetStream: start nats-server with -js (or jetstream {} in its configuration): %w", RedactURL(j.cfg.URL), err)
	case err != nil:
		return fmt.Errorf("look up JetStream stream %s: %w", j.cfg.Stream, err)
	default:
		if s, err = j.adopt(ctx, s, want); err != nil {
			return err
		}
	}
	j.stream = s
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      j.cfg.Stream + "_OFFSETS",
		Description: "changecast: replication positions no journaled change covers",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    j.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("create the offsets bucket of stream %s: %w%s", j.cfg.Stream, err, replicasHint(err, j.cfg.Replicas))
	}
	j.kv = kv
	return j.loadGaps(ctx)
}

// adopt checks an existing stream against want and brings its retention
// and publish settings in line.
func (j *Journal) adopt(ctx context.Context, s jetstream.Stream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	have := s.CachedInfo().Config
	if !slices.Equal(have.Subjects, want.Subjects) {
		return nil, fmt.Errorf("JetStream stream %s has subjects %q, but changecast's journal needs exactly %q and nothing else on them: choose another stream name (--journal-stream) or delete that stream",
			j.cfg.Stream, have.Subjects, want.Subjects)
	}
	if have.Replicas < want.Replicas {
		return nil, fmt.Errorf("JetStream stream %s has %d replica(s), fewer than --journal-replicas %d: raise them (nats stream edit %s --replicas %d) or lower the flag",
			j.cfg.Stream, have.Replicas, want.Replicas, j.cfg.Stream, want.Replicas)
	}
	if src := have.Metadata[metaSource]; j.cfg.Source != "" && src != "" && src != j.cfg.Source {
		return nil, fmt.Errorf("JetStream stream %s is the journal of another database (%s, this one is %s): use another stream name (--journal-stream) for this database",
			j.cfg.Stream, src, j.cfg.Source)
	}
	if have.Storage != jetstream.FileStorage && j.cfg.Source != "" {
		j.log.Warn("the journal stream keeps messages in memory: a restart of NATS loses the journal")
	}
	upd := have
	upd.MaxAge, upd.MaxMsgs, upd.AllowAtomicPublish, upd.AllowDirect = want.MaxAge, want.MaxMsgs, true, true
	if upd.Duplicates < want.Duplicates {
		upd.Duplicates = want.Duplicates
	}
	if j.cfg.Source != "" {
		upd.Metadata = mergeMeta(have.Metadata, want.Metadata)
	}
	if j.cfg.Source == "" || configEqual(have, upd) {
		return s, nil // gateways never change the stream
	}
	ns, err := j.js.UpdateStream(ctx, upd)
	if err != nil {
		return nil, fmt.Errorf("update JetStream stream %s (retention, atomic publish): %w", j.cfg.Stream, err)
	}
	return ns, nil
}

func mergeMeta(have, want map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}

func configEqual(a, b jetstream.StreamConfig) bool {
	return a.MaxAge == b.MaxAge && a.MaxMsgs == b.MaxMsgs && a.AllowAtomicPublish == b.AllowAtomicPublish &&
		a.AllowDirect == b.AllowDirect && a.Duplicates == b.Duplicates && a.Metadata[metaSource] == b.Metadata[metaSource]
}

// replicasHint explains a stream creation failure that more servers fix.
func replicasHint(err error, replicas int) string {
	var apiErr *jetstream.APIError
	if replicas > 1 && errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10023, 10074: // insufficient resources; replicas > 1 not supported in non-clustered mode
			return fmt.Sprintf(" (%d replicas need a JetStream cluster of at least %d servers: lower --journal-replicas or add servers)", replicas, replicas)
		}
	}
	return ""
}

// Close closes the connection to NATS.
func (j *Journal) Close() { j.nc.Close() }

// Conn returns the journal's NATS connection (for requests between
// changecast processes).
func (j *Journal) Conn() *nats.Conn { return j.nc }

// StreamName returns the stream's name.
func (j *Journal) StreamName() string { return j.cfg.Stream }

// Info returns the stream's state, from its leader.
func (j *Journal) Info(ctx context.Context) (*jetstream.StreamInfo, error) {
	return j.stream.Info(ctx)
}

var _ pipeline.Journal = (*Journal)(nil)

// Head returns the stream's last sequence (it never decreases, even when
// retention empties the stream).
func (j *Journal) Head(ctx context.Context) (int64, error) {
	info, err := j.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("journal head: %w", err)
	}
	return int64(info.State.LastSeq), nil
}

// Offset returns the replication offset: the highest of the one the
// stream's last message carries and the one in the offsets bucket.
func (j *Journal) Offset(ctx context.Context, slot string) (entities.LSN, error) {
	st, err := j.loadState(ctx, slot)
	return st.offset, err
}

// SaveOffset stores lsn as slot's offset in the offsets bucket, never
// moving it backwards.
func (j *Journal) SaveOffset(ctx context.Context, slot string, lsn entities.LSN) error {
	return j.putOffset(ctx, slot, lsn)
}

// ForgetStates does nothing: this journal keeps no back-fill states.
func (j *Journal) ForgetStates(context.Context, []string) error { return nil }

// RunRetention waits for ctx: the stream applies its own limits.
func (j *Journal) RunRetention(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Standby reports whether err is ErrLocked.
func (j *Journal) Standby(err error) bool { return errors.Is(err, ErrLocked) }

// writerState is what a writer starts from.
type writerState struct {
	head    int64
	offset  entities.LSN
	partial partial
}

// maxStateWalk bounds how many messages loadState reads back past system
// events to find the last source change.
const maxStateWalk = 10_000

// partial is how far a transaction larger than one batch got.
type partial struct {
	ok     bool
	commit entities.LSN
	index  int
}

// loadState reads the head, the offset and any partly published
// transaction, from the stream's leader.
func (j *Journal) loadState(ctx context.Context, slot string) (writerState, error) {
	var st writerState
	info, err := j.stream.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("journal state: %w", err)
	}
	st.head = int64(info.State.LastSeq)
	// The offset is the last message's. A transaction published in
	// parts is found from the last message of a source change: system
	// events (a restarted watcher announces itself before it replays)
	// may follow its first parts, and must not hide them, or the replay
	// would publish those parts again.
	for seq, walked := info.State.LastSeq, 0; info.State.Msgs > 0 && seq >= max(info.State.FirstSeq, 1) && walked < maxStateWalk; seq, walked = seq-1, walked+1 {
		m, err := j.leaderGet(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break // removed by retention meanwhile: the bucket's copy serves
		}
		if err != nil {
			return st, fmt.Errorf("journal state: read message %d: %w", seq, err)
		}
		off := lsnHeader(m.Header, hdrOffset)
		if seq == info.State.LastSeq {
			st.offset = off
		}
		if c := lsnHeader(m.Header, hdrCommitLSN); c != 0 {
			if c >= off && c >= st.offset {
				idx, _ := strconv.Atoi(m.Header.Get(hdrIndex))
				st.partial = partial{ok: true, commit: c, index: idx}
			}
			break
		}
	}
	kv, err := j.getOffset(ctx, slot)
	if err != nil {
		return st, err
	}
	if kv > st.offset {
		st.offset = kv
		if st.partial.ok && st.partial.commit < kv {
			st.partial = partial{}
		}
	}
	return st, nil
}

// storedMsg is a message read from the stream's leader.
type storedMsg struct {
	Subject string
	Seq     uint64
	Header  nats.Header
	Data    []byte
}

// leaderGet reads message seq through the stream's leader (never a
// replica that may lag).
func (j *Journal) leaderGet(ctx context.Context, seq uint64) (*storedMsg, error) {
	return j.leaderGetReq(ctx, map[string]any{"seq": seq})
}

func (j *Journal) leaderGetReq(ctx context.Context, req map[string]any) (*storedMsg, error) {
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := j.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+j.cfg.Stream, body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Header  []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("read message: %w", err)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, r.Error
	}
	if r.Message == nil {
		return nil, jetstream.ErrMsgNotFound
	}
	m := &storedMsg{Subject: r.Message.Subject, Seq: r.Message.Seq, Data: r.Message.Data, Header: nats.Header{}}
	if len(r.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(r.Message.Header)
		if err != nil {
			return nil, fmt.Errorf("read message %d: headers: %w", r.Message.Seq, err)
		}
		m.Header = h
	}
	return m, nil
}

// getOffset reads slot's offset from the bucket (0 when none).
func (j *Journal) getOffset(ctx context.Context, slot string) (entities.LSN, error) {
	e, err := j.kv.Get(ctx, slot)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read the offset of slot %s: %w", slot, err)
	}
	v, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("offset of slot %s: %w", slot, err)
	}
	return entities.LSN(v), nil
}

// putOffset raises slot's offset in the bucket to lsn.
func (j *Journal) putOffset(ctx context.Context, slot string, lsn entities.LSN) error {
	j.kvMu.Lock()
	defer j.kvMu.Unlock()
	if lsn <= j.kvLSN {
		return nil
	}
	cur, err := j.getOffset(ctx, slot)
	if err != nil {
		return err
	}
	if cur >= lsn {
		j.kvLSN = cur
		return nil
	}
	if _, err := j.kv.Put(ctx, slot, []byte(strconv.FormatUint(uint64(lsn), 10))); err != nil {
		return fmt.Errorf("save the offset of slot %s: %w", slot, err)
	}
	j.kvLSN = lsn
	return nil
}

// RedactURL hides the password (or token) of each URL in a comma-separated
// list.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// redactErr removes the credentials of urls from err's text.
func redactErr(err error, urls string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, p := range strings.Split(urls, ",") {
		u, perr := url.Parse(strings.TrimSpace(p))
		if perr != nil || u.User == nil {
			continue
		}
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		} else if n := u.User.Username(); n != "" {
			msg = strings.ReplaceAll(msg, n, "xxxxx")
		}
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}
