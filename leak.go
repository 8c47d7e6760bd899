package dlock

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// releaseLeaked releases the holds made on the session of conn after
// Lock sequence number since, when fn of Connection or WithLock returned,
// and reports them with ErrLeaked. The releases run with ctx's values but
// not its cancellation.
func releaseLeaked(ctx context.Context, reg registration, conn *sql.Conn, p *pin, since uint64) error {
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
	ctx = quiet(ctx)
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
