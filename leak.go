package dlock

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
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
func (l *Lock) readyLocked(ctx context.Context) error {
	s, p := l.sess, l.pin
	switch {
	case s.dead:
		return s.why
	case p == nil || p.gen == s.pinGen:
		return nil
	case p.gen < s.pinGen:
		return errPinReused
	}
	s.pinGen = p.gen
	if c, ok := l.q.(*sql.Conn); ok && s.idRead {
		// The statements on this pin check the session's backend too.
		verifiedPIDs.store(c, s.id)
	}
	return l.releaseStaleLocked(ctx)
}

// releaseStaleLocked releases, on l's session, every hold taken under an
// earlier pin.
func (l *Lock) releaseStaleLocked(ctx context.Context) error {
	s := l.sess
	for seq, h := range s.holds {
		if h.pin >= s.pinGen {
			continue
		}
		err := l.short(ctx, func(qctx context.Context) error {
			_, err := l.be.unlock(qctx, l.q, l.be.stmtKey(h.dbKey), options{shared: h.shared})
			return err
		})
		if err != nil {
			if lost := l.sessionFailedLocked(err); lost != nil {
				return lost
			}
			why := fmt.Errorf("%w: releasing a lock leaked by an earlier user of the session failed, so the session was discarded: %w", ErrLockLost, err)
			s.discardLocked(l.q, why)
			return why
		}
		s.removeLocked(seq)
		if stale := h.lock.Value(); stale != nil {
			stale.markLost(errPinReused)
		}
	}
	return l.keepIdleLocked(ctx)
}

// releaseLeaked releases the holds made on the session of conn after
// Lock sequence number since, when fn of Connection or WithLock returned.
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
	leaked := s.leakedSinceLocked(since)
	s.unlock()
	if len(leaked) == 0 {
		return nil
	}
	keys := make([]string, len(leaked))
	for i, h := range leaked {
		keys[i] = keyText(h.key)
	}
	errs := []error{fmt.Errorf("%w: %d lock(s) still held when fn returned, now released: %s",
		ErrLeaked, len(keys), strings.Join(keys, ", "))}
	for _, h := range leaked {
		l := h.lock.Value()
		if l == nil {
			// The Lock was garbage collected while holding: release by key.
			l = &Lock{
				key: h.key, dbKey: h.dbKey, sk: reg.server.backend.stmtKey(h.dbKey), mode: options{shared: h.shared},
				reg: reg, be: reg.server.backend, q: conn, tx: txUnknown, sess: s, pin: p, seq: h.seq, state: stateHeld,
			}
		}
		if err := l.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return joinErrors(errs...)
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
