// Package ui is changecast's live dashboard: one page served at "/" and its
// static assets under "/ui/", embedded in the binary. The page is plain
// JavaScript modules (no build step) plus Chart.js, vendored unchanged from
// Debian with its licence (static/vendor/chartjs).
//
// The page speaks only the public API: POST /api/v1/auth/login (or the
// token exchange and sign-in link of wsapi) for the HttpOnly login cookie,
// GET /api/v1/auth/session, the WebSocket stream with snapshots, and the
// system events REST API. It keeps no token in script-readable storage;
// localStorage holds the stream's cursor only.
//
// Every answer carries a strict Content-Security-Policy (scripts, styles,
// images and connections from the page's own origin only, no inline script
// or style, no framing); docs/security.md, "The dashboard", explains it.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
)

//go:embed static
var static embed.FS

// Paths the dashboard is served at.
const (
	// IndexPath is the page.
	IndexPath = "/"
	// AssetsPrefix holds the page's scripts, styles and vendored files.
	AssetsPrefix = "/ui/"
)

// Handler serves the page at "/" (exactly) and the assets under "/ui/";
// anything else under those is 404. Mount it for "GET /{$}" and "GET /ui/".
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	assets := http.StripPrefix(strings.TrimSuffix(AssetsPrefix, "/"), http.FileServer(http.FS(sub)))
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setHeaders(w, r)
		switch {
		case r.URL.Path == IndexPath:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
			if r.Method == http.MethodHead {
				return
			}
			_, _ = w.Write(index)
		case strings.HasPrefix(r.URL.Path, AssetsPrefix) && !strings.HasSuffix(r.URL.Path, "/"):
			// Assets change with the binary: revalidate each time (the
			// embedded files have no modification time, so this is cheap
			// only for small files; they are).
			w.Header().Set("Cache-Control", "no-cache")
			assets.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// hostRE is what a Host header must look like to be named in connect-src:
// a DNS name or an IP address (IPv6 in brackets), with an optional port.
var hostRE = regexp.MustCompile(`^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$`)

// CSP returns the Content-Security-Policy for a page served to a request
// for host: everything from the page's own origin, the WebSocket of the
// same host (ws: and wss:, which older browsers do not count as 'self'),
// no inline script or style, no plugins, no framing, no base or form
// target elsewhere.
func CSP(host string) string {
	connect := "'self'"
	if hostRE.MatchString(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return strings.Join([]string{
		"default-src 'self'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data:",
		"font-src 'self'",
		"connect-src " + connect,
		"object-src 'none'",
		"base-uri 'none'",
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
}

func setHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP(r.Host))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
}
