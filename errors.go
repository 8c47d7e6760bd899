package dlock

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. The errors of the lock operations match one or more of
// these with [errors.Is]; errors from the driver stay reachable with
// [errors.As].
var (
	// ErrNotRegistered means the Plugin was not registered with db.Use on
	// the *gorm.DB given to New or WithLock.
	ErrNotRegistered = errors.New("dlock: plugin not registered (call db.Use(dlock.Plugin{}))")
	// ErrNotPinned means the *gorm.DB does not run on one pinned database
	// session: session locks need the tx of db.Connection.
	ErrNotPinned = errors.New("dlock: not a pinned session")
	// ErrNotInTransaction means Xact was asked for on a *gorm.DB that is not
	// inside a transaction.
	ErrNotInTransaction = errors.New("dlock: not in a transaction")
	// ErrUnsupportedDialect means the database cannot hold dlock's locks
	// correctly (sqlite, sqlserver, CockroachDB, ...).
	ErrUnsupportedDialect = errors.New("dlock: unsupported dialect")
	// ErrUnsupported means the server cannot do what was asked, such as a
	// shared lock on MySQL, or releasing a transaction-level lock early.
	ErrUnsupported = errors.New("dlock: unsupported on this server")
	// ErrInvalidOption means an option was nil, misplaced or in conflict
	// with another option. Nothing was sent to the database.
	ErrInvalidOption = errors.New("dlock: invalid option")
	// ErrInvalidKey means the key cannot name a lock: nil, empty, a bool,
	// a float, an integer out of range, or an unsupported type.
	ErrInvalidKey = errors.New("dlock: invalid key")
	// ErrNotAcquired means the lock is known not to be held by this Lock:
	// the context ended, a deadlock was detected, or (in WithLock) the
	// lock was busy.
	ErrNotAcquired = errors.New("dlock: not acquired")
	// ErrAlreadyAcquired means Acquire was called on a Lock that holds the
	// lock, or while another Acquire on it is in progress.
	ErrAlreadyAcquired = errors.New("dlock: already acquired")
	// ErrNotHeld means Release was called on a Lock that holds nothing.
	ErrNotHeld = errors.New("dlock: not held")
	// ErrLockLost means the hold, or the whole session, is gone: the
	// session was killed or its locks were dropped behind dlock's back.
	ErrLockLost = errors.New("dlock: lock lost")
	// ErrLeaked means a lock was still held when the session was given
	// back; Connection and WithLock released it.
	ErrLeaked = errors.New("dlock: lock leaked")
	// ErrReentrant means a WithLock or Acquire asked for a key that an
	// enclosing WithLock along the same context, or the same session,
	// holds already. It is returned at once and also matches
	// ErrNotAcquired: dlock locks are not re-entrant, since a goroutine
	// cannot be told from the goroutines it starts with its context.
	ErrReentrant = errors.New("dlock: re-entrant")
	// ErrDeadlock means the server detected a deadlock while waiting. It
	// also matches ErrNotAcquired. From a lock statement it does not mean
	// that a transaction was rolled back.
	ErrDeadlock = errors.New("dlock: deadlock")
)

// Why a Lock's hold is gone, as its next call reports it: each names what
// happened.
var (
	errDroppedBySQL = fmt.Errorf("%w: its session is alive but no longer holds it: SQL on the session released it (pg_advisory_unlock_all, RELEASE_ALL_LOCKS, an unlock by hand)", ErrLockLost)
	errSessionEnded = fmt.Errorf("%w: its session ended: the server ended it (terminated, killed, reaped by an idle timeout) or the driver closed it (as when the context of a statement on it ends)", ErrLockLost)
	errTxEnded      = fmt.Errorf("%w: its transaction ended", ErrLockLost)
	errSessionBusy  = fmt.Errorf("%w: the session stayed busy with another statement, so dlock discarded it", ErrLockLost)
	errPinClosed    = fmt.Errorf("%w: its session went back to the pool while the lock was held; dlock releases the lock the next time it uses that session: %w", ErrLeaked, ErrLockLost)
	errUnconfirmed  = fmt.Errorf("%w: the server could not be asked whether it still holds it for longer than ReleaseTimeout, so it is reported lost before the server can free it", ErrLockLost)
	errPinReused    = fmt.Errorf("%w: its session went back to the pool while the lock was held, and dlock released the lock when it next used that session: %w", ErrLeaked, ErrLockLost)
)

