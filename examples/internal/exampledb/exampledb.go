// Package exampledb finds the database servers the example programs run
// on, opens connection pools with dlock registered, and prints what each
// example does, one line per event, labelled with the server and the time
// since the example started on it.
//
// A server is found as the integration tests find it:
//
//  1. the DSN in DLOCK_TEST_MYSQL_DSN or DLOCK_TEST_POSTGRES_DSN, and only
//     that when it is set;
//  2. else the local default, root@tcp(127.0.0.1:3306)/test or
//     postgres://postgres@127.0.0.1:5432/test?sslmode=disable;
//  3. else, in a build with the tag "containers" (go run -tags containers)
//     and when a Docker engine answers within two seconds, a container
//     started with testcontainers-go (mariadb:11.4, postgres:17-alpine) and
//     removed when the program ends. Without the tag the programs link no
//     container runtime, so that a first run downloads and builds little;
//  4. else the server is skipped with a printed line, or, when CI or
//     DLOCK_TEST_REQUIRE_DB is set, the program fails.
package exampledb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/gormdlock/dlock"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Dialects, as gorm.Dialector.Name() spells them.
const (
	MySQL    = "mysql" // MySQL and MariaDB
	Postgres = "postgres"
)

const (
	pingTimeout = 3 * time.Second
	// runTimeout bounds one example on one server: no example may hang.
	runTimeout = time.Minute
)

type target struct {
	dialect, env, def, label, image string
}

var targets = []target{
	{MySQL, "DLOCK_TEST_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test", "mysql", "mariadb:11.4"},
	{Postgres, "DLOCK_TEST_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres", "postgres:17-alpine"},
}

// Server is one reachable database server.
type Server struct {
	// Name labels every line printed: "mariadb", "mysql" or "postgres".
	Name string
	// Dialect is MySQL (MySQL and MariaDB) or Postgres.
	Dialect string
	// DSN is the data source name every pool uses.
	DSN string
	// Version is the server's version, shortened.
	Version string
	// Source says where the server came from: "$DLOCK_TEST_..._DSN",
	// "local" or "container <image>".
	Source string

	start time.Time
	mu    sync.Mutex
	pools []*sql.DB
}

// Open opens a new connection pool to the server, as another process
// would, and registers the dlock plugin on it: db.Use(dlock.Plugin{}).
// The pool is closed when the example's function returns.
func (s *Server) Open(ctx context.Context) (*gorm.DB, error) {
	return s.OpenWith(ctx, dlock.Plugin{})
}

// OpenWith is Open with p registered instead of dlock.Plugin{}.
func (s *Server) OpenWith(ctx context.Context, p dlock.Plugin) (*gorm.DB, error) {
	dialector := postgres.Open(s.DSN)
	if s.Dialect == MySQL {
		dialector = mysql.Open(s.DSN)
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		return nil, err
	}
	pool, err := db.DB()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.pools = append(s.pools, pool)
	s.mu.Unlock()
	if err := db.WithContext(ctx).Use(p); err != nil {
		return nil, fmt.Errorf("register dlock: %w", err)
	}
	return db, nil
}

// Printf prints one line: the server's name, the time since the example
// started on it, and the message. The lines of a joined error are put on
// one line, separated by ": ".
func (s *Server) Printf(format string, args ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", ": ")
	fmt.Printf("[%s] +%.3fs %s\n", s.Name, time.Since(s.start).Seconds(), msg)
}

func (s *Server) closePools() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pools {
		_ = p.Close()
	}
	s.pools = nil
}

// Main runs fn once for each server of the given dialects (both when none
// is given), one after the other, and exits with status 1 if fn fails on
// any of them. A server that cannot be had is skipped with a printed line,
// or counts as a failure when CI or DLOCK_TEST_REQUIRE_DB is set. Each run
// of fn gets a context that ends after a minute.
func Main(fn func(ctx context.Context, s *Server) error, dialects ...string) {
	failed := false
	var stops []func() error
	for _, t := range targets {
		if len(dialects) > 0 && !slices.Contains(dialects, t.dialect) {
			fmt.Printf("[%s] skipped: this example is for %s only\n", t.label, strings.Join(dialects, " and "))
			continue
		}
		s, stop, err := find(t)
		if stop != nil {
			stops = append(stops, stop)
		}
		if err != nil {
			if v := requireVar(); v != "" {
				fmt.Fprintf(os.Stderr, "[%s] error: %s is set and %v\n", t.label, v, err)
				failed = true
			} else {
				fmt.Printf("[%s] skipped: %v\n", t.label, err)
			}
			continue
		}
		fmt.Printf("[%s] server %s (%s)\n", s.Name, s.Version, s.Source)
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		s.start = time.Now()
		err = fn(ctx, s)
		cancel()
		s.closePools()
		if err != nil {
			fmt.Fprintf(os.Stderr, "[%s] error: %v\n", s.Name, err)
			failed = true
		}
	}
	for _, stop := range stops {
		if err := stop(); err != nil {
			fmt.Fprintf(os.Stderr, "remove container: %v\n", err)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// requireVar returns the name of the environment variable that makes an
// unreachable server a failure, or "" when none is set.
func requireVar() string {
	for _, v := range []string{"DLOCK_TEST_REQUIRE_DB", "CI"} {
		switch strings.ToLower(strings.TrimSpace(os.Getenv(v))) {
		case "", "0", "false", "no":
		default:
			return v
		}
	}
	return ""
}

// find returns the server for t: from the environment, the local default,
// or a container (with the function that removes it, to call at the end).
func find(t target) (*Server, func() error, error) {
	if dsn := os.Getenv(t.env); dsn != "" {
		s, err := connect(t, dsn, "$"+t.env)
		if err != nil {
			// The DSN may hold a password: name the variable, not its value.
			return nil, nil, fmt.Errorf("no server at $%s: %w", t.env, err)
		}
		return s, nil, nil
	}
	s, err := connect(t, t.def, "local")
	if err == nil {
		return s, nil, nil
	}
	localErr := fmt.Errorf("no server at %s (set %s to use another): %w", t.def, t.env, err)
	dsn, stop, err := startContainer(t)
	if err != nil {
		return nil, stop, fmt.Errorf("%w; %w", localErr, err)
	}
	s, err = connect(t, dsn, "container "+t.image)
	return s, stop, err
}

// connect pings the server behind dsn and reads its version.
func connect(t target, dsn, source string) (*Server, error) {
	driver := "pgx"
	if t.dialect == MySQL {
		cfg, err := gomysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("bad DSN: %w", err)
		}
		// GORM reads DATETIME into time.Time only with parseTime, and
		// interpolateParams saves a round trip per query with arguments.
		cfg.ParseTime = true
		cfg.InterpolateParams = true
		dsn, driver = cfg.FormatDSN(), "mysql"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	var version string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return nil, err
	}
	s := &Server{Name: t.dialect, Dialect: t.dialect, DSN: dsn, Version: version, Source: source}
	if strings.Contains(version, "MariaDB") {
		s.Name = "mariadb"
	}
	if short, _, ok := strings.Cut(version, " ("); ok {
		s.Version = short // "PostgreSQL 15.4 (Debian ...) on x86_64-pc-linux-gnu, ..."
	}
	return s, nil
}
