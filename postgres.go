package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// pgBackend locks with the pg_advisory_lock family on PostgreSQL. The key
// is always bound as the $1 parameter.
//
// The statements, for the exclusive session-level form (the shared form
// adds _shared, the transaction-level form _xact):
//
//	acquire            SELECT pg_advisory_lock($1) FROM set_config('lock_timeout', '0', true)
//	acquire, timeout   SELECT pg_advisory_lock($1) FROM set_config('lock_timeout', $2, true)
//	try once           SELECT 1 WHERE pg_try_advisory_lock($1)
//	release            SELECT 1 WHERE pg_advisory_unlock($1)
//	held               SELECT EXISTS (SELECT 1 FROM pg_locks WHERE ... pid = pg_backend_pid())
//	session id         SELECT pg_backend_pid()
//	cancel (control)   SELECT pg_cancel_backend($1)
//	end a hung session SELECT pg_terminate_backend($1)
//
// On a session whose backend pid dlock read with SELECT pg_backend_pid()
// (behind a pooler, or with drivers other than pgx; see topology.go), the
// try and release statements also return pg_backend_pid(), the release
// runs only on that backend, and held looks for that pid:
//
//	try once           SELECT pg_try_advisory_lock($1), pg_backend_pid()
//	release            SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_advisory_unlock($1) END, pg_backend_pid()
//
// The try and the release are sent with ExecContext: the answer is whether
// the one row came back, which the command tag (SELECT 1 or SELECT 0)
// says, so no row is read (see pgTrue). PostgreSQL evaluates the WHERE
// of a statement without FROM once, as a one-time filter.
//
// set_config(..., true) outside a transaction block lasts for the one
// statement, so the session's lock_timeout is never changed. Inside an
// open transaction a wait that can time out or be cancelled runs inside
// SAVEPOINT dlock_wait, so that its failure does not abort the user's
// transaction, and lock_timeout is put back before the savepoint is left.
type pgBackend struct{}

func (pgBackend) dbKey(key any, prefix string) (any, error) {
	s, isString := key.(string)
	if isString {
		if e := pgKeys.get(s, prefix); e != nil {
			return e.dbKey, nil
		}
	}
	k, err := pgKey(key, prefix)
	if err != nil {
		return nil, err
	}
	dbKey := any(k)
	if isString {
		pgKeys.put(&cachedKey{key: s, prefix: prefix, dbKey: dbKey})
	}
	return dbKey, nil
}

func (pgBackend) stmtKey(dbKey any) any { return dbKey }

func (pgBackend) checkMode(options) error { return nil }

// serverWait: lock_timeout has millisecond resolution.
func (pgBackend) serverWait(d time.Duration) (time.Duration, bool) {
	return max(d.Truncate(time.Millisecond), time.Millisecond), false
}

// pgFunc returns the advisory-lock function call for o, for example
// pg_try_advisory_xact_lock_shared($1): pg_ + prefix + advisory + [_xact]
// + _ + action + [_shared].
func pgFunc(prefix, action string, o options) string {
	var b strings.Builder
	b.WriteString("pg_")
	b.WriteString(prefix)
	b.WriteString("advisory")
	if o.xact {
		b.WriteString("_xact")
	}
	b.WriteString("_")
	b.WriteString(action)
	if o.shared {
		b.WriteString("_shared")
	}
	b.WriteString("($1)")
	return b.String()
}

// pgStmts are the fixed statements of one mode.
type pgStmts struct {
	try, unlock string // whole statements
	lock        string // the waiting call, completed by the caller

	// On a session whose backend pid dlock read from the server (see
	// target.check): the statements also return pg_backend_pid(), and a
	// release runs only on that backend ($2).
	tryPID, unlockPID, undo string
}

// pgStmtTable holds pgStmts by [xact][shared], built once.
var pgStmtTable = func() (t [2][2]pgStmts) {
	for x := range 2 {
		for sh := range 2 {
			o := options{xact: x == 1, shared: sh == 1}
			onBackend := "CASE WHEN pg_backend_pid() = $2 THEN " + pgFunc("", "unlock", o) + " END"
			t[x][sh] = pgStmts{
				try:       "SELECT 1 WHERE " + pgFunc("try_", "lock", o),
				unlock:    "SELECT 1 WHERE " + pgFunc("", "unlock", o),
				lock:      pgFunc("", "lock", o),
				tryPID:    "SELECT " + pgFunc("try_", "lock", o) + ", pg_backend_pid()",
				unlockPID: "SELECT " + onBackend + ", pg_backend_pid()",
				undo:      "SELECT " + onBackend,
			}
		}
	}
	return t
}()

