package watcher

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestInvalidatedByServer(t *testing.T) {
	invalidated := &pgconn.PgError{Severity: "ERROR", Code: "55000", Message: `cannot read from logical replication slot "changecast"`,
		Detail: "This slot has been invalidated because it exceeded the maximum reserved size."}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("start replication: %w", invalidated), true},
		{&pgconn.PgError{Code: "55000", Message: `can no longer get changes from replication slot "changecast"`}, true},
		{&pgconn.PgError{Code: "55006", Message: `replication slot "changecast" is active for PID 42`}, false},
		{errors.New("connection refused"), false},
		{nil, false},
	} {
		if got := invalidatedByServer(tc.err); got != tc.want {
			t.Errorf("invalidatedByServer(%v) = %t, want %t", tc.err, got, tc.want)
		}
	}
}
