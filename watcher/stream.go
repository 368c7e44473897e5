package watcher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/changecast/changecast/entities"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Run connects, creates the slot if it is missing on a first start
// (permanent, pgoutput; see Config.ExpectSlot, and *SlotLostError for a
// slot lost after that),
// starts replication (protocol 1, no streaming of in-progress transactions,
// no two-phase) and sends each committed transaction that touched a
// registered table on out, in chunks of at most Config.ChunkSize changes
// (see Transaction), until ctx is done or the connection fails.
//
// Ordering: transactions go out in commit order. Nothing of a transaction
// is sent before it committed in PostgreSQL (protocol 1 decodes it only at
// its commit), but its non-final chunks go out before its Commit message
// has arrived. A transaction's Changes are in the order the rows were
// changed, with Index counting from 0 across the whole transaction. A
// TRUNCATE becomes one change per truncated registered table (OpTruncate,
// no EntityID, nil Payload) at its place in the transaction; unregistered
// tables named or reached by CASCADE are ignored. A rolled-back
// transaction, or one that touched no registered table, produces nothing.
//
// Once only: one Watcher never sends the same change twice, across Run
// calls included: a transaction interrupted between chunks continues at
// the next Index. It never sends a transaction whose commit LSN is below
// Config.StartLSN (docs/replication.md rule 2: the slot's own position can
// go backwards, so the stored one is authoritative). That comparison is
// strict: the next transaction's commit record can start exactly at the
// stored EndLSN, and skipping "commit LSN ≤ stored offset" would drop it
// (rule 1). A new Watcher resumes at whole transactions: a transaction
// whose Final chunk was not acknowledged is sent again from Index 0. So
// call Run again on the same Watcher only when the consumer kept all that
// the previous Run sent it, unacknowledged chunks included; a consumer
// that started over (rolled back what it had not made durable) needs a new
// Watcher whose StartLSN is its stored offset.
//
// It returns nil when ctx is cancelled (after a last status update that
// reports the latest Ack), a *PrerequisiteError for a setup problem (see
// Retryable; ErrSlotInUse comes at once, without waiting for the slot),
// ErrRunning if another Run of w is active, and otherwise the connection
// or stream error. It can be called again after it returns: it resumes
// from the highest of Config.StartLSN, the last Ack and the last confirmed
// position, and never re-sends a change it already sent: a transaction
// whose Final chunk was not sent yet continues with the next Index.
//
// Run owns the connection: only its goroutine reads or writes it (rule 5).
// It keeps answering the server while waiting for room on out, so a slow
// consumer delays delivery but does not drop the connection.
func (w *Watcher) Run(ctx context.Context, out chan<- entities.Transaction) error {
	return w.runOnce(ctx, out, nil)
}

// runOnce is Run and RunTo: one at a time, and nil once ctx ended.
func (w *Watcher) runOnce(ctx context.Context, out chan<- entities.Transaction, q Output) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer w.running.Store(false)

	err := w.run(ctx, out, q)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// connect opens a replication connection; the caller calls closeConn.
func (w *Watcher) connect(ctx context.Context) (conn *pgconn.PgConn, closeConn func(), err error) {
	pc, err := w.replicationConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("database URL: %w", err)
	}
	conn, err = pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, nil, fmt.Errorf("connect for replication: %w", err)
	}
	return conn, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}, nil
}

func (w *Watcher) run(ctx context.Context, out chan<- entities.Transaction, q Output) error {
	conn, closeConn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn()

	slotConfirmed, err := w.prepare(ctx, conn)
	if err != nil {
		return err
	}
	cat, err := loadCatalog(ctx, conn)
	if err != nil {
		return err
	}

	start := w.known()
	err = pglogrepl.StartReplication(ctx, conn, w.cfg.Slot, pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names '" + w.cfg.Publication + "'",
		},
	})
	if err != nil {
		return w.startError(err)
	}
	w.streaming.Store(true)
	defer w.streaming.Store(false)
	w.logger.Info("replication started", "start_lsn", start.String(), "publication", w.cfg.Publication)
	if w.cfg.Started != nil {
		// START_REPLICATION at a position below the slot's starts at
		// the slot's confirmed position.
		w.cfg.Started(max(start, slotConfirmed))
	}

	s := &session{
		w:          w,
		ctx:        ctx,
		conn:       conn,
		out:        out,
		q:          q,
		floor:      slotConfirmed,
		nextStatus: time.Now(), // report the start position at once
	}
	s.asm = newAssembler(w.cfg.Registry, w.logger, s, w.cfg.ChunkSize)
	s.asm.omit = w.cfg.Omit
	s.asm.values.cat = cat
	s.asm.reload = func() (*catalog, error) { return w.reloadCatalog(ctx) }
	// Everything committed before the start position or the end of the
	// last Final chunk sent was handled: skip it (decided at Begin, see
	// assembler.begin).
	s.asm.skipBelow = max(start, w.lastEmitted)
	s.asm.resume = w.partial
	return s.loop(ctx)
}

