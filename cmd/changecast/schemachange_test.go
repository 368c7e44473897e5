package main

import (
	"strings"
	"testing"
	"time"
)

// TestServe_SchemaChangesMidStream: ALTER TABLE while changes stream.
// Each Relation message PostgreSQL sends after an ADD, RENAME, DROP or
// type change re-shapes decoding on the fly, with no restart: the next
// change carries the new column set, typed by the new types, and a column
// added under a secret-looking name is stripped like any other.
func TestServe_SchemaChangesMidStream(t *testing.T) {
	sql, ws := shopServer(t, "cc_schemachange")

	next := func(want string) frame {
		t.Helper()
		f, _ := readChange(t, ws, 30*time.Second)
		if strings.Contains(string(f.raw), "CANARY") {
			t.Fatalf("a secret left changecast: %s", f.raw)
		}
		if f.EntityType != "customer" || f.Operation != want {
			t.Fatalf("got %s, want a customer %s", f.raw, want)
		}
		return f
	}
	keys := func(f frame) string {
		var ks []string
		for _, k := range []string{"id", "email", "balance", "nickname", "handle", "session_token", "visits"} {
			if _, ok := f.Payload[k]; ok {
				ks = append(ks, k)
			}
		}
		return strings.Join(ks, ",")
	}

	exec1(t, sql, `INSERT INTO customers (id, email, balance) VALUES (1, 'ada@example.com', 12.5)`)
	if f := next("create"); keys(f) != "id,email,balance" || f.Payload["balance"] != 12.5 {
		t.Fatalf("before any change: %s", f.raw)
	}

	// ADD: the new column arrives, typed; one named like a secret is stripped.
	exec1(t, sql, `ALTER TABLE customers ADD COLUMN nickname text, ADD COLUMN visits int DEFAULT 0, ADD COLUMN session_token text`)
	exec1(t, sql, `INSERT INTO customers (id, email, nickname, visits, session_token) VALUES (2, 'bob@example.com', 'bob', 3, 'CANARY-token')`)
	if f := next("create"); keys(f) != "id,email,balance,nickname,visits" || f.Payload["nickname"] != "bob" || f.Payload["visits"] != float64(3) {
		t.Fatalf("after ADD COLUMN: %s, want nickname and visits (typed), session_token stripped", f.raw)
	}

	// RENAME: the value goes out under the new name only.
	exec1(t, sql, `ALTER TABLE customers RENAME COLUMN nickname TO handle`)
	exec1(t, sql, `UPDATE customers SET handle = 'bobby', session_token = 'CANARY-token-2' WHERE id = 2`)
	if f := next("update"); keys(f) != "id,email,balance,handle,visits" || f.Payload["handle"] != "bobby" {
		t.Fatalf("after RENAME COLUMN: %s, want handle and no nickname", f.raw)
	}

	// Retype: the same column now decodes by its new type.
	exec1(t, sql, `ALTER TABLE customers ALTER COLUMN visits TYPE text USING visits::text`)
	exec1(t, sql, `UPDATE customers SET visits = 'many' WHERE id = 2`)
	if f := next("update"); f.Payload["visits"] != "many" {
		t.Fatalf("after ALTER COLUMN TYPE: %s, want visits as text", f.raw)
	}

	// DROP: the column is gone from the next change.
	exec1(t, sql, `ALTER TABLE customers DROP COLUMN handle`)
	exec1(t, sql, `INSERT INTO customers (id, email, visits) VALUES (3, 'cy@example.com', 'few')`)
	if f := next("create"); keys(f) != "id,email,balance,visits" || f.Payload["visits"] != "few" {
		t.Fatalf("after DROP COLUMN: %s, want no handle", f.raw)
	}
	// The earlier rows' values are unaffected by the later DDL: a delete
	// (REPLICA IDENTITY DEFAULT) carries the key.
	exec1(t, sql, `DELETE FROM customers WHERE id = 1`)
	if f := next("delete"); f.Payload["id"] != float64(1) {
		t.Fatalf("delete after the DDL: %s, want the key", f.raw)
	}
}
