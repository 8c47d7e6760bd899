package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A session-level lock is only correct when one client session is one
// server session, on one server whose lock table everyone shares. dlock
// checks the topology behind a pool once in Plugin.Initialize, and the
// server behind each PostgreSQL session before its first lock; what it
// cannot lock on is refused with an error wrapping ErrUnsupportedDialect.
// The README's "Supported versions and topologies" table lists each case.

// errStandby refuses a lock on a PostgreSQL hot standby.
var errStandby = fmt.Errorf("%w: the PostgreSQL server is a hot standby (in recovery), whose advisory locks exclude nobody on the primary; connect to the primary", ErrUnsupportedDialect)

// poolerCheckTimeout bounds the statement of the second session of the
// pooler check: a pooler with no second server session free makes it
// wait, and that is not transaction pooling.
const poolerCheckTimeout = 5 * time.Second

// pgCheckPool finds out how pool reaches PostgreSQL, on two sessions
// pinned at once. pooler is true when the driver's id of a session is not
// the backend's pid (PgBouncer hands out its own cancel keys): dlock must
// then learn the pid with a query. It refuses transaction and statement
// pooling, which show as two client sessions on one backend, or as one
// client session that moves between backends.
func pgCheckPool(ctx context.Context, pool *sql.DB) (pooler bool, err error) {
	if pool.Stats().MaxOpenConnections == 1 {
		// Two sessions are needed for a moment; the limit is put back
		// (and the extra session closed) when the check is done.
		pool.SetMaxOpenConns(2)
		defer pool.SetMaxOpenConns(1)
	}
	c1, err := pool.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("dlock: checking the PostgreSQL topology: %w", err)
	}
	defer c1.Close()
	pid1, err := pgBackendPID(ctx, c1)
	if err != nil {
		return false, err
	}
	if id, ok := driverSessionID(c1); ok && id != pid1 {
		pooler = true
	}
	c2, err := pool.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("dlock: checking the PostgreSQL topology: %w", err)
	}
	defer c2.Close()
	qctx, cancel := context.WithTimeout(ctx, poolerCheckTimeout)
	defer cancel()
	pid2, err := pgBackendPID(qctx, c2)
	switch {
	case err != nil && ctx.Err() == nil && qctx.Err() != nil:
		return pooler, nil // no free server session for c2: not transaction pooling
	case err != nil:
		return false, err
	}
	again, err := pgBackendPID(ctx, c1)
	if err != nil {
		return false, err
	}
	if pid2 == pid1 || again != pid1 {
		return false, pgTxPoolingError(pid1, pid2, again)
	}
	return pooler, nil
}

// pgTxPoolingError says why the sessions seen by pgCheckPool cannot hold
// session locks.
func pgTxPoolingError(pid1, pid2, again int64) error {
	seen := fmt.Sprintf("two client sessions ran on backend %d", pid1)
	if pid2 != pid1 {
		seen = fmt.Sprintf("one client session moved from backend %d to %d", pid1, again)
	}
	return fmt.Errorf("%w: a pooler in transaction pooling or statement pooling mode (%s), so session locks exclude nobody; use session pooling (PgBouncer pool_mode = session) or a direct connection", ErrUnsupportedDialect, seen)
}

// pgBackendPID asks the server for the pid of the backend c runs on.
func pgBackendPID(ctx context.Context, c *sql.Conn) (int64, error) {
	var pid int64
	if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return 0, fmt.Errorf("dlock: checking the PostgreSQL topology: %w", err)
	}
	return pid, nil
}

// pgCheckSession refuses a session on a hot standby. With pgx it reads the
// in_hot_standby parameter the server reports (PostgreSQL 14 and later),
// which costs no round trip; otherwise, and to confirm a standby (the
// reported value is stale after a promotion until the session's next
// statement), it asks pg_is_in_recovery(). dlock asks it once per session
// until the session is found on a primary, which stays one until it
// restarts: a standby can be promoted, a primary is never demoted in place.
func pgCheckSession(ctx context.Context, q querier) error {
	if c, ok := q.(*sql.Conn); ok {
		if v, ok := pgxParameterStatus(c, "in_hot_standby"); ok && v == "off" {
			return nil
		}
	}
	var recovering bool
	if err := q.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&recovering); err != nil {
		return err
	}
	if recovering {
		return errStandby
	}
	return nil
}