// prepare checks the publication and makes sure the slot exists and is
// the one this consumer streamed from, using SQL on the replication
// connection (allowed with replication=database). It returns the slot's
// confirmed_flush_lsn (the start of a new slot). A lost slot (missing
// after a first start, invalidated, or moved; see SlotLostError) is
// reported, never replaced.
func (w *Watcher) prepare(ctx context.Context, conn *pgconn.PgConn) (entities.LSN, error) {
	rows, err := simpleQuery(ctx, conn, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = "+quoteLiteral(w.cfg.Publication))
	if err != nil {
		return 0, fmt.Errorf("look up publication: %w", err)
	}
	if len(rows) == 0 {
		return 0, publicationMissing(w.cfg.Publication)
	}
	st, err := w.slotState(ctx, conn)
	if err != nil {
		return 0, err
	}
	// Everything up to here is handled and stored: the slot must not be
	// ahead of it, and must not have vanished.
	known := w.known()
	if st.found {
		if err := slotFits(w.cfg.Slot, st.plugin, st.slotType, st.database, st.temporary, st.currentDB); err != nil {
			return 0, err
		}
		if st.walStatus == "lost" {
			return 0, &SlotLostError{Slot: w.cfg.Slot, Kind: SlotInvalidated, From: known}
		}
		if st.activePID != "" {
			// Say so before trying: START_REPLICATION would fail the
			// same way (55006), but this names the holder.
			return 0, slotInUse(w.cfg.Slot, fmt.Sprintf("replication slot %q is active for PID %s", w.cfg.Slot, st.activePID))
		}
		if w.cfg.SavePosition != nil && known > 0 && st.confirmed > known {
			return 0, &SlotLostError{Slot: w.cfg.Slot, Kind: SlotMoved, From: known, SlotAt: st.confirmed}
		}
		return st.confirmed, nil
	}
	if known > 0 || w.cfg.ExpectSlot {
		return 0, &SlotLostError{Slot: w.cfg.Slot, Kind: SlotMissing, From: known}
	}
	start, created, err := w.createSlot(ctx, conn)
	if err != nil || !created {
		return 0, err
	}
	if w.cfg.SavePosition != nil {
		// The new slot's start is its confirmed position: store it, so
		// that a later start can tell this slot from a replacement.
		if err := w.cfg.SavePosition(ctx, start); err != nil {
			return 0, fmt.Errorf("store the new slot's start position: %w", err)
		}
	}
	return start, nil
}

// slotInfo is a row of pg_replication_slots, as prepare needs it.
type slotInfo struct {
	found                                 bool
	plugin, slotType, database, walStatus string
	temporary                             bool
	currentDB                             string
	confirmed                             entities.LSN
	activePID                             string // empty: not active
}

// slotState reads the slot's row of pg_replication_slots.
func (w *Watcher) slotState(ctx context.Context, conn *pgconn.PgConn) (slotInfo, error) {
	rows, err := simpleQuery(ctx, conn, `SELECT plugin, slot_type, coalesce(database, ''), temporary::text, current_database(),
			coalesce(confirmed_flush_lsn, '0/0')::text, CASE WHEN active THEN coalesce(active_pid, 0)::text ELSE '' END,
			coalesce(wal_status, '')
		FROM pg_catalog.pg_replication_slots WHERE slot_name = `+quoteLiteral(w.cfg.Slot))
	if err != nil {
		return slotInfo{}, fmt.Errorf("look up replication slot: %w", err)
	}
	if len(rows) == 0 {
		return slotInfo{}, nil
	}
	r := rows[0]
	lsn, err := pglogrepl.ParseLSN(r[5])
	if err != nil {
		return slotInfo{}, fmt.Errorf("replication slot's confirmed_flush_lsn %q: %w", r[5], err)
	}
	return slotInfo{found: true, plugin: r[0], slotType: r[1], database: r[2], temporary: r[3] == "true",
		currentDB: r[4], confirmed: entities.LSN(lsn), activePID: r[6], walStatus: r[7]}, nil
}

// createSlot creates the slot (permanent, pgoutput) and returns its start
// (consistent point). created is false when another process created it
// first.
func (w *Watcher) createSlot(ctx context.Context, conn *pgconn.PgConn) (start entities.LSN, created bool, err error) {
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, w.cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "NOEXPORT_SNAPSHOT",
	})
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		lsn, perr := pglogrepl.ParseLSN(res.ConsistentPoint)
		if perr != nil {
			return 0, false, fmt.Errorf("new replication slot's consistent point %q: %w", res.ConsistentPoint, perr)
		}
		w.logger.Info("created replication slot", "plugin", "pgoutput", "start_lsn", entities.LSN(lsn).String())
		return entities.LSN(lsn), true, nil
	case errors.As(err, &pgErr) && pgErr.Code == "42710": // duplicate_object: created meanwhile
		return 0, false, nil
	case errors.As(err, &pgErr) && pgErr.Code == "53400": // configuration_limit_exceeded
		return 0, false, prerequisite(ErrNoFreeSlot, fmt.Sprintf("cannot create replication slot %q: %s; raise max_replication_slots in postgresql.conf and restart PostgreSQL, or drop an unused slot with SELECT pg_drop_replication_slot('name')", w.cfg.Slot, pgErr.Message))
	default:
		return 0, false, fmt.Errorf("create replication slot %q: %w", w.cfg.Slot, err)
	}
}

