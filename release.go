package dlock

import (
	"context"
	"errors"
	"fmt"
)

// Release releases this Lock's hold. It blocks for one statement on the
// Lock's session. The statement runs with ctx's values but not its
// cancellation, bounded by the Plugin's ReleaseTimeout (or ctx's deadline
// if that is later): a release always happens. If the outcome cannot be
// known, the session is discarded rather than returned to the pool, and
// the error matches [ErrLockLost].
//
// Release returns [ErrNotHeld] if this Lock holds nothing, and an error
// matching [ErrLockLost] if the hold is gone: the server says it was not
// held (the session was killed, or its locks were dropped behind dlock's
// back), or dlock found it gone earlier. A Lock whose session went back
// to the pool while it held the lock (its db.Connection returned) gets an
// error that also matches [ErrLeaked]. In every case, and after any other
// failure, the Lock is left not acquired, with one exception: on
// PostgreSQL inside a transaction that has failed (SQLSTATE 25P02)
// nothing can run, the lock is still held, and the Lock stays acquired so
// that it can be released after the rollback.
//
// An [Xact] lock cannot be released early: Release returns an error
// matching [ErrUnsupported] and the lock ends with its transaction.
func (l *Lock) Release(ctx context.Context) error {
	return oneLine(l.releaseHold(ctx))
}

// releaseHold is Release.
func (l *Lock) releaseHold(ctx context.Context) error {
	if l == nil {
		return fmt.Errorf("%w: nil *Lock", ErrNotHeld)
	}
	l.stateMu.Lock()
	lost := l.lostErr
	switch {
	case l.state != stateHeld && l.state != stateLost:
		l.stateMu.Unlock()
		return ErrNotHeld
	case l.mode.xact && l.state == stateLost:
		l.toIdleStateLocked()
		l.stateMu.Unlock()
		return lost
	case l.mode.xact:
		l.stateMu.Unlock()
		return fmt.Errorf("%w: a transaction-level lock is released when its transaction ends", ErrUnsupported)
	}
	l.toReleasingStateLocked()
	l.stateMu.Unlock()

	// A lost hold may still be in the session's book, and, when the loss
	// could not be confirmed, on the server: release it all the same.
	stillHeld, err := l.release(ctx)

	l.stateMu.Lock()
	since := l.heldSince
	if stillHeld && lost == nil {
		l.state = stateHeld // 25P02: the release could not run; still held
	} else {
		l.toIdleStateLocked()
	}
	l.stateMu.Unlock()
	if lost != nil {
		return lost
	}
	if !stillHeld {
		l.released(ctx, since, err)
	}
	return err
}

// release runs the release statement under the session mutex.
func (l *Lock) release(ctx context.Context) (stillHeld bool, err error) {
	s := l.bind.sess
	if err := s.lockWithin(ctx, l.bind.statementBound(ctx), l.bind.handle); err != nil {
		return false, fmt.Errorf("%w: the session stayed busy; it will be discarded: %w", ErrLockLost, err)
	}
	defer s.unlock()
	if err := l.bind.readyLocked(ctx); err != nil {
		return false, err
	}
	if !s.removeLocked(l.seq) {
		// Someone settled this hold while the Release waited for the
		// session: the leak check of Connection or WithLock, or a discard.
		return false, fmt.Errorf("%w: released by dlock.Connection as leaked", ErrLockLost)
	}
	var ok bool
	err = l.bind.boundedLocked(ctx, func(qctx context.Context) error {
		var err error
		ok, err = l.bind.backend.unlock(qctx, l.bind.target(), l.stmtKey, l.mode)
		return err
	})
	if err == nil {
		_ = l.bind.keepIdleLocked(ctx) // the last hold: put the idle timeout back
	}
	switch {
	case err == nil && ok:
		return false, nil
	case err == nil:
		return false, l.notHeldWhy()
	case l.bind.classify(err) == failTxAborted:
		s.addLocked(l)
		return true, fmt.Errorf("dlock: cannot release inside a failed transaction; the lock is still held, release it after the rollback: %w", err)
	case l.bind.classify(err) == failPinClosed:
		// Still held, by a session back in the pool: the book keeps the
		// hold for dlock's next use of that session, which releases it.
		s.addLocked(l)
	}
	if lost := l.sessionFailedLocked(err); lost != nil {
		return false, lost
	}
	why := fmt.Errorf("%w: release failed, so the session was discarded: %w", ErrLockLost, err)
	l.bind.discardLocked(why)
	return false, why
}

// Close releases the lock if this Lock holds it, and returns nil if it
// does not. It is idempotent, safe on a nil *Lock, and blocks like
// [Lock.Release]. The Lock may be acquired again afterwards. On an [Xact]
// lock Close sends nothing: the lock ends with its transaction.
//
// A Lock whose hold dlock found gone (its Done channel closed) returns
// that error once, as Release does, unless Held has reported the loss
// already; a later Close returns nil.
func (l *Lock) Close(ctx context.Context) error {
	return oneLine(l.close(ctx))
}

// close is Close.
func (l *Lock) close(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.stateMu.Lock()
	st := l.state
	if l.mode.xact || (st == stateLost && l.lossTold) {
		// Nothing to send: an Xact lock ends with its transaction, and a
		// loss Held reported has nothing left to release.
		lost, told := l.lostErr, l.lossTold
		if st == stateHeld || st == stateLost {
			l.toIdleStateLocked()
		}
		l.stateMu.Unlock()
		if told {
			return nil
		}
		return lost
	}
	l.stateMu.Unlock()
	if st != stateHeld && st != stateLost {
		return nil
	}
	err := l.releaseHold(ctx)
	if errors.Is(err, ErrNotHeld) {
		return nil // released concurrently
	}
	return err
}
