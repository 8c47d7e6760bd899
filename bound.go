package dlock

import (
	"context"
	"database/sql"
	"errors"
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
	return errors.Join(errSessionEnded, err)
}

// watchdog ends a session whose short statement outlives its bound. One
// timer per session serves every short statement on it; the session mutex
// keeps them one at a time.
type watchdog struct {
	t       *time.Timer
	running sync.WaitGroup // the callback, while it runs
	be      backend
	pool    *sql.DB
	id      int64
}

// arm makes the watchdog end session id after d, unless stopped first.
func (w *watchdog) arm(l *Lock, id int64, d time.Duration) {
	w.be, w.pool, w.id = l.be, l.reg.pool, id
	w.running.Add(1)
	if w.t == nil {
		w.t = time.AfterFunc(d, w.fire)
		return
	}
	w.t.Reset(d)
}

// stop disarms the watchdog; it reports false if the session was ended,
// after waiting for the callback to finish.
func (w *watchdog) stop() bool {
	if w.t.Stop() {
		w.running.Done()
		return true
	}
	w.running.Wait()
	return false
}

func (w *watchdog) fire() {
	defer w.running.Done()
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	_ = w.be.terminate(ctx, w.pool, w.id)
}

// classify says what a statement's error means; a session dlock ended
// is lost whatever the driver said.
func (l *Lock) classify(err error) failure {
	if errors.Is(err, errSessionEnded) {
		return failLost
	}
	return l.be.classify(err)
}
