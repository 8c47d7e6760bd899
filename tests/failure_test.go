package tests

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// A cancelled waiting Acquire returns promptly, leaves no hold, and leaves
// the session usable with its other locks still held.
func TestCancelWaitingAcquireKeepsSession(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []dlock.Option
	}{{"blocking", nil}, {"Timeout", []dlock.Option{dlock.Timeout(time.Minute)}}} {
		t.Run(tc.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *testDB) {
				db := b.openLocked(t, dlock.Plugin{})
				busyKey, ownKey := b.UniqueKey(t), b.UniqueKey(t)
				other := newLock(t, db, busyKey)
				mustAcquire(t, other)

				tx, conn := pin(t, db)
				own, err := dlock.New(tx, ownKey)
				if err != nil {
					t.Fatalf("New() = %v", err)
				}
				mustAcquire(t, own)
				waiter, err := dlock.New(tx, busyKey)
				if err != nil {
					t.Fatalf("New() = %v", err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				type result struct {
					ok  bool
					err error
				}
				done := make(chan result, 1)
				go func() {
					ok, err := waiter.Acquire(ctx, tc.opts...)
					done <- result{ok, err}
				}()
				waitUntilWaiting(t, b, waiter)
				cancel()
				cancelled := time.Now()
				var r result
				select {
				case r = <-done:
				case <-time.After(5 * time.Second):
					t.Fatalf("Acquire did not return within 5s of the cancel")
				}
				within(t, "Acquire's return after the cancel", time.Since(cancelled), promptly, `"promptly"`)
				if r.ok || !errors.Is(r.err, dlock.ErrNotAcquired) || !errors.Is(r.err, context.Canceled) {
					t.Fatalf("cancelled Acquire() = %v, %v; want false, ErrNotAcquired+Canceled", r.ok, r.err)
				}
				if errors.Is(r.err, dlock.ErrLockLost) {
					t.Fatalf("cancelled Acquire() = %v; the session was discarded", r.err)
				}
				if waiter.Acquired() {
					t.Fatalf("Acquired() = true after a cancelled Acquire")
				}
				id := b.SessionID(t, conn) // the session still answers
				b.wantHeldBy(t, own, id)
				b.wantHeldBy(t, other, b.sessionOf(t, other))
				if held, err := own.Held(context.Background()); !held || err != nil {
					t.Fatalf("own.Held() = %v, %v; want true, nil", held, err)
				}
				// The cancelled Lock works afterwards.
				if err := other.Release(context.Background()); err != nil {
					t.Fatalf("Release() = %v", err)
				}
				mustAcquire(t, waiter, dlock.NoWait())
				b.wantHeldBy(t, waiter, id)
			})
		})
	}
}

// A ctx deadline that comes before the lock returns ErrNotAcquired and
// DeadlineExceeded; a Timeout returns (false, nil).
func TestContextDeadline(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		mustAcquire(t, newLock(t, db, key))
		waiter := newLock(t, db, key)
		const deadline = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		ok, err := waiter.Acquire(ctx, dlock.Timeout(time.Minute))
		took := time.Since(start)
		if took < deadline-10*time.Millisecond {
			t.Fatalf("Acquire() returned after %v, before the ctx deadline %v", took, deadline)
		}
		within(t, "Acquire with a 300ms ctx deadline", took, deadline+promptly, `"promptly" once ctx ends`)
		if ok || !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire() = %v, %v; want false, ErrNotAcquired+DeadlineExceeded", ok, err)
		}
		if errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Acquire() = %v; session lost", err)
		}
		if _, err := waiter.Held(context.Background()); err != nil {
			t.Fatalf("Held() after deadline = %v", err)
		}
		// A done ctx sends nothing and fails at once.
		ok, err = waiter.Acquire(ctx)
		if ok || !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire(done ctx) = %v, %v", ok, err)
		}
	})
}

// Release with a cancelled context still releases.
func TestReleaseWithCancelledContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		l := newLock(t, db, b.UniqueKey(t))
		mustAcquire(t, l)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release(cancelled ctx) = %v", err)
		}
		b.wantFree(t, l)
	})
}

// A killed session: Held is false with ErrLockLost, Release returns
// ErrLockLost, and another session gets the lock.
func TestKilledSession(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		l := newLock(t, db, key)
		mustAcquire(t, l)
		b.Kill(t, b.sessionOf(t, l))
		held, err := l.Held(context.Background())
		if held || !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Held() after kill = %v, %v; want false, ErrLockLost", held, err)
		}
		if l.Acquired() {
			t.Fatalf("Acquired() = true after the session was killed")
		}
		if err := l.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() after kill = %v, want ErrLockLost", err)
		}
		other := newLock(t, db, key)
		mustAcquire(t, other, dlock.Timeout(5*time.Second))

		// Killed without asking Held first: Release reports the loss.
		l2 := newLock(t, db, b.UniqueKey(t))
		mustAcquire(t, l2)
		b.Kill(t, b.sessionOf(t, l2))
		if err := l2.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() after kill = %v, want ErrLockLost", err)
		}
		if l2.Acquired() {
			t.Fatalf("Acquired() = true after a failed release")
		}
	})
}

