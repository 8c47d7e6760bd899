package dlock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// triesSkippedWhenBusy is how many acquires of a Lock skip the first
// try after a try found the lock busy; each further busy try doubles it,
// up to maxTriesSkipped.
const (
	triesSkippedWhenBusy = 8
	maxTriesSkipped      = 256
)

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
// hold untouched. If a [WithLock] along ctx holds the key, it returns
// (false, err) with err matching [ErrReentrant] and sends nothing.
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
	if err := checkReentry(ctx, l.bind.reg.server, l.dbKey, l.key); err != nil {
		return false, oneLine(err)
	}
	ok, err := l.acquireWith(ctx, o)
	return ok, oneLine(err)
}

// acquireWith is Acquire with its wait options applied.
func (l *Lock) acquireWith(ctx context.Context, o options) (bool, error) {
	l.stateMu.Lock()
	switch l.state {
	case stateHeld:
		l.stateMu.Unlock()
		return false, ErrAlreadyAcquired
	case stateAcquiring, stateReleasing:
		l.stateMu.Unlock()
		return false, fmt.Errorf("%w: another Acquire or Release is running", ErrAlreadyAcquired)
	}
	if err := ctx.Err(); err != nil {
		l.stateMu.Unlock()
		return false, fmt.Errorf("%w: %w", ErrNotAcquired, err)
	}
	l.toAcquiringStateLocked()
	l.stateMu.Unlock()

	var (
		start time.Time
		e     AcquireEvent
	)
	if l.observed(ctx) {
		start = time.Now()
		ctx, e = l.acquireStarted(ctx)
	}
	ok, err := l.acquire(ctx, o)

	l.stateMu.Lock()
	if ok {
		l.toHeldStateLocked()
	} else {
		l.toIdleStateLocked()
	}
	l.stateMu.Unlock()
	if !start.IsZero() {
		l.acquireEnded(ctx, e, start, o, ok, err)
	}
	return ok, err
}

// acquire takes the session, then acquires: at once if the session holds
// the lock already, else with one try and, when busy, a wait.
func (l *Lock) acquire(ctx context.Context, o options) (bool, error) {
	s := l.bind.sess
	if err := s.lock(ctx); err != nil {
		return false, fmt.Errorf("%w: waiting for another dlock call on the session: %w", ErrNotAcquired, err)
	}
	defer s.unlock()
	if err := l.bind.readyLocked(ctx); err != nil {
		return false, fmt.Errorf("%w: %w", ErrNotAcquired, err)
	}
	if s.id == 0 {
		// Once per physical session: the server's id of the session, which
		// the cancel and the bound of short statements need (free with
		// pgx, one query with other drivers).
		if err := l.bind.probeSessionIDLocked(ctx); err != nil {
			return false, l.statementFailedLocked(err)
		}
	}
	if !s.checked {
		err := l.bind.boundedLocked(ctx, func(qctx context.Context) error { return l.bind.backend.checkSession(qctx, l.bind.handle) })
		if err != nil {
			return false, l.statementFailedLocked(err)
		}
		s.checked = true
	}
	if !s.setUp {
		if err := l.bind.setUpSessionLocked(ctx); err != nil {
			return false, err
		}
	}
	if s.counts[holdKey{l.dbKey, l.mode.shared}] > 0 || (l.alone && s.counts[holdKey{l.dbKey, !l.mode.shared}] > 0) {
		if l.alone {
			return false, reentrant(l.key, "its session holds it already")
		}
		return l.acquireStackedLocked(ctx, o)
	}
	p, err := l.planWait(ctx, o)
	if err != nil {
		return false, err
	}
	if l.tryFirst(p) {
		ok, err := l.tryLocked(ctx, p)
		if err != nil {
			return false, l.lockFailedLocked(ctx, err, cancelNone, p)
		}
		l.noteTry(ok)
		if ok {
			if err := l.grantedLocked(ctx); err != nil {
				return false, err
			}
		}
		if ok || p.b.try {
			return ok, nil
		}
	}
	return l.waitLocked(ctx, p)
}

// acquireStackedLocked acquires a lock the session already holds in this
// mode: the server grants it at once, so the statement needs no wait and
// cannot be left in doubt. If the server says busy, dlock's book was stale
// (the hold was dropped behind its back and the lock is busy elsewhere),
// and a wait follows, without a second try.
func (l *Lock) acquireStackedLocked(ctx context.Context, o options) (bool, error) {
	ok, err := l.tryLocked(ctx, waitPlan{})
	switch {
	case err != nil:
		return false, l.statementFailedLocked(err)
	case ok:
		if err := l.grantedLocked(ctx); err != nil {
			return false, err
		}
		return true, nil
	}
	p, err := l.planWait(ctx, o)
	if err != nil || p.b.try {
		return false, err
	}
	return l.waitLocked(ctx, p)
}

