package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
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

// connectTimeout bounds connecting and registering the plugin: the dial,
// the server's greeting, the login and dlock's first statements. A
// variable for the tests.
var connectTimeout = 10 * time.Second

// pgConnectTimeout is the connect_timeout (seconds) dlock gives pgx when
// the DSN sets none: it bounds each new session's dial, TLS and login, the
// ones dlock makes after connecting included (the session a lock is taken
// on, the monitor's control connection).
const pgConnectTimeout = "10"

// appName is the application_name dlock's PostgreSQL sessions show, so
// that `dlock who` tells a lock held by `dlock hold` from the job's own.
const appName = "dlock"

// dsnForms names the DSN forms dlock accepts, for error messages.
const dsnForms = "postgres://user@host:5432/db, postgresql://..., a key=value DSN with host= (PostgreSQL), " +
	"or user:password@tcp(host:3306)/db (MySQL, MariaDB)"

// errBadDSN is a DSN in none of the accepted forms: a usage error.
var errBadDSN = errors.New("bad DSN")

// pgKeyword matches a key=value PostgreSQL DSN: "host=db user=app".
var pgKeyword = regexp.MustCompile(`(^|\s)host\s*=`)

// scheme matches a URL scheme at the start of a DSN: "mysql://".
var scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

// dialectOf returns the GORM dialect of dsn and the DSN the driver should
// get: PostgreSQL for a postgres:// or postgresql:// URL or a key=value DSN
// with host=, with application_name=dlock and connect_timeout=10 added
// when not set; MySQL
// for a go-sql-driver/mysql DSN, with interpolateParams=true (one round
// trip per statement). Any other DSN is an error matching errBadDSN that
// names the accepted forms.
func dialectOf(dsn string) (dialect, driverDSN string, err error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", fmt.Errorf("%w: not a PostgreSQL URL (%w); accepted: %s", errBadDSN, err, dsnForms)
		}
		q := u.Query()
		if q.Get("application_name") == "" {
			q.Set("application_name", appName)
		}
		if q.Get("connect_timeout") == "" {
			q.Set("connect_timeout", pgConnectTimeout)
		}
		u.RawQuery = q.Encode()
		return "postgres", u.String(), nil
	case pgKeyword.MatchString(dsn):
		if !strings.Contains(dsn, "application_name") {
			dsn += " application_name=" + appName
		}
		if !strings.Contains(dsn, "connect_timeout") {
			dsn += " connect_timeout=" + pgConnectTimeout
		}
		return "postgres", dsn, nil
	case scheme.MatchString(dsn):
		return "", "", fmt.Errorf("%w: %s URLs are not accepted; accepted: %s", errBadDSN, scheme.FindString(dsn), dsnForms)
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w; accepted: %s", errBadDSN, err, dsnForms)
	}
	cfg.InterpolateParams = true
	return "mysql", cfg.FormatDSN(), nil
}

// open connects to the database of dsn and registers dlock with prefix.
// It returns within connectTimeout, or when ctx ends, with the error of
// the first failure. The caller closes the pool with closeDB.
func open(ctx context.Context, dsn, prefix string) (*gorm.DB, error) {
	dialect, driverDSN, err := dialectOf(dsn)
	if err != nil {
		return nil, err
	}
	var d gorm.Dialector
	if dialect == "postgres" {
		d = postgres.Open(driverDSN)
	} else {
		cfg, err := gomysql.ParseDSN(driverDSN)
		if err != nil {
			return nil, err
		}
		if cfg.Timeout == 0 {
			cfg.Timeout = 10 * time.Second // each dial; ctx bounds the rest
		}
		cfg.Logger = driverLog
		conn, err := gomysql.NewConnector(cfg)
		if err != nil {
			return nil, err
		}
		// SkipInitializeWithVersion: GORM would ask the version with a
		// context.Background() that no signal or timeout ends; dlock's
		// Plugin asks it with ctx.
		d = mysql.New(mysql.Config{Conn: sql.OpenDB(conn), SkipInitializeWithVersion: true})
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

// driverLog takes go-sql-driver/mysql's log lines ("[mysql] packets.go:58
// unexpected EOF"), which would otherwise go to stderr beside dlock's own
// message. The first one is kept (the ones after it are consequences, "busy
// buffer"): errText adds it to an error that says no more than "invalid
// connection" or "bad connection".
var driverLog = &firstLine{}

func init() {
	// For connections made from a DSN rather than through open.
	_ = gomysql.SetLogger(driverLog)
}

// firstLine is a gomysql.Logger that keeps the first line logged.
type firstLine struct {
	mu   sync.Mutex
	line string
}

// Print keeps v as the line unless one is kept already.
func (l *firstLine) Print(v ...any) {
	s := strings.TrimSpace(fmt.Sprint(v...))
	l.mu.Lock()
	if l.line == "" {
		l.line = s
	}
	l.mu.Unlock()
}

// first returns the first line logged, or "".
func (l *firstLine) first() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}
