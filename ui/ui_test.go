package ui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path, host string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.Host = host
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

func TestHandler_RoutesAndHeaders(t *testing.T) {
	h := Handler()
	for path, want := range map[string]int{
		"/":                                   200,
		"/ui/app.css":                         200,
		"/ui/js/main.js":                      200,
		"/ui/vendor/chartjs/chart.umd.min.js": 200,
		"/ui/vendor/chartjs/LICENSE":          200,
		"/ui/":                                404,
		"/ui/js/":                             404,
		"/ui/nope.js":                         404,
		"/index.html":                         404,
		"/ui/../ui.go":                        404,
	} {
		resp := get(t, h, path, "127.0.0.1:8080")
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
			continue
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", path, resp.Header)
		}
	}
	if ct := get(t, h, "/ui/js/main.js", "x").Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("main.js served as %q: module scripts need a JavaScript type", ct)
	}
}

func TestCSP_HostNeverInjects(t *testing.T) {
	for host, named := range map[string]bool{
		"127.0.0.1:8080":         true,
		"[::1]:8080":             true,
		"dash.example.com":       true,
		"evil.com; script-src *": false,
		"a b":                    false,
		"":                       false,
	} {
		csp := CSP(host)
		if strings.Contains(csp, "ws://"+host) != named {
			t.Errorf("CSP(%q) = %q", host, csp)
		}
		if strings.Count(csp, "script-src") != 1 {
			t.Errorf("CSP(%q) = %q", host, csp)
		}
	}
}

// TestAssets_NoInlineCode: the CSP forbids inline scripts, styles and
// event handler attributes; none may creep into the page.
func TestAssets_NoInlineCode(t *testing.T) {
	sub, _ := fs.Sub(static, "static")
	html, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), // a script with a body
		regexp.MustCompile(`(?i)\sstyle\s*=`),
		regexp.MustCompile(`(?i)<style`),
		regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
		regexp.MustCompile(`(?i)javascript:`),
	} {
		if m := re.Find(html); m != nil {
			t.Errorf("index.html has inline code: %s", m)
		}
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAll(html, -1) {
		if !strings.Contains(string(tag), ` src="/ui/`) {
			t.Errorf("index.html has a script that is not a file of /ui/: %s", tag)
		}
	}
	// Scripts put server data in the page with textContent only.
	err = fs.WalkDir(sub, "js", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(sub, path)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'"} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s uses %s", path, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := sub.Open("vendor/chartjs/chart.umd.min.js")
	head := make([]byte, 64)
	_, _ = io.ReadFull(f, head)
	if !strings.Contains(string(head), "Chart.js v3.9.1") {
		t.Errorf("the vendored Chart.js is not v3.9.1 as README.md beside it says: %q", head)
	}
}
