package main

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/gormdlock/dlock"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// envDSN is the environment variable read when -dsn is not given.
const envDSN = "DLOCK_DSN"

// connectTimeout bounds connecting and registering the plugin.
const connectTimeout = 10 * time.Second

// appName is the application_name dlock's PostgreSQL sessions show, so
// that `dlock who` tells a lock held by `dlock hold` from the job's own.
const appName = "dlock"

// pgKeyword matches a key=value PostgreSQL DSN: "host=db user=app".
var pgKeyword = regexp.MustCompile(`(^|\s)host\s*=`)

// dialectOf returns the GORM dialect of dsn and the DSN the driver should
// get: PostgreSQL for a postgres:// or postgresql:// URL or a key=value DSN
// with host=, with application_name=dlock added when none is set; MySQL
// for anything else, parsed by go-sql-driver/mysql, with
// interpolateParams=true (one round trip per statement).
func dialectOf(dsn string) (dialect, driverDSN string, err error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", fmt.Errorf("bad PostgreSQL URL: %w", err)
		}
		q := u.Query()
		if q.Get("application_name") == "" {
			q.Set("application_name", appName)
			u.RawQuery = q.Encode()
		}
		return "postgres", u.String(), nil
	case pgKeyword.MatchString(dsn):
		if !strings.Contains(dsn, "application_name") {
			dsn += " application_name=" + appName
		}
		return "postgres", dsn, nil
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return "", "", fmt.Errorf("not a PostgreSQL DSN (postgres://... or host=...) nor a MySQL one: %w", err)
	}
	cfg.InterpolateParams = true
	return "mysql", cfg.FormatDSN(), nil
}

// open connects to the database of dsn and registers dlock with prefix.
// The caller closes the pool with closeDB.
func open(ctx context.Context, dsn, prefix string) (*gorm.DB, error) {
	dialect, driverDSN, err := dialectOf(dsn)
	if err != nil {
		return nil, err
	}
	d := mysql.Open(driverDSN)
	if dialect == "postgres" {
		d = postgres.Open(driverDSN)
	}
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard, DisableAutomaticPing: true})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := db.WithContext(ctx).Use(dlock.Plugin{KeyPrefix: prefix}); err != nil {
		closeDB(db)
		return nil, err
	}
	return db, nil
}

func closeDB(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		_ = sqlDB.Close()
	}
}
