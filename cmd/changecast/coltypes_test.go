package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/changecast/changecast/store/storetest"
)

// columnType is one row of docs/protocol.md's "Column types" table.
type columnType struct{ typ, sqlValue, json string }

// readColumnTypes parses the table that follows <!-- column-types --> in
// docs/protocol.md.
func readColumnTypes(t testing.TB) []columnType {
	t.Helper()
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- column-types -->\n")
	if !ok {
		t.Fatal("docs/protocol.md has no <!-- column-types --> table")
	}
	var out []columnType
	for i, line := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		if i < 2 {
			continue // header and separator
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 3 {
			t.Fatalf("column-types row %q: want 3 cells", line)
		}
		unquote := func(s string) string { return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "`"), "`") }
		out = append(out, columnType{typ: strings.TrimSpace(cells[0]), sqlValue: unquote(cells[1]), json: unquote(cells[2])})
	}
	if len(out) < 20 {
		t.Fatalf("column-types table has %d rows", len(out))
	}
	return out
}

// sqlType is the column type to create for a row's first cell ("... array"
// is an array of the type the rest names).
func sqlType(label string) string {
	if base, ok := strings.CutSuffix(label, " array"); ok {
		return sqlType(base) + "[]"
	}
	switch {
	case strings.HasPrefix(label, "enum"):
		return "mood"
	case strings.HasPrefix(label, "domain"):
		return "posint"
	case strings.HasPrefix(label, "composite"):
		return "pair"
	}
	return strings.Trim(label, "`")
}

// TestProtocol_ColumnTypes checks docs/protocol.md's column-type table
// against a real table, watched from testdata/declared/samples.yaml: one
// column per row, the row's SQL value inserted,
// then the row updated and deleted. Each frame's JSON for that column must
// equal the documented JSON: the create's and the update's payload, and,
// since the table keeps REPLICA IDENTITY DEFAULT, the update's previous and
// the delete's payload, which come from the journal's last state.
func TestProtocol_ColumnTypes(t *testing.T) {
	types := readColumnTypes(t)
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, `CREATE TYPE mood AS ENUM ('happy', 'sad'); CREATE DOMAIN posint AS integer CHECK (VALUE > 0); CREATE TYPE pair AS (x int, y text)`)
	cols := []string{"id int PRIMARY KEY", "n int"}
	vals := []string{"1", "0"}
	for i, ct := range types {
		cols = append(cols, fmt.Sprintf("c%d %s", i, sqlType(ct.typ)))
		vals = append(vals, ct.sqlValue)
	}
	exec1(t, sql, "CREATE TABLE samples ("+strings.Join(cols, ", ")+")")
	srv, _, dataDir := readyServerAt(t, url, "cc_coltypes", func(cfg *serveConfig) {
		cfg.configPath = "testdata/declared/samples.yaml"
	})
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"filters": [{"entity-type": "sample"}]}`)
	filterApplied(t, ws)
	if _, err := sql.Exec(context.Background(), "INSERT INTO samples VALUES ("+strings.Join(vals, ", ")+")"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	exec1(t, sql, `UPDATE samples SET n = 1 WHERE id = 1`)
	exec1(t, sql, `DELETE FROM samples WHERE id = 1`)
	type seen struct {
		what string
		cols map[string]json.RawMessage
	}
	var got []seen
	for _, op := range []string{"create", "update", "delete"} {
		f, _ := readChange(t, ws, 30*time.Second)
		var frame struct {
			Payload, Previous map[string]json.RawMessage
		}
		if err := json.Unmarshal(f.raw, &frame); err != nil {
			t.Fatal(err)
		}
		if f.Operation != op {
			t.Fatalf("got %s, want the %s", f.raw, op)
		}
		got = append(got, seen{op + " payload", frame.Payload})
		if op == "update" {
			got = append(got, seen{"update previous", frame.Previous})
		}
	}
	compact := func(s []byte) string {
		var b bytes.Buffer
		if err := json.Compact(&b, s); err != nil {
			return "invalid JSON: " + string(s)
		}
		return b.String()
	}
	for i, ct := range types {
		want := compact([]byte(ct.json))
		for _, g := range got {
			if v := compact(g.cols[fmt.Sprintf("c%d", i)]); v != want {
				t.Errorf("%s %s: %s has %s, docs/protocol.md says %s", ct.typ, ct.sqlValue, g.what, v, want)
			}
		}
	}
}

// TestProtocol_TypesCreatedWhileStreaming: a domain and a composite type
// created while changecast streams, and columns of them (and an array of
// the domain) added to a watched table, arrive typed from the first change
// that carries them, not as text: the watcher reads the new types over a
// normal connection when the Relation message names them.
func TestProtocol_TypesCreatedWhileStreaming(t *testing.T) {
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, `CREATE TABLE gadgets (id int PRIMARY KEY, name text)`)
	srv, _, dataDir := readyServerAt(t, url, "cc_newtypes", func(cfg *serveConfig) {
		if err := cfg.tables.Set("gadget=public.gadgets"); err != nil {
			t.Fatal(err)
		}
	})
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"filters": [{"entity-type": "gadget"}]}`)
	filterApplied(t, ws)
	exec1(t, sql, `INSERT INTO gadgets VALUES (1, 'before')`)
	if f, _ := readChange(t, ws, 30*time.Second); !strings.Contains(string(f.raw), `"name":"before"`) {
		t.Fatalf("first change: %s", f.raw)
	}

	exec1(t, sql, `CREATE DOMAIN qty AS integer CHECK (VALUE >= 0);
		CREATE TYPE price AS (amount numeric(8,2), currency text, at timestamptz);
		ALTER TABLE gadgets ADD COLUMN q qty, ADD COLUMN p price, ADD COLUMN qs qty[], ADD COLUMN ps price[]`)
	exec1(t, sql, `INSERT INTO gadgets VALUES (2, 'after', 5, ROW(1.5, 'EUR', '2026-12-07 10:00:00+01'), '{1,2}',
		ARRAY[ROW(2, 'USD', NULL)]::price[])`)
	f, _ := readChange(t, ws, 30*time.Second)
	var frame struct {
		Payload map[string]json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(f.raw, &frame); err != nil {
		t.Fatal(err)
	}
	for col, want := range map[string]string{
		"q":  `5`,
		"p":  `{"amount":1.50,"currency":"EUR","at":"2026-12-07T09:00:00Z"}`,
		"qs": `[1,2]`,
		"ps": `[{"amount":2.00,"currency":"USD","at":null}]`,
	} {
		if got := string(frame.Payload[col]); got != want {
			t.Errorf("column %s = %s, want %s (typed, not text)", col, got, want)
		}
	}
}