func pgStmt(o options) *pgStmts {
	x, sh := 0, 0
	if o.xact {
		x = 1
	}
	if o.shared {
		sh = 1
	}
	return &pgStmtTable[x][sh]
}

const (
	pgSavepoint = "SAVEPOINT dlock_wait"
	pgRelease   = "RELEASE SAVEPOINT dlock_wait"
	pgRollback  = "ROLLBACK TO SAVEPOINT dlock_wait; RELEASE SAVEPOINT dlock_wait"
)

// lock runs the lock statement: one try, an unbounded wait nothing can
// cancel, or a watched wait (inside a savepoint when a transaction is open).
func (pgBackend) lock(ctx context.Context, t target, k any, o options, b waitBound, c *canceller) (bool, error) {
	q, tx := t.q, t.tx
	key := k // passed on boxed: no allocation per statement
	switch {
	case b.try:
		if t.check != 0 {
			return pgTryOnBackend(ctx, q, key, o, t.check)
		}
		return pgTrue(ctx, q, pgStmt(o).try, key)
	case b.wait <= 0 && !b.cancellable:
		return pgWaitForever(ctx, q, tx, key, o)
	}
	inTx, err := pgInTransaction(ctx, q, tx)
	switch {
	case err != nil:
		return false, err
	case inTx:
		return pgWaitInSavepoint(ctx, q, key, o, b, c)
	}
	c.start()
	if b.wait <= 0 {
		_, err = q.ExecContext(ctx, "SELECT "+pgStmt(o).lock+" FROM set_config('lock_timeout', '0', true)", key)
	} else {
		_, err = q.ExecContext(ctx, "SELECT "+pgStmt(o).lock+" FROM set_config('lock_timeout', $2, true)", key, pgMillis(b.wait))
	}
	c.stop()
	return err == nil, err
}

// pgMovedError reports a session found on backend at instead of pid.
func pgMovedError(pid, at int64) error {
	return fmt.Errorf("%w: %w (from %d to %d), as under transaction pooling; nothing on it is trusted", ErrLockLost, errSessionMoved, pid, at)
}

// pgTryOnBackend is the one-try lock statement on a session whose backend
// pid is pid. A grant on another backend is undone there, by a release
// that runs only if the next statement lands on that backend too, and
// the session is reported lost.
func pgTryOnBackend(ctx context.Context, q querier, key any, o options, pid int64) (bool, error) {
	var (
		ok bool
		at int64
	)
	err := q.QueryRowContext(ctx, pgStmt(o).tryPID, key).Scan(&ok, &at)
	if err != nil || at == pid {
		return ok, err
	}
	if ok && !o.xact {
		var void sql.NullBool
		_ = q.QueryRowContext(ctx, pgStmt(o).undo, key, at).Scan(&void)
	}
	return false, pgMovedError(pid, at)
}

// pgMillis formats a wait for lock_timeout.
func pgMillis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// pgWaitForever waits with nothing to end the wait but the grant or the
// session. Outside a transaction, lock_timeout 0 keeps a session
// lock_timeout from ending it; where dlock cannot tell cheaply, the
// session's lock_timeout applies.
func pgWaitForever(ctx context.Context, q querier, tx txState, key any, o options) (bool, error) {
	query := "SELECT " + pgStmt(o).lock
	if c, ok := q.(*sql.Conn); ok && tx == txUnknown {
		if st, known := pgxTxStatus(c); known && st == 'I' {
			query += " FROM set_config('lock_timeout', '0', true)"
		}
	}
	_, err := q.ExecContext(ctx, query, key)
	return err == nil, err
}

