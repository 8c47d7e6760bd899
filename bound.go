package dlock

import (
	"context"
	"errors"
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
	id := l.sess.id
	if id == 0 {
		qctx, cancel := l.shortCtx(ctx)
		defer cancel()
		return fn(qctx)
	}
	ended := make(chan struct{})
	t := time.AfterFunc(l.shortBound(ctx), func() {
		defer close(ended)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), controlTimeout)
		defer cancel()
		_ = l.be.terminate(cctx, l.reg.pool, id)
	})
	err := fn(context.WithoutCancel(ctx))
	if t.Stop() {
		return err
	}
	<-ended
	return errors.Join(errSessionEnded, err)
}

// classify says what a statement's error means; a session dlock ended
// is lost whatever the driver said.
func (l *Lock) classify(err error) failure {
	if errors.Is(err, errSessionEnded) {
		return failLost
	}
	return l.be.classify(err)
}
