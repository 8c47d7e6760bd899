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
// client session that moves between backends; and a Citus node other than
// the coordinator, learned in the first statement (whether the citus
// extension is there), then, on Citus only, from citus_is_coordinator().
func pgCheckPool(ctx context.Context, pool *sql.DB) (pooler bool, err error) {
	defer allowTwoSessions(pool)()
	c1, err := pool.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("dlock: checking the PostgreSQL topology: %w", err)
	}
	defer c1.Close()
	var (
		pid1         int64
		citus, hasFn bool
	)
	if err := c1.QueryRowContext(ctx, pgFirstCheckSQL).Scan(&pid1, &citus, &hasFn); err != nil {
		return false, fmt.Errorf("dlock: checking the PostgreSQL topology: %w", err)
	}
	if citus {
		if err := pgCheckCitus(ctx, c1, hasFn); err != nil {
			return false, err
		}
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

// pgFirstCheckSQL is the first statement of pgCheckPool: the backend pid,
// whether the citus extension is installed, and whether its
// citus_is_coordinator() exists (Citus 11.0 and later). Neither of the
// last two fails where Citus is absent.
const pgFirstCheckSQL = "SELECT pg_backend_pid()," +
	" EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')," +
	" to_regproc('pg_catalog.citus_is_coordinator') IS NOT NULL"

// pgCheckCitus refuses a Citus node that is not the coordinator: a worker
// takes advisory locks in its own lock table, which excludes nobody on the
// coordinator or the other workers.
func pgCheckCitus(ctx context.Context, c *sql.Conn, hasFn bool) error {
	if !hasFn {
		return citusError(false, false)
	}
	var coordinator bool
	if err := c.QueryRowContext(ctx, "SELECT citus_is_coordinator()").Scan(&coordinator); err != nil {
		return fmt.Errorf("dlock: checking the Citus node: %w", err)
	}
	return citusError(true, coordinator)
}

// citusError says why a Citus node cannot hold dlock's locks, or is nil
// for the coordinator. hasFn: citus_is_coordinator() exists.
func citusError(hasFn, coordinator bool) error {
	switch {
	case !hasFn:
		return fmt.Errorf("%w: a Citus node without citus_is_coordinator() (Citus before 11.0), which dlock cannot tell from a worker, whose advisory locks exclude nobody on the other nodes; upgrade Citus or use a server outside the cluster for locks", ErrUnsupportedDialect)
	case !coordinator:
		return fmt.Errorf("%w: a Citus node that is not the coordinator (citus_is_coordinator() = false): its advisory locks are local to it and exclude nobody on the coordinator or the other workers; connect to the coordinator (a single-node Citus answers false until citus_set_coordinator_host registers it)", ErrUnsupportedDialect)
	}
	return nil
}

// pgCheckServer refuses the PostgreSQL-protocol servers known from their
// version string: CockroachDB and YugabyteDB. On YugabyteDB it also reads
// the setting that silences its advisory locks, for the reason it gives.
func pgCheckServer(ctx context.Context, pool *sql.DB, version string) error {
	switch {
	case strings.Contains(version, "CockroachDB"):
		return cockroachError(version)
	case strings.Contains(version, "-YB-"):
		var silenced sql.NullString
		// Best effort, for the message only: YugabyteDB is refused anyway.
		_ = pool.QueryRowContext(ctx, "SELECT current_setting('yb_silence_advisory_locks_not_supported_error', true)").Scan(&silenced)
		return ybError(version, silenced.String)
	}
	return nil
}

// cockroachError refuses CockroachDB.
func cockroachError(version string) error {
	return fmt.Errorf("%w: CockroachDB (%s): pg_try_advisory_lock and pg_advisory_unlock are stubs that always return true, so every session gets every lock (session-level advisory locks are an open upstream issue); use a PostgreSQL or MySQL server for locks", ErrUnsupportedDialect, version)
}

// ybRelease returns YugabyteDB's release from version(), which reads like
// "PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu, ...": the
// numbers after "-YB-" up to the build ("-b0").
func ybRelease(version string) ([]int, bool) {
	_, rest, ok := strings.Cut(version, "-YB-")
	if !ok {
		return nil, false
	}
	if i := strings.IndexAny(rest, "- "); i >= 0 {
		rest = rest[:i]
	}
	var rel []int
	for _, f := range strings.Split(rest, ".") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, false
		}
		rel = append(rel, n)
	}
	return rel, len(rel) >= 2
}

// ybBefore reports whether release rel is older than major.minor.
func ybBefore(rel []int, major, minor int) bool {
	return rel[0] < major || rel[0] == major && rel[1] < minor
}

