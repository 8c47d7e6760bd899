package tests

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
)

// A holder idle longer than the session's idle timeout (wait_timeout,
// idle_session_timeout) loses its lock to the server's reaper by default;
// with KeepIdleHolders it keeps it, and its own setting comes back when
// it releases.
//
// It sleeps and measures nothing: both servers, and the holder with and
// without KeepIdleHolders, idle at once, on sessions of their own.
func TestKeepIdleHolders(t *testing.T) {
	t.Parallel()
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		set, show, want := "SET SESSION wait_timeout = 2", "SELECT @@SESSION.wait_timeout", "2"
		if b.Dialect == dialectPostgres {
			if v := b.pgVersionNum(t); v < 140000 {
				t.Skipf("PostgreSQL %d has no idle_session_timeout (added in 14): no server reaper to survive", v)
			}
			set, show, want = "SET idle_session_timeout = '2s'", "SHOW idle_session_timeout", "2s"
		}
		ctx := context.Background()
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("KeepIdleHolders=%v", keep), func(t *testing.T) {
				t.Parallel()
				db := b.openLocked(t, dlock.Plugin{KeepIdleHolders: keep})
				tx, conn := pin(t, db)
				if _, err := conn.ExecContext(ctx, set); err != nil {
					t.Fatalf("%s: %v", set, err)
				}
				l, err := dlock.New(tx, b.UniqueKey(t))
				if err != nil {
					t.Fatalf("New() = %v", err)
				}
				mustAcquire(t, l)
				time.Sleep(3500 * time.Millisecond)
				held, err := l.Held(ctx)
				if !keep {
					if held || !errors.Is(err, dlock.ErrLockLost) {
						t.Fatalf("KeepIdleHolders: false, idle past the timeout: Held() = %v, %v; want false, ErrLockLost", held, err)
					}
					return
				}
				if !held || err != nil {
					t.Fatalf("KeepIdleHolders: true, idle past the timeout: Held() = %v, %v; want true, nil", held, err)
				}
				if err := l.Release(ctx); err != nil {
					t.Fatalf("Release() = %v", err)
				}
				var got string
				if err := conn.QueryRowContext(ctx, show).Scan(&got); err != nil {
					t.Fatalf("%s: %v", show, err)
				}
				if got != want {
					t.Fatalf("%s after the last release = %q, want the session's own %q", show, got, want)
				}
			})
		}
	})
}
