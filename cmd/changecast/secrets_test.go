package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestSecrets_PrintsPolicy(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"secrets"}, &out, &errb); err != nil {
		t.Fatalf("secrets: %v (%s)", err, errb.String())
	}
	for _, want := range []string{
		`(?m)^repository \(table repositories\)$`,
		`(?m)^  webhook_secret\s+stripped\s+marked secret in the Go type$`,
		`(?m)^  password\s+stripped\s+marked secret in the Go type$`,
		`(?m)^  payload\s+stripped\s+marked secret in the Go type$`,
		`(?m)^  jit_configuration\s+stripped`,
		`(?m)^  token_fetched\s+kept\s+explicitly allowed`,
		`(?m)^  credentials_id\s+kept\s+explicitly allowed`,
		`(?m)^template \(table templates\)\n  data\s+stripped\s+marked secret in the Go type$`,
		`(?m)^file_object \(table file_objects\)\n  content\s+stripped\s+marked secret in the Go type$`,
		`(?m)^proxy \(table proxies\)\n  http_proxy\s+stripped.*\n  https_proxy\s+stripped.*\n  credentials\s+stripped`,
		`(?m)^  gitea_credentials_id\s+kept\s+explicitly allowed`,
		`(?m)^scaleset \(table scalesets\)\n  \(no column stripped`,
		`any depth inside\s+json`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
	for _, et := range testRegistry.Types() {
		if !strings.Contains(out.String(), "\n"+et.Name+" (table "+et.Table+")\n") && !strings.HasPrefix(out.String(), et.Name+" (table ") {
			t.Errorf("output lacks entity type %s", et.Name)
		}
	}
}

func TestServe_MatchRefusesSecretFields(t *testing.T) {
	srv, url, dataDir := readyServer(t, "cc_match")
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	for _, tc := range []struct{ filter, want string }{
		{`{"filters": [{"entity-type": "repository", "match": {"webhook_secret": "x"}}]}`, `field \"webhook_secret\" is secret`},
		{`{"filters": [{"entity-type": "user", "match": {"password": "x"}}]}`, `field \"password\" is secret`},
	} {
		sendJSON(t, ws, tc.filter)
		if f := readFrame(t, ws, 10*time.Second); f.Namespace != "error" || !strings.Contains(string(f.raw), tc.want) {
			t.Fatalf("%s: got %s, want an error containing %s", tc.filter, f.raw, tc.want)
		}
	}
	// A harmless field, explicitly allowed despite its name, can be matched.
	sendJSON(t, ws, `{"filters": [{"entity-type": "repository", "match": {"credentials_id": "00000000-0000-4000-8000-000000000001", "name": ["a", "b"]}}]}`)
	filterApplied(t, ws)
	db := connect(t, url)
	exec1(t, db, "INSERT INTO repositories (name, credentials_id) VALUES ('c', '00000000-0000-4000-8000-000000000001')")
	exec1(t, db, "INSERT INTO repositories (name, credentials_id) VALUES ('b', '00000000-0000-4000-8000-000000000001')")
	if f, _ := readChange(t, ws, 10*time.Second); f.Payload["name"] != "b" {
		t.Fatalf("got %s, want only the repository matching name in [a b]", f.raw)
	}
}
