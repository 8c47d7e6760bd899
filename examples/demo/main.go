// Command demo shows dlock serialising work across database sessions.
//
// For each database (MariaDB/MySQL, then PostgreSQL) four workers, each on
// its own database session, take turns holding one named lock, "dlock-demo".
// Every line carries the time since the start of that database's run, so
// you can see that one worker releases the lock before the next one holds it.
//
// The databases are found through the same environment variables as the
// integration tests:
//
//	DLOCK_TEST_MYSQL_DSN     default root@tcp(127.0.0.1:3306)/test
//	DLOCK_TEST_POSTGRES_DSN  default postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//
// A database that cannot be reached is skipped. Run it with `make demo`.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/gormdlock/dlock"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

const (
	lockName = "dlock-demo"
	workers  = 4
	rounds   = 2
	holdFor  = 200 * time.Millisecond
)

type target struct {
	name   string // printed label; "mysql" becomes "mariadb" on MariaDB
	env    string
	def    string
	driver string // database/sql driver name
	fixDSN func(dsn string) (string, error)
	gorm   func(conn *sql.DB) gorm.Dialector
}

var targets = []target{
	{
		name: "mysql", env: "DLOCK_TEST_MYSQL_DSN", def: "root@tcp(127.0.0.1:3306)/test",
		driver: "mysql", fixDSN: mysqlDSN,
		gorm: func(conn *sql.DB) gorm.Dialector { return mysql.New(mysql.Config{Conn: conn}) },
	},
	{
		name: "postgres", env: "DLOCK_TEST_POSTGRES_DSN", def: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		driver: "pgx", fixDSN: func(dsn string) (string, error) { return dsn, nil },
		gorm: func(conn *sql.DB) gorm.Dialector { return postgres.New(postgres.Config{Conn: conn}) },
	},
}

// mysqlDSN adds the parameters GORM wants to a go-sql-driver/mysql DSN.
func mysqlDSN(dsn string) (string, error) {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	cfg.InterpolateParams = true
	cfg.ParseTime = true
	return cfg.FormatDSN(), nil
}

func main() {
	ctx := context.Background()
	failed := false
	for _, t := range targets {
		if err := run(ctx, t); err != nil {
			fmt.Fprintf(os.Stderr, "[%s] error: %v\n", t.name, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// run connects to one database and runs the workers. An unreachable
// database is reported and skipped; it is not an error.
func run(ctx context.Context, t target) error {
	dsn := os.Getenv(t.env)
	if dsn == "" {
		dsn = t.def
	}
	dsn, err := t.fixDSN(dsn)
	if err != nil {
		return fmt.Errorf("bad %s: %w", t.env, err)
	}
	sqlDB, err := sql.Open(t.driver, dsn)
	if err != nil {
		return fmt.Errorf("bad %s: %w", t.env, err)
	}
	defer sqlDB.Close()
	// Each worker pins one session while it waits for and holds the lock;
	// leave room for them plus a control connection.
	sqlDB.SetMaxOpenConns(8)

	pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		where := t.def + " (set " + t.env + " to use another)"
		if os.Getenv(t.env) != "" {
			where = "$" + t.env // may hold a password: not printed
		}
		fmt.Printf("[%s] skipped: no server at %s: %v\n", t.name, where, err)
		return nil
	}

	db, err := gorm.Open(t.gorm(sqlDB), &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		return err
	}
	var version string
	if err := db.WithContext(ctx).Raw("SELECT VERSION()").Scan(&version).Error; err != nil {
		return err
	}
	name := t.name
	if strings.Contains(version, "MariaDB") {
		name = "mariadb"
	}
	if short, _, ok := strings.Cut(version, " ("); ok {
		version = short // "PostgreSQL 15.4 (Debian ...) on x86_64..." is long
	}

	if err := db.Use(dlock.Plugin{}); err != nil {
		return fmt.Errorf("register plugin: %w", err)
	}

	fmt.Printf("[%s] %d workers, %d rounds each, one lock %q (%s)\n", name, workers, rounds, lockName, version)

	start := time.Now()
	stamp := func() string { return fmt.Sprintf("+%.3fs", time.Since(start).Seconds()) }
	var holders, maxHolders atomic.Int32

	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 1; w <= workers; w++ {
		wg.Go(func() {
			for range rounds {
				err := dlock.WithLock(ctx, db, lockName, func(tx *gorm.DB) error {
					n := holders.Add(1)
					defer holders.Add(-1)
					for {
						m := maxHolders.Load()
						if n <= m || maxHolders.CompareAndSwap(m, n) {
							break
						}
					}
					fmt.Printf("[%s] worker %d holds %s at %s\n", name, w, lockName, stamp())
					time.Sleep(holdFor)
					fmt.Printf("[%s] worker %d releases %s at %s\n", name, w, lockName, stamp())
					return nil
				}, dlock.Timeout(5*time.Second))
				if err != nil {
					errs[w-1] = fmt.Errorf("worker %d: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if m := maxHolders.Load(); m != 1 {
		return fmt.Errorf("%d workers held %s at the same time", m, lockName)
	}
	fmt.Printf("[%s] done in %s: %d holds, never more than one holder at a time\n",
		name, stamp(), workers*rounds)
	return nil
}
