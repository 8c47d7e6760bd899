package tests

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
)

func TestTwoSessionsContend(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		a, c := newLock(t, db, key), newLock(t, db, key)
		ctx := context.Background()

		mustAcquire(t, a)
		b.wantHeldBy(t, a, b.sessionOf(t, a))
		if ok, err := c.Acquire(ctx, dlock.NoWait()); ok || err != nil {
			t.Fatalf("second session Acquire(NoWait) = %v, %v; want false, nil", ok, err)
		}
		if c.Acquired() {
			t.Fatalf("Acquired() = true after a busy NoWait")
		}
		if err := a.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		b.wantFree(t, a)
		mustAcquire(t, c, dlock.NoWait())
		b.wantHeldBy(t, c, b.sessionOf(t, c))
		if err := c.Close(ctx); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		b.wantFree(t, c)
	})
}

func TestBusyReturnsFalseNil(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		holder := newLock(t, db, key)
		mustAcquire(t, holder)
		tests := []struct {
			name string
			opt  dlock.Option
			min  time.Duration
		}{
			{"NoWait", dlock.NoWait(), 0},
			{"Timeout(300ms)", dlock.Timeout(300 * time.Millisecond), 300 * time.Millisecond},
			{"Timeout(1500ms)", dlock.Timeout(1500 * time.Millisecond), 1500 * time.Millisecond},
			{"Timeout(0)", dlock.Timeout(0), 0},
			{"Timeout(-1s)", dlock.Timeout(-time.Second), 0},
		}
		waiter := newLock(t, db, key)
		for _, tt := range tests {
			start := time.Now()
			ok, err := waiter.Acquire(context.Background(), tt.opt)
			if ok || err != nil {
				t.Fatalf("%s: Acquire() = %v, %v; want false, nil", tt.name, ok, err)
			}
			waited := time.Since(start)
			if waited < tt.min-10*time.Millisecond {
				t.Fatalf("%s: returned after %v, before the timeout", tt.name, waited)
			}
			// Timeout(d) waits at most d, end to end: on MySQL, which
			// takes whole seconds, 1500ms sends 2 and dlock cuts the wait.
			within(t, tt.name, waited, tt.min, "wait at most d")
		}
		// The default wait of New applies when Acquire has none.
		l, err := dlock.New(waiter.DB(), key, dlock.NoWait())
		if err != nil {
			t.Fatalf("New(NoWait) = %v", err)
		}
		if ok, err := l.Acquire(context.Background()); ok || err != nil {
			t.Fatalf("Acquire() with New's NoWait = %v, %v; want false, nil", ok, err)
		}
		b.wantHeldBy(t, holder, b.sessionOf(t, holder))
	})
}

func TestWaiterWakesOnRelease(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []dlock.Option
	}{{"blocking", nil}, {"Timeout", []dlock.Option{dlock.Timeout(30 * time.Second)}}} {
		t.Run(tc.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *testDB) {
				db := b.openLocked(t, dlock.Plugin{})
				key := b.UniqueKey(t)
				holder, waiter := newLock(t, db, key), newLock(t, db, key)
				mustAcquire(t, holder)
				type result struct {
					ok  bool
					err error
					at  time.Time
				}
				done := make(chan result, 1)
				go func() {
					ok, err := waiter.Acquire(context.Background(), tc.opts...)
					done <- result{ok, err, time.Now()}
				}()
				waitUntilWaiting(t, b, waiter)
				select {
				case r := <-done:
					t.Fatalf("waiter returned %v, %v while the lock was held", r.ok, r.err)
				default:
				}
				if err := holder.Release(context.Background()); err != nil {
					t.Fatalf("Release() = %v", err)
				}
				released := time.Now()
				r := <-done
				if !r.ok || r.err != nil {
					t.Fatalf("waiter Acquire() = %v, %v; want true, nil", r.ok, r.err)
				}
				t.Logf("hand-off took %v", r.at.Sub(released))
				b.wantHeldBy(t, waiter, b.sessionOf(t, waiter))
			})
		})
	}
}

// waitUntilWaiting returns once a session waits for l's lock on the
// server: on MariaDB/MySQL a GET_LOCK in "User lock" state whose statement
// names l's lock (dlock sends names as hex literals, X'...'), on PostgreSQL an ungranted advisory lock on l's key. Any
// other waiter on the shared server does not count.
func waitUntilWaiting(t testing.TB, b *testDB, l *dlock.Lock) {
	t.Helper()
	var q string
	var args []any
	switch k := l.DBKey().(type) {
	case string:
		q = `SELECT COUNT(*) FROM information_schema.PROCESSLIST
		 WHERE STATE = 'User lock' AND INFO LIKE '%GET_LOCK%'
		   AND INSTR(LOWER(INFO), LOWER(CONCAT('X''', HEX(?), ''''))) > 0`
		args = []any{k}
	case int64:
		u := uint64(k)
		q = `SELECT COUNT(*) FROM pg_locks
		 WHERE locktype = 'advisory' AND NOT granted
		   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		   AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1`
		args = []any{int64(uint32(u >> 32)), int64(uint32(u))}
	default:
		t.Fatalf("DBKey() = %T", l.DBKey())
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := b.observer(t).QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no session started waiting for %v (%v)", l.Key(), l.DBKey())
}

func TestDoubleAcquireAndUnheldRelease(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		l := newLock(t, db, b.UniqueKey(t))
		ctx := context.Background()
		if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
			t.Fatalf("Release() before Acquire = %v, want ErrNotHeld", err)
		}
		if err := l.Close(ctx); err != nil {
			t.Fatalf("Close() before Acquire = %v, want nil", err)
		}
		mustAcquire(t, l)
		if ok, err := l.Acquire(ctx); ok || !errors.Is(err, dlock.ErrAlreadyAcquired) {
			t.Fatalf("second Acquire() = %v, %v; want false, ErrAlreadyAcquired", ok, err)
		}
		if !l.Acquired() {
			t.Fatalf("Acquired() = false after a refused second Acquire")
		}
		b.wantHeldBy(t, l, b.sessionOf(t, l))
		if err := l.Close(ctx); err != nil {
			t.Fatalf("Close() = %v", err)
		}
		if err := l.Close(ctx); err != nil {
			t.Fatalf("second Close() = %v", err)
		}
		if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
			t.Fatalf("Release() after Close = %v, want ErrNotHeld", err)
		}
		b.wantFree(t, l)
		// The seed's cycle: acquire again after close.
		mustAcquire(t, l)
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		var nilLock *dlock.Lock
		if err := nilLock.Close(ctx); err != nil {
			t.Fatalf("nil Close() = %v", err)
		}
		if nilLock.Acquired() {
			t.Fatalf("nil Acquired() = true")
		}
		if err := nilLock.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
			t.Fatalf("nil Release() = %v, want ErrNotHeld", err)
		}
		if ok, err := nilLock.Acquire(ctx); ok || err == nil {
			t.Fatalf("nil Acquire() = %v, %v; want an error", ok, err)
		}
	})
}
