package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// This file holds the binding, the one gateway from a Lock (or the leak
// check, which has no Lock) to its database session: every method here
// runs with the session mutex held (session.lock), as the ...Locked
// suffix says, except the few that only read configuration (logs, log,
// statementBound, classify).

// binding is where a Lock's statements go: its session's state, the
// database/sql handle they run on, and the backend and registration that
// shape and bound them. The leak check makes one without a Lock, to
// release holds whose Lock is gone.
type binding struct {
	reg     registration
	backend backend
	handle  querier // the *sql.Conn, or the *sql.Tx of an Xact lock
	tx      txState
	sess    *session
	pin     *pin // the pin of a session lock's *sql.Conn; nil in a transaction
}

// pin is one pinning of a physical session: one *sql.Conn. Pins of one
// connection follow each other, so their generations order them.
type pin struct {
	sess *session
	gen  uint64
	// The *sql.Conn while a Connection or WithLock that took it from the
	// pool runs on it (see ownPin); nil otherwise, so that connPins never
	// keeps its key alive.
	conn atomic.Pointer[sql.Conn]
}

// target is what the backend's statements run on: the handle, its
// transaction state, and the session id to check when dlock read it from
// the server on a pinned session (see target).
func (b *binding) target() target {
	t := target{q: b.handle, tx: b.tx}
	if _, pinned := b.handle.(*sql.Conn); pinned && b.sess.idRead {
		t.check = b.sess.id
	}
	return t
}

// pinOf returns the pin of c, and with it the state of the physical
// connection c runs on. It sends nothing: the driver connection behind
// (*sql.Conn).Raw is the same object every time the pool hands that
// connection out, so it names the physical session.
func pinOf(c *sql.Conn) *pin {
	if p, ok := connPins.load(c); ok {
		return p
	}
	s := physicalSession(c)
	if p := s.owned.Load(); p != nil && p.conn.Load() == c {
		// Pinned by a running Connection or WithLock, which registered
		// nothing: register it now, for the next lookups.
		return connPins.loadOrStore(c, func() *pin { return p })
	}
	return connPins.loadOrStore(c, func() *pin { return &pin{sess: s, gen: s.pins.Add(1)} })
}

// ownPin returns the pin of c, a session that a Connection or WithLock
// just took from the pool and closes when it returns, and the session to
// hand to disown before that close. Registering c in connPins (a weak pointer and
// a cleanup per *sql.Conn) waits until a lookup of c asks for it (see
// pinOf): the call's own Lock gets the pin directly.
func ownPin(c *sql.Conn) (*pin, *session) {
	s := physicalSession(c)
	if s.dcType == nil {
		return pinOf(c), nil // state for c alone: only connPins finds it
	}
	p := &pin{sess: s, gen: s.pins.Add(1)}
	p.conn.Store(c)
	s.owned.Store(p)
	return p, s
}

// disown ends ownPin's pin p of a session s (nil: nothing to end).
func (p *pin) disown(s *session) {
	if s != nil {
		s.owned.CompareAndSwap(p, nil)
		p.conn.Store(nil)
	}
}

// readyLocked checks that l's session can take l's statements: it is not
// gone, and l runs under the session's current pin. The first dlock call
// under a new pin of a physical session releases the holds that an
// earlier pin left behind: its db.Connection returned while they were
// held, so they went back to the pool with the session. Their Locks learn
// it at their next call (an error matching [ErrLeaked]).
func (b *binding) readyLocked(ctx context.Context) error {
	s, p := b.sess, b.pin
	switch {
	case s.dead:
		return s.why
	case p == nil || p.gen == s.pinGen:
		return nil
	case p.gen < s.pinGen:
		return errPinReused
	}
	s.pinGen = p.gen
	return b.releaseStaleLocked(ctx)
}

// releaseStaleLocked releases, on b's session, every hold taken under an
// earlier pin, and tells their Locks.
func (b *binding) releaseStaleLocked(ctx context.Context) error {
	for _, h := range b.sess.holds {
		if h.pin >= b.sess.pinGen {
			continue
		}
		if err := b.releaseHoldLocked(ctx, h); err != nil {
			return err
		}
		b.log(ctx, slog.LevelWarn, "dlock: released a lock leaked into the pool with its session",
			slog.String("key", keyText(h.key)), slog.Int64("session", b.sess.id))
		if stale := h.lock.Value(); stale != nil {
			stale.markLost(errPinReused)
		}
	}
	return b.keepIdleLocked(ctx)
}

// releaseHoldLocked releases one hold by its key and takes it out of the
// session's book. If that fails, the session is discarded.
func (b *binding) releaseHoldLocked(ctx context.Context, h hold) error {
	err := b.boundedLocked(ctx, func(qctx context.Context) error {
		_, err := b.backend.unlock(qctx, b.target(), b.backend.stmtKey(h.dbKey), options{shared: h.shared})
		return err
	})
	if err != nil {
		if lost := b.failedLocked(err); lost != nil {
			return lost
		}
		why := fmt.Errorf("%w: releasing a leaked lock failed, so the session was discarded: %w", ErrLockLost, err)
		b.discardLocked(why)
		return why
	}
	b.sess.removeLocked(h.seq)
	return nil
}

// setUpSessionLocked runs the backend's once-per-session setUp. Its
// failure is no reason not to lock, unless the session is gone.
func (b *binding) setUpSessionLocked(ctx context.Context) error {
	var done bool
	err := b.boundedLocked(ctx, func(qctx context.Context) error {
		var err error
		done, err = b.backend.setUp(qctx, b.handle, b.reg.cfg)
		return err
	})
	if err != nil {
		if lost := b.failedLocked(err); lost != nil {
			return fmt.Errorf("%w: %w", ErrNotAcquired, lost)
		}
		done = true // not to be tried again
	}
	b.sess.setUp = done
	return nil
}

