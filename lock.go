package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"gorm.io/gorm"
)

// state is where a Lock is in its life. Every change of state goes
// through one of the transition methods below, under Lock.stateMu;
// statements run outside it, so Acquired never blocks.
//
//	from              to          method                 when
//	idle, lost        acquiring   toAcquiringStateLocked Acquire begins
//	acquiring         held        toHeldStateLocked      the server granted it
//	acquiring         idle        toIdleStateLocked      no grant
//	held, lost        releasing   (Release)              Release begins
//	releasing         held        (Release)              25P02: still held
//	releasing         idle        toIdleStateLocked      Release ends
//	held              lost        toLostStateLocked      a loss found: a check, a statement, a discard, a stale pin
//	held (Xact)       idle        toLostStateLocked      the transaction ended: no loss
//	held              idle        toIdleStateLocked      released as leaked (Connection, WithLock)
//	lost              idle        toIdleStateLocked      Close after Held told the loss; an Xact Release or Close
//
// Two mutexes, two suffixes: a helper named ...Locked needs the session
// mutex (session.sem, held around every dlock statement sequence on a
// session); one named ...StateLocked needs the Lock's stateMu. The
// session mutex is always taken first.
type state uint8

const (
	stateIdle      state = iota // holds nothing
	stateAcquiring              // an Acquire is running
	stateHeld                   // holds the lock
	stateReleasing              // a Release is running
	stateLost                   // held, until dlock found the hold gone
)

// Lock is a named database lock bound to one database session: the
// session of the db.Connection tx (or, with Xact, the transaction) given
// to [New]. Locks on one session stack and do not exclude each other;
// locks on different sessions exclude each other. A session runs one
// statement at a time, so a Lock waiting in Acquire occupies its session:
// use one session per lock that must wait concurrently.
//
// Methods are safe for use from several goroutines. [Lock.Acquired],
// [Lock.Key], [Lock.DBKey] and [Lock.DB] never block.
type Lock struct {
	db      *gorm.DB
	key     any
	dbKey   any
	stmtKey any     // the backend's form of dbKey for its statements
	mode    options // shared, xact
	wait    options // default wait, from New
	bind    binding // where its statements go
	seq     uint64
	alone   bool // refuse to stack on a hold of the same key on the session (WithLock)

	// Used only inside acquire, which runs for one Acquire at a time.
	skipsLeft  int // acquires left that skip the first try
	skipStreak int // the length of the last run of skipped tries

	stateMu   sync.Mutex
	state     state
	lostErr   error         // why, in stateLost
	lossTold  bool          // in stateLost: Held has told the caller already
	holdGen   uint64        // counts grants, so that a late loss check of an earlier hold is ignored
	heldSince time.Time     // the grant, when timed for the Observer or the Logger
	done      chan struct{} // closed when the current hold ends; made by Done
	onLost    lossListener  // told when the current hold is found lost (WithLock, Elector)
}

// lossListener is told why a hold was found lost: fn's context of a
// WithLock (*fnCtx, with no allocation to pass it), or a lossFunc.
type lossListener interface{ lose(why error) }

// lossFunc is a func as a lossListener.
type lossFunc func(why error)

func (f lossFunc) lose(why error) { f(why) }

// closedChan is the channel Done returns when a Lock holds nothing.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// New returns a Lock on key for the database session that tx has pinned:
// the tx of db.Connection for a session-level lock, or a tx inside
// db.Transaction for an [Xact] lock. New sends nothing to the database.
//
// The key is a string, a []byte or an integer; see the package
// documentation for how each names a lock on each server. opts may hold
// mode options ([Shared], [Xact]) and a default wait ([NoWait],
// [Timeout]) for Acquire.
//
// Errors: [ErrNotRegistered], [ErrNotPinned], [ErrNotInTransaction],
// [ErrInvalidKey], [ErrUnsupported], [ErrInvalidOption].
func New(tx *gorm.DB, key any, opts ...Option) (*Lock, error) {
	o, err := applyOptions("New", true, true, opts)
	if err != nil {
		return nil, err
	}
	l, err := newLock(tx, key, options{shared: o.shared, xact: o.xact})
	if err != nil {
		return nil, err
	}
	l.wait = options{wait: o.wait, timeout: o.timeout, waitOpts: o.waitOpts}
	return l, nil
}

