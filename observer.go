package dlock

import (
	"context"
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
