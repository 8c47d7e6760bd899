package tests

// Promises a user trial of v0.1 found broken (issue #9): each test here
// failed on v0.1.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"
)

// Held never answers (true, err): when its statement outlives its bound
// and dlock ends the session, Held returns false with ErrLockLost, the
// Lock is no longer acquired, and another session can take the lock.
func TestHeldNeverTrueWithError(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
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
		// The session comes back after 6 s; the Timeout must end the wait
		// first: it bounds the whole acquisition, the wait for a pooled
		// session included.
		within(t, "WithLock(Timeout(500ms)) without a free session", elapsed, 500*time.Millisecond, "a Timeout bounds the whole acquisition")
	})
}

// Nested calls along fn's context: for the key fn holds, ErrReentrant at
// once (WithLock and Acquire, nothing sent, the outer hold untouched); for
// another key, a session of its own, which with a one-session pool means
// ErrNotAcquired within the Timeout, never a wait for itself.
func TestNestedAlongContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		sqlDB, _ := db.DB()
		key, other := b.UniqueKey(t), b.UniqueKey(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var probe *dlock.Lock
		err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			outer := b.sessionOfTx(t, tx)
			inner := tx.Statement.Context
			probe = newLockOn(t, tx, key)
			start := time.Now()
			called := false
			err := dlock.WithLock(inner, db, key, func(*gorm.DB) error { called = true; return nil })
			if called || !errors.Is(err, dlock.ErrReentrant) || !errors.Is(err, dlock.ErrNotAcquired) {
				t.Errorf("nested WithLock(same key) = %v (fn called: %v), want ErrReentrant and ErrNotAcquired", err, called)
			}
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("nested WithLock(same key) took %v, want at once", d)
			}
			// The explicit form along the same ctx, on another session.
			err = dlock.Connection(inner, db, func(tx2 *gorm.DB) error {
				if id := b.sessionOfTx(t, tx2); id == outer {
					t.Errorf("nested Connection ran on the outer session %d, want its own", id)
				}
				l := newLockOn(t, tx2, key)
				ok, err := l.Acquire(inner, dlock.NoWait())
				if ok || !errors.Is(err, dlock.ErrReentrant) {
					t.Errorf("Acquire along fn's ctx = %v, %v; want false, ErrReentrant", ok, err)
				}
				return nil
			})
			if err != nil {
				t.Errorf("nested Connection() = %v", err)
			}
			// Another key, on its own session.
			err = dlock.WithLock(inner, db, other, func(tx *gorm.DB) error {
				if id := b.sessionOfTx(t, tx); id == outer {
					t.Errorf("nested WithLock(other) ran on the outer session %d, want its own", id)
				}
				return nil
			})
			if err != nil {
				t.Errorf("nested WithLock(other) = %v, want nil", err)
			}
			b.wantHeldBy(t, probe, outer)
			return nil
		})
		if err != nil {
			t.Fatalf("WithLock() = %v, want nil", err)
		}
		// With no free session: ErrNotAcquired within the Timeout.
		sqlDB.SetMaxOpenConns(1)
		err = dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			start := time.Now()
			err := dlock.WithLock(tx.Statement.Context, db, other, func(*gorm.DB) error { return nil }, dlock.Timeout(300*time.Millisecond))
			if !errors.Is(err, dlock.ErrNotAcquired) || errors.Is(err, dlock.ErrReentrant) {
				t.Errorf("nested WithLock(other) with no free session = %v, want ErrNotAcquired", err)
			}
			within(t, "nested WithLock(other, Timeout(300ms)) with no free session", time.Since(start), 300*time.Millisecond, "ErrNotAcquired within the Timeout")
			return nil
		})
		if err != nil {
			t.Fatalf("WithLock() = %v, want nil", err)
		}
		b.wantFree(t, probe)
		b.wantFree(t, newLock(t, b.openLocked(t, dlock.Plugin{}), other))
	})
}

