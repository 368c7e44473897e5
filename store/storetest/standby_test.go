package storetest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/changecast/changecast/store/storetest"
)

// A standby is a streaming hot standby of its primary: same system,
// in recovery, read-only, and following the primary's writes.
func TestNewStandby(t *testing.T) {
	t.Parallel()
	primary := storetest.NewCluster(t)
	standby := storetest.NewStandby(t, primary)
	if standby.Port() == primary.Port() || standby.Dir() == primary.Dir() {
		t.Fatal("the standby shares the primary's port or directory")
	}
	sysid := `SELECT (system_identifier % 1000000)::int FROM pg_control_system()`
	if p, s := count(t, primary.URL(), sysid), count(t, standby.URL(), sysid); p != s {
		t.Fatalf("system identifiers differ: %d, %d", p, s)
	}
	if count(t, standby.URL(), `SELECT pg_is_in_recovery()::int`) != 1 {
		t.Fatal("the standby is not in recovery")
	}
	conn, err := pgx.Connect(context.Background(), primary.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `CREATE TABLE replicated AS SELECT generate_series(1, 7) AS n`); err != nil {
		t.Fatal(err)
	}
	storetest.WaitReplayed(t, primary, standby)
	if n := count(t, standby.URL(), `SELECT count(*) FROM replicated`); n != 7 {
		t.Fatalf("the standby holds %d rows of 7", n)
	}
}
