package dlock

import (
	"log/slog"
	"time"
)

// pluginName is the key of the Plugin in gorm.Config.Plugins.
const pluginName = "gorm:dlock"

// Defaults of the Plugin's fields.
const (
	defaultReleaseTimeout  = 5 * time.Second
	defaultServerKeepalive = 5 * time.Second
	defaultCheckInterval   = 500 * time.Millisecond
)

// Plugin registers dlock with a *gorm.DB:
//
//	err := db.Use(dlock.Plugin{})
//
// Initialize picks the backend from the dialect ("mysql" for MySQL and
// MariaDB, "postgres" for PostgreSQL), asks the server for its version
// once, and refuses what it cannot lock correctly with an error wrapping
// [ErrUnsupportedDialect]: sqlite, sqlserver, and the servers and
// topologies of the README's table (CockroachDB and YugabyteDB, whose
// advisory locks are stubs or cannot be trusted; TiDB, Vitess, Galera,
// replicas, Citus workers and proxies that multiplex sessions, whose locks
// do not exclude every client). Both dlock.Plugin{} and &dlock.Plugin{}
// may be registered.
type Plugin struct {
	// KeyPrefix is prepended to string and []byte keys, never to integer
	// keys, so that several applications can share one database without
	// their lock names meeting. Default: no prefix.
	KeyPrefix string
	// ReleaseTimeout bounds each release statement (and the other short
	// statements dlock sends). A caller's context deadline may lengthen the
	// bound, never shorten it. When it runs out the session is discarded,
	// which ends every lock on it. Default (zero): 5 seconds.
	ReleaseTimeout time.Duration
	// CheckInterval is how often dlock asks the server, from a control
	// connection of the pool, whether the locks held through the pool are
	// still held: one statement per interval for all of them, only while
	// some are held. The check keeps that session of the pool while locks
	// are held (it counts toward SetMaxOpenConns), so that a pool at its
	// limit cannot starve it. A lock found gone ends its Lock's Done
	// channel and WithLock's context. A check that fails is retried; when
	// checks keep failing for ReleaseTimeout, the held locks are reported
	// lost, since none can be confirmed. Negative: no checks (a loss is
	// then found only by dlock's own statements). Default (zero): 500 ms.
	CheckInterval time.Duration
	// ServerKeepalive is how soon a PostgreSQL server notices that the
	// client of a session dlock locked on has vanished from the network,
	// and ends the session, freeing its locks: dlock sets the session's
	// tcp_keepalives_idle to ServerKeepalive, tcp_keepalives_interval to
	// half of it (at least 1 s), tcp_keepalives_count to 2 and
	// tcp_user_timeout to twice ServerKeepalive, once per session, with
	// one statement. Negative: leave the server's settings alone. MySQL
	// and MariaDB have no such per-session setting (see the README).
	// Default (zero): 5 s, which frees a vanished holder's locks in about
	// 10 s instead of the hours of the operating system's default.
	ServerKeepalive time.Duration
	// KeepIdleHolders keeps the server's idle reaper from ending a session
	// that holds a dlock lock (wait_timeout on MySQL and MariaDB,
	// idle_session_timeout on PostgreSQL 14 and later): when a session
	// takes its first lock, dlock raises its timeout (wait_timeout to a
	// year, idle_session_timeout off), and when it releases its last one,
	// dlock puts the session's own value back. It costs one statement at
	// each of those two moments and none while fn runs. Inside a
	// transaction that rolls back, PostgreSQL puts the setting back early.
	// Default: false, the server's timeouts apply to holders too.
	KeepIdleHolders bool
	// Logger receives dlock's log records: at Warn a lock lost, a session
	// discarded, a leaked lock released, a cancel that could not be
	// delivered; at Debug each wait, grant and release. Records carry the
	// key, the session id and the wait or hold duration. Nothing is
	// formatted for a level the handler does not enable. Default (nil):
	// silent.
	Logger *slog.Logger
	// Observer is told of every acquire, release, loss and WithLock, for
	// metrics and traces (see Observer and the otel module). Default
	// (nil): none.
	Observer Observer
}

// Name returns "gorm:dlock".
func (Plugin) Name() string { return pluginName }

// withDefaults returns p with its zero fields set to their defaults.
func (p Plugin) withDefaults() Plugin {
	if p.ReleaseTimeout == 0 {
		p.ReleaseTimeout = defaultReleaseTimeout
	}
	if p.CheckInterval == 0 {
		p.CheckInterval = defaultCheckInterval
	}
	if p.ServerKeepalive == 0 {
		p.ServerKeepalive = defaultServerKeepalive
	}
	return p
}
