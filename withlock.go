package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// WithLock acquires the lock on key, runs fn, and always releases it. It
// pins a session from db's pool, or uses db's session if db is already
// the tx of a db.Connection, and like [Connection] it releases any
// session lock fn made on that session and left held ([ErrLeaked]). With
// [Xact] it runs fn inside a transaction on that session, holding a
// transaction-level lock that ends with it.
//
// fn receives the tx of the pinned session, with tx.Statement.Context
// derived from ctx. That context also ends if dlock finds the lock lost
// while fn runs (see [Lock.Done]), with a [context.Cause] matching
// [ErrLockLost]; WithLock then returns an error matching ErrLockLost. On
// pgx a statement fn runs when the context ends fails and closes the
// session. ctx bounds the wait (db's own context does not). A
// [Timeout] bounds the whole acquisition, the wait for a pooled session
// included. If the lock is not acquired (busy, Timeout, ctx done, no
// session from the pool, deadlock), WithLock returns an error matching
// [ErrNotAcquired] (and ctx.Err() when ctx ended) and fn is not called.
// Otherwise it returns fn's error joined with the release's; the release
// runs with a fresh bounded context even when ctx is done. A panic in fn
// is re-raised after the release.
//
// WithLock is not re-entrant. A WithLock or [Lock.Acquire] for the key
// that an enclosing WithLock along ctx (fn's tx.Statement.Context or a
// context derived from it) holds returns an error matching [ErrReentrant]
// at once, and so does a WithLock on a session that holds the key already:
// Go cannot tell the goroutine that called fn from the goroutines fn
// starts with its context, so a re-entrant grant would let all of them in
// at once. A nested WithLock or Connection for another key pins a session
// of its own and waits like any other caller; with no free session in the
// pool it returns [ErrNotAcquired] within its Timeout or when ctx ends.
//
// opts may hold mode options ([Shared], [Xact]) and one wait option
// ([NoWait], [Timeout]); the default is to wait until acquired or ctx ends.
func WithLock(ctx context.Context, db *gorm.DB, key any, fn func(tx *gorm.DB) error, opts ...Option) error {
	o, err := applyOptions("WithLock", true, true, opts)
	if err != nil {
		return err
	}
	if fn == nil {
		return fmt.Errorf("%w: WithLock: nil fn", ErrInvalidOption)
	}
	reg, err := registered(db)
	if err != nil {
		return err
	}
	if obs := reg.cfg.Observer; obs != nil {
		ctx = obs.WithLockStart(ctx, key)
		err = errPanicked // what WithLockEnd hears if fn panics
		defer func() { obs.WithLockEnd(ctx, err) }()
		err = oneLine(withLock(ctx, db, reg, key, fn, o))
		return err
	}
	return oneLine(withLock(ctx, db, reg, key, fn, o))
}

// errPanicked is the error the Observer's WithLockEnd gets when fn
// panicked; the panic goes on to WithLock's caller.
var errPanicked = errors.New("dlock: fn panicked")

// withLock is WithLock once its arguments are checked.
func withLock(ctx context.Context, db *gorm.DB, reg registration, key any, fn func(tx *gorm.DB) error, o options) error {
	dbKey, err := reg.server.backend.dbKey(key, reg.cfg.KeyPrefix)
	if err != nil {
		return err
	}
	if err := checkReentry(ctx, reg.server, dbKey, key); err != nil {
		return err
	}
	var by deadline
	if o.wait == waitTimeout {
		by = deadline{at: time.Now().Add(o.timeout), timeout: o.timeout}
	}
	h := &heldKey{server: reg.server, dbKey: dbKey, key: key, mode: options{shared: o.shared, xact: o.xact}, wait: o.wait}
	// The Lock's statements use ctx: fn's context (with h and the loss)
	// matters only once fn runs, and is made lazily (see fnCtx).
	run := func(_ context.Context, tx *gorm.DB, lost *fnCtx) error {
		return lockAndRun(ctx, tx, reg, lost, key, h, fn, o, by)
	}
	if o.xact {
		return withTransaction(ctx, db, reg, h, by, run)
	}
	return connection(ctx, db, reg, h, by, run)
}

