package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/changecast/changecast/store/storetest"
)

func TestMain(m *testing.M) { storetest.Main(m) }

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
