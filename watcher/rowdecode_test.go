package watcher

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/changecast/changecast/store/storetest"
	"github.com/jackc/pgx/v5/pgconn"
)

// A row read with SQL under SessionSettings decodes to the values the
// replicated row has (TestDecodeValue covers each type's parsing).
func TestRowDecoder_ReadsSQLRowsLikeReplicatedOnes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc, err := pgconn.ParseConfig(storetest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range SessionSettings {
		pc.RuntimeParams[k] = v
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE DOMAIN qty AS integer`).ReadAll(); err != nil {
		t.Fatal(err)
	}
	dec, err := NewRowDecoder(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	rr := conn.ExecParams(ctx, `SELECT 7::qty AS q, '2026-12-07 10:00:00+02'::timestamptz AS at, NULL::text AS gone, '{1,2}'::int[] AS xs`, nil, nil, nil, nil)
	var cols []Column
	for _, f := range rr.FieldDescriptions() {
		cols = append(cols, Column{Name: f.Name, OID: f.DataTypeOID})
	}
	if !rr.NextRow() {
		_, err := rr.Close()
		t.Fatalf("no row: %v", err)
	}
	row := dec.Decode(cols, rr.Values())
	if _, err := rr.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"at":"2026-12-07T08:00:00Z","gone":null,"q":7,"xs":[1,2]}`
	if string(got) != want {
		t.Errorf("row = %s, want %s", got, want)
	}
}