// deadline is the end of a Timeout, fixed when the call began.
type deadline struct {
	at      time.Time // zero: no Timeout
	timeout time.Duration
}

// lockAndRun acquires key on tx's session, runs fn and releases. ctx is
// WithLock's; fn's (tx.Statement.Context) carries h, the key fn runs
// under, and ends with lost.
func lockAndRun(ctx context.Context, tx *gorm.DB, reg registration, lost lossListener, key any, h *heldKey, fn func(tx *gorm.DB) error, o options, by deadline) error {
	var p *pin // the pin connection found; a transaction's Lock has none
	if !o.xact {
		p = h.pin
	}
	l, err := newLockKeyed(tx, reg, key, h.dbKey, options{shared: o.shared, xact: o.xact}, p)
	if err != nil {
		return err
	}
	l.alone = true // a WithLock never stacks on a hold of its session
	wait := options{wait: o.wait, timeout: o.timeout}
	if !by.at.IsZero() {
		// What is left of the Timeout after the wait for a session; one
		// try when nothing is.
		if wait.timeout = time.Until(by.at); wait.timeout <= 0 {
			wait.wait = waitNone
		}
	}
	ok, err := l.acquireWith(ctx, wait)
	switch {
	case err != nil:
		return err
	case !ok && o.wait == waitTimeout:
		return fmt.Errorf("%w within %v: %s stayed busy", ErrNotAcquired, o.timeout, keyText(key))
	case !ok:
		return fmt.Errorf("%w: %s is busy", ErrNotAcquired, keyText(key))
	}
	// fn's context ends when the lock is found lost, with the reason as
	// its cause.
	l.notifyLost(lost)
	return runThen(func() error { return l.settle(fn(tx)) }, func() error { return l.Close(quiet(ctx)) })
}

// settle looks at the error fn returned: one that says the session ended
// is a loss of the lock, told at once. It matters for an Xact lock, whose
// Close sends nothing: without it a killed holder would hear only the
// driver's error.
func (l *Lock) settle(err error) error {
	if err != nil && l.mode.xact && l.bind.classify(err) == failLost {
		l.markLost(lostCause(err))
	}
	return err
}

// Connection is db.Connection that cleans up after fn: every session lock
// made by dlock on the pinned session and still held when fn returns (or
// panics) is released, and Connection returns an error wrapping
// [ErrLeaked] that names the keys, joined with fn's error. The release
// runs with a fresh bounded context. A panic in fn is re-raised after the
// release. If db is already the tx of a db.Connection, fn runs on that
// session and only the locks created during fn are checked; otherwise fn
// runs on a session of its own from the pool, also when ctx descends from
// fn of an outer WithLock or Connection. fn's tx has tx.Statement.Context
// derived from ctx. If no session can be had from the pool, the error
// matches [ErrNotAcquired].
func Connection(ctx context.Context, db *gorm.DB, fn func(tx *gorm.DB) error) error {
	if fn == nil {
		return fmt.Errorf("%w: Connection: nil fn", ErrInvalidOption)
	}
	reg, err := registered(db)
	if err != nil {
		// No dlock Lock can be made on it: plain db.Connection.
		return db.WithContext(ctx).Connection(fn)
	}
	return oneLine(connection(ctx, db, reg, nil, deadline{}, func(_ context.Context, tx *gorm.DB, _ *fnCtx) error { return fn(tx) }))
}

// connection runs fn on a pinned session (see pinSession) and releases
// the locks fn leaves on it. fn's ctx carries h, the key fn runs under
// (nil for Connection).
func connection(ctx context.Context, db *gorm.DB, reg registration, h *heldKey, by deadline, fn sessionFunc) error {
	start := time.Now()
	base, conn, owned, err := pinSession(ctx, db, reg, by)
	if err != nil {
		if h != nil {
			reg.noSession(ctx, h, start, err)
		}
		return err
	}
	if owned {
		defer func() { _ = conn.Close() }()
	}
	var p *pin
	if owned {
		var s *session
		p, s = ownPin(conn)
		defer p.disown(s) // before the Close
	} else {
		p = pinOf(conn)
	}
	if h != nil {
		h.pin = p
	}
	since := p.sess.nextID.Load()
	fc := fnContext(ctx, h)
	defer fc.end()
	tx := base.WithContext(fc) // the one Session fn and dlock's calls share
	tx.Statement.ConnPool = conn
	return runThen(func() error { return fn(fc, tx, fc) },
		func() error { return releaseLeaked(ctx, reg, conn, p, since) })
}