// erUnknownSystemVariable is MySQL's and MariaDB's "Unknown system
// variable" (a MariaDB built without Galera support has no wsrep_on).
const erUnknownSystemVariable = 1193

// mysqlCheckServer refuses the MySQL-protocol servers whose GET_LOCK does
// not exclude every client of the database: TiDB and Vitess (from the
// version string), a Galera node (@@wsrep_on) and a read-only server, a
// replica (@@read_only, and @@super_read_only on MySQL). A replica that
// is not read-only cannot be told from a primary.
func mysqlCheckServer(ctx context.Context, pool *sql.DB, version string, mariadb bool) error {
	if err := mysqlCheckVersion(version); err != nil {
		return err
	}
	var readOnly, other bool
	var err error
	switch {
	case mariadb:
		err = pool.QueryRowContext(ctx, "SELECT @@global.read_only, @@global.wsrep_on").Scan(&readOnly, &other)
		if n, ok := mysqlErrNumber(err); ok && n == erUnknownSystemVariable {
			other = false
			err = pool.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&readOnly)
		}
	default:
		err = pool.QueryRowContext(ctx, "SELECT @@global.read_only, @@global.super_read_only").Scan(&readOnly, &other)
	}
	if err != nil {
		return fmt.Errorf("dlock: checking the server's topology: %w", err)
	}
	return mysqlTopologyError(mariadb, readOnly, other)
}

// mysqlCheckVersion refuses the servers known from their version string.
func mysqlCheckVersion(version string) error {
	switch {
	case strings.Contains(version, "TiDB"):
		return fmt.Errorf("%w: TiDB (%s): its IS_USED_LOCK does not return the holder's id, a zero GET_LOCK timeout waits a second and waits are cut at an hour", ErrUnsupportedDialect, version)
	case strings.Contains(strings.ToLower(version), "vitess"):
		return fmt.Errorf("%w: Vitess (%s): vtgate sends GET_LOCK to the first shard over a reserved connection, whose server session id dlock cannot learn to cancel a wait; connect to that MySQL server directly", ErrUnsupportedDialect, version)
	}
	return nil
}

// mysqlTopologyError says why a server with these settings cannot hold
// dlock's locks, or is nil. other is @@wsrep_on on MariaDB and
// @@super_read_only on MySQL.
func mysqlTopologyError(mariadb, readOnly, other bool) error {
	switch {
	case mariadb && other:
		return fmt.Errorf("%w: a Galera cluster node (@@wsrep_on = ON): GET_LOCK is local to one node and excludes nobody on the others; use a server outside the cluster for locks", ErrUnsupportedDialect)
	case readOnly:
		return fmt.Errorf("%w: a read-only server (@@read_only = ON), a replica whose GET_LOCK excludes nobody on the primary; connect to the primary", ErrUnsupportedDialect)
	case !mariadb && other:
		return fmt.Errorf("%w: a read-only server (@@super_read_only = ON), a replica whose GET_LOCK excludes nobody on the primary; connect to the primary", ErrUnsupportedDialect)
	}
	return nil
}

// isRefusal reports whether err is a refusal of the topology, sent before
// any lock statement: nothing ran.
func isRefusal(err error) bool {
	return errors.Is(err, ErrUnsupportedDialect)
}

// verifiedPIDs holds the backend pid that dlock read from the server for
// a pinned session whose driver does not tell it truly: behind a pooler
// (pgx's PID() is PgBouncer's cancel key) or with drivers other than pgx.
var verifiedPIDs weakMap[sql.Conn, int64]

// pgVerifiedPID returns the backend pid read for the session q, if any.
// The lock, release and held statements on such a session check it at no
// extra round trip: a session that moved to another backend, as under
// transaction pooling, is lost, and a release runs only on its backend.
func pgVerifiedPID(q querier) (int64, bool) {
	c, ok := q.(*sql.Conn)
	if !ok {
		return 0, false
	}
	return verifiedPIDs.load(c)
}

// errSessionMoved is part of the error of a statement that ran on another
// backend than the session's.
var errSessionMoved = errors.New("dlock: the session moved to another backend")

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

// pgHeldPIDSQL is pgHeldSQL for the backend pid $4 instead of the one the
// statement runs on.
const pgHeldPIDSQL = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'" +
	" AND pid = $4 AND granted AND classid = $1 AND objid = $2 AND objsubid = 1 AND mode = $3)"
