package dlock

import (
	"runtime"
	"testing"
	"time"
)

func newGuardBinding() (*binding, *controlRecorder) {
	r := &controlRecorder{}
	return &binding{backend: r}, r
}

// A statement that returns within its bound is never ended, even when it
// starts late in the bound of an earlier statement, whose timer is still
// pending: the timer re-arms itself for the later deadline.
func TestWatchdogRearmsForLaterStatement(t *testing.T) {
	l, r := newGuardBinding()
	var w overrunGuard
	const bound = 300 * time.Millisecond
	w.arm(l, 7, bound, true)
	if !w.stop() {
		t.Fatal("stop() = false after a quick statement")
	}
	time.Sleep(bound / 2)
	// Runs from 150 ms to 400 ms: past the first timer (300 ms), within
	// its own bound (450 ms).
	w.arm(l, 7, bound, true)
	time.Sleep(250 * time.Millisecond)
	if !w.stop() {
		t.Fatal("stop() = false: the statement was ended within its bound")
	}
	if got, _ := r.endedSessions(); len(got) != 0 {
		t.Fatalf("sessions ended: %v, want none", got)
	}
	// The timer went idle; a new statement arms it again.
	time.Sleep(bound)
	w.mu.Lock()
	pending := w.pending
	w.mu.Unlock()
	if pending {
		t.Fatal("the timer is still pending with no statement running")
	}
}

// A statement that outlives its bound ends the session once, and stop
// reports it only after the end was sent.
func TestWatchdogEndsOverdueStatement(t *testing.T) {
	l, r := newGuardBinding()
	r.hold = make(chan struct{})
	var w overrunGuard
	w.arm(l, 7, time.Millisecond, true) // a quick one first: the timer pends
	if !w.stop() {
		t.Fatal("stop() = false after a quick statement")
	}
	start := time.Now()
	w.arm(l, 9, 50*time.Millisecond, true)
	waitFor(t, "the end of the overdue statement's session", r.anyEnded)
	if _, at := r.endedSessions(); at[0].Sub(start) < 50*time.Millisecond {
		t.Fatalf("the session was ended after %v, before its bound of 50ms", at[0].Sub(start))
	}
	stopped := make(chan bool)
	go func() { stopped <- w.stop() }()
	select {
	case <-stopped:
		t.Fatal("stop() returned while the end of the session was still being sent")
	case <-time.After(50 * time.Millisecond):
	}
	close(r.hold)
	if <-stopped {
		t.Fatal("stop() = true for a session the overrun guard ended")
	}
	if got, _ := r.endedSessions(); len(got) != 1 || got[0] != 9 {
		t.Fatalf("sessions ended: %v, want [9]", got)
	}
	// The overrun guard serves the next statement as before.
	w.arm(l, 9, time.Second, true)
	if !w.stop() {
		t.Fatal("stop() = false for the next quick statement")
	}
}

// A bound shorter than the pending timer's moves the timer earlier.
func TestWatchdogShorterBound(t *testing.T) {
	l, r := newGuardBinding()
	var w overrunGuard
	w.arm(l, 7, time.Hour, true)
	if !w.stop() {
		t.Fatal("stop() = false after a quick statement")
	}
	w.arm(l, 7, 20*time.Millisecond, true)
	waitFor(t, "the end of the session of the statement with the shorter bound", r.anyEnded)
	if w.stop() {
		t.Fatal("stop() = true for a session the overrun guard ended")
	}
}

// Without waitEnd (the try of an Acquire), stop reports an ended session
// as soon as the statement returns, while the end is still being sent: a
// cut network that holds up the control connection too adds nothing to
// the caller's Timeout.
func TestWatchdogTryDoesNotWaitForTheEnd(t *testing.T) {
	l, r := newGuardBinding()
	r.hold = make(chan struct{})
	defer close(r.hold)
	var w overrunGuard
	w.arm(l, 9, 20*time.Millisecond, false)
	waitFor(t, "the end of the overdue try's session", r.anyEnded)
	stopped := make(chan bool)
	go func() { stopped <- w.stop() }()
	select {
	case ok := <-stopped:
		if ok {
			t.Fatal("stop() = true for a session the overrun guard ended")
		}
	case <-time.After(time.Second):
		t.Fatal("stop() waited for the end of the session to be sent")
	}
}

// A pending timer keeps nothing in memory: the state of a session whose
// last statement is done (and through it its pool) is collected without
// waiting for the timer, which then does nothing.
func TestWatchdogTimerHoldsNothing(t *testing.T) {
	l, r := newGuardBinding()
	s := newSession()
	s.overrun.arm(l, 7, time.Hour, true)
	if !s.overrun.stop() {
		t.Fatal("stop() = false after a quick statement")
	}
	collected := make(chan struct{})
	runtime.AddCleanup(s, func(c chan struct{}) { close(c) }, collected)
	s = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		select {
		case <-collected:
			if got, _ := r.endedSessions(); len(got) != 0 {
				t.Fatalf("sessions ended: %v, want none", got)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the session's state stayed in memory while its overrun timer was pending")
		}
	}
}
