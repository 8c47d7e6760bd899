package tests

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// collectCounter counts the objects it watches and those collected.
type collectCounter struct {
	watched, collected atomic.Int64
}

func watchCollect[T any](c *collectCounter, p *T) {
	c.watched.Add(1)
	runtime.AddCleanup(p, func(c *collectCounter) { c.collected.Add(1) }, c)
}

// settle runs the garbage collector until the counters say every watched
// object is gone or for at most d, and returns the heap in use after it.
func settle(d time.Duration, cs ...*collectCounter) uint64 {
	deadline := time.Now().Add(d)
	for {
		runtime.GC()
		runtime.GC()
		done := true
		for _, c := range cs {
			done = done && c.collected.Load() == c.watched.Load()
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// sessionWatch counts the handles of pinned sessions (*sql.Conn, or the
// *sql.Tx of an Xact WithLock) and pgx's PgConns behind them, and those
// collected.
type sessionWatch struct {
	handles, pgConns collectCounter
}

// watch watches the handle fn's tx runs on and, on pgx, its PgConn.
func (w *sessionWatch) watch(tx *gorm.DB) {
	switch h := tx.Statement.ConnPool.(type) {
	case *sql.Tx:
		watchCollect(&w.handles, h)
	case *sql.Conn:
		watchCollect(&w.handles, h)
		_ = h.Raw(func(dc any) error {
			if c, ok := dc.(*stdlib.Conn); ok {
				watchCollect(&w.pgConns, c.Conn().PgConn())
			}
			return nil
		})
	}
}

// cycleKinds are the ways to use a pooled session once that the memory
// tests run.
var cycleKinds = []struct {
	name   string
	pgOnly bool
	run    func(ctx context.Context, db *gorm.DB, key string, w *sessionWatch) error
}{
	{"WithLock", false, func(ctx context.Context, db *gorm.DB, key string, w *sessionWatch) error {
		return dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			w.watch(tx)
			return tx.Exec("SELECT 1").Error
		})
	}},
	{"WithLock Xact", true, func(ctx context.Context, db *gorm.DB, key string, w *sessionWatch) error {
		return dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			w.watch(tx)
			return tx.Exec("SELECT 1").Error
		}, dlock.Xact())
	}},
	{"Connection", false, func(ctx context.Context, db *gorm.DB, key string, w *sessionWatch) error {
		return dlock.Connection(ctx, db, func(tx *gorm.DB) error {
			w.watch(tx)
			return acquireRelease(ctx, tx, key)
		})
	}},
	{"db.Connection", false, func(ctx context.Context, db *gorm.DB, key string, w *sessionWatch) error {
		return db.WithContext(ctx).Connection(func(tx *gorm.DB) error {
			w.watch(tx)
			return acquireRelease(ctx, tx, key)
		})
	}},
}

func acquireRelease(ctx context.Context, tx *gorm.DB, key string) error {
	l, err := dlock.New(tx, key)
	if err != nil {
		return err
	}
	if ok, err := l.Acquire(ctx); !ok || err != nil {
		return fmt.Errorf("Acquire() = %v, %w", ok, err)
	}
	return l.Close(ctx)
}

