package dlock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// triesSkippedWhenBusy is how many acquires of a Lock skip the first
// try after a try found the lock busy; each further busy try doubles it,
// up to maxTriesSkipped.
const (
	triesSkippedWhenBusy = 8
	maxTriesSkipped      = 256
)

// controlTimeout bounds the cancel sent from a control connection, and
// then the wait for the cancelled statement to return. When either runs
// out, the waiting session is discarded.
const controlTimeout = time.Second

// deadlineGrace is how long dlock lets the server end a wait bounded by
// the context's deadline before it cancels the statement itself.
const deadlineGrace = 200 * time.Millisecond

// Acquire acquires the lock on the Lock's session, blocking until the
// lock is acquired or ctx is done. [NoWait] tries once; [Timeout] waits at
// most its duration. The server does the waiting and wakes the waiter.
//
// Acquire returns (true, nil) if and only if this Lock now holds the
// lock, and (false, nil) when the lock is busy or the Timeout ran out.
// If ctx is done first, it returns false and an error matching both
// [ErrNotAcquired] and ctx.Err(). A grant that the server reports wins
// over a context that ends at the same moment. After any error,
// Acquired is false and no hold was left behind.
//
// Acquire never hands ctx to the driver: database/sql drivers close the
// connection when a query's context ends, which would end every lock on
// the session. A cancellation is instead sent from a control connection
// of the same pool (KILL QUERY, pg_cancel_backend), which counts toward
// SetMaxOpenConns; if that does not answer within a second, the session is
// discarded and the error also matches [ErrLockLost].
//
// If the Lock already holds its lock, or another Acquire on it is
// running, Acquire returns (false, [ErrAlreadyAcquired]) and leaves the
// hold untouched.
func (l *Lock) Acquire(ctx context.Context, opts ...Option) (bool, error) {
	if l == nil {
		return false, fmt.Errorf("%w: nil *Lock", ErrNotAcquired)
	}
	o, err := applyOptions("Acquire", false, true, opts)
	if err != nil {
		return false, err
	}
	if o.waitOpts == 0 {
		o = l.wait
	}
	l.mu.Lock()
	switch l.state {
	case stateHeld:
		l.mu.Unlock()
		return false, ErrAlreadyAcquired
	case stateAcquiring, stateReleasing:
		l.mu.Unlock()
		return false, fmt.Errorf("%w: another Acquire or Release is running", ErrAlreadyAcquired)
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		return false, errors.Join(ErrNotAcquired, err)
	}
	l.state = stateAcquiring
	l.mu.Unlock()

	ok, err := l.acquire(ctx, o)

	l.mu.Lock()
	switch {
	case ok:
		l.state = stateHeld
	default:
		l.state = stateIdle
	}
	l.mu.Unlock()
	return ok, err
}

// acquire runs the lock statement under the session mutex, with the wait
// bounds of o and ctx, and settles any doubt it leaves.
func (l *Lock) acquire(ctx context.Context, o options) (bool, error) {
	s := l.sess
	if err := s.acquire(ctx); err != nil {
		return false, errors.Join(ErrNotAcquired, err)
	}
	defer s.release()
	if s.dead {
		return false, fmt.Errorf("%w: the session was discarded earlier", ErrLockLost)
	}
	if s.id == 0 && !l.lazyID {
		// Once per session: the server's id of the session, which the
		// cancel and the bound of short statements need (free with pgx,
		// one query with other drivers).
		if err := l.probeSessionID(ctx); err != nil {
			return false, l.statementFailed(err)
		}
	}
	sctx := context.WithoutCancel(ctx)
	triedBusy := false
	if s.counts[holdKey{l.dbKey, l.mode.shared}] > 0 {
		// The session already holds it in this mode: the server grants at
		// once, so the statement needs no wait and cannot be left in doubt.
		ok, err := l.try(ctx)
		if err == nil && ok {
			s.add(l)
			return true, nil
		}
		if err != nil {
			return false, l.statementFailed(err)
		}
		// dlock's book is stale: the hold was dropped behind its back, and
		// the lock is busy elsewhere.
		triedBusy = true
	}

	// The wait: the earlier of the Timeout and the ctx deadline.
	var (
		b        bound
		deadline time.Time
		fromCtx  bool
	)
	switch o.wait {
	case waitNone:
		b.try = true
	case waitTimeout:
		deadline = time.Now().Add(o.timeout)
	}
	if d, ok := ctx.Deadline(); ok && !b.try && (deadline.IsZero() || d.Before(deadline)) {
		deadline, fromCtx = d, true
	}
	var cut time.Duration
	if !deadline.IsZero() {
		rem := o.timeout // exact, so that whole seconds stay whole
		if fromCtx {
			rem = time.Until(deadline)
		}
		if rem <= 0 { // only a ctx deadline can have passed already
			return false, errors.Join(ErrNotAcquired, context.DeadlineExceeded)
		}
		var mustCut bool
		b.wait, mustCut = l.be.serverWait(rem)
		if mustCut {
			cut = rem
		}
	}
	if triedBusy && b.try {
		return false, nil
	}
	// One try first, a short statement that cannot wait: a free lock costs
	// one round trip and no watching. A busy one is then waited for. After
	// a busy try the next acquires of this Lock go straight to the wait,
	// 8 of them, twice as many after each further busy try (up to 256),
	// so that a contended lock seldom pays the try.
	var ok bool
	var err error
	switch {
	case triedBusy:
	case b.try || l.skipTries == 0:
		ok, err = l.try(ctx)
		if err != nil {
			return false, l.lockFailed(ctx, err, cancelNone, false, false)
		}
		if ok {
			l.skipRun = 0
		}
		if ok || b.try {
			if ok {
				s.add(l)
			}
			return ok, nil
		}
		l.skipRun = min(max(2*l.skipRun, triesSkippedWhenBusy), maxTriesSkipped)
		l.skipTries = l.skipRun
	default:
		l.skipTries--
	}

	b.cancellable = ctx.Done() != nil || cut > 0
	if b.cancellable && s.id == 0 {
		if err := l.probeSessionID(ctx); err != nil {
			return false, l.statementFailed(err)
		}
	}
	stmtCtx := sctx
	var w *watcher
	if b.cancellable {
		// The watcher's last resort drops the statement's context, which
		// makes the driver close the session.
		var drop context.CancelFunc
		stmtCtx, drop = context.WithCancel(sctx)
		defer drop()
		w = &watcher{l: l, ctx: ctx, cut: cut, fromCtx: fromCtx, drop: drop}
	}
	ok, err = l.be.lock(stmtCtx, l.q, l.tx, l.sk, l.mode, b, w)
	reason := w.reason() // the watcher has stopped: no cancel is in flight

	if err == nil && ok {
		s.add(l) // the grant wins over any cancel
		return true, nil
	}
	if reason == cancelDiscard {
		s.discard(l.q)
		return false, errors.Join(ErrNotAcquired, ErrLockLost, ctx.Err(),
			errors.New("dlock: no control connection could cancel the wait; the session was discarded"))
	}
	if err == nil {
		// The server's wait ran out (MySQL GET_LOCK returned 0).
		return false, l.timedOut(ctx, fromCtx)
	}
	return false, l.lockFailed(ctx, err, reason, fromCtx, b.wait > 0)
}

