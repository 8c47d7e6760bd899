// Package dlock provides database session-level named locks for GORM, on
// MySQL and MariaDB (GET_LOCK) and on PostgreSQL (advisory locks).
//
// A lock lives in one database session, so it excludes every other session
// on the same server: other instances of a service, cron jobs, and Python
// programs that use sqlalchemy-dlock with the same key. Register the
// [Plugin] once, then use [WithLock], or [New] on the tx of db.Connection:
//
//	if err := db.Use(dlock.Plugin{}); err != nil {
//		return err
//	}
//	err := dlock.WithLock(ctx, db, "nightly-report", func(tx *gorm.DB) error {
//		return work(tx)
//	})
//
// # Session scope
//
// A [Lock] belongs to the database session that the *gorm.DB given to [New]
// has pinned: the tx of db.Connection, which runs every statement on one
// connection and therefore in one database session. A *gorm.DB on the pool
// is not pinned, and New returns [ErrNotPinned]. An [Xact] lock belongs to
// the transaction of db.Transaction instead, and ends with it.
//
// Locks on one session stack: a second Lock on the same key and session is
// granted at once, and the server lock stays held until every Lock on it
// has been released. Locks on one session therefore do not exclude each
// other; only locks on different sessions do.
//
// A session runs one statement at a time. A Lock waiting in
// [Lock.Acquire] occupies its session: other statements on it, the
// caller's and dlock's, wait until the Acquire returns, and a
// [Lock.Release] of another Lock on the same session that cannot start
// within [Plugin].ReleaseTimeout gives up and has the session discarded.
// Use one session per lock that must wait concurrently.
//
// The methods of a Lock are safe for use by several goroutines.
// [Lock.Acquired], [Lock.Key], [Lock.DBKey] and [Lock.DB] never block and
// send nothing.
//
// # Backends
//
// Acquire first sends the try-once statement; only when it finds the lock
// busy does it send the waiting statement (and for the next 8 Acquire
// calls of that Lock it goes straight to the wait, twice as many after each
// further busy try, up to 256). Uncontended, an
// Acquire and a Release are one round trip each, plus one query per
// session for its id (none with pgx).
//
// [Plugin.Initialize] picks the backend from the dialect name ("mysql" for
// MySQL and MariaDB, "postgres" for PostgreSQL) and the server flavour from
// SELECT VERSION(), once per pool. Lock statements go straight to the pinned
// *sql.Conn or *sql.Tx through database/sql, never through GORM: callbacks,
// the logger, dbresolver and DefaultContextTimeout do not see them, and
// tx.Error is never touched.
//
// On MySQL and MariaDB, for a name N, sent as a hex literal such as
// _utf8mb4 X'6b6579', and a wait of S seconds:
//
//	acquire, MariaDB   SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK(N, S)
//	acquire, MySQL     SELECT /*+ MAX_EXECUTION_TIME(0) */ GET_LOCK(N, S)
//	try once           SELECT GET_LOCK(N, 0)
//	release            SELECT RELEASE_LOCK(N)
//	held               SELECT IS_USED_LOCK(N) = CONNECTION_ID()
//	session id         SELECT CONNECTION_ID()
//	cancel (control)   KILL QUERY <session id>
//	end (control)      KILL CONNECTION <session id>
//
// S is never negative (a negative timeout makes MariaDB return NULL at
// once). Waiting until acquired sends one year, 31536000. MariaDB takes
// the wait in milliseconds; MySQL takes whole seconds, so a [Timeout] of
// 1.5s sends 2 and dlock cuts the wait at 1.5s from the control
// connection. The hex literal needs no escaping, does not depend on
// sql_mode or the connection character set, and names the same lock as the
// quoted string 'key' sent by a utf8mb4 client.
//
// On PostgreSQL the key is always bound as $1. For the exclusive
// session-level form (the shared form adds _shared, the transaction-level
// form _xact, as in pg_advisory_xact_lock_shared):
//
//	acquire            SELECT pg_advisory_lock($1) FROM set_config('lock_timeout', '0', true)
//	acquire, timeout   SELECT pg_advisory_lock($1) FROM set_config('lock_timeout', $2, true)
//	try once           SELECT pg_try_advisory_lock($1)
//	release            SELECT pg_advisory_unlock($1)
//	held               SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
//	                     AND pid = pg_backend_pid() AND granted AND classid = $1
//	                     AND objid = $2 AND objsubid = 1 AND mode = $3)
//	session id         SELECT pg_backend_pid() (none with pgx: the driver knows it)
//	cancel (control)   SELECT pg_cancel_backend($1)
//	end (control)      SELECT pg_terminate_backend($1)
//
// $2 in the timed acquire is the wait in milliseconds. Outside a
// transaction block set_config(..., true) lasts for the one statement, so
// the session's lock_timeout is never changed. A wait that nothing can
// cancel (a context without Done, no Timeout) is sent without the
// set_config when dlock cannot see that no transaction is open.
//
// Inside an open transaction on PostgreSQL, a wait with a [Timeout], a
// context deadline or a cancellable context runs inside a savepoint:
//
//	SAVEPOINT dlock_wait
//	SELECT pg_advisory_lock($1) FROM set_config('lock_timeout', $2, true)
//	ROLLBACK TO SAVEPOINT dlock_wait; RELEASE SAVEPOINT dlock_wait
//
// A session lock survives ROLLBACK TO SAVEPOINT, which also restores
// lock_timeout; a timeout or cancel rolls back to the savepoint, so Acquire
// returns with the caller's transaction intact. An [Xact] lock would not
// survive the rollback, so for it dlock reads the old lock_timeout in the
// lock statement, sets it back, and ends with RELEASE SAVEPOINT. A wait
// with no deadline inside a transaction runs without set_config. dlock
// knows whether a transaction is open from pgx's transaction status; with
// other drivers it sends the SAVEPOINT and takes SQLSTATE 25P01 as "no
// transaction".
//
// Before the first wait on a session that may have to be cancelled, dlock
// asks the session id (CONNECTION_ID(), pg_backend_pid()), once per
// session. Apart from that probe, an Acquire outside a transaction and a
// Release each send one statement, one round trip (plus the SAVEPOINT probe
// with PostgreSQL drivers other than pgx, below). The server does all the
// waiting and wakes the waiter; dlock never polls.
//
// # Keys
//
// A key is a string, a []byte, or an integer of any kind, named types
// included. nil, empty strings and slices, bools, floats and other types
// are [ErrInvalidKey]. [Plugin].KeyPrefix is prepended to string and []byte
// keys, never to integers. [Lock.DBKey] returns what the server sees.
//
// The mapping agrees with the Python library sqlalchemy-dlock (v0.2 and
// later) for every key that library accepts, so the same key names the same
// database lock in both. (sqlalchemy-dlock reads the digest below in the
// host's byte order, which is little-endian on all common hosts, and refuses
// MySQL names longer than 64 characters; give it the name [Lock.DBKey]
// returns for a key that dlock hashes.)
//
// On PostgreSQL an integer key within int64 is used as is; an unsigned one
// above math.MaxInt64 is ErrInvalidKey. A string key (its UTF-8 bytes) or
// []byte key, prefix first, is hashed with unkeyed BLAKE2b with a digest
// size of 8 bytes (blake2b.New(8, nil), not a cut BLAKE2b-512), and the
// digest is read as a little-endian signed int64 on every host:
//
//	"a"                 3405396810240292928
//	"my-lock"           -8841863937742578886
//	"ключ-юникод"       -252651957266972151
//	"0123456789" × 10   5840797023804805224
//	42                  42
//
// On MySQL and MariaDB an integer key is its decimal form (42 is "42",
// -7 is "-7"), and a []byte key is the string of its bytes. A string or
// []byte key, prefix first, is the lock name as is when it is valid UTF-8
// of 1 to 64 characters, none above U+FFFF: such a name is valid on both
// servers. Any other name (longer, invalid UTF-8, or holding an emoji or
// another supplementary character) is replaced by the ASCII name
//
//	R~hex16
//
// where hex16 is the 16 lowercase hex digits of the BLAKE2b digest of size
// 8 of the whole prefixed name, and R is the bytes of that name in A-Z,
// a-z, 0-9, '.', '_', ':' and '-', in order, every other byte dropped, cut
// at 47 bytes. "lock-🔒" becomes "lock-~eb4cbd37f55a4eec"; the hashed form
// is at most 64 characters. A plain key that already has this form is kept
// as is, so it could name the same lock as another key's hashed name only
// with the odds of a 64-bit hash collision. MySQL compares short names
// case-insensitively and MariaDB byte by byte; keys that differ only in
// case get different hashed names on both.
//
// dlock never quotes or escapes a name: it sends the UTF-8 bytes as a hex
// literal, SELECT GET_LOCK(_utf8mb4 X'6d792d6c6f636b', 5) for "my-lock".
//
// # Failure semantics
//
// [Lock.Acquire] returns (true, nil) if and only if the Lock now holds the
// lock, and (false, nil) when the lock is busy or the [Timeout] ran out.
// It never returns (true, err). After any error the Lock is not acquired
// and no hold was left behind. The errors mean:
//
//   - [ErrNotAcquired]: known not held. The context ended first (the error
//     also matches ctx.Err()), a deadlock was detected (it also matches
//     [ErrDeadlock]), the lock statement failed, or, in [WithLock], the
//     lock was busy.
//   - [ErrLockLost]: the hold, or the whole session, is gone: the session
//     was killed, or its locks were dropped behind dlock's back
//     (RELEASE_ALL_LOCKS(), pg_advisory_unlock_all()). The Lock is no
//     longer acquired. Other Locks on the same session learn it at their
//     next call.
//   - Both: not acquired, and the session is gone with every other lock on
//     it. Acquire returns this only when it had to discard the session: a
//     wait that could not be cancelled (below), or a failed check for a
//     stray hold. WithLock adds ErrNotAcquired to every Acquire error.
//   - [ErrDeadlock]: MySQL error 3058, MariaDB error 1213, PostgreSQL
//     SQLSTATE 40P01. From GET_LOCK it does not mean that a transaction was
//     rolled back, unlike error 1213 from a row lock. On PostgreSQL a wait
//     inside a transaction that runs in the savepoint leaves the
//     transaction intact; a wait without one (a context that cannot be
//     cancelled, no Timeout) leaves the transaction aborted.
//
// Cancellation is safe. dlock never hands ctx to the driver for a lock or
// unlock statement: go-sql-driver/mysql and pgx close the connection when
// a query's context ends, which would end every lock on the session. A
// deadline (the earlier of ctx's deadline and the Timeout, fixed when
// Acquire is called) is sent to the server inside the lock statement. A
// cancellation is sent from a control connection of the same pool, KILL
// QUERY on MySQL and MariaDB, pg_cancel_backend on PostgreSQL; it counts
// toward SetMaxOpenConns (keep it idle with SetMaxIdleConns, so a cancel
// does not wait for a new connection). A cancel that reaches the session
// before its statement runs is dropped by the server, so dlock sends it
// again every 50 ms until the statement returns. If the control
// connection cannot cancel the wait within one second, the waiting
// session is discarded (database/sql closes
// it instead of returning it to the pool) and the error also matches
// [ErrLockLost]. An Acquire with a context that is already done sends
// nothing.
//
// A grant wins over a cancel: if the lock statement's own reply is a
// grant, Acquire returns (true, nil) even when ctx ended meanwhile.
// Otherwise dlock makes sure no hold was left (a cancelled
// pg_advisory_lock can fail after the grant) and returns (false, err). The
// check and any release run under a mutex shared by every dlock Lock on the
// session, so they cannot take a hold that belongs to another Lock.
//
// [Lock.Release] and [Lock.Close] run with ctx's values but not its
// cancellation, bounded by [Plugin].ReleaseTimeout (5 seconds by default;
// a later ctx deadline lengthens the bound, never shortens it); so do the
// try-once statement and [Lock.Held]. Once the session's id is known the
// bound is a timer: a statement that outlives it has its session ended
// from a control connection (KILL CONNECTION, pg_terminate_backend), which
// ends the session's locks, and the call returns an error matching
// ErrLockLost. Before that the bound is a driver deadline. A release whose
// outcome cannot be known discards the session, so that a lock dlock
// failed to release cannot go back to the pool. If no connection at all
// reaches the server, Release returns when the driver or TCP gives up.
// Release of an [Xact] lock is [ErrUnsupported]. On PostgreSQL, Release
// inside a failed transaction (SQLSTATE 25P02) cannot run: the lock stays
// held, the Lock stays acquired, and the error says so.
// [WithLock] always releases; [Connection] and WithLock release the
// session locks fn made and left held, and report them with [ErrLeaked].
//
// The per-session mutex belongs to the database/sql handle: a Lock on the
// db.Connection tx (*sql.Conn) and an [Xact] Lock on a transaction begun
// from it run on one server session but do not share it. database/sql
// still runs their statements one at a time.
//
// # Non-guarantees
//
// A lock lasts as long as its session. dlock cannot keep a lock for a
// holder that is paused longer than the server keeps an idle session
// (MySQL and MariaDB wait_timeout, PostgreSQL idle_session_timeout), or
// whose connection a proxy or the network ends; the holder learns it at
// its next call, as [ErrLockLost].
//
// Session locks need a real session on the one server everyone locks on.
// Plugin.Initialize refuses a pooler in transaction or statement pooling
// (PgBouncer pool_mode = transaction), a Galera node, a read-only MySQL or
// MariaDB server, TiDB and Vitess, with an error wrapping
// [ErrUnsupportedDialect]; a PostgreSQL hot standby is refused per session
// before its first lock, so a promoted standby locks. Behind PgBouncer in
// session pooling dlock learns each session's backend pid with a query.
// ProxySQL and a writable replica cannot be detected. The README's
// "Supported topologies" lists each case and its test.
//
// On PostgreSQL a session's statement_timeout applies to the lock
// statement: when it fires the wait ends and Acquire returns an error
// matching [ErrNotAcquired]. With drivers other than pgx a blocking wait
// (no Timeout, no deadline, a context that cannot be cancelled) inherits
// the session's lock_timeout, and a wait with a Timeout or a cancellable
// context costs one extra round trip (the SAVEPOINT probe). Inside a
// transaction, a wait without a deadline inherits lock_timeout with any
// driver. A wait ended by an inherited lock_timeout returns an error
// matching [ErrNotAcquired] that wraps the driver's error.
package dlock
