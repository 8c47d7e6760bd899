// Package dlock provides database session-level named locks for GORM, on
// MySQL and MariaDB (GET_LOCK) and on PostgreSQL (advisory locks). A lock
// excludes every other session on the same server: other instances of a
// service, cron jobs, and Python programs using sqlalchemy-dlock with the
// same key. Register the [Plugin] once, then use [WithLock], or [New] on
// the tx of [Connection]. The README shows the SQL each call sends, the
// supported servers and topologies, and the test behind each guarantee.
//
// # Session scope
//
// A [Lock] belongs to the database session the tx given to New has pinned
// (db.Connection, or [Connection]); an [Xact] lock to the transaction of
// db.Transaction, and ends with it. New on the pool returns [ErrNotPinned].
// Locks on one session stack and do not exclude each other; only locks on
// different sessions do. A waiting [Lock.Acquire] occupies its session, so
// use one session per lock that must wait concurrently. Methods are safe
// from any goroutine; [Lock.Acquired], [Lock.Key], [Lock.DBKey] and
// [Lock.DB] never block.
//
// # Keys
//
// A key is a string, a []byte or an integer; [Plugin].KeyPrefix is
// prepended to strings and []byte. PostgreSQL uses an integer as is and
// hashes a string with BLAKE2b (8-byte digest, little-endian int64); MySQL
// and MariaDB use the decimal form of an integer and a short string as is,
// and a hashed name for anything else. So 42 and "42" name one lock on
// MySQL and two on PostgreSQL, as in sqlalchemy-dlock. [Lock.DBKey] and
// [DBKey] return what the server sees; the README has the exact rules.
//
// # Failure semantics
//
// Acquire returns (true, nil) if and only if the Lock now holds the lock,
// and (false, nil) when it is busy or the [Timeout] ran out; after an error
// the Lock holds nothing. [ErrNotAcquired] means known not held (ctx ended,
// and then it matches ctx.Err() too; deadlock, also [ErrDeadlock]; busy in
// WithLock). [ErrLockLost] means the hold or the session is gone. Both: not
// acquired, and the session was discarded with its other locks.
//
// dlock never hands ctx to the driver for a lock or unlock statement: a
// deadline goes to the server in the statement, and a cancel is sent from a
// control connection of the same pool. A grant beats a cancel. Release,
// Close and Held send their statements without ctx's cancellation, bounded
// by [Plugin].ReleaseTimeout; a statement past its bound has its session
// ended and discarded, and the call returns ErrLockLost. Error texts are
// one line.
//
// # Nesting
//
// Locks are not re-entrant. A WithLock or Acquire whose ctx descends from
// fn's (tx.Statement.Context) for the key that WithLock holds returns
// [ErrReentrant] at once (it also matches ErrNotAcquired), and so does a
// WithLock on a session that holds its key already: goroutines that fn
// starts with its ctx cannot be told from fn itself, and must never share
// a hold. A nested WithLock or Connection for another key takes a session
// of its own from the pool and waits like any caller; with none free it
// returns ErrNotAcquired within its Timeout or when ctx ends.
//
// # Loss signal
//
// While locks are held, dlock checks them from a control connection, one
// statement per [Plugin].CheckInterval for all locks of a pool. A lost lock
// closes [Lock.Done] and ends fn's context in WithLock with a
// [context.Cause] matching ErrLockLost. A failing check is no loss until
// checks have failed for ReleaseTimeout.
//
// # Leader election
//
// An [Elector] calls its lead function in one process at a time: every
// candidate waits in the server on a session of its own (N candidates hold
// N sessions), and the server hands the lock over when the leader releases
// it or its session ends. The leader's session runs a short statement
// naming it (the beacon) over and over while it leads, so its lead
// context ends within milliseconds of the session's end, and
// [Elector.Leader] (or `dlock who`) shows who leads, from any process.
//
// # Non-guarantees
//
// A lock lasts as long as its session. A holder whose session is killed,
// reaped when idle ([Plugin].KeepIdleHolders prevents that), or cut off
// loses the lock, and another session may take it before the holder hears
// of it. A lock forgotten in a plain db.Connection goes back to the pool
// with its session until dlock next uses that session ([ErrLeaked]); use
// Connection or WithLock. Poolers in transaction mode, MySQL proxies that
// multiplex sessions, Galera, Group Replication multi-primary, read-only
// servers and Aurora readers, Citus workers, TiDB, Vitess, CockroachDB and
// YugabyteDB are refused with [ErrUnsupportedDialect]; writable replicas
// cannot be detected.
package dlock