// probeSessionIDLocked learns the server's id of the session: from the driver
// where it tells (pgx, unless a pooler stands between), else with one query.
func (b *binding) probeSessionIDLocked(ctx context.Context) error {
	if id, ok := driverSessionID(b.handle); ok && !b.reg.server.pooler {
		b.sess.id = id
		b.sess.idSeen.Store(id)
		return nil
	}
	qctx, cancel := b.driverBoundCtx(ctx)
	defer cancel()
	id, err := b.backend.sessionID(qctx, b.handle)
	if err == nil {
		b.sess.id, b.sess.idRead = id, true
		b.sess.idSeen.Store(id)
	}
	return err
}

// keepIdleLocked raises the session's idle timeout when it holds its
// first lock, and puts the session's own value back when it holds none
// (Plugin.KeepIdleHolders). It returns an error only when the session is
// gone.
func (b *binding) keepIdleLocked(ctx context.Context) error {
	s := b.sess
	want := len(s.holds) > 0
	if !b.reg.cfg.KeepIdleHolders || b.pin == nil || want == s.raised || s.dead {
		return nil
	}
	err := b.boundedLocked(ctx, func(qctx context.Context) error {
		if !want {
			return b.backend.restoreIdle(qctx, b.handle, s.idle)
		}
		var err error
		s.idle, err = b.backend.keepIdle(qctx, b.handle)
		return err
	})
	if err == nil {
		s.raised = want
		return nil
	}
	return b.failedLocked(err)
}

// statementBound is the bound of a short statement (release, one try, held):
// the Plugin's ReleaseTimeout, or ctx's deadline if that is later.
func (b *binding) statementBound(ctx context.Context) time.Duration {
	d := b.reg.cfg.ReleaseTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = max(d, time.Until(dl))
	}
	return d
}

// driverBoundCtx bounds a short statement through the driver: ctx without its
// cancellation, with the deadline of statementBound. When the bound runs out
// the driver closes the session.
func (b *binding) driverBoundCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), b.statementBound(ctx))
}

// quiet returns ctx without its cancellation, for the statements that
// must run when ctx has ended: releases.
func quiet(ctx context.Context) context.Context {
	if ctx.Done() == nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// boundedLocked runs fn, one bounded statement sequence on the session, with ctx's
// values but not its cancellation, bounded by statementBound.
//
// Once the server's session id is known, the bound is kept by a timer
// that ends the session from a control connection (KILL CONNECTION,
// pg_terminate_backend), and fn gets a context without Done: both
// go-sql-driver/mysql and pgx watch a context that has one, which costs
// more than the round trip itself on a busy machine. The timer also sets a
// deadline on the driver's network connection, where dlock knows it, so
// that the statement returns even when the network lost its answer.
// Ending the session ends its locks, so the outcome is known: the session
// is lost. Without the id the driver keeps the bound, through a deadline.
func (b *binding) boundedLocked(ctx context.Context, fn func(context.Context) error) error {
	return b.boundedWithinLocked(ctx, b.statementBound(ctx), true, fn)
}

// boundedWithinLocked is boundedLocked with the bound d, for the try of an
// Acquire whose Timeout or deadline ends first, which returns without
// waitEnd (see overrunGuard.arm) as soon as its statement does.
func (b *binding) boundedWithinLocked(ctx context.Context, d time.Duration, waitEnd bool, fn func(context.Context) error) error {
	s := b.sess
	if s.id == 0 {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
		defer cancel()
		return fn(qctx)
	}
	s.overrun.arm(b, s.id, d, waitEnd)
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	err := fn(ctx)
	if s.overrun.stop() {
		return err
	}
	return joinErrors(errOutlived, err)
}

// classify says what a statement's error means; a session dlock ended
// is lost whatever the driver said.
func (b *binding) classify(err error) failure {
	switch {
	case errors.Is(err, errOutlived):
		return failLost
	case b.pin != nil && errors.Is(err, sql.ErrConnDone):
		if b.sess.connClosed() {
			return failLost // database/sql closed it: the session is gone
		}
		// The session is fine; this Lock's pin of it is over.
		return failPinClosed
	}
	return b.backend.classify(err)
}

// failedLocked settles an error that ends the session for dlock: a lost
// session is discarded; a pin that went back to the pool is left for its
// next user. It returns the error to report, or nil when err is about the
// statement alone.
func (b *binding) failedLocked(err error) error {
	switch b.classify(err) {
	case failLost:
		why := lostCause(err)
		b.discardLocked(why)
		return why
	case failPinClosed:
		return errPinClosed
	}
	return nil
}

// logs reports whether the Plugin's Logger takes records of level.
func (b *binding) logs(ctx context.Context, level slog.Level) bool {
	lg := b.reg.cfg.Logger
	return lg != nil && lg.Enabled(ctx, level)
}

// log writes a record to the Plugin's Logger, if it takes its level.
func (b *binding) log(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	if b.logs(ctx, level) {
		b.reg.cfg.Logger.LogAttrs(ctx, level, msg, attrs...)
	}
}

// discardLocked discards the session (see session.discardLocked) and
// says so in the log.
func (b *binding) discardLocked(why error) {
	b.log(context.Background(), slog.LevelWarn, "dlock: session discarded",
		slog.Int64("session", b.sess.id), slog.String("reason", why.Error()))
	b.sess.discardLocked(b.handle, why)
}
