package tests

// Promises a user trial of v0.1 found broken (issue #9): each test here
// failed on v0.1.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// Held never answers (true, err): when its statement outlives its bound
// and dlock ends the session, Held returns false with ErrLockLost, the
// Lock is no longer acquired, and another session can take the lock.
func TestHeldNeverTrueWithError(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{ReleaseTimeout: time.Microsecond})
		key := b.UniqueKey(t)
		// The timer that ends an overdue statement may fire only after a
		// fast statement has returned; try a few sessions until one is
		// ended.
		for attempt := 0; ; attempt++ {
			if attempt == 20 {
				t.Fatalf("no Held statement outlived a 1µs bound in 20 tries")
			}
			tx, _ := pin(t, db)
			l, err := dlock.New(tx, key)
			if err != nil {
				t.Fatalf("New() = %v", err)
			}
			// A ctx deadline lengthens the bound of the Acquire's statements.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			ok, err := l.Acquire(ctx)
			cancel()
			if !ok || err != nil {
				t.Fatalf("Acquire() = %v, %v; want true, nil", ok, err)
			}
			held, err := l.Held(context.Background())
			if held && err != nil {
				t.Fatalf("Held() = true, %v; want false with any error", err)
			}
			if err == nil {
				if !held {
					t.Fatalf("Held() = false, nil on a live session holding the lock")
				}
				if err := l.Release(context.Background()); err != nil && !errors.Is(err, dlock.ErrLockLost) {
					t.Fatalf("Release() = %v", err)
				}
				continue
			}
			if !errors.Is(err, dlock.ErrLockLost) {
				t.Fatalf("Held() = false, %v; want ErrLockLost", err)
			}
			if l.Acquired() {
				t.Fatalf("Acquired() = true after Held() = %v", err)
			}
			other := newLock(t, b.openLocked(t, dlock.Plugin{}), key)
			ok, err = other.Acquire(context.Background(), dlock.Timeout(5*time.Second))
			if !ok || err != nil {
				t.Fatalf("another session: Acquire() = %v, %v; want true, nil", ok, err)
			}
			return
		}
	})
}

// holdOnlyConn checks out the only connection of db's pool (SetMaxOpenConns(1))
// and gives it back when the test ends, or after giveBack if not zero.
func holdOnlyConn(t *testing.T, db *gorm.DB, giveBack time.Duration) {
	t.Helper()
	sqlDB, _ := db.DB()
	sqlDB.SetMaxOpenConns(1)
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatalf("Conn() = %v", err)
	}
	if giveBack > 0 {
		timer := time.AfterFunc(giveBack, func() { _ = conn.Close() })
		t.Cleanup(func() { timer.Stop() })
	}
	t.Cleanup(func() { _ = conn.Close() })
}

// With no free session in the pool, WithLock keeps its error contract: a
// ctx that ends gives an error matching ErrNotAcquired and the ctx error,
// and a Timeout bounds the wait for a session too.
func TestWithLockWithoutFreeSession(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		holdOnlyConn(t, db, 6*time.Second)
		key := b.UniqueKey(t)
		called := false
		fn := func(*gorm.DB) error { called = true; return nil }

		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := dlock.WithLock(ctx, db, key, fn)
		if called || !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WithLock(ctx deadline) = %v (fn called: %v); want ErrNotAcquired and DeadlineExceeded", err, called)
		}

		start := time.Now()
		err = dlock.WithLock(context.Background(), db, key, fn, dlock.Timeout(500*time.Millisecond))
		elapsed := time.Since(start)
		if called || !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("WithLock(Timeout) = %v (fn called: %v); want ErrNotAcquired", err, called)
		}
		if !strings.Contains(err.Error(), "within 500ms") {
			t.Fatalf("WithLock(Timeout) = %q; want it to say the Timeout ran out (within 500ms)", err)
		}
		// The session comes back after 6 s; the Timeout must end the wait first.
		if elapsed > 3*time.Second {
			t.Fatalf("WithLock(Timeout(500ms)) returned after %v", elapsed)
		}
	})
}

