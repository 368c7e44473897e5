package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
)

// The events table written on its own, for a journal that lives outside
// PostgreSQL (natsjournal): each write commits here first and returns the
// changes that journal then records. The PostgreSQL journal writes the
// table and its journal rows in one transaction instead (appender_writes.go).

// InsertEvent inserts ev and returns its create change. An event already
// stored (a retry after an outcome that was not known) is not written
// again: its stored create change is returned, so the caller can journal
// it again (the journal drops the repeat).
func (db *DB) InsertEvent(ctx context.Context, ev entities.Event) (entities.Change, error) {
	var ch entities.Change
	err := db.eventTx(ctx, func(tx pgx.Tx) error {
		var err error
		ch, err = InsertEventTx(ctx, tx, ev)
		return err
	})
	if errors.Is(err, ErrEventExists) {
		stored, gerr := db.GetEvent(ctx, ev.ID)
		if gerr != nil {
			return entities.Change{}, gerr
		}
		return eventChange(entities.OpCreate, stored, nil, stored.CreatedAt), nil
	}
	return ch, err
}

// SetEventStatus is SetEventStatusTx in a transaction of its own.
func (db *DB) SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) ([]entities.Change, error) {
	var out []entities.Change
	err := db.eventTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = SetEventStatusTx(ctx, tx, owner, ids, status)
		return err
	})
	return out, err
}

// DeleteEvents is DeleteEventsTx in a transaction of its own.
func (db *DB) DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) ([]entities.Change, error) {
	var out []entities.Change
	err := db.eventTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = DeleteEventsTx(ctx, tx, owner, ids)
		return err
	})
	return out, err
}

func (db *DB) eventTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return redactErr(fmt.Errorf("events: begin: %w", err), db.url)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return redactErr(err, db.url)
	}
	if err := tx.Commit(ctx); err != nil {
		return redactErr(fmt.Errorf("events: commit: %w", err), db.url)
	}
	return nil
}
