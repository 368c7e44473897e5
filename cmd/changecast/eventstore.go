package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// eventStore serves the events REST API: reads from the events table,
// writes (status, delete) through the running journal appender, so each
// change to an event is journaled and delivered as an event update or
// delete in the same transaction as the table write.
type eventStore struct {
	db   *store.DB
	pipe *pipeline
}

func (s eventStore) ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error) {
	return s.db.ListEvents(ctx, q)
}

func (s eventStore) EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error) {
	return s.db.EventTypes(ctx, owner)
}

func (s eventStore) SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error) {
		return store.SetEventStatusTx(ctx, tx, owner, ids, status)
	})
}

func (s eventStore) DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error {
	return s.write(ctx, func(ctx context.Context, tx pgx.Tx) ([]entities.Change, error) {
		return store.DeleteEventsTx(ctx, tx, owner, ids)
	})
}

// write submits fn to the running appender, mapping the store's errors to
// the API's.
func (s eventStore) write(ctx context.Context, fn store.WriteFunc) error {
	app := s.pipe.appender.Load()
	if app == nil || !s.pipe.streaming() {
		return fmt.Errorf("events: %w", wsapi.ErrUnavailable)
	}
	err := app.Submit(ctx, fn)
	switch {
	case errors.Is(err, store.ErrEventNotFound):
		return wsapi.MarkEventNotFound(err)
	case errors.Is(err, store.ErrAppenderStopped):
		return fmt.Errorf("events: %w", wsapi.ErrUnavailable)
	}
	return err
}
