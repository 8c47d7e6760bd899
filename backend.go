package dlock

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// querier is the part of *sql.Conn and *sql.Tx that dlock uses. Lock
// statements go straight to it, never through GORM's callbacks.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// waitBound says how long one lock statement may wait.
type waitBound struct {
	try         bool          // one try, no waiting
	wait        time.Duration // server-side limit; 0 with !try = wait forever
	cancellable bool          // the statement may be cancelled from outside
}

// txState says what dlock knows about an open transaction on the session.
type txState uint8

const (
	txUnknown txState = iota // a *sql.Conn: the user may have begun one
	txOpen                   // a *sql.Tx: a transaction is open
)

// target is the session a statement runs on, as the binding hands it to a
// backend: its handle, what dlock knows of its transaction, and the
// server's id of the session when the statement must check that it runs
// there (a pinned session whose id dlock read from the server: behind a
// pooler, or without pgx, the driver's word for it is not trusted).
type target struct {
	q     querier
	tx    txState
	check int64 // the session id the statement must run on; 0: no check
}

// backend is the SQL of one database family. Each method runs its
// statements on q with ctx as given: callers pass contexts that the caller
// of dlock cannot cancel (see Lock.Acquire).
type backend interface {
	// dbKey maps a user key to what the server sees.
	dbKey(key any, prefix string) (any, error)
	// stmtKey returns what the statement methods take as k for a dbKey:
	// the dbKey itself, or a form with the statements' fixed text built
	// once per Lock.
	stmtKey(dbKey any) any
	// checkMode refuses the mode options the server cannot do.
	checkMode(o options) error
	// serverWait returns the wait to send to the server for a wanted wait
	// d, and whether the client must cut the wait at d itself.
	serverWait(d time.Duration) (time.Duration, bool)
	// lock runs the lock statement, with c started right before it and
	// stopped right after it (c may be nil). It returns (true, nil) on a
	// grant, (false, nil) when the server said busy or timed out, and an
	// error for anything else; classify tells what the error means.
	lock(ctx context.Context, t target, k any, o options, b waitBound, c *canceller) (bool, error)
	// unlock releases one hold; false means the server says it was not held.
	unlock(ctx context.Context, t target, k any, o options) (bool, error)
	// held asks whether this session holds k in o's mode.
	held(ctx context.Context, t target, k any, o options) (bool, error)
	// holding reports, for each hold, whether the server shows it held by
	// its session, or the session alive without it, or the session gone,
	// in one statement on the control connection c (see holding.go).
	holding(ctx context.Context, c *controlConn, holds []watchedHold) ([]holdStatus, error)
	// checkSession refuses a session whose server cannot lock correctly
	// (a PostgreSQL hot standby); dlock calls it before the session's
	// first lock statement, and again until it passes.
	checkSession(ctx context.Context, q querier) error
	// setUp sets, once per physical session, what dlock wants of a session
	// it locks on (PostgreSQL: server-side TCP keepalive); done reports
	// whether it is done, or is to be tried again on a later call.
	setUp(ctx context.Context, q querier, cfg Plugin) (done bool, err error)
	// keepIdle raises the session's idle timeout and returns its own
	// value; restoreIdle puts that value back.
	keepIdle(ctx context.Context, q querier) (saved string, err error)
	restoreIdle(ctx context.Context, q querier, saved string) error
	// sessionID returns the server's id of the session q runs on.
	sessionID(ctx context.Context, q querier) (int64, error)
	// cancel cancels the statement that session id is running, from a
	// control connection taken from pool.
	cancel(ctx context.Context, pool *sql.DB, id int64) error
	// terminate ends session id, from a control connection taken from
	// pool, and with it every lock the session holds.
	terminate(ctx context.Context, pool *sql.DB, id int64) error
	// classify says what an error from the other methods means.
	classify(err error) failure
}

// failure is what a statement's error means for the session and the lock.
type failure uint8

const (
	failOther       failure = iota // a server error with no lock meaning
	failTimeout                    // the server's wait ran out (a grant may have raced it)
	failInterrupted                // the statement was cancelled or killed: a grant may have happened
	failDeadlock                   // the server refused to wait
	failTxAborted                  // the transaction is aborted: nothing ran
	failLost                       // the session is gone or in doubt
	failPinClosed                  // the Lock's *sql.Conn went back to the pool
)

// errInterrupted is returned by a backend's lock when the server answered
// without a verdict (MySQL's NULL from GET_LOCK): the wait was killed.
var errInterrupted = errors.New("dlock: lock statement interrupted")

// errSessionMoved is part of the error of a statement that ran on another
// backend than the session's.
var errSessionMoved = errors.New("dlock: the session moved to another backend")
