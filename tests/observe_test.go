package tests

// Plugin.Observer and Plugin.Logger (issue #12): what dlock tells about
// acquires, releases, losses, leaks and discarded sessions.

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// recorder is an Observer and a slog.Handler that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	events  []string // "start key", "end key outcome", "released key", "lost key", "withlock key", "withlock-end err"
	ends    []dlock.AcquireEvent
	rels    []dlock.ReleaseEvent
	records []slog.Record
	level   slog.Level
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recorder) AcquireStart(ctx context.Context, e dlock.AcquireEvent) context.Context {
	r.add("start")
	return ctx
}

func (r *recorder) AcquireEnd(_ context.Context, e dlock.AcquireEvent) {
	r.mu.Lock()
	r.events = append(r.events, "end "+e.Outcome.String())
	r.ends = append(r.ends, e)
	r.mu.Unlock()
}

func (r *recorder) Released(_ context.Context, e dlock.ReleaseEvent) {
	r.mu.Lock()
	r.events = append(r.events, "released")
	r.rels = append(r.rels, e)
	r.mu.Unlock()
}

func (r *recorder) Lost(e dlock.ReleaseEvent) { r.add("lost") }

func (r *recorder) WithLockStart(ctx context.Context, key any) context.Context {
	r.add("withlock")
	return ctx
}

func (r *recorder) WithLockEnd(_ context.Context, err error) {
	r.add("withlock-end")
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.records = append(r.records, rec)
	r.mu.Unlock()
	return nil
}

func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// take returns the events so far and forgets them.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// heldOf returns the "held" attribute of the last record with this message.
func (r *recorder) heldOf(msg string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var held time.Duration
	for i := range r.records {
		if r.records[i].Message != msg {
			continue
		}
		r.records[i].Attrs(func(a slog.Attr) bool {
			if a.Key == "held" {
				held = a.Value.Duration()
			}
			return true
		})
	}
	return held
}

// logged reports whether a record with this message was logged at level.
func (r *recorder) logged(level slog.Level, msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.records {
		if rec := &r.records[i]; rec.Level == level && rec.Message == msg {
			return true
		}
	}
	return false
}

func TestObserverAndLogger(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		rec := &recorder{level: slog.LevelDebug}
		db := b.openLocked(t, dlock.Plugin{Observer: rec, Logger: slog.New(rec)})
		ctx := context.Background()
		key := b.UniqueKey(t)

		l := newLock(t, db, key)
		mustAcquire(t, l)
		time.Sleep(10 * time.Millisecond)
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}
		if got, want := strings.Join(rec.take(), ","), "start,end granted,released"; got != want {
			t.Fatalf("events of a granted acquire and release = %s, want %s", got, want)
		}
		if e := rec.rels[len(rec.rels)-1]; e.Held < 10*time.Millisecond || e.Key != key || e.SessionID == 0 {
			t.Fatalf("Released event = %+v, want key %q, held >= 10ms, a session id", e, key)
		}
		if !rec.logged(slog.LevelDebug, "dlock: acquire granted") || !rec.logged(slog.LevelDebug, "dlock: released") {
			t.Fatalf("no Debug records of the grant and the release")
		}

		holder := newLock(t, b.openLocked(t, dlock.Plugin{}), key)
		mustAcquire(t, holder)
		if ok, err := l.Acquire(ctx, dlock.NoWait()); ok || err != nil {
			t.Fatalf("Acquire(NoWait) = %v, %v", ok, err)
		}
		if ok, err := l.Acquire(ctx, dlock.Timeout(100*time.Millisecond)); ok || err != nil {
			t.Fatalf("Acquire(Timeout) = %v, %v", ok, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(100*time.Millisecond, cancel)
		if ok, err := l.Acquire(cctx); ok || !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire(cancelled) = %v, %v", ok, err)
		}
		if got, want := strings.Join(rec.take(), ","), "start,end busy,start,end timed_out,start,end canceled"; got != want {
			t.Fatalf("events of busy, timed-out and cancelled acquires = %s, want %s", got, want)
		}
		if err := holder.Release(ctx); err != nil {
			t.Fatalf("Release() = %v", err)
		}

		// A loss while fn runs: Lost, a Warn record, WithLock brackets.
		err := dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
			time.Sleep(150 * time.Millisecond) // a hold of some length
			b.Kill(t, b.sessionOfTx(t, tx))
			<-tx.Statement.Context.Done()
			return nil
		})
		if !errors.Is(err, dlock.ErrLockLost) {
			t.Fatalf("WithLock(killed) = %v, want ErrLockLost", err)
		}
		// fn's context ends before the Observer and the Logger hear of the
		// loss (a slow Observer delays no signal), so WithLock may return
		// before they do: wait for the record, then take the events.
		for deadline := time.Now().Add(2 * time.Second); !rec.logged(slog.LevelWarn, "dlock: lock lost"); {
			if time.Now().After(deadline) {
				t.Fatalf("no Warn record of the lost lock")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if held := rec.heldOf("dlock: lock lost"); held < 100*time.Millisecond {
			t.Errorf("the Warn record of the lost lock says held=%v, want the hold's duration (at least 100ms)", held)
		}
		got := strings.Join(rec.take(), ",")
		if want, alt := "withlock,start,end granted,lost,withlock-end", "withlock,start,end granted,withlock-end,lost"; got != want && got != alt {
			t.Fatalf("events of a WithLock whose session was killed = %s, want %s (or lost last)", got, want)
		}

		// A leaked lock: released by WithLock, and said so.
		err = dlock.WithLock(ctx, db, b.UniqueKey(t), func(tx *gorm.DB) error {
			_, err := newLockOn(t, tx, key).Acquire(ctx)
			return err
		})
		if !errors.Is(err, dlock.ErrLeaked) {
			t.Fatalf("WithLock(leak) = %v, want ErrLeaked", err)
		}
		if !rec.logged(slog.LevelWarn, "dlock: released a lock left held when fn returned") {
			t.Fatalf("no Warn record of the leaked lock")
		}
	})
}

