package dlock

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"sync"
	"time"
)

// errSessionEnded is joined to a short statement's error when the
// statement outlived its bound and dlock ended the session.
var errSessionEnded = errors.New("dlock: a statement outlived its bound; the session was ended from a control connection")

// shortBound is the bound of a short statement (release, one try, held):
// the Plugin's ReleaseTimeout, or ctx's deadline if that is later.
func (l *Lock) shortBound(ctx context.Context) time.Duration {
	d := l.reg.cfg.ReleaseTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = max(d, time.Until(dl))
	}
	return d
}

// shortCtx bounds a short statement through the driver: ctx without its
// cancellation, with the deadline of shortBound. When the bound runs out
// the driver closes the session.
func (l *Lock) shortCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), l.shortBound(ctx))
}

// short runs fn, one short statement sequence on the session, with ctx's
// values but not its cancellation, bounded by shortBound.
//
// Once the server's session id is known, the bound is kept by a timer
// that ends the session from a control connection (KILL CONNECTION,
// pg_terminate_backend), and fn gets a context without Done: both
// go-sql-driver/mysql and pgx watch a context that has one, which costs
// more than the round trip itself on a busy machine. Ending the session
// ends its locks, so the outcome is known: the session is lost. Without
// the id the driver keeps the bound, through a deadline.
func (l *Lock) short(ctx context.Context, fn func(context.Context) error) error {
	s := l.sess
	if s.id == 0 {
		qctx, cancel := l.shortCtx(ctx)
		defer cancel()
		return fn(qctx)
	}
	s.dog.arm(l, s.id, l.shortBound(ctx))
	err := fn(context.WithoutCancel(ctx))
	if s.dog.stop() {
		return err
	}
	return joinErrors(errSessionEnded, err)
}

// watchdog ends a session whose short statement outlives its bound. One
// timer per session serves every short statement on it; the session mutex
// keeps them one at a time.
//
// The timer is lazy: arm and stop only note the statement's deadline and
// whether it still runs, and touch the timer only when none is pending
// (or the new deadline comes before it). When the timer fires it ends
// the session if the statement then running is past its deadline,
// re-arms itself for a later deadline, and goes idle when nothing runs.
// Stopping and resetting a runtime timer around every statement was the
// largest cost of dlock's own in an uncontended cycle (BenchmarkPaired,
// dlock/raw geomean over its cases: 1.058 with it, 1.017 without).
type watchdog struct {
	mu sync.Mutex
	t  *time.Timer
	// t is scheduled, to fire at fireAt.
	pending bool
	fireAt  time.Time
	// A statement is in flight, bounded by deadline.
	running  bool
	deadline time.Time
	// The watchdog is ending the session of the running statement; ended
	// counts the end while it is sent.
	ending bool
	ended  sync.WaitGroup
	// Where to send the end: the session id, from a control connection,
	// and the session's network connection, which a deadline wakes (set
	// once, when the session's state is made).
	be      backend
	pool    *sql.DB
	id      int64
	netConn net.Conn
}

// arm makes the watchdog end session id if the statement about to run
// takes longer than d, unless stop is called first.
func (w *watchdog) arm(l *Lock, id int64, d time.Duration) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.be, w.pool, w.id = l.be, l.reg.pool, id
	w.running, w.deadline = true, now.Add(d)
	switch {
	case w.t == nil:
		w.t = time.AfterFunc(d, w.fire)
	case !w.pending || w.deadline.Before(w.fireAt):
		w.t.Reset(d)
	default:
		return // the pending timer fires first and re-arms itself
	}
	w.pending, w.fireAt = true, w.deadline
}

// stop ends the watch of the running statement. It reports false if the
// watchdog ended the session, after that is done.
func (w *watchdog) stop() bool {
	w.mu.Lock()
	w.running = false
	ending := w.ending
	w.ending = false
	w.mu.Unlock()
	if ending {
		w.ended.Wait()
		return false
	}
	return true
}

func (w *watchdog) fire() {
	w.mu.Lock()
	if !w.running {
		w.pending = false
		w.mu.Unlock()
		return
	}
	if rem := time.Until(w.deadline); rem > 0 {
		w.t.Reset(rem)
		w.fireAt = w.deadline
		w.mu.Unlock()
		return
	}
	w.pending = false
	w.ending = true
	w.ended.Add(1)
	be, pool, id, nc := w.be, w.pool, w.id, w.netConn
	w.mu.Unlock()

	defer w.ended.Done()
	if nc != nil {
		// The statement returns now, even if the network lost its answer.
		_ = nc.SetDeadline(time.Unix(1, 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_ = be.terminate(ctx, pool, id)
}

// classify says what a statement's error means; a session dlock ended
// is lost whatever the driver said.
func (l *Lock) classify(err error) failure {
	switch {
	case errors.Is(err, errSessionEnded):
		return failLost
	case l.pin != nil && errors.Is(err, sql.ErrConnDone):
		// The session is fine; this Lock's pin of it is over.
		return failPinClosed
	}
	return l.be.classify(err)
}
