package tests

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// The README's caveat, measured on both drivers: a ctx that ends while fn
// runs a statement closes the session (pgx and go-sql-driver/mysql both
// close the connection of a statement whose context ends), so the server
// frees the lock while fn still runs; the statement fails with the
// context's error, fn's later statements fail, and WithLock reports the
// loss. Statements given a context the caller cannot cancel
// (context.WithoutCancel plus their own timeout) keep the session, and
// the lock, until fn returns.
func TestFnContextEndsDuringStatement(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxIdleConns(4)
		sleep := "SELECT SLEEP(0.6)"
		if b.Dialect == dialectPostgres {
			sleep = "SELECT pg_sleep(0.6)"
		}
		// freeAt polls the key from another session until it is free or
		// fn has returned; it reports how long after start it was free.
		freeAt := func(key string, start time.Time, fnDone *atomic.Bool) time.Duration {
			for !fnDone.Load() {
				err := dlock.WithLock(context.Background(), db, key, func(*gorm.DB) error { return nil }, dlock.NoWait())
				if err == nil {
					return time.Since(start)
				}
				if !errors.Is(err, dlock.ErrNotAcquired) {
					t.Errorf("probe: %v", err)
					return 0
				}
				time.Sleep(20 * time.Millisecond)
			}
			return 0
		}
		for _, shielded := range []bool{false, true} {
			name := "cancellable"
			if shielded {
				name = "WithoutCancel"
			}
			t.Run(name, func(t *testing.T) {
				key := b.UniqueKey(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var fnDone atomic.Bool
				var stmtErr, nextErr error
				var fnEnd, free time.Duration
				start := time.Now()
				probed := make(chan struct{})
				err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
					defer func() { fnEnd = time.Since(start); fnDone.Store(true); <-probed }()
					go func() { free = freeAt(key, start, &fnDone); close(probed) }()
					time.AfterFunc(300*time.Millisecond, cancel)
					stmt := tx
					if shielded {
						sctx, scancel := context.WithTimeout(context.WithoutCancel(tx.Statement.Context), 5*time.Second)
						defer scancel()
						stmt = tx.WithContext(sctx)
					}
					stmtErr = stmt.Exec(sleep).Error
					nextErr = stmt.Exec("SELECT 1").Error
					time.Sleep(time.Until(start.Add(1200 * time.Millisecond))) // fn goes on after its statements
					return nil
				})
				t.Logf("%s, %s: cancel at 300 ms into %q; the statement returned %v; the next one %v; "+
					"the lock was free for others at %v (0: not before fn returned); fn returned at %v; WithLock = %v",
					b.Name, name, sleep, stmtErr, nextErr, free.Round(time.Millisecond), fnEnd.Round(time.Millisecond), err)
				if shielded {
					if stmtErr != nil || nextErr != nil || free != 0 {
						t.Errorf("statements with a context the caller cannot cancel: %v, %v, lock free at %v; want both to succeed and the lock held until fn returned",
							stmtErr, nextErr, free)
					}
					return
				}
				if !errors.Is(stmtErr, context.Canceled) {
					t.Errorf("the statement running when ctx ended returned %v, want context.Canceled", stmtErr)
				}
				if nextErr == nil {
					t.Errorf("the next statement on the closed session succeeded")
				}
				if free == 0 || free >= fnEnd {
					t.Errorf("the lock was free at %v, fn returned at %v: want it free while fn still ran", free, fnEnd)
				}
				if !errors.Is(err, dlock.ErrLockLost) {
					t.Errorf("WithLock = %v, want ErrLockLost", err)
				} else {
					wantToldOnce(t, err, "session ended")
				}
			})
		}
	})
}
