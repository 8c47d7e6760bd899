package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"gorm.io/gorm"
)

// WithLock acquires the lock on key, runs fn, and always releases it. It
// pins a session with db.Connection, or uses db's session if db is
// already the tx of a db.Connection, and like [Connection] it releases
// any session lock fn made on that session and left held ([ErrLeaked]). With [Xact] it runs fn inside
// db.Transaction, holding a transaction-level lock that ends with it.
//
// fn receives the tx of the pinned session, with tx.Statement.Context
// derived from ctx. If the lock is not acquired (busy, Timeout, ctx done,
// deadlock), WithLock returns an error matching [ErrNotAcquired] and fn is
// not called. Otherwise it returns errors.Join(fnErr, releaseErr); the
// release runs with a fresh bounded context even when ctx is done. A panic
// in fn is re-raised after the release.
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
	if _, err := registered(db); err != nil {
		return err
	}
	var mode []Option
	if o.shared {
		mode = append(mode, Shared())
	}
	if o.xact {
		mode = append(mode, Xact())
	}
	wait := options{wait: o.wait, timeout: o.timeout, waitOpts: o.waitOpts}
	_, pinned := db.Statement.ConnPool.(*sql.Conn)
	run := func(tx *gorm.DB) (err error) {
		tx = tx.WithContext(ctx)
		l, err := New(tx, key, mode...)
		if err != nil {
			return err
		}
		// A session pinned for this one call does not pay a query for its
		// id unless a wait needs it.
		l.lazyID = !pinned
		ok, err := l.acquireWith(ctx, wait)
		switch {
		case err != nil && !errors.Is(err, ErrNotAcquired):
			return errors.Join(ErrNotAcquired, err)
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("%w: %v is busy", ErrNotAcquired, key)
		}
		defer func() {
			r := recover()
			err = errors.Join(err, l.Close(context.WithoutCancel(ctx)))
			if r != nil {
				panic(r)
			}
		}()
		return fn(tx)
	}
	if o.xact {
		return db.WithContext(ctx).Transaction(run)
	}
	// Connection also catches session locks fn made and forgot.
	return Connection(ctx, db, run)
}

// acquireWith is Acquire with options already applied.
func (l *Lock) acquireWith(ctx context.Context, o options) (bool, error) {
	if o.waitOpts == 0 {
		return l.Acquire(ctx)
	}
	if o.wait == waitNone {
		return l.Acquire(ctx, NoWait())
	}
	return l.Acquire(ctx, Timeout(o.timeout))
}

// Connection is db.Connection that cleans up after fn: every session lock
// made by dlock on the pinned session and still held when fn returns (or
// panics) is released, and Connection returns an error wrapping
// [ErrLeaked] that names the keys, joined with fn's error. The release
// runs with a fresh bounded context. A panic in fn is re-raised after the
// release. If db is already the tx of a db.Connection, fn runs on that
// session and only the locks created during fn are checked.
func Connection(ctx context.Context, db *gorm.DB, fn func(tx *gorm.DB) error) error {
	if fn == nil {
		return fmt.Errorf("%w: Connection: nil fn", ErrInvalidOption)
	}
	run := func(tx *gorm.DB) (err error) {
		conn, ok := tx.Statement.ConnPool.(*sql.Conn)
		if !ok {
			return fmt.Errorf("%w: db.Connection gave %T", ErrNotPinned, tx.Statement.ConnPool)
		}
		s := connSessions.loadOrStore(conn, newSession)
		since := s.nextID.Load()
		defer func() {
			r := recover()
			err = errors.Join(err, releaseLeaked(context.WithoutCancel(ctx), tx, conn, s, since))
			if r != nil {
				panic(r)
			}
		}()
		return fn(tx)
	}
	db = db.WithContext(ctx)
	if _, ok := db.Statement.ConnPool.(*sql.Conn); ok {
		return run(db)
	}
	return db.Connection(run)
}

// releaseLeaked releases the holds made on s after sequence number since.
func releaseLeaked(ctx context.Context, tx *gorm.DB, conn *sql.Conn, s *session, since uint64) error {
	reg, err := registered(tx)
	if err != nil {
		return nil // no Lock could have been made
	}
	var leaked []*Lock
	var keys []any
	// A dlock statement still running on the session (an Acquire fn left
	// waiting) keeps its locks from being checked.
	if err := s.acquireWithin(ctx, reg.cfg.ReleaseTimeout, conn); err != nil {
		return fmt.Errorf("%w: the session stayed busy after fn returned; it will be discarded: %w", ErrLockLost, err)
	}
	var seqs []uint64
	for seq := range s.holds {
		if seq > since {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		h := s.holds[seq]
		keys = append(keys, h.key)
		if l := h.lock.Value(); l != nil {
			leaked = append(leaked, l)
			continue
		}
		// The Lock was garbage collected while holding: release by key.
		ghost := &Lock{
			key: h.key, dbKey: h.dbKey, sk: reg.server.backend.stmtKey(h.dbKey), mode: options{shared: h.shared}, reg: reg,
			be: reg.server.backend, q: conn, tx: txUnknown, sess: s, seq: seq, state: stateHeld,
		}
		leaked = append(leaked, ghost)
	}
	s.release()
	if len(keys) == 0 {
		return nil
	}
	errs := []error{fmt.Errorf("%w: %d lock(s) still held when fn returned, now released: %v", ErrLeaked, len(keys), keys)}
	for _, l := range leaked {
		if err := l.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