// MySQL and MariaDB error numbers dlock gives a meaning to.
const (
	erLockDeadlock         = 1213 // MariaDB: deadlock found when trying to get lock
	erQueryInterrupted     = 1317 // query execution was interrupted
	erUserLockDeadlock     = 3058 // MySQL: deadlock found when trying to get user-level lock
	erStatementTimeout     = 1969 // MariaDB: max_statement_time exceeded
	erQueryTimeout         = 3024 // MySQL: max_execution_time exceeded
	erServerShutdown       = 1053 // server shutdown in progress
	erConnectionKilled     = 1927 // MariaDB: connection was killed
	erClientInteractionTmo = 4031 // MySQL: disconnected by the server for inactivity
)

// lostCause is the loss an error that ended the session means, naming
// what ended it where the server said so: terminated (PostgreSQL 57P01,
// MySQL 1053/1927 killed or shut down), or reaped by an idle timeout
// (57P05 idle_session_timeout, 25P03 idle_in_transaction_session_timeout,
// MySQL 4031 wait_timeout). The server's error stays reachable.
func lostCause(err error) error {
	if errors.Is(err, ErrLockLost) {
		return err
	}
	why := "its session ended or its connection broke"
	switch st := sqlState(err); st {
	case "57P01", "57P02", "57P03":
		why = "its session was terminated by the server (pg_terminate_backend, or a shutdown)"
	case "57P05":
		why = "the server reaped its idle session (idle_session_timeout)"
	case "25P03":
		why = "the server reaped its session idle in a transaction (idle_in_transaction_session_timeout)"
	case "":
		switch n, _ := mysqlErrNumber(err); n {
		case erClientInteractionTmo:
			why = "the server reaped its idle session (wait_timeout)"
		case erServerShutdown, erConnectionKilled:
			why = "its session was killed or the server shut down"
		}
	}
	return fmt.Errorf("%w: %s: %w", ErrLockLost, why, err)
}

// oneLine returns err with the "dlock: " prefix said once: errors that
// wrap one another each start with it ("dlock: not acquired: dlock: lock
// lost: ..."), and a person reads one line with one prefix. The result
// matches everything err matches. The exported calls return through it.
func oneLine(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	first := strings.Index(msg, "dlock: ")
	if first < 0 || !strings.Contains(msg[first+1:], "dlock: ") {
		return err
	}
	head, tail := msg[:first+len("dlock: ")], msg[first+len("dlock: "):]
	return &prefixed{err: err, msg: head + strings.ReplaceAll(tail, "dlock: ", "")}
}

// prefixed is an error with its message said once (see oneLine).
type prefixed struct {
	err error
	msg string
}

func (p *prefixed) Error() string { return p.msg }
func (p *prefixed) Unwrap() error { return p.err }

// joinErrors joins the non-nil errs into one error that matches each of
// them with [errors.Is] and reads as one line: "first; second". It
// returns nil when every err is nil, and the error itself when only one
// is not.
//
// An error that another one wraps is said once: fn returning its
// context's cause, which the release then reports too, reads as one loss.
func joinErrors(errs ...error) error {
	var j joined
next:
	for _, err := range errs {
		if err == nil {
			continue
		}
		for i, k := range j {
			switch {
			case errors.Is(k, err):
				continue next // k says it already
			case errors.Is(err, k):
				j[i] = err // err says k and more
				continue next
			}
		}
		j = append(j, err)
	}
	switch len(j) {
	case 0:
		return nil
	case 1:
		return j[0]
	}
	return j
}

// joined is the error of joinErrors.
type joined []error

func (j joined) Error() string {
	var b strings.Builder
	for i, err := range j {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return b.String()
}

func (j joined) Unwrap() []error { return j }

// maxKeyText is about how many characters of a key an error shows.
const maxKeyText = 64

// keyText formats a key for an error message: strings and []byte quoted
// (so binary bytes stay readable), integers in decimal, and anything
// longer than maxKeyText characters cut, with its full length noted.
func keyText(key any) string {
	var s string
	switch k := key.(type) {
	case string:
		s = k
	case []byte:
		s = string(k)
	default:
		return fmt.Sprint(key)
	}
	n := utf8.RuneCountInString(s)
	if n <= maxKeyText {
		return strconv.Quote(s)
	}
	cut, runes := s, 0
	for i := range s {
		if runes == maxKeyText-4 {
			cut = s[:i]
			break
		}
		runes++
	}
	return strconv.Quote(cut) + "... (" + strconv.Itoa(n) + " characters)"
}
