package tests

// Loss while you work (issue #11): fn's context ends when the lock is
// lost, the explicit form gets the same signal through Lock.Done, and a
// check that merely fails is no loss.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// lossBound is how soon after a loss fn's context must end with the
// default CheckInterval (0.5 s), with room for a loaded machine.
const lossBound = time.Second + 500*time.Millisecond

// waitDone waits for ctx to end and returns when it did, or fails.
func waitDone(t *testing.T, done <-chan struct{}, within time.Duration) time.Time {
	t.Helper()
	select {
	case <-done:
		return time.Now()
	case <-time.After(within):
		t.Fatalf("no loss signal within %v", within)
		return time.Time{}
	}
}

// The holder's session is killed while fn runs: fn's context ends within
// the bound with a cause matching ErrLockLost, fn's statements fail, and
// WithLock returns ErrLockLost.
func TestLossSignalKilledSession(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		var killed, signalled time.Time
		err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
			ctx := tx.Statement.Context
			id := b.sessionOfTx(t, tx)
			time.Sleep(300 * time.Millisecond)
			b.Kill(t, id)
			killed = time.Now()
			signalled = waitDone(t, ctx.Done(), 5*time.Second)
			if cause := context.Cause(ctx); !errors.Is(cause, dlock.ErrLockLost) {
				t.Errorf("context.Cause(fn's ctx) = %v, want ErrLockLost", cause)
			}
			if err := tx.Exec("SELECT 1").Error; err == nil {
				t.Errorf("a statement of fn on the killed session succeeded")
			}
			return nil
		})
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("WithLock() = %v, want ErrLockLost", err)
		}
		d := signalled.Sub(killed)
		if d > lossBound {
			t.Fatalf("fn's context ended %v after the kill, want within %v", d, lossBound)
		}
		t.Logf("fn's context ended %v after the kill", d)
	})
}

// Locks dropped behind dlock's back on a live session: the same signal.
func TestLossSignalDroppedBehindOurBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		drop := "SELECT RELEASE_ALL_LOCKS()"
		if b.Dialect == dialectPostgres {
			drop = "SELECT pg_advisory_unlock_all()"
		}
		err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
			if err := tx.Exec(drop).Error; err != nil {
				return err
			}
			dropped := time.Now()
			ctx := tx.Statement.Context
			if d := waitDone(t, ctx.Done(), 5*time.Second).Sub(dropped); d > lossBound {
				t.Errorf("fn's context ended %v after the drop, want within %v", d, lossBound)
			}
			if cause := context.Cause(ctx); !errors.Is(cause, dlock.ErrLockLost) {
				t.Errorf("context.Cause(fn's ctx) = %v, want ErrLockLost", cause)
			}
			return nil
		})
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("WithLock() = %v, want ErrLockLost", err)
		}
	})
}

// The explicit form: Lock.Done is closed when the hold is found lost, and
// Release says so.
func TestLossSignalDone(t *testing.T) {
	needLongRun(t)
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.openLocked(t, dlock.Plugin{})
		tx, conn := pin(t, db)
		l, err := dlock.New(tx, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		select {
		case <-l.Done():
		default:
			t.Fatalf("Done() of a Lock that holds nothing is not closed")
		}
		mustAcquire(t, l)
		done := l.Done()
		select {
		case <-done:
			t.Fatalf("Done() closed while the lock is held")
		case <-time.After(3 * defaultCheck):
		}
		b.Kill(t, b.SessionID(t, conn))
		killed := time.Now()
		if d := waitDone(t, done, 5*time.Second).Sub(killed); d > lossBound {
			t.Fatalf("Done() closed %v after the kill, want within %v", d, lossBound)
		}
		if l.Acquired() {
			t.Fatalf("Acquired() = true after Done() closed on a loss")
		}
		if err := l.Release(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Release() after the loss = %v, want ErrLockLost", err)
		}

		// A loss Held reported is not reported again by Close.
		l3 := newLock(t, db, b.UniqueKey(t))
		mustAcquire(t, l3)
		b.Kill(t, b.sessionOf(t, l3))
		if held, err := l3.Held(context.Background()); held || !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("Held() after a kill = %v, %v; want false, ErrLockLost", held, err)
		}
		if err := l3.Close(context.Background()); err != nil {
			t.Fatalf("Close() after Held() reported the loss = %v, want nil", err)
		}

		// A released hold closes its channel too.
		l2 := newLock(t, db, b.UniqueKey(t))
		mustAcquire(t, l2)
		done = l2.Done()
		if err := l2.Release(context.Background()); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		waitDone(t, done, time.Second)
	})
}

// defaultCheck is Plugin.CheckInterval's default.
const defaultCheck = 500 * time.Millisecond

// No false alarm: a 3 s idle hold, and a hold during which the control
// connections cannot reach the server for 2 s, both end without a loss.
//
// It sleeps and measures no duration: the two holds, on their own pools,
// and both servers run at once.
func TestNoFalseLoss(t *testing.T) {
	t.Parallel()
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		t.Run("idle", func(t *testing.T) {
			t.Parallel()
			db := b.openLocked(t, dlock.Plugin{})
			err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(tx *gorm.DB) error {
				select {
				case <-tx.Statement.Context.Done():
					t.Errorf("fn's context ended during an idle hold: %v", context.Cause(tx.Statement.Context))
				case <-time.After(3 * time.Second):
				}
				return nil
			})
			if err != nil {
				t.Fatalf("WithLock(idle 3s) = %v, want nil", err)
			}
		})
		t.Run("checks cut for 2s", func(t *testing.T) {
			t.Parallel()
			// Every connection of this pool, control connections
			// included, goes through a proxy that stops answering for 2 s.
			pb, p := b.viaProxy(t)
			pdb := pb.Open(t)
			if err := pdb.Use(dlock.Plugin{}); err != nil {
				t.Fatalf("db.Use: %v", err)
			}
			err := dlock.WithLock(context.Background(), pdb, b.UniqueKey(t), func(tx *gorm.DB) error {
				time.Sleep(2 * defaultCheck) // a check or two pass
				p.freeze()
				time.Sleep(2 * time.Second)
				p.thawOut()
				select {
				case <-tx.Statement.Context.Done():
					t.Errorf("fn's context ended while the checks could not reach the server: %v", context.Cause(tx.Statement.Context))
				case <-time.After(3 * defaultCheck):
				}
				return nil
			})
			if err != nil {
				t.Fatalf("WithLock(control connections unavailable for 2s) = %v, want nil", err)
			}
		})
	})
}
