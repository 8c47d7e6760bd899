package dlock

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Holder is one database session that holds, or waits for, a lock, as the
// server's own tables show it. The fields other than DBKey, SessionID,
// Granted and Shared are what the server tells of the session; a field it
// does not tell is empty (or zero), never the server's placeholder.
//
// What a user without privileges sees differs by server. PostgreSQL shows
// every lock in pg_locks to every user, so the list is complete, but it
// hides State, Query, ClientAddr and Since of another role's session
// unless the user has pg_read_all_stats (or is a member of that role):
// those fields are then empty. MySQL and MariaDB hide other users'
// sessions entirely without the PROCESS privilege, waiters included, so
// [Holders] and [Locks] return an error naming PROCESS instead of a
// shorter list.
type Holder struct {
	// DBKey is the lock as the server names it, as [Lock.DBKey] returns
	// it: the int64 key on PostgreSQL, the GET_LOCK name on MySQL and
	// MariaDB.
	DBKey any
	// SessionID is the server's id of the session: pg_backend_pid() on
	// PostgreSQL (0 for a prepared transaction), CONNECTION_ID() on MySQL
	// and MariaDB, the id that pg_terminate_backend and KILL take.
	SessionID int64
	// Granted is true for the session that holds the lock (several for a
	// shared lock), false for a session waiting for it.
	Granted bool
	// Shared is true for a PostgreSQL shared lock; always false on MySQL
	// and MariaDB, which have no shared named locks.
	Shared bool
	// User is the database user the session logged in as.
	User string
	// Application is the session's application_name on PostgreSQL; MySQL
	// and MariaDB do not report one here (always "").
	Application string
	// ClientAddr is the client's address and port, "10.0.0.7:51034"
	// (PostgreSQL: "" for a Unix socket; MySQL: the host as the server
	// sees it, "localhost" for a socket).
	ClientAddr string
	// Database is the database the session is connected to (MySQL: the
	// current schema, "" if none).
	Database string
	// State is what the session is doing: pg_stat_activity.state on
	// PostgreSQL ("active", "idle", "idle in transaction"); the
	// processlist state on MySQL and MariaDB ("User lock" while waiting
	// for a lock), or its command ("Sleep") when it has no state.
	State string
	// Query is the session's statement: the current one, or on PostgreSQL
	// the last one when the session is idle; "" on MySQL when idle.
	Query string
	// Since is when the session entered its current State, by the
	// server's clock: for a waiter about when it began to wait; for an
	// idle holder when its last statement ended. No server records when
	// a lock was granted. PostgreSQL: pg_stat_activity.state_change;
	// MariaDB: the processlist's TIME_MS (milliseconds); MySQL: its TIME
	// (whole seconds). Zero when the server does not tell.
	Since time.Time
}

// Holders returns the sessions that hold or wait for the lock key names
// (with the Plugin's KeyPrefix applied, as [New] applies it), holders
// first, then waiters, read from the server's tables in one statement.
// It returns an empty slice when nobody holds or waits for the lock.
//
// db may be the pool or a pinned tx: the statement runs on a session of
// the pool registered with the Plugin, never on a pinned session and never
// through GORM's callbacks. It waits for nothing but that one statement,
// and returns ctx's error when ctx ends first.
//
// PostgreSQL: pg_locks joined with pg_stat_activity, in the current
// database (advisory locks of other databases are other locks). MySQL and
// MariaDB: the holder from IS_USED_LOCK, the waiters from the processlist:
// sessions in state "User lock" whose statement holds the name either as
// dlock writes it (a hex literal X'…') or as a quoted string ('name', the
// way sqlalchemy-dlock and hand-written SQL send it). A waiter whose
// statement builds the name otherwise (CONCAT, a variable, a server-side
// prepared statement) is not found. The holder is found in every case.
//
// The answer is complete or an error. On MySQL and MariaDB the statement
// needs the PROCESS privilege (granted directly or through an active
// role) whenever the lock is held: without it the server hides other
// users' sessions, so the error wraps [ErrUnsupported] and the server's
// error 1227 naming PROCESS. A free lock needs no privilege. PostgreSQL
// needs none: see [Holder] for the fields it hides.
//
// Errors: [ErrNotRegistered], [ErrInvalidKey], [ErrUnsupported] (no
// PROCESS), or the driver's error wrapped.
func Holders(ctx context.Context, db *gorm.DB, key any) ([]Holder, error) {
	reg, err := registered(db)
	if err != nil {
		return nil, err
	}
	be := reg.server.backend
	dbKey, err := be.dbKey(key, reg.cfg.KeyPrefix)
	if err != nil {
		return nil, err
	}
	var q holderStmt
	switch b := be.(type) {
	case pgBackend:
		q = pgHoldersStmt(dbKey.(int64))
	case *mysqlBackend:
		q = b.holdersStmt(dbKey.(string))
	default:
		return nil, fmt.Errorf("%w: Holders on %T", ErrUnsupported, be)
	}
	hs, err := q.run(ctx, reg.pool)
	if err != nil {
		return nil, listError("Holders", err)
	}
	return hs, nil
}

