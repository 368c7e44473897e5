package watcher

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/changecast/changecast/entities"
)

// positions is a SavePosition that records what it stored, and can be
// made to fail.
type positions struct {
	mu     sync.Mutex
	stored entities.LSN
	fail   bool
}

func (p *positions) save(_ context.Context, lsn entities.LSN) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errors.New("store unavailable (test)")
	}
	p.stored = max(p.stored, lsn)
	return nil
}

func (p *positions) get() entities.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stored
}

func (p *positions) setFail(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = v
}

func TestRun_MissingSlotIsLostAfterAFirstStart(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
	}{
		{"stored position", func(c *Config) { c.StartLSN = 0x1000 }},
		{"journal not empty", func(c *Config) { c.ExpectSlot = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.cfg(&c)
			err := newWatcher(t, c).Run(context.Background(), make(chan Transaction, 1))
			var lost *SlotLostError
			if !errors.As(err, &lost) || lost.Kind != SlotMissing || !errors.Is(err, ErrSlotLost) || Retryable(err) {
				t.Fatalf("Run = %v, want a SlotLostError (missing), not retryable", err)
			}
			if s := readSlot(t, e.conn, cfg.Slot); s.exists {
				t.Fatalf("Run created slot %s although one was lost", cfg.Slot)
			}
		})
	}
}

func TestRun_NewSlotStartIsStoredBeforeItIsUsed(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	var pos positions
	cfg.SavePosition = pos.save
	var started entities.LSN
	startedCh := make(chan struct{})
	cfg.Started = func(lsn entities.LSN) { started = lsn; close(startedCh) }
	r := start(t, newWatcher(t, cfg), 10)
	<-startedCh
	s := readSlot(t, e.conn, cfg.Slot)
	if pos.get() == 0 || pos.get() != s.confirmedFlush || started != pos.get() {
		t.Fatalf("stored %s, slot confirmed %s, Started(%s); want the new slot's start stored and streamed from", pos.get(), s.confirmedFlush, started)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestRun_IdlePositionConfirmedOnlyOnceStored(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	var pos positions
	cfg.SavePosition = pos.save
	w := newWatcher(t, cfg)
	start(t, w, 10)
	waitFor(t, "streaming", func() (bool, error) { return w.Streaming(), nil })
	first := readSlot(t, e.conn, cfg.Slot).confirmedFlush

	pos.setFail(true)
	e.exec(t, `INSERT INTO quiet (v) SELECT 'x' FROM generate_series(1, 100)`)
	var after string
	if err := e.conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	target := parseLSN(t, after)
	// The watcher tries to store the idle position (and fails) before
	// it would confirm it: the slot must stay where it was.
	waitFor(t, "an idle position past "+target.String()+" to be handled", func() (bool, error) {
		return w.Stats().ServerWALEnd >= target, nil
	})
	sent := w.statusSent.Load()
	waitFor(t, "two more status updates", func() (bool, error) { return w.statusSent.Load() >= sent+2, nil })
	if got := w.Confirmed(); got > max(first, pos.get()) {
		t.Fatalf("slot confirmed %s while storing failed (stored %s): a confirmed position the caller never stored", got, pos.get())
	}
	pos.setFail(false)
	waitFor(t, "idle slot to confirm past "+target.String(), func() (bool, error) {
		return readSlot(t, e.conn, cfg.Slot).confirmedFlush >= target, nil
	})
	if got, stored := readSlot(t, e.conn, cfg.Slot).confirmedFlush, pos.get(); got > stored {
		t.Fatalf("slot confirmed %s beyond the stored %s", got, stored)
	}
}

func TestRun_MovedSlotIsLost(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	var pos positions
	cfg.SavePosition = pos.save
	w := newWatcher(t, cfg)
	r := start(t, w, 10)
	waitFor(t, "streaming", func() (bool, error) { return w.Streaming(), nil })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "slot inactive", func() (bool, error) { return !readSlot(t, e.conn, cfg.Slot).active, nil })
	stored := pos.get()

	// Someone drops the slot and creates one of the same name later in
	// the WAL.
	e.exec(t, `SELECT pg_drop_replication_slot($1)`, cfg.Slot)
	e.exec(t, `INSERT INTO widgets (id) VALUES (1)`)
	e.exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, cfg.Slot)

	cfg2 := cfg
	cfg2.StartLSN = stored
	w2 := newWatcher(t, cfg2)
	err := w2.Run(context.Background(), make(chan Transaction, 1))
	var lost *SlotLostError
	if !errors.As(err, &lost) || lost.Kind != SlotMoved || lost.From != stored || lost.SlotAt <= stored {
		t.Fatalf("Run = %v, want a SlotLostError (moved) from %s", err, stored)
	}
	start, err := w2.RecoverSlot(context.Background(), lost)
	if err != nil || start != lost.SlotAt {
		t.Fatalf("RecoverSlot = %s, %v; want %s", start, err, lost.SlotAt)
	}
}

func TestRecoverSlot_ReplacesAnInvalidatedOrMissingSlot(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	w := newWatcher(t, cfg)
	for _, kind := range []string{SlotMissing, SlotInvalidated} {
		start, err := w.RecoverSlot(context.Background(), &SlotLostError{Slot: cfg.Slot, Kind: kind, From: 1})
		s := readSlot(t, e.conn, cfg.Slot)
		if err != nil || !s.exists || s.plugin != "pgoutput" || s.temporary || start == 0 || start != s.confirmedFlush {
			t.Fatalf("RecoverSlot(%s) = %s, %v; slot %+v: want a new permanent pgoutput slot starting there", kind, start, err, s)
		}
	}
}
