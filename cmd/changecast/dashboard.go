package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/ui"
	"github.com/changecast/changecast/wsapi"
)

// The dashboard (package ui) is served at "/" and "/ui/"; everything else
// stays the hub's. serve prints its URL, and on the embedded default while
// no user exists (or always, for demo) a one-time sign-in link, so the
// first page a new user opens is signed in with no other step.

// linkSubject is the subject of tokens issued through a sign-in link: not
// a user id, so not tied to a user row (docs/security.md, "The dashboard").
const linkSubject = "signin-link"

// mountDashboard routes the page and its assets on mux.
func mountDashboard(mux *http.ServeMux) {
	h := ui.Handler()
	mux.Handle("GET /{$}", h)
	mux.Handle("GET "+ui.AssetsPrefix, h)
}

// dashboardURL is what serve prints for the dashboard at addr: the page's
// URL, with a one-time sign-in link (#signin=<code>) when link is asked
// for (demo), or when serving the embedded default without any user yet.
// A link is made only for a loopback listener, since it can be redeemed
// from a loopback address only. The second result says how to use it.
func dashboardURL(ctx context.Context, hub *wsapi.Server, db *store.DB, addr string, embedded, link bool) (string, string, error) {
	base := "http://" + addr + "/"
	if !link && embedded {
		us, err := db.ListUsers(ctx)
		if err != nil {
			return "", "", fmt.Errorf("list users: %w", err)
		}
		link = len(us) == 0
	}
	if !link {
		return base, "", nil
	}
	if !loopbackListener(addr) {
		return base, "sign in as a user (changecast user add); sign-in links work on a loopback --listen only", nil
	}
	code, err := hub.SignInLink(wsapi.Claims{
		Name:             "admin (sign-in link)",
		Role:             wsapi.RoleAdmin,
		RegisteredClaims: jwt.RegisteredClaims{Subject: linkSubject},
	}, wsapi.DefaultSignInLinkTTL)
	if err != nil {
		return "", "", fmt.Errorf("make a sign-in link: %w", err)
	}
	return base + "#signin=" + code, fmt.Sprintf("one-time admin sign-in link, valid %d min, from this machine only", int(wsapi.DefaultSignInLinkTTL/time.Minute)), nil
}

// loopbackListener reports whether addr (host:port) listens on loopback only.
func loopbackListener(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// printDashboard prints the dashboard line of serve's and demo's banners.
func printDashboard(w io.Writer, url, note string) {
	if note != "" {
		fmt.Fprintf(w, "  dashboard: %s  (%s)\n", url, note)
		return
	}
	fmt.Fprintf(w, "  dashboard: %s\n", url)
}