// Locks dropped by user SQL on a live session are reported as lost.
func TestDroppedBehindOurBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		tx, _ := pin(t, db)
		l, err := dlock.New(tx, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		mustAcquire(t, l)
		drop := "SELECT RELEASE_ALL_LOCKS()"
		if b.Dialect == dialectPostgres {
			drop = "SELECT pg_advisory_unlock_all()"
		}
		if err := tx.Exec(drop).Error; err != nil {
			t.Fatalf("%s: %v", drop, err)
		}
		held, err := l.Held(context.Background())
		if held || err != nil {
			t.Fatalf("Held() = %v, %v; want false, nil", held, err)
		}
		if l.Acquired() {
			t.Fatalf("Acquired() = true after Held found the lock gone")
		}
		if err := l.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() = %v, want ErrLockLost", err)
		}
		// Without Held first, Release finds out.
		mustAcquire(t, l)
		if err := tx.Exec(drop).Error; err != nil {
			t.Fatalf("%s: %v", drop, err)
		}
		if err := l.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() = %v, want ErrLockLost", err)
		}
		if l.Acquired() {
			t.Fatalf("Acquired() = true after ErrLockLost")
		}
	})
}

func TestWithLock(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		ctx := context.Background()
		var seen *gorm.DB
		err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			seen = tx
			l, err := dlock.New(tx, key)
			if err != nil {
				return err
			}
			if held, err := l.Held(ctx); !held || err != nil {
				t.Errorf("inside WithLock Held() = %v, %v; want true, nil", held, err)
			}
			return nil
		})
		if err != nil || seen == nil {
			t.Fatalf("WithLock() = %v (fn ran: %v)", err, seen != nil)
		}
		probe := newLock(t, db, key)
		b.wantFree(t, probe)

		errFn := errors.New("fn failed")
		if err := dlock.WithLock(ctx, db, key, func(*gorm.DB) error { return errFn }); !errors.Is(err, errFn) {
			t.Fatalf("WithLock() = %v, want fn's error", err)
		}
		b.wantFree(t, probe)

		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Fatalf("recover() = %v, want boom", r)
				}
			}()
			_ = dlock.WithLock(ctx, db, key, func(*gorm.DB) error { panic("boom") })
		}()
		b.wantFree(t, probe)

		// Busy: fn is not called and the error matches ErrNotAcquired.
		mustAcquire(t, probe)
		called := false
		err = dlock.WithLock(ctx, db, key, func(*gorm.DB) error { called = true; return nil }, dlock.NoWait())
		if called || !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("busy WithLock() = %v (fn called: %v); want ErrNotAcquired", err, called)
		}
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		err = dlock.WithLock(cctx, db, key, func(*gorm.DB) error { called = true; return nil })
		if called || !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WithLock(deadline) = %v (fn called: %v)", err, called)
		}
		if err := dlock.WithLock(ctx, db, key, func(*gorm.DB) error { return nil }, dlock.Shared(), dlock.NoWait(), dlock.Timeout(time.Second)); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Fatalf("WithLock(conflicting options) = %v, want ErrInvalidOption", err)
		}
	})
}

func TestConnectionReportsLeak(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		var leaked *dlock.Lock
		err := dlock.Connection(context.Background(), db, func(tx *gorm.DB) error {
			l, err := dlock.New(tx, key)
			if err != nil {
				return err
			}
			if ok, err := l.Acquire(context.Background()); !ok || err != nil {
				return errors.Join(errors.New("not acquired"), err)
			}
			leaked = l
			return nil // forgot to release
		})
		if !errors.Is(err, dlock.ErrLeaked) || !strings.Contains(err.Error(), key) {
			t.Fatalf("Connection() = %v, want ErrLeaked naming %q", err, key)
		}
		if leaked == nil || leaked.Acquired() {
			t.Fatalf("the leaked Lock still says acquired")
		}
		probe := newLock(t, db, key)
		b.wantFree(t, probe)

		// A released lock is no leak.
		err = dlock.Connection(context.Background(), db, func(tx *gorm.DB) error {
			l, err := dlock.New(tx, key)
			if err != nil {
				return err
			}
			if ok, err := l.Acquire(context.Background()); !ok || err != nil {
				return errors.Join(errors.New("not acquired"), err)
			}
			return l.Release(context.Background())
		})
		if err != nil {
			t.Fatalf("Connection() = %v, want nil", err)
		}
	})
}

// WithLock catches a lock fn made on its session and forgot.
func TestWithLockCatchesLeak(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		inner := b.UniqueKey(t)
		err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
			l, err := dlock.New(tx, inner)
			if err != nil {
				return err
			}
			_, err = l.Acquire(context.Background())
			return err
		})
		if !errors.Is(err, dlock.ErrLeaked) || !strings.Contains(err.Error(), inner) {
			t.Fatalf("WithLock() = %v, want ErrLeaked naming %q", err, inner)
		}
		b.wantFree(t, newLock(t, db, inner))
	})
}