// A discarded session is logged at Warn.
func TestLoggerDiscard(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		rec := &recorder{level: slog.LevelWarn}
		db := b.openLocked(t, dlock.Plugin{Logger: slog.New(rec), ReleaseTimeout: time.Microsecond})
		tx, _ := pin(t, db)
		l, err := dlock.New(tx, b.UniqueKey(t))
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		mustAcquireCtx(t, ctx, l)
		// Release with the 1µs bound: the session is ended and discarded
		// (or, rarely, the release beats the timer: try again).
		for range 20 {
			if err := l.Release(context.Background()); err != nil {
				break
			}
			mustAcquireCtx(t, ctx, l)
		}
		if !rec.logged(slog.LevelWarn, "dlock: session discarded") {
			t.Fatalf("no Warn record of the discarded session")
		}
		if rec.logged(slog.LevelDebug, "dlock: released") {
			t.Fatalf("a Debug record reached a Warn-level handler")
		}
	})
}

// mustAcquireCtx acquires l with ctx or fails the test.
func mustAcquireCtx(t testing.TB, ctx context.Context, l *dlock.Lock) {
	t.Helper()
	ok, err := l.Acquire(ctx)
	if !ok || err != nil {
		t.Fatalf("Acquire(%v) = %v, %v; want true, nil", l.Key(), ok, err)
	}
}

// A Logger that takes no Debug records costs no allocation on the
// uncontended cycle, nor does a nil Observer.
func TestLoggerOffCostsNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		allocs := func(p dlock.Plugin) float64 {
			db := b.openLocked(t, p)
			l := newLock(t, db, b.UniqueKey(t))
			mustAcquire(t, l)
			if err := l.Release(ctx); err != nil {
				t.Fatalf("Release() = %v", err)
			}
			return testing.AllocsPerRun(200, func() {
				if ok, err := l.Acquire(ctx); !ok || err != nil {
					t.Fatalf("Acquire() = %v, %v", ok, err)
				}
				if err := l.Release(ctx); err != nil {
					t.Fatalf("Release() = %v", err)
				}
			})
		}
		none := allocs(dlock.Plugin{})
		warn := allocs(dlock.Plugin{Logger: slog.New(&recorder{level: slog.LevelWarn})})
		if warn > none {
			t.Fatalf("allocations per cycle with a Warn-level Logger = %v, without one %v", warn, none)
		}
		t.Logf("allocations per Acquire+Release: %v (no Logger), %v (Warn-level Logger)", none, warn)
	})
}

// A WithLock that ends while waiting for a pooled session is an acquire
// that did not get the lock: the Observer hears its start and its end.
func TestObserverNoSession(t *testing.T) {
	eachBackendParallel(t, func(t *testing.T, b *testDB) {
		rec := &recorder{level: slog.LevelDebug}
		db := b.openLocked(t, dlock.Plugin{Observer: rec, Logger: slog.New(rec)})
		sqlDB, _ := db.DB()
		sqlDB.SetMaxOpenConns(1)
		_, _ = pin(t, db) // the pool's one session
		err := dlock.WithLock(context.Background(), db, b.UniqueKey(t), func(*gorm.DB) error { return nil }, dlock.Timeout(100*time.Millisecond))
		if !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("WithLock() with no free session = %v, want ErrNotAcquired", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		err = dlock.WithLock(ctx, db, b.UniqueKey(t), func(*gorm.DB) error { return nil })
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WithLock(cancelled) with no free session = %v, want context.Canceled", err)
		}
		if got, want := strings.Join(rec.take(), ","), "withlock,start,end timed_out,withlock-end,withlock,start,end canceled,withlock-end"; got != want {
			t.Fatalf("events of WithLocks that found no session = %s, want %s", got, want)
		}
	})
}
