package tests

// A loss is told as what it was (issue #17, DESIGN §9 rule 2): the cause
// names what happened, once; a killed Xact holder is told like any other;
// the checks keep their own control connection; a slow Observer delays no
// signal.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// wantToldOnce checks that err reads as one loss: one "dlock:" prefix, the
// words of what happened, none of what did not.
func wantToldOnce(t *testing.T, err error, what ...string) {
	t.Helper()
	msg := err.Error()
	if n := strings.Count(msg, "dlock:"); n != 1 {
		t.Errorf("error has %d \"dlock:\" prefixes, want 1: %q", n, msg)
	}
	for _, wrong := range []string{"leak", "went back to the pool", "behind dlock's back"} {
		if strings.Contains(msg, wrong) {
			t.Errorf("error says %q, which did not happen: %q", wrong, msg)
		}
	}
	for _, w := range what {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not say %q: %q", w, msg)
		}
	}
}

// The holder's session is killed while fn waits on its context, which fn
// returns as its error (as errgroup and most code do): WithLock returns
// the loss once, saying the session ended, and nothing about leaks.
func TestLossToldAsWhatItWas(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
			ctx := tx.Statement.Context
			b.Kill(t, b.sessionOfTx(t, tx))
			waitDone(t, ctx.Done(), lossBound)
			return context.Cause(ctx)
		})
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("WithLock(killed) = %v, want ErrLockLost", err)
		}
		wantToldOnce(t, err, "session ended")

		// Dropped by SQL on the live session: said so.
		drop := "SELECT RELEASE_ALL_LOCKS()"
		if b.Dialect == dialectPostgres {
			drop = "SELECT pg_advisory_unlock_all()"
		}
		err = dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
			if err := tx.Exec(drop).Error; err != nil {
				return err
			}
			ctx := tx.Statement.Context
			waitDone(t, ctx.Done(), lossBound)
			return context.Cause(ctx)
		})
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("WithLock(dropped) = %v, want ErrLockLost", err)
		}
		wantToldOnce(t, err, "SQL on the session")
	})
}

// A killed PostgreSQL Xact holder is told like a session holder: fn's
// context ends with a cause matching ErrLockLost within the loss bound, and
// WithLock returns an error matching it, whether fn waits or runs a
// statement on the dead session.
func TestXactLossTold(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		if b.Dialect != dialectPostgres {
			t.Skip("transaction-level locks are PostgreSQL's")
		}
		db := b.openLocked(t, dlock.Plugin{})
		key := b.UniqueKey(t)
		var killed, signalled time.Time
		err := dlock.WithLock(context.Background(), db, key, func(tx *gorm.DB) error {
			ctx := tx.Statement.Context
			id := b.sessionOfTx(t, tx)
			time.Sleep(300 * time.Millisecond)
			b.Kill(t, id)
			killed = time.Now()
			signalled = waitDone(t, ctx.Done(), 3*time.Second)
			if cause := context.Cause(ctx); !errors.Is(cause, dlock.ErrLockLost) {
				t.Errorf("context.Cause(fn's ctx) = %v, want ErrLockLost", cause)
			}
			return nil
		}, dlock.Xact())
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("WithLock(Xact, killed) = %v, want ErrLockLost", err)
		}
		if d := signalled.Sub(killed); d > lossBound {
			t.Fatalf("fn's context ended %v after the kill, want within %v", d, lossBound)
		}

		// fn runs a statement on the killed session and returns its error.
		err = dlock.WithLock(context.Background(), db, key, func(tx *gorm.DB) error {
			b.Kill(t, b.sessionOfTx(t, tx))
			time.Sleep(50 * time.Millisecond)
			return tx.Exec("SELECT 1").Error
		}, dlock.Xact())
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("WithLock(Xact, statement after the kill) = %v, want ErrLockLost", err)
		}
		wantToldOnce(t, err, "terminated")
	})
}

// With a pool that keeps no idle session, the checks still use one control
// connection while locks are held: no new connection per check round.
func TestMonitorKeepsItsControlConnection(t *testing.T) {
	t.Parallel() // distinct keys, no duration measured
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{CheckInterval: 50 * time.Millisecond})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxIdleConns(0)
		err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
			before := sqlDB.Stats().MaxIdleClosed
			time.Sleep(time.Second) // about 20 check rounds
			if n := sqlDB.Stats().MaxIdleClosed - before; n > 1 {
				t.Errorf("%d connections closed as idle while the lock was held, want at most 1: the checks take a new connection each round", n)
			}
			return tx.Statement.Context.Err()
		})
		if err != nil {
			t.Fatalf("WithLock() = %v", err)
		}
	})
}

// slowObserver takes 2 s to hear of a loss: longer than the loss bound.
type slowObserver struct {
	nopObserver
	mu   sync.Mutex
	lost int
}

func (o *slowObserver) Lost(dlock.ReleaseEvent) {
	time.Sleep(2 * time.Second)
	o.mu.Lock()
	o.lost++
	o.mu.Unlock()
}

// A slow Observer delays no loss signal: two holds lost in one check round
// both end their fn's context within the loss bound.
func TestSlowObserverDelaysNoSignal(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		obs := &slowObserver{}
		db := b.openLocked(t, dlock.Plugin{Observer: obs})
		var wg sync.WaitGroup
		ids := make(chan int64, 2)
		start := make(chan struct{})
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
					ids <- b.sessionOfTx(t, tx)
					<-start
					ctx := tx.Statement.Context
					select {
					case <-ctx.Done():
					case <-time.After(3 * time.Second):
						t.Errorf("no loss signal within 3 s")
						return nil
					}
					if d := time.Since(killedAt(start)); d > lossBound {
						t.Errorf("fn's context ended %v after the kill, want within %v", d, lossBound)
					}
					return nil
				})
			}()
		}
		a, c := <-ids, <-ids
		b.Kill(t, a)
		b.Kill(t, c)
		markKilled(start)
		wg.Wait()
		// The Observer hears of both, in its own time.
		for deadline := time.Now().Add(8 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			obs.mu.Lock()
			n := obs.lost
			obs.mu.Unlock()
			if n == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the Observer heard of %d losses, want 2", n)
			}
		}
	})
}

var (
	killedMu    sync.Mutex
	killedTimes = map[chan struct{}]time.Time{}
)

// markKilled records the kill time for start and releases the waiters.
func markKilled(start chan struct{}) {
	killedMu.Lock()
	killedTimes[start] = time.Now()
	killedMu.Unlock()
	close(start)
}

func killedAt(start chan struct{}) time.Time {
	killedMu.Lock()
	defer killedMu.Unlock()
	return killedTimes[start]
}

// nopObserver hears everything and does nothing.
type nopObserver struct{}

func (nopObserver) AcquireStart(ctx context.Context, _ dlock.AcquireEvent) context.Context {
	return ctx
}
func (nopObserver) AcquireEnd(context.Context, dlock.AcquireEvent)           {}
func (nopObserver) Released(context.Context, dlock.ReleaseEvent)             {}
func (nopObserver) Lost(dlock.ReleaseEvent)                                  {}
func (nopObserver) WithLockStart(ctx context.Context, _ any) context.Context { return ctx }
func (nopObserver) WithLockEnd(context.Context, error)                       {}
