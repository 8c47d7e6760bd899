package dlock

import (
	"fmt"
	"time"
)

// Option configures a Lock. Mode options ([Shared], [Xact]) go to [New]
// and [WithLock]; wait options ([NoWait], [Timeout]) go to [Lock.Acquire]
// and [WithLock], and in [New] they set the Lock's default wait. A nil,
// misplaced or conflicting option makes the call fail with
// [ErrInvalidOption] before anything is sent to the database. [Identity]
// goes to [NewElector] only.
//
// Without options a lock is exclusive, session-level, and Acquire waits
// until the lock is acquired or its context ends.
type Option func(*options)

type waitMode uint8

const (
	waitBlock   waitMode = iota // wait until acquired or ctx ends
	waitNone                    // one try
	waitTimeout                 // wait at most timeout
)

// options collects what a list of Options asked for. The counters let the
// caller tell a misplaced or conflicting option from an absent one.
type options struct {
	shared, xact bool
	modeOpts     int
	wait         waitMode
	timeout      time.Duration
	waitOpts     int
	identity     string // NewElector's Identity
	identityOpts int
}

// Shared makes the lock shared: shared holders coexist with each other
// and exclude exclusive holders. PostgreSQL only; on MySQL and MariaDB
// [New] returns [ErrUnsupported]. Default: exclusive.
func Shared() Option {
	return func(o *options) { o.shared = true; o.modeOpts++ }
}

// Xact makes the lock transaction-level (pg_advisory_xact_lock): it is
// released by the server when the transaction ends, and cannot be
// released earlier. [New] needs a *gorm.DB inside a transaction
// (db.Transaction), else it returns [ErrNotInTransaction]. PostgreSQL only.
// Default: session-level, held until released or the session ends.
func Xact() Option {
	return func(o *options) { o.xact = true; o.modeOpts++ }
}

// NoWait makes Acquire try once and return (false, nil) at once if the
// lock is busy. Default: wait until acquired or the context ends.
func NoWait() Option {
	return func(o *options) { o.wait = waitNone; o.waitOpts++ }
}

// Timeout makes Acquire wait at most d, then return (false, nil). A d of
// zero or less is one try, like [NoWait]. If the context has an earlier
// deadline, the context decides. The server does the waiting (no polling).
// Default: wait until acquired or the context ends.
func Timeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.wait = waitNone
		} else {
			o.wait, o.timeout = waitTimeout, d
		}
		o.waitOpts++
	}
}

// applyOptions runs opts into a fresh options value. allowMode and
// allowWait say which kinds the calling function accepts; where names
// the caller for the error message.
func applyOptions(where string, allowMode, allowWait bool, opts []Option) (options, error) {
	if len(opts) == 0 {
		return options{}, nil
	}
	var o options
	for i, opt := range opts {
		if opt == nil {
			return o, fmt.Errorf("%w: %s: option %d is nil", ErrInvalidOption, where, i)
		}
		opt(&o)
	}
	switch {
	case o.modeOpts > 0 && !allowMode:
		return o, fmt.Errorf("%w: %s takes no mode option (Shared, Xact go to New or WithLock)", ErrInvalidOption, where)
	case o.waitOpts > 0 && !allowWait:
		return o, fmt.Errorf("%w: %s takes no wait option (NoWait, Timeout go to Acquire)", ErrInvalidOption, where)
	case o.identityOpts > 0:
		return o, fmt.Errorf("%w: %s takes no Identity (it goes to NewElector)", ErrInvalidOption, where)
	case o.waitOpts > 1:
		return o, fmt.Errorf("%w: %s: more than one of NoWait and Timeout", ErrInvalidOption, where)
	}
	return o, nil
}