// TestProtocol_AlteredCompositeType: an attribute added to a composite type
// while changes stream (ALTER TYPE sends no Relation message) makes the
// next value fail to parse against the known type; the watcher reads the
// types again and decodes it, and the new attribute, named like a secret,
// is stripped. A value is never sent as its raw text, whose fields no
// secret rule could check.
func TestProtocol_AlteredCompositeType(t *testing.T) {
	url := storetest.NewDatabase(t)
	sql := connect(t, url)
	exec1(t, sql, `CREATE TYPE endpoint AS (host text, port int);
		CREATE TABLE hooks (id int PRIMARY KEY, target endpoint)`)
	srv, _, dataDir := readyServerAt(t, url, "cc_altertype", func(cfg *serveConfig) {
		if err := cfg.tables.Set("hook=public.hooks"); err != nil {
			t.Fatal(err)
		}
	})
	ws := dialWS(t, srv.addr, mintToken(t, dataDir, "admin"))
	sendJSON(t, ws, `{"filters": [{"entity-type": "hook"}]}`)
	filterApplied(t, ws)
	exec1(t, sql, `INSERT INTO hooks VALUES (1, ROW('a.example', 80))`)
	if f, _ := readChange(t, ws, 30*time.Second); !strings.Contains(string(f.raw), `"target":{"host":"a.example","port":80}`) {
		t.Fatalf("before ALTER TYPE: %s", f.raw)
	}
	exec1(t, sql, `ALTER TYPE endpoint ADD ATTRIBUTE api_token text`)
	exec1(t, sql, `INSERT INTO hooks VALUES (2, ROW('b.example', 443, 'CANARY-token'))`)
	f, _ := readChange(t, ws, 30*time.Second)
	if strings.Contains(string(f.raw), "CANARY") {
		t.Fatalf("the new attribute's secret left changecast: %s", f.raw)
	}
	if !strings.Contains(string(f.raw), `"target":{"host":"b.example","port":443}`) {
		t.Fatalf("after ALTER TYPE: %s, want the value decoded with the new type, api_token stripped", f.raw)
	}
}
