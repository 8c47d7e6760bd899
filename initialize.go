package dlock

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// What db.Use(dlock.Plugin{}) checks and sets up: Plugin.Initialize.

// Initialize is called by db.Use. It asks the server its version, and
// checks the topology once (see the README's supported topologies): on
// PostgreSQL it refuses CockroachDB, YugabyteDB and Citus workers, and
// compares two sessions pinned at once, to refuse a pooler in transaction
// pooling and to learn whether the driver's session id is the backend's
// pid; on MySQL and MariaDB it refuses TiDB, Vitess, Galera nodes, Group
// Replication multi-primary members, Aurora readers and read-only
// servers, and compares the CONNECTION_ID() of two sessions pinned at
// once, to refuse a proxy that multiplexes sessions. When
// gorm.io/plugin/dbresolver is registered already, it adds callbacks that
// keep the statements of a pinned session on it (see keptconn.go). Its
// statements run with db's context; it leaves db unchanged when it fails.
func (p Plugin) Initialize(db *gorm.DB) error {
	if p.ReleaseTimeout < 0 {
		return fmt.Errorf("%w: Plugin.ReleaseTimeout is negative", ErrInvalidOption)
	}
	name := db.Dialector.Name()
	if name != "mysql" && name != "postgres" {
		return fmt.Errorf("%w: %q", ErrUnsupportedDialect, name)
	}
	pool, err := poolOf(db.Config)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if db.Statement != nil && db.Statement.Context != nil {
		ctx = db.Statement.Context
	}
	var version string
	if err := pool.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return fmt.Errorf("dlock: asking the server version: %w", err)
	}
	s := &server{version: version}
	switch name {
	case "mysql":
		if err := mysqlCheckServer(ctx, pool, version); err != nil {
			return err
		}
		if err := mysqlCheckPool(ctx, pool); err != nil {
			return err
		}
		s.backend = &mysqlBackend{mariadb: strings.Contains(version, "MariaDB")}
	case "postgres":
		if err := pgCheckServer(ctx, pool, version); err != nil {
			return err
		}
		if s.pooler, err = pgCheckPool(ctx, pool); err != nil {
			return err
		}
		s.backend = pgBackend{}
	}
	if err := registerKeepSession(db); err != nil {
		return err
	}
	cfg := p.withDefaults()
	s.monitor = newMonitor(pool, s.backend, cfg)
	servers.store(pool, s)
	return nil
}