// startError classifies a START_REPLICATION failure.
func (w *Watcher) startError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "55006": // object_in_use
			return slotInUse(w.cfg.Slot, pgErr.Message)
		case "53300": // too_many_connections: max_wal_senders
			return prerequisite(ErrNoFreeWALSender, fmt.Sprintf("start replication: %s; raise max_wal_senders in postgresql.conf and restart PostgreSQL", pgErr.Message))
		}
		if invalidatedByServer(err) {
			return &SlotLostError{Slot: w.cfg.Slot, Kind: SlotInvalidated, Detail: pgErr.Message,
				From: w.known()}
		}
	}
	return fmt.Errorf("start replication: %w", err)
}

// session is one replication connection's state, owned by Run's goroutine.
type session struct {
	w    *Watcher
	ctx  context.Context // Run's
	conn *pgconn.PgConn
	out  chan<- entities.Transaction
	q    Output // instead of out (RunTo)
	asm  *assembler

	floor      entities.LSN // the slot's confirmed_flush_lsn at start: never report less
	saved      entities.LSN // highest position Config.SavePosition stored
	sending    bool         // a chunk is waiting for room on out
	lastStatus time.Time
	nextStatus time.Time
}

func (s *session) loop(ctx context.Context) error {
	// Each wait for a message is bounded by a read deadline on the
	// socket, and ctx ends a wait by moving that deadline into the past:
	// one watch for the whole session. A context per message (a timer, a
	// child of ctx and pgconn's watch of it, made and torn down for every
	// row) cost more than decoding the row (docs/benchmarks.md).
	nc := s.conn.Conn()
	stopWatch := context.AfterFunc(ctx, func() { _ = nc.SetReadDeadline(time.Unix(1, 0)) })
	defer func() {
		stopWatch()
		_ = nc.SetReadDeadline(time.Time{})
	}()
	for {
		if err := s.status(false); err != nil {
			return err
		}
		_ = nc.SetReadDeadline(time.Now().Add(receiveTimeout))
		if ctx.Err() != nil {
			// Ended before the deadline above was set, which may
			// have undone ctx's.
			s.stop()
			return nil
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				s.stop()
				return nil
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.copyData(msg.Data); err != nil {
				if ctx.Err() != nil {
					s.stop()
					return nil
				}
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("replication stream: server ended the stream")
		default:
			s.w.logger.Debug("ignoring replication connection message", "type", fmt.Sprintf("%T", msg))
		}
	}
}

func (s *session) copyData(data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty CopyData", errProtocol)
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("%w: keepalive: %v", errProtocol, err)
		}
		s.w.sawWALEnd(entities.LSN(ka.ServerWALEnd))
		// Between transactions, everything before the server's position
		// has been received: nothing more will arrive that ends there
		// (rule 4). Inside one, the position may be past its commit.
		if !s.asm.inTransaction() {
			s.w.handled = max(s.w.handled, entities.LSN(ka.ServerWALEnd))
		}
		if ka.ReplyRequested {
			return s.status(true)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("%w: XLogData: %v", errProtocol, err)
		}
		s.w.sawWALEnd(entities.LSN(xld.ServerWALEnd))
		// handle copies what it keeps: WALData aliases the receive
		// buffer (rule 8). It calls send and ended.
		err = s.asm.handle(xld.WALData)
		if n := int64(s.asm.peak); n > s.w.peakBuffered.Load() {
			s.w.peakBuffered.Store(n)
		}
		return err
	default:
		s.w.logger.Debug("ignoring CopyData message", "id", string(data[0]))
	}
	return nil
}

// ended records a transaction that needed no delivery (already handled,
// or touching no registered table) as handled. Its end is confirmed only
// once every transaction sent before it is acknowledged (see
// confirmable).
func (s *session) ended(end entities.LSN) {
	s.w.handled = max(s.w.handled, end)
}

