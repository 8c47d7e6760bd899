package tests

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/gormdlock/dlock"
	"github.com/jackc/pgx/v5/pgconn"
)

// PostgreSQL keeps advisory locks in its shared lock table, which holds
// about max_locks_per_transaction × (max_connections +
// max_prepared_transactions) locks in all. Past it, Acquire returns
// ErrNotAcquired wrapping SQLSTATE 53200 and the session stays usable.
// The test fills the shared server's table for a moment, so it runs with
// make stress only; the README's limits give the figure it logs.
func TestStressLockTableLimit(t *testing.T) {
	if os.Getenv("DLOCK_STRESS") == "" {
		t.Skip("fills the server's lock table: runs with make stress (DLOCK_STRESS)")
	}
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Dialect != dialectPostgres {
			t.Skip("MySQL and MariaDB keep GET_LOCK names in memory, with no fixed table")
		}
		db := b.openLocked(t, dlock.Plugin{CheckInterval: -1})
		tx, conn := pin(t, db)
		ctx := context.Background()
		var held []*dlock.Lock
		defer func() {
			for _, l := range held {
				_ = l.Close(ctx)
			}
		}()
		base := int64(0x7a11_0000_0000)
		for i := int64(0); ; i++ {
			if i > 1_000_000 {
				t.Fatalf("a million advisory locks and no SQLSTATE 53200")
			}
			l, err := dlock.New(tx, base+i)
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			ok, err := l.Acquire(ctx, dlock.NoWait())
			if ok {
				held = append(held, l)
				continue
			}
			var pgErr *pgconn.PgError
			if !errors.Is(err, dlock.ErrNotAcquired) || !errors.As(err, &pgErr) || pgErr.Code != "53200" {
				t.Fatalf("Acquire() of lock %d = %v, %v; want ErrNotAcquired wrapping SQLSTATE 53200", i+1, ok, err)
			}
			break
		}
		t.Logf("the server's lock table took %d advisory locks of one session", len(held))
		var one int
		if err := conn.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("the session after 53200: %v", err)
		}
		if err := held[0].Release(ctx); err != nil {
			t.Fatalf("Release() after 53200 = %v", err)
		}
		held = held[1:]
	})
}
