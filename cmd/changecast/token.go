package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/changecast/changecast/wsapi"
)

// runToken mints a token offline with the same secret settings as serve and
// prints only the token, so scripts can capture it: TOKEN=$(changecast token ...).
func runToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	user := fs.String("user", "", "user name (required); also the token subject unless --user-id is set")
	userID := fs.String("user-id", "", "token subject (user id); default: --user")
	role := fs.String("role", "viewer", "admin or viewer")
	scope := fs.String("scope", "", "comma-separated entity types a viewer may see (default: all but user)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token")
	var src sources // --scope names are checked against these types
	src.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return usageError{errors.New("token: --user is required")}
	}
	r := wsapi.Role(*role)
	if r != wsapi.RoleAdmin && r != wsapi.RoleViewer {
		return usageError{fmt.Errorf("token: --role %q: want admin or viewer", *role)}
	}
	if *ttl <= 0 {
		return usageError{fmt.Errorf("token: --ttl %s: must be positive", *ttl)}
	}
	var scopes []string
	if *scope != "" {
		reg, err := src.registry(context.Background(), nil, true)
		if err != nil {
			return err
		}
		for _, s := range strings.Split(*scope, ",") {
			s = strings.TrimSpace(s)
			if _, err := reg.Lookup(s); err != nil {
				return usageError{fmt.Errorf("token: --scope: %w", err)}
			}
			scopes = append(scopes, s)
		}
	}
	secret, err := loadSecret(c.dataDir, true)
	if err != nil {
		return err
	}
	auth, err := wsapi.NewAuth(secret)
	if err != nil {
		return err
	}
	sub := *userID
	if sub == "" {
		sub = *user
	}
	tok, err := auth.Mint(wsapi.Claims{
		Name:             *user,
		Role:             r,
		Scope:            scopes,
		RegisteredClaims: jwt.RegisteredClaims{Subject: sub},
	}, *ttl)
	if err != nil {
		return fmt.Errorf("mint token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