// send delivers a chunk on out, keeping the heartbeat going while out is
// full (rule 5, 6). A Final chunk's EndLSN becomes the position that must
// be acknowledged before anything later is confirmed; an earlier chunk is
// remembered so that a later Run does not send its changes again.
func (s *session) send(tx *entities.Transaction) error {
	sent := func() {
		if tx.Final {
			s.w.lastEmitted = tx.EndLSN
			s.w.partial = partialTx{}
			return
		}
		n := tx.Changes[len(tx.Changes)-1].Index + 1
		s.w.partial = partialTx{commitLSN: tx.CommitLSN, sent: n}
	}
	if s.q != nil {
		return s.offer(tx, sent)
	}
	select {
	case s.out <- *tx:
		sent()
		return nil
	default:
	}
	s.sending = true
	defer func() { s.sending = false }()
	tick := time.NewTicker(receiveTimeout)
	defer tick.Stop()
	for {
		select {
		case s.out <- *tx:
			sent()
			return nil
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-tick.C:
			if err := s.status(false); err != nil {
				return err
			}
		}
	}
}

// confirmable is the highest position that is safe to report: the
// highest Ack, or, when nothing is pending (no open transaction, chunked
// or not; none waiting to be sent; every sent one acknowledged), the end
// of what needed no Ack. Never below what was already confirmed, by this watcher or
// before it (the slot's position at start): a position once safe stays
// safe, and PostgreSQL 15 would move confirmed_flush_lsn back, letting a
// later start decode from before the slot's restart_lsn.
//
// With Config.SavePosition, a position beyond floor (the highest Ack or
// earlier confirmation) is confirmable only once it is stored: see
// stored, which status calls only when it is about to send.
func (s *session) confirmable() (pos, floor entities.LSN) {
	acked := entities.LSN(s.w.acked.Load())
	floor = max(acked, s.floor, entities.LSN(s.w.confirmed.Load()))
	pos = floor
	if !s.asm.inTransaction() && !s.sending && acked >= s.w.lastEmitted {
		pos = max(pos, s.w.handled)
	}
	return pos, floor
}

// stored returns pos once Config.SavePosition has stored it (floor when
// storing fails): a position no Ack covers is confirmed only after the
// caller holds it durably.
func (s *session) stored(pos, floor entities.LSN) entities.LSN {
	if pos <= floor || s.w.cfg.SavePosition == nil || pos <= s.saved {
		return pos
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), savePositionTimeout)
	err := s.w.cfg.SavePosition(ctx, pos)
	cancel()
	if err != nil {
		s.w.logger.Debug("store position before confirming it", "lsn", pos.String(), "err", err)
		return floor
	}
	s.saved = pos
	return pos
}

// savePositionTimeout bounds one Config.SavePosition call, so that a stuck
// store cannot hold the replication connection past wal_sender_timeout.
const savePositionTimeout = 5 * time.Second

// status sends a standby status update when forced (the server asked),
// when StatusInterval has passed, or when the confirmable position moved
// (at most every receiveTimeout).
func (s *session) status(force bool) error {
	now := time.Now()
	pos, floor := s.confirmable()
	advanced := pos > entities.LSN(s.w.confirmed.Load()) && now.Sub(s.lastStatus) >= receiveTimeout
	if !force && !advanced && now.Before(s.nextStatus) {
		return nil
	}
	// Only now, when an update is going out (at most every
	// receiveTimeout, or when asked), is an unacknowledged position
	// stored: not once per received message.
	pos = s.stored(pos, floor)
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(pos),
		WALFlushPosition: pglogrepl.LSN(pos),
		WALApplyPosition: pglogrepl.LSN(pos),
		ClientTime:       now,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	s.w.confirmed.Store(uint64(pos))
	s.w.statusSent.Add(1)
	s.lastStatus = now
	s.nextStatus = now.Add(s.w.cfg.StatusInterval)
	return nil
}

// stop reports the latest position before the connection is closed, so a
// clean shutdown loses no acknowledgement. Best effort.
func (s *session) stop() {
	if err := s.status(true); err != nil {
		s.w.logger.Debug("final standby status", "err", err)
	}
	s.w.logger.Info("replication stopped", "confirmed_lsn", s.w.Confirmed().String())
}

// simpleQuery runs sql with the simple query protocol (the only one a
// replication connection accepts) and returns its rows as text.
func simpleQuery(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, r := range results {
		if r.Err != nil {
			return nil, r.Err
		}
		for _, row := range r.Rows {
			vals := make([]string, len(row))
			for i, v := range row {
				vals[i] = string(v)
			}
			rows = append(rows, vals)
		}
	}
	return rows, nil
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// known is the highest position handled and stored: Config.StartLSN,
// the last Ack, or the last confirmed position. Replication resumes there,
// and a slot beyond it is not this consumer's.
func (w *Watcher) known() entities.LSN {
	return max(w.cfg.StartLSN, entities.LSN(w.acked.Load()), entities.LSN(w.confirmed.Load()))
}