// Goroutines that fn starts with its ctx never share a hold: four of them
// call WithLock for one key (with fn's ctx and with the outer key), and at
// most one body runs at a time; none releases or reports another's hold.
func TestGoroutinesNeverShareAHold(t *testing.T) {
	t.Parallel() // distinct keys, no duration measured
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		outerKey, inner := b.UniqueKey(t), b.UniqueKey(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var inside, most, ran, reentrant atomic.Int32
		body := func(*gorm.DB) error {
			n := inside.Add(1)
			defer inside.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			ran.Add(1)
			time.Sleep(150 * time.Millisecond)
			return nil
		}
		err := dlock.WithLock(ctx, db, outerKey, func(tx *gorm.DB) error {
			g, gctx := errgroup.WithContext(tx.Statement.Context)
			for range 4 {
				g.Go(func() error {
					return dlock.WithLock(gctx, db, inner, body, dlock.Timeout(5*time.Second))
				})
				g.Go(func() error {
					err := dlock.WithLock(gctx, db, outerKey, body, dlock.Timeout(5*time.Second))
					if errors.Is(err, dlock.ErrReentrant) {
						reentrant.Add(1)
						return nil
					}
					return fmt.Errorf("WithLock(outer key) in a goroutine = %v, want ErrReentrant", err)
				})
			}
			return g.Wait()
		})
		if err != nil {
			t.Fatalf("WithLock() = %v, want nil", err)
		}
		if most.Load() != 1 || ran.Load() != 4 || reentrant.Load() != 4 {
			t.Fatalf("bodies at once = %d, bodies run = %d, re-entries refused = %d; want 1, 4, 4", most.Load(), ran.Load(), reentrant.Load())
		}
		b.wantFree(t, newLock(t, b.openLocked(t, dlock.Plugin{}), inner))
		b.wantFree(t, newLock(t, b.openLocked(t, dlock.Plugin{}), outerKey))
	})
}

// Xact locks along the context: the same key is refused at once, another
// key runs in a transaction on a session of its own.
func TestNestedXactAlongContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Dialect != dialectPostgres {
			t.Skip("transaction-level locks are PostgreSQL's")
		}
		db := b.openLocked(t, dlock.Plugin{})
		key, other := b.UniqueKey(t), b.UniqueKey(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			err := dlock.WithLock(tx.Statement.Context, db, key, func(*gorm.DB) error { return nil }, dlock.Xact())
			if !errors.Is(err, dlock.ErrReentrant) {
				t.Errorf("nested Xact WithLock(same key) = %v, want ErrReentrant", err)
			}
			err = dlock.WithLock(tx.Statement.Context, db, key, func(*gorm.DB) error { return nil })
			if !errors.Is(err, dlock.ErrReentrant) {
				t.Errorf("session WithLock(same key) inside an Xact WithLock = %v, want ErrReentrant", err)
			}
			return dlock.WithLock(tx.Statement.Context, db, other, func(*gorm.DB) error { return nil }, dlock.Xact())
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
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
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
		if !errors.Is(err, dlock.ErrLeaked) || !errors.Is(err, dlock.ErrLockLost) || !strings.Contains(err.Error(), "went back to the pool") {
			t.Fatalf("Release() after db.Connection returned = %v; want ErrLeaked and ErrLockLost saying the session went back to the pool", err)
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
		if !errors.Is(err, dlock.ErrLeaked) || !errors.Is(err, dlock.ErrLockLost) || !strings.Contains(err.Error(), "released") {
			t.Fatalf("Close() after the leak was released = %v; want ErrLeaked and ErrLockLost saying dlock released it", err)
		}
		if err := old.Close(ctx); err != nil {
			t.Fatalf("second Close() = %v, want nil", err)
		}
	})
}

// Error texts are one line, keys in them are cut and readable, and a
// Timeout that ran out says so.
func TestErrorTexts(t *testing.T) {
	t.Parallel() // distinct keys, no duration measured
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
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
			if s, ok := key.(string); ok {
				// The key is cut to about 64 characters, with its length.
				cut := strconv.Quote(s[:60]) + "... (" + strconv.Itoa(len(s)) + " characters)"
				if !strings.Contains(msg, cut) {
					t.Fatalf("WithLock(busy) = %q; want the key cut to %s", msg, cut)
				}
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