// fnContext returns fn's context: ctx, carrying h when it is not nil,
// that ends when a lock is found lost (lose) and when fn's call ends
// (end).
func fnContext(ctx context.Context, h *heldKey) *fnCtx {
	if cur, _ := ctx.Value(heldCtxKey{}).(*heldKey); h != nil && cur != h {
		h.parent = cur // ctx may carry h already: an Xact fn's, from connection
		return newFnCtx(ctx, h)
	}
	return newFnCtx(ctx, nil)
}

// sessionFunc is what connection and withTransaction run: fn with its
// context and tx, and the function that ends that context when a lock is
// found lost.
type sessionFunc func(ctx context.Context, tx *gorm.DB, lost *fnCtx) error

// withTransaction runs fn inside a transaction: a savepoint when db is
// already in one; else a transaction on the session connection pins.
func withTransaction(ctx context.Context, db *gorm.DB, reg registration, h *heldKey, by deadline, fn sessionFunc) error {
	inTx := func(ctx context.Context, tx *gorm.DB) error {
		return tx.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			fc := fnContext(ctx, h)
			defer fc.end()
			return fn(fc, tx.WithContext(fc), fc)
		})
	}
	if isTransaction(db) {
		return inTx(ctx, db)
	}
	return connection(ctx, db, reg, h, by, func(ctx context.Context, tx *gorm.DB, _ *fnCtx) error {
		if c, ok := tx.Statement.ConnPool.(*sql.Conn); ok {
			if st, known := pgxTxStatus(c); known && st != 'I' {
				return fmt.Errorf("%w: Xact: a transaction is already open on this session; pass its tx to WithLock", ErrNotPinned)
			}
		}
		return inTx(ctx, tx)
	})
}

// isTransaction reports whether db runs inside a transaction.
func isTransaction(db *gorm.DB) bool {
	switch db.Statement.ConnPool.(type) {
	case *sql.Tx, *gorm.PreparedStmtTX:
		return true
	}
	return false
}

// pinSession finds the session a call runs on, and the *gorm.DB to derive
// its tx from: db's own session when db is the tx of a db.Connection;
// else a new session from the pool, waited for until ctx ends or by,
// which the caller must close (owned).
func pinSession(ctx context.Context, db *gorm.DB, reg registration, by deadline) (base *gorm.DB, conn *sql.Conn, owned bool, err error) {
	if c, ok := db.Statement.ConnPool.(*sql.Conn); ok {
		return db, c, false, nil
	}
	pctx := ctx
	if !by.at.IsZero() {
		var cancel context.CancelFunc
		pctx, cancel = context.WithDeadline(ctx, by.at)
		defer cancel()
	}
	conn, err = reg.pool.Conn(pctx)
	switch {
	case err == nil:
		return db, conn, true, nil
	case ctx.Err() != nil:
		return nil, nil, false, fmt.Errorf("%w: no session from the pool: %w", ErrNotAcquired, ctx.Err())
	case pctx.Err() != nil:
		return nil, nil, false, fmt.Errorf("%w within %v: no session from the pool", ErrNotAcquired, by.timeout)
	}
	return nil, nil, false, fmt.Errorf("%w: no session from the pool: %w", ErrNotAcquired, err)
}

// runThen runs fn, then cleanup, even if fn panics or exits the
// goroutine, and returns both errors joined. A panic is re-raised after
// the cleanup.
func runThen(fn, cleanup func() error) (err error) {
	defer func() {
		r := recover()
		err = joinErrors(err, cleanup())
		if r != nil {
			panic(r)
		}
	}()
	return fn()
}
