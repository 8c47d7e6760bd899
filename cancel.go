package dlock

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// cancelReason is why a watcher cancelled the lock statement.
type cancelReason int32

const (
	cancelNone    cancelReason = iota
	cancelCtx                  // ctx ended
	cancelCut                  // the wanted wait ran out (MySQL whole seconds)
	cancelDiscard              // no control connection answered: session dropped
)

// watcher cancels one running lock statement from a control connection
// when the caller's ctx ends, or when the wanted wait runs out on a server
// that only takes whole seconds. A backend starts it right before the lock
// statement and stops it right after, so that a cancel (which targets the
// session, not the statement) can never reach another statement. If the
// cancel cannot be sent, or the statement does not return within
// controlTimeout, the watcher drops the statement's context and the driver
// closes the session. A nil *watcher does nothing.
//
// Watching takes no goroutine until there is something to do: ctx is
// watched with context.AfterFunc and the cut with time.AfterFunc, and the
// first of them to fire sends the cancel. So stop, on the path from the
// grant to Acquire's return, wakes nothing when nothing fired.
type watcher struct {
	l       *Lock
	ctx     context.Context
	cut     time.Duration
	fromCtx bool
	drop    context.CancelFunc

	stopCtx  func() bool // ends the ctx watch; false once it has fired
	cutT     *time.Timer
	fired    atomic.Bool   // the first fire won: a cancel is or was in flight
	stmtDone chan struct{} // closed by stop
	done     chan struct{} // closed by the fire that won, when it is over
	why      atomic.Int32
}

// start begins watching; the lock statement is about to be sent.
func (w *watcher) start() {
	if w == nil {
		return
	}
	w.stmtDone, w.done = make(chan struct{}), make(chan struct{})
	w.stopCtx = context.AfterFunc(w.ctx, func() { w.fire(cancelCtx) })
	if w.cut > 0 {
		w.cutT = time.AfterFunc(w.cut, func() { w.fire(cancelCut) })
	}
}

// stop ends the watch once the lock statement has returned, and waits
// until no cancel is in flight.
func (w *watcher) stop() {
	if w == nil || w.done == nil {
		return
	}
	quiet := w.stopCtx()
	if w.cutT != nil && !w.cutT.Stop() {
		quiet = false
	}
	close(w.stmtDone)
	if !quiet {
		<-w.done // a fire started: wait for the one that won
	}
}

// reason says why the watcher cancelled the statement, if it did. Call it
// after stop.
func (w *watcher) reason() cancelReason {
	if w == nil {
		return cancelNone
	}
	return cancelReason(w.why.Load())
}

// fire cancels the statement, on the goroutine its AfterFunc started.
// Only the first fire acts; a later one returns at once.
func (w *watcher) fire(reason cancelReason) {
	if !w.fired.CompareAndSwap(false, true) {
		return
	}
	defer close(w.done)
	if reason == cancelCtx && w.fromCtx && errors.Is(w.ctx.Err(), context.DeadlineExceeded) {
		// The server ends this wait itself at the same deadline.
		t := time.NewTimer(deadlineGrace)
		defer t.Stop()
		select {
		case <-w.stmtDone:
			return
		case <-t.C:
		}
	}
	select {
	case <-w.stmtDone:
		return // the statement returned as the watch fired
	default:
	}
	w.why.Store(int32(reason))
	cctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), controlTimeout)
	defer cancel()
	// A cancel that reaches the session before the statement runs (while
	// the server still reads it) is dropped by the server, so it is sent
	// again until the statement returns.
	resend := time.NewTicker(cancelResend)
	defer resend.Stop()
	for {
		if err := w.l.be.cancel(cctx, w.l.reg.pool, w.l.sess.id); err != nil {
			break
		}
		select {
		case <-w.stmtDone:
			return
		case <-resend.C:
			continue
		case <-cctx.Done():
		}
		break
	}
	w.why.Store(int32(cancelDiscard))
	w.drop()
}

// cancelResend is how often a cancel is sent again while the cancelled
// statement has not returned.
const cancelResend = 50 * time.Millisecond