// newLock is New with the mode options applied.
func newLock(tx *gorm.DB, key any, mode options) (*Lock, error) {
	reg, err := registered(tx)
	if err != nil {
		return nil, err
	}
	return newLockKeyed(tx, reg, key, nil, mode, nil)
}

// newLockKeyed is newLock with tx's registration, and the key's dbKey
// when the caller has it already (nil: work it out).
func newLockKeyed(tx *gorm.DB, reg registration, key, dbKey any, mode options, p *pin) (*Lock, error) {
	var err error
	l := &Lock{db: tx, key: key, dbKey: dbKey, mode: mode}
	l.bind.pin = p // nil: bindSession finds it
	l.bind.reg, l.bind.backend = reg, reg.server.backend
	if err := l.bindSession(tx); err != nil {
		return nil, err
	}
	if l.dbKey == nil {
		if l.dbKey, err = l.bind.backend.dbKey(key, reg.cfg.KeyPrefix); err != nil {
			return nil, err
		}
	}
	l.stmtKey = l.bind.backend.stmtKey(l.dbKey)
	if err := l.bind.backend.checkMode(l.mode); err != nil {
		return nil, err
	}
	l.seq = l.bind.sess.nextID.Add(1)
	return l, nil
}

// bindSession finds the database session tx runs on.
func (l *Lock) bindSession(tx *gorm.DB) error {
	var pool gorm.ConnPool
	if tx.Statement != nil {
		pool = tx.Statement.ConnPool
	}
	if pool == nil {
		pool = tx.Config.ConnPool
	}
	switch c := pool.(type) {
	case *sql.Conn:
		if l.mode.xact {
			return fmt.Errorf("%w: Xact needs a tx inside db.Transaction", ErrNotInTransaction)
		}
		if l.bind.pin == nil {
			l.bind.pin = pinOf(c)
		}
		l.bind.handle, l.bind.tx, l.bind.sess = c, txUnknown, l.bind.pin.sess
		return nil
	case *sql.Tx:
		if !l.mode.xact {
			return errSessionInTx
		}
		l.bind.handle, l.bind.tx, l.bind.sess = c, txOpen, txSessions.loadOrStore(c, newSession)
		return nil
	case *gorm.PreparedStmtTX:
		if !l.mode.xact {
			return errSessionInTx
		}
		if t, ok := c.Tx.(*sql.Tx); ok {
			l.bind.handle, l.bind.tx, l.bind.sess = t, txOpen, txSessions.loadOrStore(t, newSession)
		} else {
			l.bind.handle, l.bind.tx, l.bind.sess = c, txOpen, preparedSessions.loadOrStore(c, newSession)
		}
		return nil
	}
	if l.mode.xact {
		return fmt.Errorf("%w: Xact needs a tx inside db.Transaction, got %T", ErrNotInTransaction, pool)
	}
	return fmt.Errorf("%w: %T is a pool, not one session; create the Lock on the tx of db.Connection", ErrNotPinned, pool)
}

var errSessionInTx = fmt.Errorf("%w: a session lock on a transaction; create the Lock on the db.Connection tx, before Transaction", ErrNotPinned)

// Key returns the key given to New.
func (l *Lock) Key() any { return l.key }

// DBKey returns what the server sees: the int64 key on PostgreSQL, the
// lock name (a string) on MySQL and MariaDB.
func (l *Lock) DBKey() any { return l.dbKey }

// DB returns the *gorm.DB given to New.
func (l *Lock) DB() *gorm.DB { return l.db }

// Acquired reports whether this Lock holds its lock, as far as it knows.
// It never blocks and sends nothing; use [Lock.Held] to ask the server.
func (l *Lock) Acquired() bool {
	if l == nil {
		return false
	}
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	return l.state == stateHeld
}