// lockFailed settles a lock statement that returned an error. The caller
// holds the session mutex.
func (l *Lock) lockFailed(ctx context.Context, err error, reason int32, fromCtx, bounded bool) error {
	f := l.classify(err)
	switch f {
	case failLost:
		l.sess.discard(l.q)
		return errors.Join(ErrLockLost, err)
	case failTxAborted:
		// Nothing ran.
		return errors.Join(ErrNotAcquired, err)
	}
	// Any other error can come after the grant: PostgreSQL reports a
	// lock_timeout or a cancel that fired as the lock was granted when the
	// statement next checks for interrupts, and a session-level lock
	// survives the error. Make sure no hold was left behind.
	if lerr := l.dropStrayHold(ctx); lerr != nil {
		return errors.Join(ErrNotAcquired, lerr, err)
	}
	switch {
	case f == failDeadlock:
		return errors.Join(ErrNotAcquired, ErrDeadlock, err)
	case reason == cancelCtx:
		return errors.Join(ErrNotAcquired, ctx.Err())
	case reason == cancelCut:
		return nil
	case f == failTimeout && bounded:
		return l.timedOut(ctx, fromCtx)
	}
	// Includes a lock_timeout or statement_timeout of the session's own.
	return errors.Join(ErrNotAcquired, err)
}

// timedOut is the result of a wait the server ended: (false, nil) for a
// Timeout, ErrNotAcquired and DeadlineExceeded for the ctx deadline.
func (l *Lock) timedOut(ctx context.Context, fromCtx bool) error {
	if fromCtx {
		if err := ctx.Err(); err != nil {
			return errors.Join(ErrNotAcquired, err)
		}
		return errors.Join(ErrNotAcquired, context.DeadlineExceeded)
	}
	return nil
}

// dropStrayHold releases a hold that an interrupted lock statement may
// have taken. A transaction-level lock needs no check: the savepoint the
// wait ran in was rolled back. The caller holds the session mutex; no
// other dlock Lock on the session holds this key (else the statement
// could not have waited), so one release undoes the stray grant.
func (l *Lock) dropStrayHold(ctx context.Context) error {
	if l.mode.xact {
		return nil
	}
	err := l.short(ctx, func(qctx context.Context) error {
		held, err := l.be.held(qctx, l.q, l.sk, l.mode)
		if err != nil || !held {
			return err
		}
		released, err := l.be.unlock(qctx, l.q, l.sk, l.mode)
		if err == nil && !released {
			err = errors.New("dlock: the stray hold could not be released")
		}
		return err
	})
	if err != nil {
		l.sess.discard(l.q)
		return errors.Join(ErrLockLost, fmt.Errorf("dlock: could not make sure no hold was left; the session was discarded: %w", err))
	}
	return nil
}

// statementFailed maps the error of a short statement (no wait).
func (l *Lock) statementFailed(err error) error {
	if l.classify(err) == failLost {
		l.sess.discard(l.q)
		return errors.Join(ErrLockLost, err)
	}
	return errors.Join(ErrNotAcquired, err)
}

// try runs the lock statement once, without waiting, as a short statement.
func (l *Lock) try(ctx context.Context) (ok bool, err error) {
	err = l.short(ctx, func(qctx context.Context) error {
		var err error
		ok, err = l.be.lock(qctx, l.q, l.tx, l.sk, l.mode, bound{try: true}, nil)
		return err
	})
	return ok && err == nil, err
}

// probeSessionID learns the server's id of the session: from the driver
// where it tells (pgx, unless a pooler stands between), else with one query.
func (l *Lock) probeSessionID(ctx context.Context) error {
	if id, ok := driverSessionID(l.q); ok && !l.reg.server.pooler {
		l.sess.id = id
		return nil
	}
	qctx, cancel := l.shortCtx(ctx)
	defer cancel()
	id, err := l.be.sessionID(qctx, l.q)
	if err == nil {
		l.sess.id = id
	}
	return err
}
