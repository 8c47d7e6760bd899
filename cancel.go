package dlock

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// The bounds of what dlock sends from a control connection.
const (
	// controlTimeout bounds the cancel of a wait (canceller.fire), and
	// then the wait for the cancelled statement to return; when either
	// runs out, the waiting session is discarded. It also bounds the end of
	// an overrunning session (overrunGuard.fire) and one loss check
	// (monitor.confirm), and is part of a try's bound (tryLocked).
	controlTimeout = time.Second
	// cancelResend is how often canceller.fire sends its cancel again
	// while the cancelled statement has not returned.
	cancelResend = 50 * time.Millisecond
	// deadlineGrace is how long dlock lets the server end a wait bounded
	// by the context's deadline, or by a Timeout, before it cancels the
	// statement itself (canceller.fire, planWait, tryLocked).
	deadlineGrace = 200 * time.Millisecond
)

// cancelReason is why a canceller cancelled the lock statement.
type cancelReason int32

const (
	cancelNone     cancelReason = iota
	cancelCtx                   // ctx ended
	cancelTimedOut              // the wanted wait ran out (MySQL whole seconds)
	cancelDiscard               // no control connection answered: session dropped
)

// canceller cancels one running lock statement from a control connection
// (send)
// when the caller's ctx ends, or when the wanted wait runs out on a server
// that only takes whole seconds. A backend starts it right before the lock
// statement and stops it right after, so that a cancel (which targets the
// session, not the statement) can never reach another statement. If the
// cancel cannot be sent, or the statement does not return within
// controlTimeout, the canceller ends the wait on the client (drop) and the
// driver closes the session. A nil *canceller does nothing.
//
// Watching takes no goroutine until there is something to do: ctx is
// watched with context.AfterFunc and the cut with time.AfterFunc, and the
// first of them to fire sends the cancel. So stop, on the path from the
// grant to Acquire's return, wakes nothing when nothing fired.
type canceller struct {
	send        func(ctx context.Context) error // sends the cancel from a control connection
	ctx         context.Context
	cancelAfter time.Duration
	ctxDeadline bool
	drop        func() // ends the wait on the client: the driver closes the session

	stopCtx     func() bool // ends the ctx watch; false once it has fired
	cancelTimer *time.Timer
	fired       atomic.Bool   // the first fire won: a cancel is or was in flight
	stmtDone    chan struct{} // closed by stop
	done        chan struct{} // closed by the fire that won, when it is over
	why         atomic.Int32
}

// start begins watching; the lock statement is about to be sent.
func (c *canceller) start() {
	if c == nil {
		return
	}
	c.stmtDone, c.done = make(chan struct{}), make(chan struct{})
	c.stopCtx = context.AfterFunc(c.ctx, func() { c.fire(cancelCtx) })
	if c.cancelAfter > 0 {
		c.cancelTimer = time.AfterFunc(c.cancelAfter, func() { c.fire(cancelTimedOut) })
	}
}

// stop ends the watch once the lock statement has returned, and waits
// until no cancel is in flight.
func (c *canceller) stop() {
	if c == nil || c.done == nil {
		return
	}
	quiet := c.stopCtx()
	if c.cancelTimer != nil && !c.cancelTimer.Stop() {
		quiet = false
	}
	close(c.stmtDone)
	if !quiet {
		<-c.done // a fire started: wait for the one that won
	}
}

// reason says why the canceller cancelled the statement, if it did. Call it
// after stop.
func (c *canceller) reason() cancelReason {
	if c == nil {
		return cancelNone
	}
	return cancelReason(c.why.Load())
}

// fire cancels the statement, on the goroutine its AfterFunc started.
// Only the first fire acts; a later one returns at once.
func (c *canceller) fire(reason cancelReason) {
	if !c.fired.CompareAndSwap(false, true) {
		return
	}
	defer close(c.done)
	if reason == cancelCtx && c.ctxDeadline && errors.Is(c.ctx.Err(), context.DeadlineExceeded) {
		// The server ends this wait itself at the same deadline.
		t := time.NewTimer(deadlineGrace)
		defer t.Stop()
		select {
		case <-c.stmtDone:
			return
		case <-t.C:
		}
	}
	select {
	case <-c.stmtDone:
		return // the statement returned as the watch fired
	default:
	}
	c.why.Store(int32(reason))
	cctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), controlTimeout)
	defer cancel()
	// A cancel that reaches the session before the statement runs (while
	// the server still reads it) is dropped by the server, so it is sent
	// again until the statement returns.
	resend := time.NewTicker(cancelResend)
	defer resend.Stop()
	for {
		if err := c.send(cctx); err != nil {
			break
		}
		select {
		case <-c.stmtDone:
			return
		case <-resend.C:
			continue
		case <-cctx.Done():
		}
		break
	}
	c.why.Store(int32(cancelDiscard))
	c.drop()
}