// waitPlan is how one Acquire waits.
type waitPlan struct {
	b           waitBound
	until       time.Time     // the end of the wait; zero when it has none
	cancelAfter time.Duration // cancel the wait here (MySQL whole seconds, or a backstop)
	ctxDeadline bool          // the ctx deadline bounds the wait, not a Timeout
	timeout     time.Duration // the Timeout asked for, for messages
}

// planWait fixes the wait at call time: the earlier of the Timeout and the
// ctx deadline, in the form the server takes.
func (l *Lock) planWait(ctx context.Context, o options) (waitPlan, error) {
	var (
		p        waitPlan
		deadline time.Time
	)
	switch o.wait {
	case waitNone:
		p.b.try = true
		return p, nil
	case waitTimeout:
		deadline, p.timeout = time.Now().Add(o.timeout), o.timeout
	}
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline, p.ctxDeadline = d, true
	}
	if deadline.IsZero() {
		return p, nil
	}
	rem := o.timeout // exact, so that whole seconds stay whole
	if p.ctxDeadline {
		rem = time.Until(deadline)
	}
	if rem <= 0 { // only a ctx deadline can have passed already
		return p, fmt.Errorf("%w: %w", ErrNotAcquired, context.DeadlineExceeded)
	}
	p.until = deadline
	var mustCut bool
	p.b.wait, mustCut = l.bind.backend.serverWait(rem)
	switch {
	case mustCut:
		p.cancelAfter = rem
	case !p.ctxDeadline:
		// The server ends this wait; if its answer does not come (a cut
		// network), the canceller cancels it a little later.
		p.cancelAfter = rem + deadlineGrace
	}
	return p, nil
}

// tryFirst says whether this Acquire sends one try before it waits. A
// free lock then costs one round trip and no watching. After a busy try,
// the next acquires of this Lock go straight to the wait: 8 of them, twice
// as many after each further busy try (up to 256), so that a contended
// lock seldom pays the try. One try is always sent for NoWait.
func (l *Lock) tryFirst(p waitPlan) bool {
	if p.b.try || l.skipsLeft == 0 {
		return true
	}
	l.skipsLeft--
	return false
}

// noteTry updates the skipping of tries after a try's answer.
func (l *Lock) noteTry(granted bool) {
	if granted {
		l.skipStreak = 0
		return
	}
	l.skipStreak = min(max(2*l.skipStreak, triesSkippedWhenBusy), maxTriesSkipped)
	l.skipsLeft = l.skipStreak
}

// waitLocked runs the waiting lock statement, watched by a canceller when
// ctx or a cut can end it, and settles its outcome: a grant the server
// reports wins over any cancel.
func (l *Lock) waitLocked(ctx context.Context, p waitPlan) (bool, error) {
	s := l.bind.sess
	p.b.cancellable = ctx.Done() != nil || p.cancelAfter > 0
	stmtCtx := quiet(ctx)
	var c *canceller
	if p.b.cancellable {
		be, pool, id := l.bind.backend, l.bind.reg.pool, s.id
		c = &canceller{ctx: ctx, cancelAfter: p.cancelAfter, ctxDeadline: p.ctxDeadline,
			send: func(ctx context.Context) error { return be.cancel(ctx, pool, id) }}
		// The canceller's last resort ends the wait on the client: a
		// deadline on the driver's network connection where dlock knows
		// it (so the driver need not watch the statement's context),
		// else the statement's context, dropped. Either way the driver
		// closes the session.
		if nc := s.overrun.netConn; nc != nil {
			c.drop = func() { _ = nc.SetDeadline(time.Unix(1, 0)) }
		} else {
			var drop context.CancelFunc
			stmtCtx, drop = context.WithCancel(stmtCtx)
			defer drop()
			c.drop = drop
		}
	}
	ok, err := l.bind.backend.lock(stmtCtx, l.bind.target(), l.stmtKey, l.mode, p.b, c)
	reason := c.reason() // the canceller has stopped: no cancel is in flight

	if err == nil && ok {
		// The grant wins over any cancel.
		if err := l.grantedLocked(ctx); err != nil {
			return false, err
		}
		return true, nil
	}
	if reason == cancelDiscard {
		why := fmt.Errorf("%w: %w: no control connection could cancel the wait, so the session was discarded", ErrNotAcquired, ErrLockLost)
		l.bind.log(ctx, slog.LevelWarn, "dlock: cancel not delivered", slog.String("key", keyText(l.key)), slog.Int64("session", s.id))
		l.bind.discardLocked(why)
		return false, joinErrors(why, ctx.Err())
	}
	if err == nil {
		// The server's wait ran out (MySQL GET_LOCK returned 0).
		return false, l.timedOut(ctx, p)
	}
	return false, l.lockFailedLocked(ctx, err, reason, p)
}

