package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// mysqlForever is the GET_LOCK timeout sent for "wait until acquired or
// the context ends": one year. A negative timeout means "forever" on MySQL
// but makes MariaDB return NULL at once, so dlock never sends one.
const mysqlForever = 365 * 24 * time.Hour

// mysqlBackend locks with GET_LOCK on MySQL and MariaDB. Names travel as
// hex literals with an introducer (see mysqlLiteral), so they need no
// escaping and do not depend on sql_mode or the connection charset.
//
// The statements, for a name N (a literal like _utf8mb4 X'6b6579') and a
// wait of S seconds:
//
//	acquire, MariaDB   SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK(N, S), CONNECTION_ID()
//	acquire, MySQL     SELECT /*+ MAX_EXECUTION_TIME(0) */ GET_LOCK(N, S), CONNECTION_ID()
//	try once           SELECT GET_LOCK(N, 0), CONNECTION_ID()
//	release            SELECT RELEASE_LOCK(N)
//	held               SELECT IS_USED_LOCK(N) = CONNECTION_ID()
//	session id         SELECT CONNECTION_ID()
//	cancel (control)   KILL QUERY <session id>
//	end a hung session KILL CONNECTION <session id>
//
// Each lock statement carries the session id back: a grant on another
// server session than the session's own, as behind a proxy that
// multiplexes sessions, is undone there and reported (see
// mysqlCheckGrant).
type mysqlBackend struct {
	mariadb bool
}

func (*mysqlBackend) dbKey(key any, prefix string) (any, error) {
	name, err := mysqlName(key, prefix)
	if s, ok := key.(string); ok && err == nil && s == name {
		return key, nil // the name is the key: no second boxing
	}
	return name, err
}

// mysqlStmts is a lock name with the fixed text of its statements,
// built once per Lock.
type mysqlStmts struct {
	lit     string // the name as a hex literal
	try     string // SELECT GET_LOCK(lit, 0), CONNECTION_ID()
	release string // SELECT RELEASE_LOCK(lit)
	forever string // the wait with no bound, built at its first use
}

func (*mysqlBackend) stmtKey(dbKey any) any {
	// The three strings share one allocation: the two statements, written
	// one after the other, with the literal (mysqlLiteral's text, written
	// here in place) inside each.
	name := dbKey.(string)
	const try0, try1, rel0, rel1 = "SELECT GET_LOCK(", ", 0), CONNECTION_ID()", "SELECT RELEASE_LOCK(", ")"
	const head, digits = "_utf8mb4 X'", "0123456789abcdef"
	litLen := len(head) + 2*len(name) + 1
	tryEnd := len(try0) + litLen + len(try1)
	if e := mysqlStmtTexts.get(name, ""); e != nil { // a recent name: the same text
		all := e.text
		return &mysqlStmts{lit: all[len(try0) : len(try0)+litLen], try: all[:tryEnd], release: all[tryEnd:]}
	}
	var b strings.Builder
	b.Grow(len(try0) + len(try1) + len(rel0) + len(rel1) + 2*litLen)
	for _, part := range [...]string{try0, try1, rel0, rel1} {
		if part == try1 || part == rel1 {
			b.WriteString(head)
			for i := 0; i < len(name); i++ {
				b.WriteByte(digits[name[i]>>4])
				b.WriteByte(digits[name[i]&0xf])
			}
			b.WriteByte('\'')
		}
		b.WriteString(part)
	}
	all := b.String()
	mysqlStmtTexts.put(&cachedKey{key: name, text: all})
	return &mysqlStmts{
		lit:     all[len(try0) : len(try0)+litLen],
		try:     all[:tryEnd],
		release: all[tryEnd:],
	}
}

// mysqlStmtTexts remembers the statement text stmtKey wrote for recent
// names (the text only: each Lock gets its own mysqlStmts).
var mysqlStmtTexts = newKeyCache()

func (*mysqlBackend) checkMode(o options) error {
	switch {
	case o.shared:
		return fmt.Errorf("%w: Shared: MySQL and MariaDB have no shared named locks", ErrUnsupported)
	case o.xact:
		return fmt.Errorf("%w: Xact: MySQL and MariaDB have no transaction-level named locks", ErrUnsupported)
	}
	return nil
}

