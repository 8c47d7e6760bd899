package dlock

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"gorm.io/gorm"
)

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
	if c, ok := b.handle.(*sql.Conn); ok && s.idRead && b.reg.server.checksPID() {
		// The statements on this pin check the session's backend too.
		verifiedPIDs.store(c, s.id)
	}
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
	err := b.bounded(ctx, func(qctx context.Context) error {
		_, err := b.backend.unlock(qctx, b.handle, b.backend.stmtKey(h.dbKey), options{shared: h.shared})
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

// releaseLeaked releases the holds made on the session of conn after
// Lock sequence number since, when fn of Connection or WithLock returned,
// and reports them with ErrLeaked.
func releaseLeaked(ctx context.Context, tx *gorm.DB, conn *sql.Conn, p *pin, since uint64) error {
	reg, err := registered(tx)
	if err != nil {
		return nil // no Lock could have been made
	}
	s := p.sess
	// A dlock statement still running on the session (an Acquire fn left
	// waiting) keeps its locks from being checked.
	if err := s.lockWithin(ctx, reg.cfg.ReleaseTimeout, conn); err != nil {
		return fmt.Errorf("%w: the session stayed busy after fn returned; it will be discarded: %w", ErrLockLost, err)
	}
	defer s.unlock()
	leaked := s.leakedSinceLocked(since)
	if len(leaked) == 0 {
		return nil
	}
	keys := make([]string, len(leaked))
	for i, h := range leaked {
		keys[i] = keyText(h.key)
	}
	errs := []error{fmt.Errorf("%w: %d lock(s) still held when fn returned, now released: %s",
		ErrLeaked, len(keys), strings.Join(keys, ", "))}
	b := &binding{reg: reg, backend: reg.server.backend, handle: conn, tx: txUnknown, sess: s, pin: p}
	if err := b.readyLocked(ctx); err != nil {
		return joinErrors(append(errs, err)...)
	}
	for _, h := range leaked {
		if err := b.releaseHoldLocked(ctx, h); err != nil {
			return joinErrors(append(errs, err)...)
		}
		b.log(ctx, slog.LevelWarn, "dlock: released a lock left held when fn returned",
			slog.String("key", keyText(h.key)), slog.Int64("session", b.sess.id))
		if l := h.lock.Value(); l != nil {
			l.releasedAsLeak(ctx)
		}
	}
	return joinErrors(append(errs, b.keepIdleLocked(ctx))...)
}

// leakedSinceLocked returns the holds of Locks made after sequence number
// since, in the order the Locks were made.
func (s *session) leakedSinceLocked(since uint64) []hold {
	var leaked []hold
	for seq, h := range s.holds {
		if seq > since {
			leaked = append(leaked, h)
		}
	}
	slices.SortFunc(leaked, func(a, b hold) int { return cmp.Compare(a.seq, b.seq) })
	return leaked
}