// Held asks the server whether this Lock's session holds the lock, in
// this Lock's mode. It blocks for one statement, which waits for any
// other dlock statement on the session to finish first; ctx bounds that
// wait. It returns (true, nil) only when the server says so. It returns
// (false, nil) when the session is alive and does not hold the lock; if
// this Lock believed it held it, the Lock is now lost and Acquired reports
// false. After any error it returns false: an error matching
// [ErrLockLost] means the session is gone (Acquired reports false too).
// For an [Xact] lock it returns (false, nil) once the transaction is done.
func (l *Lock) Held(ctx context.Context) (bool, error) {
	held, err := l.held(ctx)
	return held, oneLine(err)
}

// held is Held.
func (l *Lock) held(ctx context.Context) (bool, error) {
	if l == nil {
		return false, fmt.Errorf("%w: nil *Lock", ErrNotHeld)
	}
	s := l.bind.sess
	if err := s.lock(ctx); err != nil {
		return false, err
	}
	defer s.unlock()
	held, err := l.heldLocked(ctx)
	if held {
		return true, nil
	}
	l.stateMu.Lock()
	var lost loss
	if l.state == stateHeld && err == nil {
		s.removeLocked(l.seq)
		lost = l.toLostStateLocked(l.notHeldWhy())
	}
	if l.state == stateLost && (err == nil || errors.Is(err, ErrLockLost)) {
		l.lossTold = true // Close has nothing more to say
	}
	l.stateMu.Unlock()
	lost.report()
	return false, err
}

// notHeldWhy is why a hold the live session no longer has is gone: SQL on
// the session dropped it, or for an Xact lock its transaction ended.
func (l *Lock) notHeldWhy() error {
	if l.mode.xact {
		return errTxEnded
	}
	return errDroppedBySQL
}

// heldLocked runs the held statement and settles what its error means.
func (l *Lock) heldLocked(ctx context.Context) (held bool, err error) {
	if err := l.bind.readyLocked(ctx); err != nil {
		return false, err
	}
	err = l.bind.boundedLocked(ctx, func(qctx context.Context) error {
		var err error
		held, err = l.bind.backend.held(qctx, l.bind.target(), l.stmtKey, l.mode)
		return err
	})
	switch {
	case err == nil:
		return held, nil
	case l.bind.tx == txOpen && errors.Is(err, sql.ErrTxDone):
		l.bind.sess.loseLocked(errTxEnded)
		return false, nil
	}
	if lost := l.sessionFailedLocked(err); lost != nil {
		return false, lost
	}
	return false, err
}

// Done returns a channel that is closed when the hold this Lock has now
// ends: when it is released, or when dlock finds it lost. dlock finds a
// loss from a control connection within Plugin.CheckInterval (0.5 s by
// default) of the server dropping the lock, and at once when one of its
// statements finds the session gone. After a loss, Acquired reports
// false and Release and Close return an error matching [ErrLockLost]. If
// the Lock holds nothing, Done returns a closed channel. Done never
// blocks; a new hold, after a new Acquire, has a new channel.
func (l *Lock) Done() <-chan struct{} {
	if l == nil {
		return closedChan
	}
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	if l.state != stateHeld && l.state != stateReleasing {
		return closedChan
	}
	if l.done == nil {
		l.done = make(chan struct{})
	}
	return l.done
}

// markLost tells l that its hold is gone, and why, if it holds one.
func (l *Lock) markLost(why error) {
	l.stateMu.Lock()
	var lost loss
	if l.state == stateHeld {
		lost = l.toLostStateLocked(why)
	}
	l.stateMu.Unlock()
	lost.report()
}

// sessionFailedLocked settles an error that ends the session for l (see
// binding.failedLocked); a Lock whose session went back to the pool is
// marked so. It returns the error to report, or nil when err is about the
// statement alone.
func (l *Lock) sessionFailedLocked(err error) error {
	why := l.bind.failedLocked(err)
	if errors.Is(why, errPinClosed) {
		l.markLost(why)
	}
	return why
}