// Locks lists the sessions that hold, and where the server tells it wait
// for, every dlock-style lock on the server: the same rows as [Holders]
// for every lock at once, ordered by lock, then holders before waiters.
// prefix keeps only locks whose name begins with it (pass the Plugin's
// KeyPrefix to see one application's string keys; "" keeps all).
//
// What each server can tell:
//
//   - PostgreSQL: every advisory lock of the current database taken with
//     a bigint key (pg_advisory_lock(bigint) and its family, what dlock
//     and sqlalchemy-dlock use), holders and waiters. String keys are
//     hashed, so a name is not known and a prefix cannot be checked: a
//     non-empty prefix is an error wrapping [ErrUnsupported].
//   - MariaDB: the locks held, from information_schema.METADATA_LOCK_INFO,
//     which exists only once the metadata_lock_info plugin is installed
//     (INSTALL SONAME 'metadata_lock_info', by an administrator). Without
//     it the error wraps [ErrUnsupported]. The table shows granted locks
//     only: their waiters come from the processlist, found the way
//     [Holders] finds them (a waiter whose statement builds the name is
//     not found).
//   - MySQL: holders and waiters from performance_schema.metadata_locks,
//     with the names in lower case (MySQL's names ignore case); the error
//     wraps [ErrUnsupported] when performance_schema or its metadata-lock
//     instrument is off.
//
// Like Holders it runs on the registered pool, not through GORM, and
// returns ctx's error when ctx ends first; like Holders it is complete or
// an error: on MySQL and MariaDB, while any lock is held, it needs the
// PROCESS privilege, and without it the error wraps [ErrUnsupported] and
// names PROCESS. Errors: [ErrNotRegistered], [ErrUnsupported] (a missing
// plugin, instrument or privilege, named), or the driver's error wrapped.
func Locks(ctx context.Context, db *gorm.DB, prefix string) ([]Holder, error) {
	reg, err := registered(db)
	if err != nil {
		return nil, err
	}
	var hs []Holder
	switch b := reg.server.backend.(type) {
	case pgBackend:
		if prefix != "" {
			return nil, fmt.Errorf("%w: PostgreSQL keys are hashed, so Locks cannot filter them by prefix %q; pass \"\"", ErrUnsupported, prefix)
		}
		hs, err = pgLocksStmt().run(ctx, reg.pool)
	case *mysqlBackend:
		hs, err = b.locks(ctx, reg.pool, prefix)
	default:
		return nil, fmt.Errorf("%w: Locks on %T", ErrUnsupported, reg.server.backend)
	}
	if err != nil {
		return nil, listError("Locks", err)
	}
	return hs, nil
}

// erSpecificAccessDenied is MySQL's "Access denied; you need (at least one
// of) the %s privilege(s) for this operation": the answer to
// mysqlProcessCheck without PROCESS.
const erSpecificAccessDenied = 1227

// erTableAccessDenied is MySQL's "%s command denied to user '%s'@'%s' for
// table '%s'": Locks' answer on MySQL for a user who may not read
// performance_schema.
const erTableAccessDenied = 1142

// listError words an error of Holders or Locks (op): the missing PROCESS
// privilege and the errors that already say what is missing as
// ErrUnsupported, the rest as the driver's error wrapped.
func listError(op string, err error) error {
	if errors.Is(err, ErrUnsupported) {
		return err
	}
	n, _ := mysqlErrNumber(err)
	switch {
	case n == erSpecificAccessDenied:
		return fmt.Errorf("%w: %s needs the PROCESS privilege on MySQL and MariaDB, which hide other users' sessions "+
			"and their waits without it (GRANT PROCESS ON *.* TO the user): %w", ErrUnsupported, op, err)
	case n == erTableAccessDenied && op == "Locks":
		return fmt.Errorf("%w: Locks on MySQL needs SELECT on performance_schema and the PROCESS privilege: %w", ErrUnsupported, err)
	}
	return fmt.Errorf("dlock: %s: %w", op, err)
}