// dlock keeps no memory per physical connection: with no idle connections
// every cycle dials a new session, and once the pool has closed it the
// *sql.Conn (or *sql.Tx) that pinned it is collected, and pgx's PgConn,
// with everything dlock and the driver kept for them: dlock's registries
// keyed by them let go at the next GC. On PostgreSQL each WithLock's
// session used to stay for good, about 75 KB each, and every session's
// PgConn for ReleaseTimeout.
func TestMemoryPerConnection(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxIdleConns(0) // every session is a new physical connection
		cycles := 100
		if b.Dialect == dialectPostgres {
			cycles = 25 // a new PostgreSQL session can cost 70 ms on a busy machine
		}
		key := b.UniqueKey(t)
		ctx := context.Background()
		for _, k := range cycleKinds {
			t.Run(k.name, func(t *testing.T) {
				if k.pgOnly && b.Dialect != dialectPostgres {
					t.Skip("PostgreSQL only")
				}
				var warm sessionWatch
				for range 3 { // warm up: the first use of each path allocates for good
					if err := k.run(ctx, db, key, &warm); err != nil {
						t.Fatal(err)
					}
				}
				before := settle(time.Second, &warm.handles, &warm.pgConns)
				closedBefore := sqlDB.Stats().MaxIdleClosed
				var w sessionWatch
				for range cycles {
					if err := k.run(ctx, db, key, &w); err != nil {
						t.Fatal(err)
					}
				}
				// Within milliseconds as a rule; on MariaDB one handle now
				// and then stayed for seconds (see TestMemoryClosedPool).
				after := settle(10*time.Second, &w.handles, &w.pgConns)
				physical := sqlDB.Stats().MaxIdleClosed - closedBefore
				grown := float64(after) - float64(before)
				t.Logf("%s, %s: %d physical connections, heap after GC %+.1f KB, %.0f bytes retained per connection; collected: %d of %d handles, %d of %d PgConns",
					b.Name, k.name, physical, grown/1024, grown/float64(physical),
					w.handles.collected.Load(), w.handles.watched.Load(), w.pgConns.collected.Load(), w.pgConns.watched.Load())
				if physical < int64(cycles) {
					t.Errorf("%d physical connections for %d cycles: the pool kept some", physical, cycles)
				}
				for _, c := range []struct {
					what string
					n    *collectCounter
				}{{"pinned sessions' handles", &w.handles}, {"pgx PgConns", &w.pgConns}} {
					if n, col := c.n.watched.Load(), c.n.collected.Load(); col != n {
						t.Errorf("%d of %d %s still in memory after their connections closed", n-col, n, c.what)
					}
				}
			})
		}
	})
}

// A pool that was used and closed is collected, with its *gorm.DB, and no
// goroutine of dlock's outlives it: dlock's registries and timers hold
// pools and sessions weakly. On PostgreSQL the pool used to stay for good
// (pgx's kept context led from dlock's session state back to it), on
// MariaDB for about ReleaseTimeout (the overrun guard's pending timer).
func TestMemoryClosedPool(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		before := goleak.IgnoreCurrent()
		var pools, dbs collectCounter
		useAndClose(t, b, &pools, &dbs)
		start := time.Now()
		// Within 100 ms as a rule; MariaDB's pool now and then took
		// 0.7-4.3 s (after other tests, with no goroutine left but the
		// test's): bounded, and not yet explained.
		settle(10*time.Second, &pools, &dbs)
		t.Logf("%s: *sql.DB %d of %d and *gorm.DB %d of %d collected %v after Close",
			b.Name, pools.collected.Load(), pools.watched.Load(), dbs.collected.Load(), dbs.watched.Load(), time.Since(start).Round(time.Millisecond))
		if pools.collected.Load() != 1 || dbs.collected.Load() != 1 {
			t.Errorf("the closed pool was not collected")
		}
		if err := goleak.Find(before); err != nil {
			t.Errorf("goroutines outlived the closed pool: %v", err)
		}
	})
}

// useAndClose opens a pool with dlock, takes locks on it in the ways an
// application does (a hold long enough for a loss check, a busy try, an
// Xact lock on PostgreSQL), closes it and drops it.
func useAndClose(t *testing.T, b *testDB, pools, dbs *collectCounter) {
	t.Helper()
	db, err := gorm.Open(b.Dialector(), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Use(dlock.Plugin{}); err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	key := b.UniqueKey(t)
	ctx := context.Background()
	err = dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
		// Held past CheckInterval: the loss check runs.
		time.Sleep(600 * time.Millisecond)
		// A second session finds the key busy.
		err := dlock.WithLock(context.Background(), db, key, func(*gorm.DB) error { return nil }, dlock.NoWait())
		if !errors.Is(err, dlock.ErrNotAcquired) {
			return fmt.Errorf("nested NoWait on a busy key: %w", err)
		}
		return tx.Exec("SELECT 1").Error
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Dialect == dialectPostgres {
		if err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error { return tx.Exec("SELECT 1").Error }, dlock.Xact()); err != nil {
			t.Fatal(err)
		}
	}
	if err := sqlDB.Close(); err != nil {
		t.Fatal(err)
	}
	watchCollect(pools, sqlDB)
	watchCollect(dbs, db)
}