// lockFailedLocked settles a lock statement that returned an error.
func (l *Lock) lockFailedLocked(ctx context.Context, err error, reason cancelReason, p waitPlan) error {
	f := l.bind.classify(err)
	switch f {
	case failLost, failPinClosed:
		return fmt.Errorf("%w: %w", ErrNotAcquired, l.sessionFailedLocked(err))
	case failTxAborted:
		// Nothing ran.
		return fmt.Errorf("%w: %w", ErrNotAcquired, err)
	}
	// Any other error can come after the grant: PostgreSQL reports a
	// lock_timeout or a cancel that fired as the lock was granted when the
	// statement next checks for interrupts, and a session-level lock
	// survives the error. Make sure no hold was left behind.
	if lerr := l.dropStrayHoldLocked(ctx); lerr != nil {
		return fmt.Errorf("%w: %w (after: %w)", ErrNotAcquired, lerr, err)
	}
	switch {
	case f == failDeadlock:
		return fmt.Errorf("%w: %w: %w", ErrNotAcquired, ErrDeadlock, err)
	case reason == cancelCtx:
		return fmt.Errorf("%w: %w", ErrNotAcquired, ctx.Err())
	case reason == cancelTimedOut:
		return nil
	case f == failTimeout && p.b.wait > 0:
		return l.timedOut(ctx, p)
	}
	// Includes a lock_timeout or statement_timeout of the session's own.
	return fmt.Errorf("%w: %w", ErrNotAcquired, err)
}

// timedOut is the result of a wait the server ended: (false, nil) for a
// Timeout, ErrNotAcquired and DeadlineExceeded for the ctx deadline.
func (l *Lock) timedOut(ctx context.Context, p waitPlan) error {
	if !p.ctxDeadline {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAcquired, err)
	}
	return fmt.Errorf("%w: %w", ErrNotAcquired, context.DeadlineExceeded)
}

// dropStrayHoldLocked releases a hold that an interrupted lock statement
// may have taken. A transaction-level lock needs no check: the savepoint
// the wait ran in was rolled back. No other dlock Lock on the session
// holds this key (else the statement could not have waited), so one
// release undoes the stray grant.
func (l *Lock) dropStrayHoldLocked(ctx context.Context) error {
	if l.mode.xact {
		return nil
	}
	err := l.bind.boundedLocked(ctx, func(qctx context.Context) error {
		held, err := l.bind.backend.held(qctx, l.bind.target(), l.stmtKey, l.mode)
		if err != nil || !held {
			return err
		}
		released, err := l.bind.backend.unlock(qctx, l.bind.target(), l.stmtKey, l.mode)
		if err == nil && !released {
			err = errors.New("dlock: the stray hold could not be released")
		}
		return err
	})
	if err != nil {
		why := fmt.Errorf("%w: could not make sure no hold was left, so the session was discarded: %w", ErrLockLost, err)
		l.bind.discardLocked(why)
		return why
	}
	return nil
}

// statementFailedLocked maps the error of a short statement (no wait).
func (l *Lock) statementFailedLocked(err error) error {
	if lost := l.sessionFailedLocked(err); lost != nil {
		return fmt.Errorf("%w: %w", ErrNotAcquired, lost)
	}
	return fmt.Errorf("%w: %w", ErrNotAcquired, err)
}

// tryLocked runs the lock statement once, without waiting, as a short statement:
// bounded by statementBound, or, when that comes first, by the end of p's
// wait plus the time a wait gets to answer its cancel (deadlineGrace and
// controlTimeout), so that a cut network keeps an Acquire within its
// Timeout or deadline + ~1.2 s, as a cancelled wait is. The overrun ends
// the session, so the bound is never shorter: a try slowed by a loaded
// server or client must not cost the session's other locks (with a bare
// deadlineGrace, a Timeout of a few milliseconds ended sessions under
// load: TestStressMutualExclusion).
func (l *Lock) tryLocked(ctx context.Context, p waitPlan) (ok bool, err error) {
	d := l.bind.statementBound(ctx)
	if !p.until.IsZero() {
		d = min(d, time.Until(p.until)+deadlineGrace+controlTimeout)
	}
	err = l.bind.boundedWithinLocked(ctx, d, false, func(qctx context.Context) error {
		var err error
		ok, err = l.bind.backend.lock(qctx, l.bind.target(), l.stmtKey, l.mode, waitBound{try: true}, nil)
		return err
	})
	return ok && err == nil, err
}