// ybError says why dlock refuses YugabyteDB at this version, with the
// session's yb_silence_advisory_locks_not_supported_error ("on", "off",
// or "" where it is unknown).
func ybError(version, silenced string) error {
	rel, ok := ybRelease(version)
	var why string
	switch {
	case !ok:
		why = "a release dlock cannot read; before 2025.1 its advisory locks are no-ops or raise 0A000"
	case ybBefore(rel, 2, 20):
		why = "before 2.20 pg_advisory_lock and pg_try_advisory_lock are silent no-ops that return at once without locking, so every session gets every lock"
	case ybBefore(rel, 2025, 1):
		why = "from 2.20 to 2024.2 advisory locks raise 0A000 (not supported), and yb_silence_advisory_locks_not_supported_error = on turns them into silent no-ops that lock nothing; real cluster-wide locks are a preview from 2.25.1 and on by default from 2025.1"
	default:
		why = "its advisory locks are cluster-wide from 2025.1, but dlock has no multi-node proof yet that a wait is cancelled and that Holders sees every holder across nodes; refused until one exists"
	}
	if strings.EqualFold(silenced, "on") {
		why += "; yb_silence_advisory_locks_not_supported_error is on for this session, so a lock the cluster does not support would be a no-op that reports success"
	}
	name := version
	if _, rest, ok := strings.Cut(version, "-YB-"); ok {
		name, _, _ = strings.Cut(rest, " ")
	}
	return fmt.Errorf("%w: YugabyteDB %s: %s; use a PostgreSQL server for locks", ErrUnsupportedDialect, name, why)
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

// mysqlTopologySQL reads the server variables mysqlCheckServer needs, in
// one statement that works on every flavour. A variable the server does
// not have (wsrep_on without Galera, the
// group_replication_* ones without the plugin loaded, super_read_only on
// MariaDB) is simply not in the answer: SHOW VARIABLES never fails for a
// name it does not know, where SELECT @@name does (error 1193).
const mysqlTopologySQL = "SHOW GLOBAL VARIABLES WHERE Variable_name IN" +
	" ('read_only', 'super_read_only', 'innodb_read_only', 'wsrep_on'," +
	" 'group_replication_single_primary_mode', 'group_replication_group_name')"

// mysqlCheckServer refuses the MySQL-protocol servers whose GET_LOCK does
// not exclude every client of the database: TiDB and Vitess (from the
// version string), then, from the variables read in one statement, a
// Galera node (@@wsrep_on), a Group Replication member in multi-primary
// mode, an Aurora MySQL reader (@@innodb_read_only) and a read-only
// server, a replica (@@read_only, @@super_read_only). A replica that is
// not read-only cannot be told from a primary.
func mysqlCheckServer(ctx context.Context, pool *sql.DB, version string) error {
	if err := mysqlCheckVersion(version); err != nil {
		return err
	}
	rows, err := pool.QueryContext(ctx, mysqlTopologySQL)
	if err != nil {
		return fmt.Errorf("dlock: checking the server's topology: %w", err)
	}
	defer rows.Close()
	vars := make(map[string]string)
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return fmt.Errorf("dlock: checking the server's topology: %w", err)
		}
		vars[strings.ToLower(name)] = value
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dlock: checking the server's topology: %w", err)
	}
	return mysqlTopologyError(vars)
}

// mysqlCheckVersion refuses the servers known from their version string,
// each with what was measured on it first.
func mysqlCheckVersion(version string) error {
	switch {
	case strings.Contains(version, "TiDB"):
		return fmt.Errorf("%w: TiDB (%s): a held GET_LOCK expires silently at max-txn-ttl (default 1 h) and is granted to another session while the holder's IS_USED_LOCK still returns 1; KILL QUERY does not stop a waiting GET_LOCK, and IS_USED_LOCK does not return the holder's id; use a MySQL, MariaDB or PostgreSQL server for locks", ErrUnsupportedDialect, version)
	case strings.Contains(strings.ToLower(version), "vitess"):
		return fmt.Errorf("%w: Vitess (%s): CONNECTION_ID() is not the id IS_USED_LOCK reports for the holder (vtgate sends GET_LOCK over a reserved connection to the first shard), the held check IS_USED_LOCK() = CONNECTION_ID() is rejected (error 1235), KILL is refused (VT07001), and the locks die with a reparent; connect to a MySQL server directly for locks", ErrUnsupportedDialect, version)
	}
	return nil
}

// mysqlOn reads a boolean server variable as SHOW VARIABLES gives it; a
// variable that is absent is off.
func mysqlOn(vars map[string]string, name string) bool {
	v, ok := vars[name]
	if !ok {
		return false
	}
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "OFF", "0", "":
		return false
	}
	return true // ON, 1, and MariaDB 11's NO_LOCK and NO_LOCK_NO_ADMIN for read_only
}