// pgWaitInSavepoint runs a watched wait inside an open transaction, within
// SAVEPOINT dlock_wait (made by pgInTransaction), so that its failure
// leaves the user's transaction intact, and leaves the savepoint.
func pgWaitInSavepoint(ctx context.Context, q querier, key any, o options, b waitBound, c *canceller) (bool, error) {
	fn := pgStmt(o).lock
	var err error
	switch {
	case b.wait <= 0:
		c.start()
		_, err = q.ExecContext(ctx, "SELECT "+fn, key)
		c.stop()
	case !o.xact:
		// A session lock survives ROLLBACK TO SAVEPOINT, which also
		// puts lock_timeout back.
		c.start()
		_, err = q.ExecContext(ctx, "SELECT "+fn+" FROM set_config('lock_timeout', $2, true)", key, pgMillis(b.wait))
		c.stop()
		if err == nil {
			_, err = q.ExecContext(ctx, pgRollback)
			return err == nil, err
		}
	default:
		// A transaction lock would not survive a rollback: read the old
		// lock_timeout in the same statement and put it back after.
		var (
			void bool
			old  string
		)
		c.start()
		err = q.QueryRowContext(ctx, "SELECT "+fn+" IS NULL, s.old FROM (SELECT current_setting('lock_timeout') AS old, "+
			"set_config('lock_timeout', $2, true) OFFSET 0) s", key, pgMillis(b.wait)).Scan(&void, &old)
		c.stop()
		if err == nil {
			_, err = q.ExecContext(ctx, "SELECT set_config('lock_timeout', $1, true)", old)
		}
	}
	if err != nil {
		if _, rerr := q.ExecContext(ctx, pgRollback); rerr != nil {
			return false, joinErrors(err, rerr)
		}
		return false, err
	}
	_, err = q.ExecContext(ctx, pgRelease)
	return err == nil, err
}

// pgInTransaction reports whether a transaction is open on the session,
// and when one is, leaves SAVEPOINT dlock_wait made. With pgx it reads the
// driver's transaction status; with other drivers it tries the SAVEPOINT,
// which fails with 25P01 outside a transaction block.
func pgInTransaction(ctx context.Context, q querier, tx txState) (bool, error) {
	if tx == txUnknown {
		if c, ok := q.(*sql.Conn); ok {
			if st, known := pgxTxStatus(c); known && st == 'I' {
				return false, nil
			}
		}
	}
	_, err := q.ExecContext(ctx, pgSavepoint)
	if sqlState(err) == "25P01" {
		return false, nil
	}
	return err == nil, err
}

func (pgBackend) unlock(ctx context.Context, t target, k any, o options) (bool, error) {
	if t.check != 0 {
		return pgUnlockOnBackend(ctx, t.q, k, o, t.check)
	}
	return pgTrue(ctx, t.q, pgStmt(o).unlock, k)
}

// pgTrue runs query, a SELECT 1 WHERE on key, and reports whether its row
// came back.
func pgTrue(ctx context.Context, q querier, query string, key any) (bool, error) {
	n, err := execRows(ctx, q, query, key)
	switch {
	case err != nil:
		return false, err
	case n != 0 && n != 1:
		return false, fmt.Errorf("dlock: %s returned %d rows", query, n)
	}
	return n == 1, nil
}

// pgUnlockOnBackend releases key only if the statement runs on backend
// pid, so that it never releases a hold of another client's session.
func pgUnlockOnBackend(ctx context.Context, q querier, key any, o options, pid int64) (bool, error) {
	var (
		released sql.NullBool
		at       int64
	)
	err := q.QueryRowContext(ctx, pgStmt(o).unlockPID, key, pid).Scan(&released, &at)
	if err == nil && at != pid {
		return false, pgMovedError(pid, at)
	}
	return released.Bool, err
}

// pgHeldSQL finds this session's granted advisory lock on a bigint key:
// PostgreSQL shows it as classid = high 32 bits, objid = low 32 bits,
// objsubid = 1.
const pgHeldSQL = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'" +
	" AND pid = pg_backend_pid() AND granted AND classid = $1 AND objid = $2 AND objsubid = 1 AND mode = $3)"

// pgHeldPIDSQL is pgHeldSQL for the backend pid $4 instead of the one the
// statement runs on.
const pgHeldPIDSQL = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'" +
	" AND pid = $4 AND granted AND classid = $1 AND objid = $2 AND objsubid = 1 AND mode = $3)"

