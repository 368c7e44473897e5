package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/changecast/changecast/entities"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// users is the hub's view of the user table: login against bcrypt hashes,
// and session checks for tokens tied to a user row.
//
// A token is tied to a user row when its subject is a uuid (login issues
// those, with the user's id). Tokens minted offline by "changecast token"
// for automation have the user name as subject unless --user-id is given;
// they hold until they expire, since only holders of the signing key can
// mint them.
type users struct{ db userReads }

// userReads is what users reads: a *store.DB, or a *readReplica.
type userReads interface {
	Authenticate(ctx context.Context, username, password string) (entities.User, error)
	UserSession(ctx context.Context, id uuid.UUID) (store.UserSession, error)
}

func (u users) Authenticate(ctx context.Context, username, password string) (wsapi.Claims, error) {
	usr, err := u.db.Authenticate(ctx, username, password)
	switch {
	case errors.Is(err, store.ErrBadCredentials):
		return wsapi.Claims{}, wsapi.ErrBadCredentials
	case err != nil:
		return wsapi.Claims{}, err
	}
	role := wsapi.RoleViewer
	if usr.IsAdmin {
		role = wsapi.RoleAdmin
	}
	return wsapi.Claims{
		Name:             usr.Username,
		Role:             role,
		Gen:              usr.Generation,
		RegisteredClaims: jwt.RegisteredClaims{Subject: usr.ID.String()},
	}, nil
}

func (u users) CheckSession(ctx context.Context, c *wsapi.Claims) error {
	id, err := uuid.Parse(c.Subject)
	if err != nil {
		return nil // not tied to a user row (see users)
	}
	s, err := u.db.UserSession(ctx, id)
	switch {
	case errors.Is(err, store.ErrUserNotFound):
		return fmt.Errorf("%w: user deleted", wsapi.ErrSessionRevoked)
	case err != nil:
		return err
	case !s.Enabled:
		return fmt.Errorf("%w: user disabled", wsapi.ErrSessionRevoked)
	case s.Generation != c.Gen:
		return fmt.Errorf("%w: password changed", wsapi.ErrSessionRevoked)
	case c.Role == wsapi.RoleAdmin && !s.Admin:
		return fmt.Errorf("%w: admin rights removed", wsapi.ErrSessionRevoked)
	}
	return nil
}
