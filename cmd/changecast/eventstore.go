package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// eventStore serves the events REST API: reads from the events table,
// writes (status, delete) through the running journal writer, so each
// change to an event is journaled and delivered as an event update or
// delete in the same transaction as the table write.
type eventStore struct {
	db   *store.DB
	pipe *pipeline.Pipeline
}

func (s eventStore) ListEvents(ctx context.Context, q entities.EventQuery) (entities.EventPage, error) {
	return s.db.ListEvents(ctx, q)
}

func (s eventStore) EventTypes(ctx context.Context, owner *uuid.UUID) (entities.EventTypes, error) {
	return s.db.EventTypes(ctx, owner)
}

func (s eventStore) SetEventStatus(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID, status entities.EventStatus) error {
	w, err := s.pipe.Writer()
	if err != nil {
		return apiError(err)
	}
	return apiError(w.SetEventStatus(ctx, owner, ids, status))
}

func (s eventStore) DeleteEvents(ctx context.Context, owner *uuid.UUID, ids []uuid.UUID) error {
	w, err := s.pipe.Writer()
	if err != nil {
		return apiError(err)
	}
	return apiError(w.DeleteEvents(ctx, owner, ids))
}

// apiError maps the pipeline's and the store's errors to the API's.
func apiError(err error) error {
	switch {
	case errors.Is(err, store.ErrEventNotFound):
		return wsapi.MarkEventNotFound(err)
	case errors.Is(err, pipeline.ErrNotStreaming), errors.Is(err, pipeline.ErrWriterStopped):
		return fmt.Errorf("events: %w", wsapi.ErrUnavailable)
	}
	return err
}
