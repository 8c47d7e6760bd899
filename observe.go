package dlock

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// How a Lock tells the Observer (observer.go) and the Plugin's Logger
// what it did.

// modeName names a Lock's mode for events and logs.
func modeName(o options) string {
	m := "exclusive"
	if o.shared {
		m = "shared"
	}
	if o.xact {
		m += " xact"
	}
	return m
}

// event returns the fields of an event about l.
func (l *Lock) event() (key, dbKey any, mode string, session int64) {
	return l.key, l.dbKey, modeName(l.mode), l.bind.sess.idSeen.Load()
}

// observed reports whether an acquire of l is to be timed and told: to
// the Observer, or to a Logger that takes Debug records.
func (l *Lock) observed(ctx context.Context) bool {
	return l.bind.reg.cfg.Observer != nil || l.bind.logs(ctx, slog.LevelDebug)
}

// acquireStarted tells the Observer that an acquire begins, and returns
// the event to finish and the context for the acquire.
func (l *Lock) acquireStarted(ctx context.Context) (context.Context, AcquireEvent) {
	var e AcquireEvent
	e.Key, e.DBKey, e.Mode, e.SessionID = l.event()
	if obs := l.bind.reg.cfg.Observer; obs != nil {
		ctx = obs.AcquireStart(ctx, e)
	}
	return ctx, e
}

// acquireEnded finishes e with the acquire's result and tells the
// Observer and the Logger.
func (l *Lock) acquireEnded(ctx context.Context, e AcquireEvent, start time.Time, o options, ok bool, err error) {
	e.Wait, e.Err, e.SessionID = time.Since(start), err, l.bind.sess.idSeen.Load()
	e.Outcome = outcomeOf(o, ok, err)
	if obs := l.bind.reg.cfg.Observer; obs != nil {
		obs.AcquireEnd(ctx, e)
	}
	l.bind.log(ctx, slog.LevelDebug, "dlock: acquire "+e.Outcome.String(), slog.String("key", keyText(l.key)),
		slog.Int64("session", e.SessionID), slog.Duration("wait", e.Wait))
}

// noSession tells the Observer and the Logger of the acquire of a WithLock
// that ended before a session could be had from the pool: an acquire that
// did not get the lock, like any other.
func (r registration) noSession(ctx context.Context, h *heldKey, start time.Time, err error) {
	obs := r.cfg.Observer
	lg := r.cfg.Logger
	if obs == nil && (lg == nil || !lg.Enabled(ctx, slog.LevelDebug)) {
		return
	}
	e := AcquireEvent{Key: h.key, DBKey: h.dbKey, Mode: modeName(h.mode)}
	actx := ctx
	if obs != nil {
		actx = obs.AcquireStart(ctx, e)
	}
	e.Wait, e.Err = time.Since(start), err
	e.Outcome = outcomeOf(options{wait: h.wait}, false, err)
	if h.wait == waitTimeout && ctx.Err() == nil {
		e.Outcome = OutcomeTimedOut // the Timeout ran out waiting for the pool
	}
	if obs != nil {
		obs.AcquireEnd(actx, e)
	}
	if lg != nil {
		lg.LogAttrs(ctx, slog.LevelDebug, "dlock: acquire "+e.Outcome.String(), slog.String("key", keyText(h.key)),
			slog.Int64("session", 0), slog.Duration("wait", e.Wait))
	}
}

// outcomeOf classifies an acquire's result.
func outcomeOf(o options, ok bool, err error) Outcome {
	switch {
	case ok:
		return OutcomeGranted
	case err == nil && o.wait == waitNone:
		return OutcomeBusy
	case err == nil, errors.Is(err, context.DeadlineExceeded):
		return OutcomeTimedOut
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled
	}
	return OutcomeFailed
}

// released tells the Observer and the Logger that a hold ended by a
// release (or by the leak check), held since since (zero if untimed).
func (l *Lock) released(ctx context.Context, since time.Time, err error) {
	if since.IsZero() {
		return
	}
	var e ReleaseEvent
	e.Key, e.DBKey, e.Mode, e.SessionID = l.event()
	e.Held, e.Err = time.Since(since), err
	if obs := l.bind.reg.cfg.Observer; obs != nil {
		obs.Released(ctx, e)
	}
	if l.bind.logs(ctx, slog.LevelDebug) { // keyText allocates: only for a record
		l.bind.reg.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "dlock: released", slog.String("key", keyText(l.key)),
			slog.Int64("session", e.SessionID), slog.Duration("held", e.Held))
	}
}

// reportLost tells the Observer and the Logger that a hold was found lost
// after held. The caller must not hold l.stateMu.
func (l *Lock) reportLost(why error, held time.Duration) {
	var e ReleaseEvent
	e.Key, e.DBKey, e.Mode, e.SessionID = l.event()
	e.Held, e.Err = held, why
	if obs := l.bind.reg.cfg.Observer; obs != nil {
		obs.Lost(e)
	}
	l.bind.log(context.Background(), slog.LevelWarn, "dlock: lock lost", slog.String("key", keyText(l.key)),
		slog.Int64("session", e.SessionID), slog.Duration("held", e.Held), slog.String("reason", why.Error()))
}
