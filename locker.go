package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"gorm.io/gorm"
)

// Sentinel errors. The errors of the lock operations match one or more of
// these with [errors.Is]; errors from the driver stay reachable with
// [errors.As].
var (
	// ErrNotRegistered means the Plugin was not registered with db.Use on
	// the *gorm.DB given to New or WithLock.
	ErrNotRegistered = errors.New("dlock: plugin not registered (call db.Use(dlock.Plugin{}))")
	// ErrNotPinned means the *gorm.DB does not run on one pinned database
	// session: session locks need the tx of db.Connection.
	ErrNotPinned = errors.New("dlock: not a pinned session")
	// ErrNotInTransaction means Xact was asked for on a *gorm.DB that is not
	// inside a transaction.
	ErrNotInTransaction = errors.New("dlock: not in a transaction")
	// ErrUnsupportedDialect means the database cannot hold dlock's locks
	// correctly (sqlite, sqlserver, CockroachDB, ...).
	ErrUnsupportedDialect = errors.New("dlock: unsupported dialect")
	// ErrUnsupported means the server cannot do what was asked, such as a
	// shared lock on MySQL, or releasing a transaction-level lock early.
	ErrUnsupported = errors.New("dlock: unsupported on this server")
	// ErrInvalidOption means an option was nil, misplaced or in conflict
	// with another option. Nothing was sent to the database.
	ErrInvalidOption = errors.New("dlock: invalid option")
	// ErrInvalidKey means the key cannot name a lock: nil, empty, a bool,
	// a float, an integer out of range, or an unsupported type.
	ErrInvalidKey = errors.New("dlock: invalid key")
	// ErrNotAcquired means the lock is known not to be held by this Lock:
	// the context ended, a deadlock was detected, or (in WithLock) the
	// lock was busy.
	ErrNotAcquired = errors.New("dlock: not acquired")
	// ErrAlreadyAcquired means Acquire was called on a Lock that holds the
	// lock, or while another Acquire on it is in progress.
	ErrAlreadyAcquired = errors.New("dlock: already acquired")
	// ErrNotHeld means Release was called on a Lock that holds nothing.
	ErrNotHeld = errors.New("dlock: not held")
	// ErrLockLost means the hold, or the whole session, is gone: the
	// session was killed or its locks were dropped behind dlock's back.
	ErrLockLost = errors.New("dlock: lock lost")
	// ErrLeaked means a lock was still held when the session was given
	// back; Connection and WithLock released it.
	ErrLeaked = errors.New("dlock: lock leaked")
	// ErrDeadlock means the server detected a deadlock while waiting. It
	// also matches ErrNotAcquired. From a lock statement it does not mean
	// that a transaction was rolled back.
	ErrDeadlock = errors.New("dlock: deadlock")
)

// state is where a Lock is in its life. Every transition happens under
// Lock.mu; statements run outside it, so Acquired never blocks.
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
	db    *gorm.DB
	key   any
	dbKey any
	sk    any     // the backend's form of dbKey for its statements
	mode  options // shared, xact
	wait  options // default wait, from New
	reg   registration
	be    backend
	q     querier
	tx    txState
	sess  *session
	seq   uint64

	// Used only inside acquire, which runs for one Acquire at a time.
	skipTries int  // acquires left that skip the first try
	skipRun   int  // the length of the last run of skipped tries
	lazyID    bool // probe the session id only when a wait needs it

	mu    sync.Mutex
	state state
}

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
	reg, err := registered(tx)
	if err != nil {
		return nil, err
	}
	l := &Lock{db: tx, key: key, reg: reg, be: reg.server.backend}
	l.mode = options{shared: o.shared, xact: o.xact}
	l.wait = options{wait: o.wait, timeout: o.timeout}
	if err := l.bindSession(tx); err != nil {
		return nil, err
	}
	if l.dbKey, err = l.be.dbKey(key, reg.cfg.KeyPrefix); err != nil {
		return nil, err
	}
	l.sk = l.be.stmtKey(l.dbKey)
	if err := l.be.checkMode(l.mode); err != nil {
		return nil, err
	}
	l.seq = l.sess.nextID.Add(1)
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
		l.q, l.tx, l.sess = c, txUnknown, connSessions.loadOrStore(c, newSession)
		return nil
	case *sql.Tx:
		if !l.mode.xact {
			return errSessionInTx
		}
		l.q, l.tx, l.sess = c, txOpen, txSessions.loadOrStore(c, newSession)
		return nil
	case *gorm.PreparedStmtTX:
		if !l.mode.xact {
			return errSessionInTx
		}
		if t, ok := c.Tx.(*sql.Tx); ok {
			l.q, l.tx, l.sess = t, txOpen, txSessions.loadOrStore(t, newSession)
		} else {
			l.q, l.tx, l.sess = c, txOpen, preparedSessions.loadOrStore(c, newSession)
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
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == stateHeld
}