// lostByCheck is markLost from the monitor, for hold generation gen
// only. It signals the loss (Done, fn's context) and returns the report
// for the monitor to make once every lost hold of its round is signalled.
func (l *Lock) lostByCheck(gen uint64, why error) loss {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	if l.state == stateHeld && l.holdGen == gen {
		return l.toLostStateLocked(why)
	}
	return loss{}
}

// toAcquiringStateLocked marks an Acquire running.
func (l *Lock) toAcquiringStateLocked() { l.state = stateAcquiring }

// toReleasingStateLocked marks a Release running.
func (l *Lock) toReleasingStateLocked() { l.state = stateReleasing }

// toHeldStateLocked records a grant, and when it happened.
func (l *Lock) toHeldStateLocked() {
	l.state, l.lostErr, l.lossTold, l.heldSince = stateHeld, nil, false, time.Now()
}

// toIdleStateLocked ends whatever l had: its hold, its loss, its Done
// channel and its loss check.
func (l *Lock) toIdleStateLocked() {
	l.state, l.lostErr, l.lossTold, l.heldSince = stateIdle, nil, false, time.Time{}
	l.endHoldStateLocked()
}

// toLostStateLocked moves a held Lock to lost and signals it at once:
// Done is closed and fn's context ends with why as its cause. It returns
// the report to make once l.stateMu is let go (the Observer and the
// Logger), empty when there is none: an Xact lock whose transaction ended
// is not lost, and goes back to idle.
func (l *Lock) toLostStateLocked(why error) loss {
	if l.mode.xact && errors.Is(why, errTxEnded) {
		l.toIdleStateLocked()
		return loss{}
	}
	lost := loss{l: l, why: why}
	if !l.heldSince.IsZero() {
		lost.held = time.Since(l.heldSince)
	}
	l.state, l.lostErr, l.lossTold, l.heldSince = stateLost, why, false, time.Time{}
	if l.onLost != nil {
		l.onLost.lose(why)
	}
	l.endHoldStateLocked()
	return lost
}

// loss is a lost hold to report to the Observer and the Logger.
type loss struct {
	l    *Lock
	why  error
	held time.Duration
}

// report tells the Observer and the Logger of the loss, if there is one.
// The caller must not hold the Lock's stateMu.
func (x loss) report() {
	if x.l != nil {
		x.l.reportLost(x.why, x.held)
	}
}

// endHoldStateLocked closes the current hold's Done channel and stops its
// loss check. The caller holds l.stateMu.
func (l *Lock) endHoldStateLocked() {
	if l.done != nil {
		close(l.done)
		l.done = nil
	}
	l.onLost = nil
	l.monitor().unwatch(l)
}

// monitor returns the loss monitor of l's pool.
func (l *Lock) monitor() *monitor {
	if l.bind.reg.server == nil {
		return nil
	}
	return l.bind.reg.server.monitor
}

// releasedAsLeak tells l that the leak check of Connection or WithLock
// released its hold.
func (l *Lock) releasedAsLeak(ctx context.Context) {
	l.stateMu.Lock()
	held, since := l.state == stateHeld, l.heldSince
	if held {
		l.toIdleStateLocked()
	}
	l.stateMu.Unlock()
	if held {
		l.released(ctx, since, ErrLeaked)
	}
}

// notifyLost makes f be called with the reason if the current hold is
// found lost, at once if it already was.
func (l *Lock) notifyLost(f lossListener) {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	switch l.state {
	case stateHeld:
		l.onLost = f
	case stateLost:
		f.lose(l.lostErr)
	}
}

// grantedLocked records a grant: in the session's book, and with the
// monitor. The caller holds the session mutex. An error means the
// session, and the grant with it, is gone.
func (l *Lock) grantedLocked(ctx context.Context) error {
	l.bind.sess.addLocked(l)
	if err := l.bind.keepIdleLocked(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAcquired, err)
	}
	l.stateMu.Lock()
	l.holdGen++
	gen := l.holdGen
	l.stateMu.Unlock()
	l.monitor().watch(l, gen)
	return nil
}