// serverWait: MariaDB takes fractional seconds, so the server keeps the
// wanted wait. MySQL takes whole seconds: dlock sends the next whole
// second and cuts the wait at d from a control connection.
func (b *mysqlBackend) serverWait(d time.Duration) (time.Duration, bool) {
	if b.mariadb {
		return d, false
	}
	s := time.Duration(math.Ceil(d.Seconds())) * time.Second
	return s, s != d
}

// mysqlSeconds formats a wait for GET_LOCK: whole seconds for MySQL,
// milliseconds precision for MariaDB, never zero for a real wait.
func (b *mysqlBackend) mysqlSeconds(bd waitBound) string {
	switch {
	case bd.try:
		return "0"
	case bd.wait <= 0 || bd.wait > mysqlForever:
		return strconv.FormatInt(int64(mysqlForever/time.Second), 10)
	case b.mariadb:
		ms := max(bd.wait.Milliseconds(), 1)
		return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)
	default:
		return strconv.FormatInt(int64(math.Ceil(bd.wait.Seconds())), 10)
	}
}

// lockSQL returns the acquire statement for the name and bound.
func (b *mysqlBackend) lockSQL(k *mysqlStmts, bd waitBound) string {
	switch {
	case bd.try:
		return k.try
	case bd.wait > 0 && bd.wait <= mysqlForever:
		return b.waitSQL(k, bd)
	case k.forever == "":
		// A Lock runs one Acquire at a time: no other writer.
		k.forever = b.waitSQL(k, bd)
	}
	return k.forever
}

// waitSQL builds the waiting statement for the name and bound.
func (b *mysqlBackend) waitSQL(k *mysqlStmts, bd waitBound) string {
	call := "GET_LOCK(" + k.lit + ", " + b.mysqlSeconds(bd) + "), CONNECTION_ID()"
	switch {
	case b.mariadb:
		// An inherited max_statement_time would end the wait early.
		return "SET STATEMENT max_statement_time=0 FOR SELECT " + call
	default:
		// Likewise max_execution_time on MySQL.
		return "SELECT /*+ MAX_EXECUTION_TIME(0) */ " + call
	}
}

func (b *mysqlBackend) lock(ctx context.Context, t target, k any, _ options, bd waitBound, c *canceller) (bool, error) {
	c.start()
	row, err := queryRow(ctx, t.q, b.lockSQL(k.(*mysqlStmts), bd), 2)
	c.stop()
	if err != nil {
		return false, err
	}
	var r sql.NullInt64
	if r.Int64, r.Valid, err = valueInt(row[0]); err != nil {
		return false, err
	}
	at, valid, err := valueInt(row[1])
	if err == nil && !valid {
		err = errors.New("dlock: CONNECTION_ID() returned NULL")
	}
	if err != nil {
		return false, err
	}
	if err := mysqlCheckGrant(ctx, t, k.(*mysqlStmts).lit, r.Valid && r.Int64 == 1, at); err != nil {
		return false, err
	}
	if !r.Valid {
		return false, errInterrupted
	}
	return r.Int64 == 1, nil
}

// mysqlCheckGrant compares at, the CONNECTION_ID() a lock statement ran
// on, with t.check, the id dlock read for the session (none: no check). On
// another server session
// (a proxy that multiplexes sessions, or one reconfigured after db.Use), a
// grant is undone there, as far as the statements that follow reach it,
// and the session is reported lost: an error matching ErrLockLost and
// ErrUnsupportedDialect, which the caller reports with ErrNotAcquired.
func mysqlCheckGrant(ctx context.Context, t target, lit string, granted bool, at int64) error {
	id := t.check
	if id == 0 || id == at {
		return nil
	}
	e := &mysqlMovedError{id: id, at: at, granted: granted}
	if granted {
		e.undone = mysqlUndoOn(ctx, t.q, lit, at)
	}
	return e
}

// mysqlUndoTries bounds the statements that try to reach the server
// session of a stray grant.
const mysqlUndoTries = 3

// mysqlUndoOn releases the lock lit on server session at, by a statement
// that releases only there (RELEASE_LOCK on any other session could free
// another client's hold of the same name), sent until it lands there or
// mysqlUndoTries have landed elsewhere. A proxy that pins a client after
// its GET_LOCK, as ProxySQL does, sends the first one there.
func mysqlUndoOn(ctx context.Context, q querier, lit string, at int64) bool {
	id := strconv.FormatInt(at, 10)
	stmt := "SELECT IF(CONNECTION_ID() = " + id + ", RELEASE_LOCK(" + lit + "), NULL), CONNECTION_ID()"
	for range mysqlUndoTries {
		var (
			released sql.NullInt64
			on       int64
		)
		if err := q.QueryRowContext(ctx, stmt).Scan(&released, &on); err != nil {
			return false
		}
		if on == at {
			return released.Valid && released.Int64 == 1
		}
	}
	return false
}

