package watcher

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/changecast/changecast/store/storetest"
	"github.com/jackc/pgx/v5/pgconn"
)

// information_schema's domains are built in (OIDs below FirstNormalObjectId)
// yet domains: they decode as their base types, as a domain of the
// database's own does.
func TestCatalog_BuiltInDomains(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, storetest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	cat, err := loadCatalog(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := simpleQuery(ctx, conn, `SELECT 'information_schema.cardinal_number'::regtype::oid::text, 'information_schema.time_stamp'::regtype::oid::text`)
	if err != nil || len(rows) != 1 {
		t.Fatalf("domain OIDs: %v %v", rows, err)
	}
	d := newValueDecoder()
	d.cat = cat
	for i, c := range []struct{ text, want string }{
		{"7", `7`},
		{"2026-12-07 10:00:00.5+00", `"2026-12-07T10:00:00.5Z"`},
	} {
		oid, err := strconv.ParseUint(rows[0][i], 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.appendValue(nil, uint32(oid), []byte(c.text)); string(got) != c.want {
			t.Errorf("domain %d, %q: got %s, want %s", oid, c.text, got, c.want)
		}
	}
}
