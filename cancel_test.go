package dlock

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func newTestWatcher(ctx context.Context, cut time.Duration) (*canceller, *controlRecorder, *atomic.Bool) {
	r := &controlRecorder{}
	var dropped atomic.Bool
	w := &canceller{ctx: ctx, cancelAfter: cut, drop: func() { dropped.Store(true) },
		send: func(ctx context.Context) error { return r.cancel(ctx, nil, 0) }}
	return w, r, &dropped
}

// A statement that returns before anything fires: no cancel, no reason.
func TestWatcherQuiet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, r, dropped := newTestWatcher(ctx, time.Hour)
	w.start()
	w.stop()
	cancel() // after stop: must not fire any more
	time.Sleep(20 * time.Millisecond)
	if got := w.reason(); got != cancelNone {
		t.Fatalf("reason() = %d, want cancelNone", got)
	}
	if n := r.cancelsSent(); n != 0 || dropped.Load() {
		t.Fatalf("%d cancels sent, dropped %v; want none", n, dropped.Load())
	}
}

// The caller's ctx ends during the statement: a cancel is sent, and stop
// returns only after the canceller is done.
func TestWatcherCtxCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w, r, dropped := newTestWatcher(ctx, 0)
	w.start()
	cancel()
	waitFor(t, "the cancel", func() bool { return r.cancelsSent() > 0 })
	w.stop()
	if got := w.reason(); got != cancelCtx {
		t.Fatalf("reason() = %d, want cancelCtx", got)
	}
	if dropped.Load() {
		t.Fatal("the statement's context was dropped after a cancel that was sent")
	}
}

// The wanted wait runs out on a server that takes whole seconds: the cut
// cancels the statement.
func TestWatcherCut(t *testing.T) {
	w, r, _ := newTestWatcher(context.Background(), 20*time.Millisecond)
	w.start()
	waitFor(t, "the cut", func() bool { return r.cancelsSent() > 0 })
	w.stop()
	if got := w.reason(); got != cancelTimedOut {
		t.Fatalf("reason() = %d, want cancelCut", got)
	}
}

// A cancel that cannot be sent drops the statement's context, so that the
// driver ends the session.
func TestWatcherDiscard(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w, r, dropped := newTestWatcher(ctx, 0)
	r.failCancel = true
	w.start()
	cancel()
	waitFor(t, "the drop", dropped.Load)
	w.stop()
	if got := w.reason(); got != cancelDiscard {
		t.Fatalf("reason() = %d, want cancelDiscard", got)
	}
}

// A cancel that reaches the session before the statement runs is dropped
// by the server: the canceller sends it again until the statement returns,
// and stop waits for the resending to end.
func TestWatcherResends(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w, r, dropped := newTestWatcher(ctx, 0)
	w.start()
	cancel()
	waitFor(t, "a second cancel", func() bool { return r.cancelsSent() >= 2 })
	w.stop()
	n := r.cancelsSent()
	time.Sleep(2 * cancelResend)
	if r.cancelsSent() != n {
		t.Fatal("cancels were sent after stop returned")
	}
	if dropped.Load() {
		t.Fatal("dropped before controlTimeout")
	}
}

// Both the ctx and the cut fire: one cancel sequence runs, with the reason
// of the first.
func TestWatcherBothFire(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w, r, _ := newTestWatcher(ctx, time.Millisecond)
	w.start()
	time.Sleep(10 * time.Millisecond) // the cut fired
	cancel()
	waitFor(t, "the cancel", func() bool { return r.cancelsSent() > 0 })
	w.stop()
	if got := w.reason(); got != cancelTimedOut {
		t.Fatalf("reason() = %d, want cancelCut (the first to fire)", got)
	}
}

// stop does not return while a cancel is in flight: a cancel targets the
// session, and must not reach the statement dlock sends next.
func TestWatcherStopWaitsForCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w, r, _ := newTestWatcher(ctx, 0)
	r.hold = make(chan struct{})
	w.start()
	cancel()
	waitFor(t, "the cancel", func() bool { return r.cancelsSent() > 0 })
	stopped := make(chan struct{})
	go func() {
		w.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("stop() returned while the cancel was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(r.hold)
	<-stopped
	if got := w.reason(); got != cancelCtx {
		t.Fatalf("reason() = %d, want cancelCtx", got)
	}
}