// mysqlMovedError is a MySQL lock statement that ran on server session
// at instead of the session's own id.
type mysqlMovedError struct {
	id, at          int64
	granted, undone bool
}

func (e *mysqlMovedError) Error() string {
	var grant string
	switch {
	case e.undone:
		grant = "; the lock it granted there was released there"
	case e.granted:
		grant = "; the lock it granted there could not be released there, and stays held until that server session ends"
	}
	return fmt.Sprintf("%s: the lock statement ran on server session %d, not on the session's own %d, as behind a proxy that multiplexes sessions%s; the session is discarded; connect to the server directly, or give each client its own server session", ErrUnsupportedDialect, e.at, e.id, grant)
}

// Is matches ErrUnsupportedDialect, ErrLockLost (the session is
// discarded, with every hold on it) and errSessionMoved.
func (e *mysqlMovedError) Is(target error) bool {
	return target == ErrUnsupportedDialect || target == ErrLockLost || target == errSessionMoved
}

func (*mysqlBackend) unlock(ctx context.Context, t target, k any, _ options) (bool, error) {
	row, err := queryRow(ctx, t.q, k.(*mysqlStmts).release, 1)
	if err != nil {
		return false, err
	}
	n, valid, err := valueInt(row[0])
	return valid && n == 1, err
}

func (*mysqlBackend) held(ctx context.Context, t target, k any, _ options) (bool, error) {
	var r sql.NullInt64
	err := t.q.QueryRowContext(ctx, "SELECT IS_USED_LOCK("+k.(*mysqlStmts).lit+") = CONNECTION_ID()").Scan(&r)
	return r.Valid && r.Int64 == 1, err
}

// checkSession has nothing to check: a read-only server or a Galera node
// is refused at db.Use (see topology.go).
func (*mysqlBackend) checkSession(context.Context, querier) error { return nil }

// setUp has nothing to set: MySQL and MariaDB have no per-session TCP
// keepalive (see the README).
func (*mysqlBackend) setUp(context.Context, querier, Plugin) (bool, error) { return true, nil }

// keepIdle raises the session's wait_timeout to a year (its maximum),
// keeping its own value in a user variable of the session.
func (*mysqlBackend) keepIdle(ctx context.Context, q querier) (string, error) {
	_, err := q.ExecContext(ctx, "SET @dlock_wait_timeout = @@SESSION.wait_timeout, SESSION wait_timeout = 31536000")
	return "@dlock_wait_timeout", err
}

func (*mysqlBackend) restoreIdle(ctx context.Context, q querier, _ string) error {
	_, err := q.ExecContext(ctx, "SET SESSION wait_timeout = @dlock_wait_timeout")
	return err
}

func (*mysqlBackend) sessionID(ctx context.Context, q querier) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id)
	return id, err
}

// cancel kills the running statement of session id. A KILL QUERY that
// reaches the session when it is idle is dropped by the server, so a
// cancel that loses the race with the grant does no harm.
func (*mysqlBackend) cancel(ctx context.Context, pool *sql.DB, id int64) error {
	_, err := pool.ExecContext(ctx, "KILL QUERY "+strconv.FormatInt(id, 10))
	return err
}

// terminate ends session id and its locks.
func (*mysqlBackend) terminate(ctx context.Context, pool *sql.DB, id int64) error {
	_, err := pool.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatInt(id, 10))
	return err
}

func (*mysqlBackend) classify(err error) failure {
	switch {
	case errors.Is(err, errInterrupted):
		return failInterrupted
	case errors.Is(err, errSessionMoved):
		return failLost // a lock statement on another server session
	}
	n, ok := mysqlErrNumber(err)
	if !ok {
		// Not a reply from the server: the driver lost the connection
		// ("invalid connection", driver.ErrBadConn, a network error).
		return failLost
	}
	switch n {
	case erLockDeadlock, erUserLockDeadlock:
		return failDeadlock
	case erQueryInterrupted, erStatementTimeout, erQueryTimeout:
		return failInterrupted
	case erServerShutdown, erConnectionKilled, erClientInteractionTmo:
		return failLost
	}
	return failOther
}