func (pgBackend) held(ctx context.Context, t target, k any, o options) (bool, error) {
	q := t.q
	key := uint64(k.(int64))
	mode := "ExclusiveLock"
	if o.shared {
		mode = "ShareLock"
	}
	var ok bool
	if t.check != 0 {
		err := q.QueryRowContext(ctx, pgHeldPIDSQL, int64(key>>32), int64(key&0xffffffff), mode, t.check).Scan(&ok)
		return ok, err
	}
	err := q.QueryRowContext(ctx, pgHeldSQL, int64(key>>32), int64(key&0xffffffff), mode).Scan(&ok)
	return ok, err
}

// pgKeepaliveSQL sets the server-side TCP keepalive of the session (see
// Plugin.ServerKeepalive): idle and interval in seconds, the user timeout
// in milliseconds. The numbers are in the text, not parameters: pgx sends
// a statement without arguments in one round trip and caches nothing.
func pgKeepaliveSQL(idle, interval, userTimeout time.Duration) string {
	return "SELECT set_config('tcp_keepalives_idle', '" + strconv.Itoa(int(idle.Seconds())) + "', false), " +
		"set_config('tcp_keepalives_interval', '" + strconv.Itoa(int(interval.Seconds())) + "', false), " +
		"set_config('tcp_keepalives_count', '2', false), " +
		"set_config('tcp_user_timeout', '" + strconv.FormatInt(userTimeout.Milliseconds(), 10) + "', false)"
}

// checkSession refuses a session on a hot standby (see pgCheckSession).
func (pgBackend) checkSession(ctx context.Context, q querier) error { return pgCheckSession(ctx, q) }

// setUp sets the session's server-side TCP keepalive, outside a
// transaction only, so that a failure cannot abort the user's.
func (pgBackend) setUp(ctx context.Context, q querier, cfg Plugin) (bool, error) {
	c, ok := q.(*sql.Conn)
	if cfg.ServerKeepalive < 0 || !ok {
		return true, nil
	}
	if st, known := pgxTxStatus(c); !known || st != 'I' {
		return false, nil
	}
	idle := max(cfg.ServerKeepalive, time.Second)
	interval := max(idle/2, time.Second)
	_, err := q.ExecContext(ctx, pgKeepaliveSQL(idle, interval, 2*idle))
	return err == nil, err
}

// keepIdle turns idle_session_timeout off for the session, where the
// server has it (PostgreSQL 14 and later), and returns its own value.
func (pgBackend) keepIdle(ctx context.Context, q querier) (string, error) {
	var saved sql.NullString
	err := q.QueryRowContext(ctx, "SELECT s.v, CASE WHEN s.v IS NOT NULL THEN set_config('idle_session_timeout', '0', false) END"+
		" FROM (SELECT current_setting('idle_session_timeout', true) AS v) s").Scan(&saved, new(sql.NullString))
	return saved.String, err
}

func (pgBackend) restoreIdle(ctx context.Context, q querier, saved string) error {
	if saved == "" {
		return nil
	}
	_, err := q.ExecContext(ctx, "SELECT set_config('idle_session_timeout', $1, false)", saved)
	return err
}

// sessionID reads the backend pid, which the statements on a pinned
// session then check (see target.check).
func (pgBackend) sessionID(ctx context.Context, q querier) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&id)
	return id, err
}

// cancel cancels the running statement of backend id. A cancel that
// reaches an idle backend is ignored by the server.
func (pgBackend) cancel(ctx context.Context, pool *sql.DB, id int64) error {
	var ok bool
	return pool.QueryRowContext(ctx, "SELECT pg_cancel_backend($1)", id).Scan(&ok)
}

// terminate ends backend id and its locks.
func (pgBackend) terminate(ctx context.Context, pool *sql.DB, id int64) error {
	var ok bool
	return pool.QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", id).Scan(&ok)
}

func (pgBackend) classify(err error) failure {
	st := sqlState(err)
	switch {
	case errors.Is(err, errSessionMoved):
		return failLost
	case isRefusal(err):
		return failTxAborted // refused before the lock statement: nothing ran
	case st == "55P03":
		return failTimeout
	case st == "57014":
		return failInterrupted
	case st == "40P01":
		return failDeadlock
	case st == "25P02":
		return failTxAborted
	case st == "57P01", st == "57P02", st == "57P03", st == "57P05", st == "25P03", strings.HasPrefix(st, "08"):
		return failLost
	case st == "" && errors.Is(err, sql.ErrTxDone):
		return failOther
	case st == "":
		// Not a reply from the server: the connection failed or was
		// closed by the driver.
		return failLost
	}
	return failOther
}