// Nested WithLock and Connection along fn's context run on the outer
// session: no second pooled session (the pool has one), no waiting for
// itself on the same key, other keys stack, and the outer lock stays held
// after a nested release of the same key.
func TestNestedAlongContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(1)
		key, other := b.UniqueKey(t), b.UniqueKey(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var probe *dlock.Lock
		err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			outer := b.sessionOfTx(t, tx)
			inner := tx.Statement.Context
			probe = newLockOn(t, tx, key)
			err := dlock.WithLock(inner, db, key, func(tx *gorm.DB) error {
				if id := b.sessionOfTx(t, tx); id != outer {
					t.Errorf("nested WithLock ran on session %d, want the outer %d", id, outer)
				}
				return dlock.WithLock(tx.Statement.Context, db, other, func(tx *gorm.DB) error {
					return dlock.Connection(tx.Statement.Context, db, func(tx *gorm.DB) error {
						if id := b.sessionOfTx(t, tx); id != outer {
							t.Errorf("nested Connection ran on session %d, want the outer %d", id, outer)
						}
						return nil
					})
				})
			})
			if err != nil {
				return err
			}
			b.wantHeldBy(t, probe, outer)
			return nil
		})
		if err != nil {
			t.Fatalf("nested WithLock() = %v, want nil", err)
		}
		b.wantFree(t, probe)
		b.wantFree(t, newLock(t, b.openLocked(t, dlock.Plugin{}), other))
	})
}

// Xact locks nest along the context in a savepoint of the outer
// transaction; a session lock there is refused, never a wait for itself.
func TestNestedXactAlongContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Dialect != dialectPostgres {
			t.Skip("transaction-level locks are PostgreSQL's")
		}
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(1)
		key := b.UniqueKey(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			err := dlock.WithLock(tx.Statement.Context, db, key, func(*gorm.DB) error { return nil }, dlock.Xact())
			if err != nil {
				return err
			}
			err = dlock.WithLock(tx.Statement.Context, db, key, func(*gorm.DB) error { return nil })
			if !errors.Is(err, dlock.ErrNotPinned) {
				t.Errorf("session WithLock inside an Xact WithLock = %v, want ErrNotPinned", err)
			}
			return nil
		}, dlock.Xact())
		if err != nil {
			t.Fatalf("nested Xact WithLock() = %v, want nil", err)
		}
		b.wantFree(t, newLock(t, b.openLocked(t, dlock.Plugin{}), key))
	})
}

// A lock left held by a plain db.Connection goes back to the pool with its
// session. dlock releases it the next time it uses that session, and the
// old Lock learns what happened (ErrLeaked), both before and after that.
func TestLockForgottenInPlainConnection(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(1) // every pin gets the same physical session
		key := b.UniqueKey(t)
		ctx := context.Background()
		forget := func() (*dlock.Lock, int64) {
			t.Helper()
			var l *dlock.Lock
			var id int64
			err := db.Connection(func(tx *gorm.DB) error {
				l = newLockOn(t, tx, key)
				id = b.sessionOfTx(t, tx)
				mustAcquire(t, l)
				return nil // forgot to release
			})
			if err != nil {
				t.Fatalf("db.Connection() = %v", err)
			}
			return l, id
		}

		// Told before the session is used again: the lock is still held.
		old, id := forget()
		err := old.Release(ctx)
		if !errors.Is(err, dlock.ErrLeaked) || !strings.Contains(err.Error(), "went back to the pool") {
			t.Fatalf("Release() after db.Connection returned = %v; want ErrLeaked saying the session went back to the pool", err)
		}
		if old.Acquired() {
			t.Fatalf("Acquired() = true after its session went back to the pool")
		}
		b.wantHeldBy(t, old, id)
		// The next user of the session takes the same key and releases it:
		// no hold may be left behind on the idle session.
		err = dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			if got := b.sessionOfTx(t, tx); got != id {
				t.Fatalf("the pool of one gave session %d, want %d", got, id)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("WithLock() on the reused session = %v", err)
		}
		b.wantFree(t, old)

		// Told after the session was used again: dlock released the lock.
		old, _ = forget()
		if err := dlock.Connection(ctx, db, func(tx *gorm.DB) error {
			_, err := newLockOn(t, tx, b.UniqueKey(t)).Held(ctx)
			return err
		}); err != nil {
			t.Fatalf("Connection() on the reused session = %v", err)
		}
		b.wantFree(t, old)
		if old.Acquired() {
			t.Fatalf("Acquired() = true after dlock released the leaked lock")
		}
		err = old.Close(ctx)
		if !errors.Is(err, dlock.ErrLeaked) || !strings.Contains(err.Error(), "released") {
			t.Fatalf("Close() after the leak was released = %v; want ErrLeaked saying dlock released it", err)
		}
		if err := old.Close(ctx); err != nil {
			t.Fatalf("second Close() = %v, want nil", err)
		}
	})
}