// holderStmt is one statement that returns Holder rows. Its columns are,
// in order: the lock (int64 on PostgreSQL, the name on MySQL), session id,
// granted, shared, user, application, client address, database, state,
// query, Since in microseconds since the Unix epoch (NULL if unknown), and
// a last column read and dropped: mysqlProcessCheck on MySQL, 0 on
// PostgreSQL.
type holderStmt struct {
	sql  string
	args []any
	pg   bool // the lock column is an int64 key, not a name
}

func (q holderStmt) run(ctx context.Context, pool *sql.DB) ([]Holder, error) {
	rows, err := pool.QueryContext(ctx, q.sql, q.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	hs := []Holder{}
	for rows.Next() {
		h, err := q.scan(rows)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, rows.Err()
}

func (q holderStmt) scan(rows *sql.Rows) (Holder, error) {
	var (
		h                                 Holder
		key                               sql.NullString
		id, since                         sql.NullInt64
		user, app, addr, dbName, st, stmt sql.NullString
		check                             sql.RawBytes
	)
	err := rows.Scan(&key, &id, &h.Granted, &h.Shared, &user, &app, &addr, &dbName, &st, &stmt, &since, &check)
	if err != nil {
		return h, err
	}
	h.DBKey = key.String
	if q.pg {
		k, err := strconv.ParseInt(key.String, 10, 64)
		if err != nil {
			return h, fmt.Errorf("reading key %q: %w", key.String, err)
		}
		h.DBKey = k
	}
	h.SessionID = id.Int64
	h.User, h.Application, h.ClientAddr = user.String, app.String, addr.String
	h.Database, h.State, h.Query = dbName.String, st.String, stmt.String
	if since.Valid {
		h.Since = time.UnixMicro(since.Int64)
	}
	return h, nil
}

// pgHolderColumns are the columns of holderStmt for pg_locks l joined
// with pg_stat_activity a. The key is the bigint whose high 32 bits are
// classid and low 32 bits objid (objsubid = 1), sent back as text.
//
// pg_stat_activity hides another role's session from a user without
// pg_read_all_stats: NULL for most fields, "<insufficient privilege>" for
// query. The query column is NULL then too, tested the way the server
// tests it (pg_has_role(..., 'USAGE') is true for a superuser, a member of
// the role, and a member of pg_read_all_stats).
const pgHolderColumns = "((l.classid::bigint << 32) | l.objid::bigint)::text, COALESCE(l.pid, 0), l.granted," +
	" l.mode = 'ShareLock', a.usename, a.application_name," +
	" host(a.client_addr) || ':' || a.client_port, a.datname, a.state," +
	" CASE WHEN pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_read_all_stats', 'USAGE') THEN a.query END," +
	" (extract(epoch FROM a.state_change) * 1000000)::bigint, 0"

// pgAdvisoryHere keeps the bigint-keyed advisory locks of the current
// database.
const pgAdvisoryHere = "l.locktype = 'advisory' AND l.objsubid = 1" +
	" AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"

// pgHoldersStmt reads the holders and waiters of key from pg_locks.
func pgHoldersStmt(key int64) holderStmt {
	u := uint64(key)
	return holderStmt{
		sql: "SELECT " + pgHolderColumns +
			" FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid" +
			" WHERE " + pgAdvisoryHere + " AND l.classid = $1 AND l.objid = $2" +
			" ORDER BY l.granted DESC, a.state_change, l.pid",
		args: []any{int64(u >> 32), int64(u & 0xffffffff)},
		pg:   true,
	}
}

// pgLocksStmt reads every bigint-keyed advisory lock of the database.
func pgLocksStmt() holderStmt {
	return holderStmt{
		sql: "SELECT " + pgHolderColumns +
			" FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid" +
			" WHERE " + pgAdvisoryHere +
			" ORDER BY l.classid, l.objid, l.granted DESC, a.state_change, l.pid",
		pg: true,
	}
}

// mysqlProcessCheck is a value MySQL and MariaDB refuse to compute, with
// error 1227 naming PROCESS, for a user without the PROCESS privilege,
// whether granted directly or through an active role. Without it their
// processlist shows only the user's own sessions, so a holder's details
// and the waiters of other users would be missing. Reading INNODB_TRX is
// the server's own test of PROCESS, the same as the processlist's
// (information_schema.USER_PRIVILEGES does not show a role's privileges).
// It is the last column of every MySQL holderStmt, so each row sent
// evaluates it, whatever the optimizer does with the rest; a statement
// that sends no row is complete without PROCESS (no holder, so no
// waiter, and no lock at all for Locks).
const mysqlProcessCheck = "(SELECT COUNT(*) FROM information_schema.INNODB_TRX)"

// sessionColumns are the holderStmt columns from user through the last
// for the processlist row p. MariaDB's TIME_MS has milliseconds; MySQL's
// TIME whole seconds.
func (b *mysqlBackend) sessionColumns() string {
	elapsed := "p.TIME * 1000000"
	if b.mariadb {
		elapsed = "CAST(p.TIME_MS * 1000 AS SIGNED)"
	}
	return "p.USER, NULL, p.HOST, p.DB, COALESCE(NULLIF(p.STATE, ''), p.COMMAND), p.INFO," +
		" CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED) - " + elapsed + ", " + mysqlProcessCheck
}

// holdersStmt reads the holder of name from IS_USED_LOCK and its waiters
// from the processlist, in one statement. The name, and every pattern
// matched against the waiters' statements, travel as hex literals. A
// quoted name is matched byte for byte on MariaDB, whose names are
// compared so, and without regard to case on MySQL, whose names are.
func (b *mysqlBackend) holdersStmt(name string) holderStmt {
	lit := mysqlLiteral(name)
	owner := "IS_USED_LOCK(" + lit + ")"
	var match []string
	for i, p := range mysqlStatementForms(name) {
		pattern := mysqlLiteral(p)
		if i > 0 && b.mariadb {
			pattern += " COLLATE utf8mb4_bin"
		}
		match = append(match, "LOCATE("+pattern+", p.INFO) > 0")
	}
	return holderStmt{
		sql: "SELECT " + lit + ", h.id, 1, 0, " + b.sessionColumns() +
			" FROM (SELECT " + owner + " AS id) h LEFT JOIN information_schema.PROCESSLIST p ON p.ID = h.id" +
			" WHERE h.id IS NOT NULL" +
			" UNION ALL SELECT " + lit + ", p.ID, 0, 0, " + b.sessionColumns() +
			" FROM information_schema.PROCESSLIST p WHERE p.STATE = 'User lock'" +
			" AND p.ID <> COALESCE(" + owner + ", 0) AND (" + strings.Join(match, " OR ") + ")" +
			" ORDER BY 3 DESC, 11, 2",
	}
}

// mysqlStatementForms returns the texts that name a lock in a waiter's
// statement: first dlock's hex literal X'…' (matched without regard to
// case, so X'6B' matches too), then the name as a quoted string, with
// the backslash escapes of Python's MySQL drivers and, when the name has a
// quote, with the quote doubled.
func mysqlStatementForms(name string) []string {
	forms := []string{"X'" + hex.EncodeToString([]byte(name)) + "'"}
	esc := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name)
	forms = append(forms, "'"+esc+"'")
	if strings.Contains(name, "'") {
		forms = append(forms, "'"+strings.ReplaceAll(name, "'", "''")+"'")
	}
	return forms
}

// mariadbWaitsFor is true when the statement of the processlist row p
// names the lock m.TABLE_SCHEMA in one of the forms of
// mysqlStatementForms: x'…' (hex digits in either case) or the name
// quoted, with backslash escapes or with the quote doubled, byte for
// byte. The quote (27) and the backslash (5c) are hex literals, so the
// patterns are binary strings and compared byte for byte.
const mariadbWaitsFor = "(LOCATE(CONCAT('x', X'27', LOWER(HEX(CAST(m.TABLE_SCHEMA AS BINARY))), X'27'), LOWER(p.INFO)) > 0" +
	" OR LOCATE(CONCAT(X'27', REPLACE(REPLACE(CAST(m.TABLE_SCHEMA AS BINARY), X'5c', X'5c5c'), X'27', X'5c27'), X'27'), p.INFO) > 0" +
	" OR LOCATE(CONCAT(X'27', REPLACE(CAST(m.TABLE_SCHEMA AS BINARY), X'27', X'2727'), X'27'), p.INFO) > 0)"

// errNoMetadataLockInfo is Locks' answer on a MariaDB without the
// metadata_lock_info plugin.
var errNoMetadataLockInfo = fmt.Errorf("%w: MariaDB lists user locks only with the metadata_lock_info plugin; "+
	"an administrator can enable it with INSTALL SONAME 'metadata_lock_info' (Holders works without it)", ErrUnsupported)

// errNoMetadataLocks is Locks' answer on a MySQL whose performance_schema
// does not record metadata locks.
var errNoMetadataLocks = fmt.Errorf("%w: MySQL lists user locks only with performance_schema=ON and the "+
	"wait/lock/metadata/sql/mdl instrument enabled (Holders works without them)", ErrUnsupported)

// erUnknownTable is MySQL's "Unknown table '%s' in %s": MariaDB's answer
// for information_schema.METADATA_LOCK_INFO without its plugin.
const erUnknownTable = 1109

// locks lists the user locks whose names begin with prefix.
func (b *mysqlBackend) locks(ctx context.Context, pool *sql.DB, prefix string) ([]Holder, error) {
	if b.mariadb {
		hs, err := b.locksStmt(prefix).run(ctx, pool)
		if n, ok := mysqlErrNumber(err); ok && n == erUnknownTable {
			return nil, errNoMetadataLockInfo
		}
		return hs, err
	}
	var on sql.NullBool
	if err := pool.QueryRowContext(ctx, mysqlMetadataLocksOn).Scan(&on); err != nil {
		return nil, err
	}
	if !on.Bool {
		return nil, errNoMetadataLocks
	}
	return b.locksStmt(prefix).run(ctx, pool)
}

// mysqlMetadataLocksOn asks MySQL whether performance_schema records
// metadata locks.
const mysqlMetadataLocksOn = "SELECT @@performance_schema = 1 AND EXISTS (SELECT 1 FROM performance_schema.setup_instruments" +
	" WHERE NAME = 'wait/lock/metadata/sql/mdl' AND ENABLED = 'YES')"

// locksStmt lists user locks: on MariaDB the held ones from
// METADATA_LOCK_INFO (whose TABLE_SCHEMA is the lock name and THREAD_ID
// the connection id), which shows granted locks only, and their waiters
// from the processlist, found as [Holders] finds them (mariadbWaitsFor);
// on MySQL the held and the awaited ones, from
// performance_schema.metadata_locks joined with threads. The prefix is
// compared byte for byte on MariaDB, whose names are, and without regard
// to case on MySQL, whose names are.
func (b *mysqlBackend) locksStmt(prefix string) holderStmt {
	if b.mariadb {
		where := "m.LOCK_TYPE = 'User lock'"
		if prefix != "" {
			where += " AND LEFT(CAST(m.TABLE_SCHEMA AS BINARY), " + strconv.Itoa(len(prefix)) + ") = X'" + hex.EncodeToString([]byte(prefix)) + "'"
		}
		return holderStmt{
			sql: "SELECT m.TABLE_SCHEMA, m.THREAD_ID, 1, 0, " + b.sessionColumns() +
				" FROM information_schema.METADATA_LOCK_INFO m LEFT JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID" +
				" WHERE " + where +
				" UNION ALL SELECT m.TABLE_SCHEMA, p.ID, 0, 0, " + b.sessionColumns() +
				" FROM information_schema.METADATA_LOCK_INFO m JOIN information_schema.PROCESSLIST p" +
				" ON p.STATE = 'User lock' AND p.ID <> m.THREAD_ID AND " + mariadbWaitsFor +
				" WHERE " + where + " ORDER BY 1, 3 DESC, 11, 2",
		}
	}
	where := "m.OBJECT_TYPE = 'USER LEVEL LOCK'"
	if prefix != "" {
		where += " AND LOWER(LEFT(m.OBJECT_NAME, " + strconv.Itoa(len([]rune(prefix))) + ")) = LOWER(" + mysqlLiteral(prefix) + ")"
	}
	return holderStmt{
		sql: "SELECT m.OBJECT_NAME, t.PROCESSLIST_ID, m.LOCK_STATUS = 'GRANTED', 0," +
			" t.PROCESSLIST_USER, NULL, t.PROCESSLIST_HOST, t.PROCESSLIST_DB," +
			" COALESCE(NULLIF(t.PROCESSLIST_STATE, ''), t.PROCESSLIST_COMMAND), t.PROCESSLIST_INFO," +
			" CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED) - t.PROCESSLIST_TIME * 1000000, " + mysqlProcessCheck +
			" FROM performance_schema.metadata_locks m JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID" +
			" WHERE " + where + " ORDER BY 1, 3 DESC, 11, 2",
	}
}