// mysqlTopologyError says why a server with these variables (names in
// lower case, values as SHOW VARIABLES gives them) cannot hold dlock's
// locks, or is nil.
func mysqlTopologyError(vars map[string]string) error {
	switch {
	case mysqlOn(vars, "wsrep_on"):
		return fmt.Errorf("%w: a Galera cluster node (@@wsrep_on = ON): GET_LOCK is local to one node and excludes nobody on the others; use a server outside the cluster for locks", ErrUnsupportedDialect)
	case mysqlGroupMultiPrimary(vars):
		name := vars["group_replication_group_name"]
		if name == "" {
			name = "not set"
		}
		return fmt.Errorf("%w: a Group Replication member in multi-primary mode (@@group_replication_single_primary_mode = OFF, group %s): certification ignores named locks, so GET_LOCK on one member excludes nobody on the others; use single-primary mode and connect to the primary, or a server outside the group for locks", ErrUnsupportedDialect, name)
	case mysqlOn(vars, "innodb_read_only"):
		return fmt.Errorf("%w: @@innodb_read_only = ON, an Aurora MySQL reader (or a server started read-only), whose GET_LOCK is local to it and excludes nobody on the writer; connect to the writer (the cluster endpoint)", ErrUnsupportedDialect)
	// MySQL turns read_only on with super_read_only: name the stronger.
	case mysqlOn(vars, "super_read_only"):
		return fmt.Errorf("%w: a read-only server (@@super_read_only = ON), a replica whose GET_LOCK excludes nobody on the primary; connect to the primary", ErrUnsupportedDialect)
	case mysqlOn(vars, "read_only"):
		return fmt.Errorf("%w: a read-only server (@@read_only = ON), a replica whose GET_LOCK excludes nobody on the primary; connect to the primary", ErrUnsupportedDialect)
	}
	return nil
}

// mysqlGroupMultiPrimary reports a Group Replication member in
// multi-primary mode. Its variables exist only while the plugin is
// loaded; single-primary mode is the plugin's default.
func mysqlGroupMultiPrimary(vars map[string]string) bool {
	v, ok := vars["group_replication_single_primary_mode"]
	return ok && !mysqlOn(vars, "group_replication_single_primary_mode") && v != ""
}

// mysqlCheckPool refuses a proxy that multiplexes client sessions over
// server sessions (RDS Proxy, ProxySQL, MaxScale, MySQL Router in such a
// mode), on two sessions of pool pinned at once: the first asks
// CONNECTION_ID() twice in a row, then the second asks it, then the first
// again. Two client sessions with one server session, or one whose id
// moves, cannot hold a session lock: a GET_LOCK may be granted to a server
// session that another client uses next. A second session that cannot be
// had within poolerCheckTimeout is no multiplexing: the check passes.
func mysqlCheckPool(ctx context.Context, pool *sql.DB) error {
	defer allowTwoSessions(pool)()
	c1, err := pool.Conn(ctx)
	if err != nil {
		return fmt.Errorf("dlock: checking the MySQL topology: %w", err)
	}
	defer c1.Close()
	var ids [4]int64 // c1, c1 again, c2, c1 at the end
	for i := range 2 {
		if ids[i], err = mysqlConnectionID(ctx, c1); err != nil {
			return err
		}
	}
	c2, err := pool.Conn(ctx)
	if err != nil {
		return fmt.Errorf("dlock: checking the MySQL topology: %w", err)
	}
	defer c2.Close()
	qctx, cancel := context.WithTimeout(ctx, poolerCheckTimeout)
	defer cancel()
	ids[2], err = mysqlConnectionID(qctx, c2)
	switch {
	case err != nil && ctx.Err() == nil && qctx.Err() != nil:
		ids[2] = 0 // no free server session for c2: not multiplexing
	case err != nil:
		return err
	}
	if ids[3], err = mysqlConnectionID(ctx, c1); err != nil {
		return err
	}
	return mysqlMultiplexError(ids)
}

// mysqlMultiplexError says why the CONNECTION_ID() answers seen by
// mysqlCheckPool (the first session twice, the second, the first again;
// the second 0 when it could not be had) show a multiplexing proxy, or
// is nil.
func mysqlMultiplexError(ids [4]int64) error {
	var seen string
	switch {
	case ids[1] != ids[0]:
		seen = fmt.Sprintf("one client session reported CONNECTION_ID() %d, then %d", ids[0], ids[1])
	case ids[2] == ids[0]:
		seen = fmt.Sprintf("two client sessions pinned at once both reported CONNECTION_ID() %d", ids[0])
	case ids[3] != ids[0]:
		seen = fmt.Sprintf("one client session reported CONNECTION_ID() %d, then %d", ids[0], ids[3])
	default:
		return nil
	}
	return fmt.Errorf("%w: a proxy that multiplexes client sessions over server sessions (%s), so a GET_LOCK can be granted to a server session that another client uses next; connect to the server directly, or give each client its own server session for its whole connection", ErrUnsupportedDialect, seen)
}

// mysqlConnectionID asks the server session id of the session c runs on.
func mysqlConnectionID(ctx context.Context, c *sql.Conn) (int64, error) {
	var id int64
	if err := c.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		return 0, fmt.Errorf("dlock: checking the MySQL topology: %w", err)
	}
	return id, nil
}

// allowTwoSessions lets pool open two sessions for a moment when it is
// limited to one; the function it returns puts the limit back (and the
// extra session is closed then).
func allowTwoSessions(pool *sql.DB) (restore func()) {
	if pool.Stats().MaxOpenConnections != 1 {
		return func() {}
	}
	pool.SetMaxOpenConns(2)
	return func() { pool.SetMaxOpenConns(1) }
}

// isRefusal reports whether err is a refusal of the topology, sent before
// any lock statement: nothing ran.
func isRefusal(err error) bool {
	return errors.Is(err, ErrUnsupportedDialect)
}
