package dlock

import (
	"database/sql"
	"fmt"

	"gorm.io/gorm"
)

// What each call finds through its *gorm.DB: the Plugin registered on it and
// what Initialize learned of the server behind its pool (registered).

// server is what Initialize learned about the database behind one pool.
type server struct {
	backend backend
	version string
	// pooler: the driver's session id is not the server's (PgBouncer's
	// cancel key instead of the backend pid), so the id is asked for.
	pooler  bool
	monitor *monitor
}

// servers maps a *sql.DB to what Initialize learned about its server.
var servers weakMap[sql.DB, *server]

// poolOf returns the *sql.DB behind a GORM config: the pool itself, or
// the one a prepared-statement pool wraps.
func poolOf(cfg *gorm.Config) (*sql.DB, error) {
	switch p := cfg.ConnPool.(type) {
	case *sql.DB:
		return p, nil
	case gorm.GetDBConnector:
		if db, err := p.GetDBConn(); err != nil || db != nil {
			return db, err
		}
	}
	return nil, fmt.Errorf("%w: connection pool %T is not a *sql.DB", ErrUnsupportedDialect, cfg.ConnPool)
}

// registration is what New needs from the registered Plugin.
type registration struct {
	cfg    Plugin
	server *server
	pool   *sql.DB
}

// registered finds the Plugin registered on db and the server it detected.
func registered(db *gorm.DB) (registration, error) {
	var r registration
	if db == nil || db.Config == nil {
		return r, fmt.Errorf("%w: nil *gorm.DB", ErrNotRegistered)
	}
	switch p := db.Config.Plugins[pluginName].(type) {
	case Plugin:
		r.cfg = p
	case *Plugin:
		r.cfg = *p
	default:
		return r, ErrNotRegistered
	}
	pool, err := poolOf(db.Config)
	if err != nil {
		return r, err
	}
	s, ok := servers.load(pool)
	if !ok {
		return r, fmt.Errorf("%w: the connection pool changed after db.Use", ErrNotRegistered)
	}
	r.server, r.pool = s, pool
	r.cfg = r.cfg.withDefaults()
	return r, nil
}