// Error texts are one line, keys in them are cut and readable, and a
// Timeout that ran out says so.
func TestErrorTexts(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		ctx := context.Background()
		noop := func(*gorm.DB) error { return nil }
		long := strings.Repeat("k", 10000) + b.UniqueKey(t)
		binary := []byte{0xff, 0xfe, 'k'}
		binary = append(binary, b.UniqueKey(t)...)
		for _, key := range []any{long, binary} {
			holder := newLock(t, db, key)
			mustAcquire(t, holder)
			err := dlock.WithLock(ctx, db, key, noop, dlock.NoWait())
			if !errors.Is(err, dlock.ErrNotAcquired) {
				t.Fatalf("WithLock(busy) = %v, want ErrNotAcquired", err)
			}
			msg := err.Error()
			if len(msg) > 200 || strings.Contains(msg, "\n") {
				t.Fatalf("WithLock(busy) error is %d characters (newline: %v): %q...", len(msg), strings.Contains(msg, "\n"), msg[:120])
			}
			if _, ok := key.([]byte); ok && !strings.Contains(msg, `"\xff\xfek`) {
				t.Fatalf("WithLock(busy) = %q; want the []byte key quoted", msg)
			}
			err = dlock.WithLock(ctx, db, key, noop, dlock.Timeout(200*time.Millisecond))
			if !errors.Is(err, dlock.ErrNotAcquired) || !strings.Contains(err.Error(), "within 200ms") {
				t.Fatalf("WithLock(Timeout) = %v; want ErrNotAcquired saying within 200ms", err)
			}
			if err := holder.Release(ctx); err != nil {
				t.Fatalf("Release() = %v", err)
			}
		}

		// A cancelled wait: both sentinels, one line.
		key := b.UniqueKey(t)
		holder := newLock(t, db, key)
		mustAcquire(t, holder)
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(200*time.Millisecond, cancel)
		err := dlock.WithLock(cctx, db, key, noop)
		if !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("WithLock(cancelled) = %q; want one line matching ErrNotAcquired and context.Canceled", err)
		}
		// fn's error and a release error joined: one line, both matched.
		errFn := errors.New("fn failed")
		err = dlock.WithLock(ctx, db, b.UniqueKey(t), func(tx *gorm.DB) error {
			b.Kill(t, b.sessionOfTx(t, tx))
			return errFn
		})
		if !errors.Is(err, errFn) || !errors.Is(err, dlock.ErrLockLost) || strings.Contains(err.Error(), "\n") {
			t.Fatalf("WithLock(fn fails, session killed) = %q; want one line matching fn's error and ErrLockLost", err)
		}
	})
}

// newLockOn makes a Lock on tx's session.
func newLockOn(t testing.TB, tx *gorm.DB, key any) *dlock.Lock {
	t.Helper()
	l, err := dlock.New(tx, key)
	if err != nil {
		t.Fatalf("New(%v) = %v", key, err)
	}
	return l
}