// Release releases this Lock's hold. It blocks for one statement on the
// Lock's session. The statement runs with ctx's values but not its
// cancellation, bounded by the Plugin's ReleaseTimeout (or ctx's deadline
// if that is later): a release always happens. If the outcome cannot be
// known, the session is discarded rather than returned to the pool, and
// the error matches [ErrLockLost].
//
// Release returns [ErrNotHeld] if this Lock holds nothing, and an error
// matching [ErrLockLost] if the server says the lock was not held (the
// session was killed, or its locks were dropped behind dlock's back). In
// both cases, and after any other failure, the Lock is left not acquired,
// with one exception: on PostgreSQL inside a transaction that has failed
// (SQLSTATE 25P02) nothing can run, the lock is still held, and the Lock
// stays acquired so that it can be released after the rollback.
//
// An [Xact] lock cannot be released early: Release returns an error
// matching [ErrUnsupported] and the lock ends with its transaction.
func (l *Lock) Release(ctx context.Context) error {
	if l == nil {
		return fmt.Errorf("%w: nil *Lock", ErrNotHeld)
	}
	l.mu.Lock()
	switch {
	case l.state == stateLost:
		l.state = stateIdle
		l.mu.Unlock()
		return fmt.Errorf("%w: found gone earlier", ErrLockLost)
	case l.state != stateHeld:
		l.mu.Unlock()
		return ErrNotHeld
	case l.mode.xact:
		l.mu.Unlock()
		return fmt.Errorf("%w: a transaction-level lock is released when its transaction ends", ErrUnsupported)
	}
	l.state = stateReleasing
	l.mu.Unlock()

	stillHeld, err := l.release(ctx)

	l.mu.Lock()
	if stillHeld {
		l.state = stateHeld
	} else {
		l.state = stateIdle
	}
	l.mu.Unlock()
	return err
}

// release runs the release statement under the session mutex.
func (l *Lock) release(ctx context.Context) (stillHeld bool, err error) {
	s := l.sess
	if err := s.acquireWithin(ctx, l.shortBound(ctx), l.q); err != nil {
		return false, fmt.Errorf("%w: the session stayed busy; it will be discarded: %w", ErrLockLost, err)
	}
	defer s.release()
	if s.dead {
		return false, fmt.Errorf("%w: the session was discarded", ErrLockLost)
	}
	if !s.remove(l) {
		return false, fmt.Errorf("%w: released by dlock.Connection as leaked", ErrLockLost)
	}
	var ok bool
	err = l.short(ctx, func(qctx context.Context) error {
		var err error
		ok, err = l.be.unlock(qctx, l.q, l.sk, l.mode)
		return err
	})
	switch {
	case err == nil && ok:
		return false, nil
	case err == nil:
		return false, fmt.Errorf("%w: the server says it was not held", ErrLockLost)
	}
	switch l.classify(err) {
	case failTxAborted:
		s.add(l)
		return true, fmt.Errorf("dlock: cannot release inside a failed transaction; the lock is still held, release it after the rollback: %w", err)
	case failLost:
		s.discard(l.q)
		return false, errors.Join(ErrLockLost, err)
	}
	s.discard(l.q)
	return false, errors.Join(ErrLockLost, fmt.Errorf("dlock: release failed; the session was discarded: %w", err))
}

// Close releases the lock if this Lock holds it, and returns nil if it
// does not. It is idempotent, safe on a nil *Lock, and blocks like
// [Lock.Release]. The Lock may be acquired again afterwards. On an [Xact]
// lock Close sends nothing: the lock ends with its transaction.
func (l *Lock) Close(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	st, xact := l.state, l.mode.xact
	if st == stateLost || (xact && st == stateHeld) {
		l.state = stateIdle
	}
	l.mu.Unlock()
	if st != stateHeld || xact {
		return nil
	}
	err := l.Release(ctx)
	if errors.Is(err, ErrNotHeld) {
		return nil // released concurrently
	}
	return err
}

// Held asks the server whether this Lock's session holds the lock, in
// this Lock's mode. It blocks for one statement, which waits for any
// other dlock statement on the session to finish first; ctx bounds that
// wait. It returns (false, nil) when the session is alive and does not
// hold the lock; if this Lock believed it held it, the Lock is now lost
// and Acquired reports false. It returns (false, err) with an error
// matching [ErrLockLost] when the session is gone. For an [Xact] lock it
// returns (false, nil) once the transaction is done.
func (l *Lock) Held(ctx context.Context) (bool, error) {
	if l == nil {
		return false, fmt.Errorf("%w: nil *Lock", ErrNotHeld)
	}
	s := l.sess
	if err := s.acquire(ctx); err != nil {
		return false, err
	}
	defer s.release()
	var (
		held bool
		err  error
	)
	if s.dead {
		err = fmt.Errorf("%w: the session was discarded", ErrLockLost)
	} else {
		err = l.short(ctx, func(qctx context.Context) error {
			var err error
			held, err = l.be.held(qctx, l.q, l.sk, l.mode)
			return err
		})
		switch {
		case err == nil:
		case l.tx == txOpen && errors.Is(err, sql.ErrTxDone):
			s.lose()
			err = nil
		case l.classify(err) == failLost:
			s.discard(l.q)
			err = errors.Join(ErrLockLost, err)
		default:
			return false, err
		}
	}
	if !held {
		l.mu.Lock()
		if l.state == stateHeld {
			s.remove(l)
			l.state = stateLost
			if l.mode.xact && err == nil {
				l.state = stateIdle
			}
		}
		l.mu.Unlock()
	}
	return held, err
}
