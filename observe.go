package dlock

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Observer is told what dlock does with locks, for metrics and traces: set
// it as Plugin.Observer. The module github.com/gormdlock/dlock/otel adapts
// it to OpenTelemetry. Its methods run on the goroutine of the dlock call
// (Lost on whichever goroutine found the loss, after the loss has been
// signalled: Done closed, fn's context ended), so they must return quickly
// and must not call back into the Lock. A nil Observer costs nothing.
//
// Observer does not grow: events that dlock adds later come as small
// interfaces of their own, which a Plugin.Observer may also implement and
// which dlock finds by type assertion ([ElectionObserver] is the first), so
// an implementation keeps compiling as dlock grows.
type Observer interface {
	// AcquireStart is called when an Acquire begins, or the acquire of a
	// WithLock; the context it returns is the one AcquireEnd receives.
	AcquireStart(ctx context.Context, e AcquireEvent) context.Context
	// AcquireEnd is called when that acquire returns, with its Outcome,
	// how long it took, and its error.
	AcquireEnd(ctx context.Context, e AcquireEvent)
	// Released is called when a Release or Close ends a hold, with how
	// long it was held and the release's error.
	Released(ctx context.Context, e ReleaseEvent)
	// Lost is called once when dlock finds a hold lost.
	Lost(e ReleaseEvent)
	// WithLockStart is called when a WithLock begins; the context it
	// returns is the one WithLockEnd receives, and the parent of fn's.
	WithLockStart(ctx context.Context, key any) context.Context
	// WithLockEnd is called when the WithLock returns, with its error.
	WithLockEnd(ctx context.Context, err error)
}

// Outcome is how an acquire ended.
type Outcome uint8

const (
	OutcomeGranted  Outcome = iota // the Lock holds the lock
	OutcomeBusy                    // one try found it held elsewhere (NoWait)
	OutcomeTimedOut                // the Timeout ran out, or the ctx deadline
	OutcomeCanceled                // ctx was cancelled
	OutcomeFailed                  // any other error (ErrLockLost, ErrDeadlock, ...)
)

// String returns the outcome's name: "granted", "busy", "timed_out",
// "canceled" or "failed".
func (o Outcome) String() string {
	switch o {
	case OutcomeGranted:
		return "granted"
	case OutcomeBusy:
		return "busy"
	case OutcomeTimedOut:
		return "timed_out"
	case OutcomeCanceled:
		return "canceled"
	}
	return "failed"
}

// AcquireEvent describes one acquire. AcquireStart gets it with Key,
// DBKey, Mode and SessionID (0 until dlock knows the session's id);
// AcquireEnd also gets Outcome, Wait and Err.
type AcquireEvent struct {
	Key       any    // the key given to New or WithLock
	DBKey     any    // what the server sees: int64 or the MySQL name
	Mode      string // "exclusive" or "shared", with " xact" for Xact
	SessionID int64
	Outcome   Outcome
	Wait      time.Duration // from the call to its return
	Err       error
}

// ReleaseEvent describes the end of a hold: a release, or a loss.
type ReleaseEvent struct {
	Key       any
	DBKey     any
	Mode      string
	SessionID int64
	Held      time.Duration // from the grant to the release or to the loss found
	Err       error         // the release's error; for Lost, why
}

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
