package main

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestServe_BackfillWithoutFullIdentity: customers keeps REPLICA IDENTITY
// DEFAULT, so PostgreSQL sends updates without the previous row, an
// unchanged TOASTed value as "unchanged", and deletes with the key only.
// changecast completes each from the journal's last state of the entity,
// sanitized with today's rules, and says nothing it does not know.
func TestServe_BackfillWithoutFullIdentity(t *testing.T) {
	sql, ws := shopServer(t, "cc_backfill")
	// bio is large and incompressible enough to be stored out of line.
	exec1(t, sql, `ALTER TABLE customers ADD COLUMN bio text`)

	type change struct {
		frame
		Unchanged []string `json:"unchanged"`
	}
	next := func(op string) change {
		t.Helper()
		f, _ := readChange(t, ws, 30*time.Second)
		if strings.Contains(string(f.raw), "CANARY") {
			t.Fatalf("a secret left changecast: %s", f.raw)
		}
		var c change
		if err := json.Unmarshal(f.raw, &c); err != nil {
			t.Fatal(err)
		}
		c.frame = f
		if f.EntityType != "customer" || f.Operation != op {
			t.Fatalf("got %s, want a customer %s", f.raw, op)
		}
		return c
	}

	exec1(t, sql, `INSERT INTO customers (id, email, api_key, balance, bio)
		SELECT 1, 'ada@example.com', 'CANARY-key', 10, string_agg(md5(i::text), '') FROM generate_series(1, 400) i`)
	var bio string
	if err := sql.QueryRow(context.Background(), `SELECT bio FROM customers WHERE id = 1`).Scan(&bio); err != nil {
		t.Fatal(err)
	}
	if c := next("create"); c.Payload["bio"] != bio {
		t.Fatalf("create: bio missing")
	}

	// The update: bio unchanged (TOAST, not sent), no previous row sent.
	exec1(t, sql, `UPDATE customers SET balance = 11, api_key = 'CANARY-key-2' WHERE id = 1`)
	c := next("update")
	if c.Payload["bio"] != bio || len(c.Unchanged) != 0 {
		t.Errorf("update: bio filled = %v, unchanged %v; want bio from the journal's last state", c.Payload["bio"] == bio, c.Unchanged)
	}
	if c.Previous["balance"] != float64(10) || c.Previous["email"] != "ada@example.com" || c.Previous["bio"] != bio {
		t.Errorf("update: previous %v, want the state before it", c.Previous)
	}
	if c.Payload["balance"] != float64(11) {
		t.Errorf("update: balance %v, want 11", c.Payload["balance"])
	}

	// The delete: the whole last state, not just the key.
	exec1(t, sql, `DELETE FROM customers WHERE id = 1`)
	if c := next("delete"); c.Payload["id"] != float64(1) || c.Payload["email"] != "ada@example.com" || c.Payload["balance"] != float64(11) || c.Payload["bio"] != bio {
		t.Errorf("delete: payload keys %v, want the entity's last state", keysOf(c.Payload))
	}

	// An entity whose history the journal did not follow: its rows
	// changed while the table had REPLICA IDENTITY FULL, so tracking
	// starts afresh and nothing is guessed.
	exec1(t, sql, `INSERT INTO customers (id, email, balance) VALUES (2, 'bob@example.com', 1)`)
	next("create")
	exec1(t, sql, `ALTER TABLE customers REPLICA IDENTITY FULL`)
	exec1(t, sql, `UPDATE customers SET balance = 2 WHERE id = 2`)
	if c := next("update"); c.Previous["balance"] != float64(1) {
		t.Fatalf("update under FULL: previous %v", c.Previous)
	}
	exec1(t, sql, `ALTER TABLE customers REPLICA IDENTITY DEFAULT`)
	exec1(t, sql, `UPDATE customers SET balance = 3 WHERE id = 2`)
	if c := next("update"); c.Previous != nil {
		t.Errorf("update after tracking restarted: previous %v, want none (not known)", c.Previous)
	}
	exec1(t, sql, `UPDATE customers SET balance = 4 WHERE id = 2`)
	if c := next("update"); c.Previous["balance"] != float64(3) {
		t.Errorf("second update after tracking restarted: previous %v, want balance 3", c.Previous)
	}

	// TRUNCATE forgets every state of the type.
	exec1(t, sql, `TRUNCATE customers`)
	next("truncate")
	exec1(t, sql, `INSERT INTO customers (id, email) VALUES (2, 'new@example.com')`)
	next("create")
	exec1(t, sql, `DELETE FROM customers WHERE id = 2`)
	if c := next("delete"); c.Payload["email"] != "new@example.com" {
		t.Errorf("delete after truncate and insert: %v, want the new row", c.Payload)
	}

	// An unchanged TOAST value the journal cannot fill (the row was last
	// written under FULL, so its state was not followed) is listed in
	// unchanged and left out of the payload: never reported as null.
	exec1(t, sql, `ALTER TABLE customers REPLICA IDENTITY FULL`)
	exec1(t, sql, `INSERT INTO customers (id, email, balance, bio)
		SELECT 3, 'cy@example.com', 1, string_agg(md5(i::text), '') FROM generate_series(1, 400) i`)
	next("create")
	exec1(t, sql, `ALTER TABLE customers REPLICA IDENTITY DEFAULT`)
	exec1(t, sql, `UPDATE customers SET balance = 2 WHERE id = 3`)
	if c := next("update"); !reflect.DeepEqual(c.Unchanged, []string{"bio"}) || c.Payload["balance"] != float64(2) {
		t.Errorf("update of an unfollowed row: unchanged %v, payload %v; want bio listed in unchanged", c.Unchanged, c.Payload)
	} else if v, present := c.Payload["bio"]; present {
		t.Errorf("update of an unfollowed row: bio is %v in the payload, want it absent (listed in unchanged)", v)
	}

	// The journal holds what was sent: no secret in it either.
	var leaked int
	if err := sql.QueryRow(context.Background(), `SELECT count(*) FROM changecast.journal WHERE payload::text LIKE '%CANARY%' OR previous::text LIKE '%CANARY%'`).Scan(&leaked); err != nil || leaked != 0 {
		t.Errorf("%d journal rows hold a secret (%v)", leaked, err)
	}
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
