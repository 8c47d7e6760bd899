package tests

// Shared helpers for the integration tests of github.com/gormdlock/dlock.
//
// Each test runs against every configured database server. The servers are
// found like this, once per test binary:
//
//  1. the DSN in an environment variable (DLOCK_TEST_MYSQL_DSN,
//     DLOCK_TEST_POSTGRES_DSN), and only that when it is set;
//  2. else the default address of a server on the local machine;
//  3. else, when a Docker engine answers within two seconds, a container
//     started with testcontainers-go (MariaDB and PostgreSQL images below,
//     DLOCK_TEST_MARIADB_IMAGE and DLOCK_TEST_POSTGRES_IMAGE override them)
//     and removed by TestMain when the tests end.
//
// A server that cannot be had makes its subtests skip, unless CI or
// DLOCK_TEST_REQUIRE_DB is set, in which case they fail.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	_ "github.com/gormdlock/dlock"     // the package under test; the tests in this module use it
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcmariadb "github.com/testcontainers/testcontainers-go/modules/mariadb"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	"go.uber.org/goleak"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

const (
	envMySQL    = "DLOCK_TEST_MYSQL_DSN"
	envPostgres = "DLOCK_TEST_POSTGRES_DSN"
	envRequire  = "DLOCK_TEST_REQUIRE_DB"
	envCI       = "CI"

	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/test"
	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

	envMariaDBImage      = "DLOCK_TEST_MARIADB_IMAGE"
	envPostgresImage     = "DLOCK_TEST_POSTGRES_IMAGE"
	defaultMariaDBImage  = "mariadb:11.4"
	defaultPostgresImage = "postgres:17-alpine"

	dialectMySQL    = "mysql"
	dialectPostgres = "postgres"

	pingTimeout = 3 * time.Second
	// dockerTimeout caps the search for a Docker engine, which is all the
	// no-Docker path costs, and only when a local server did not answer.
	dockerTimeout = 2 * time.Second
	// containerTimeout bounds pulling and starting one container.
	containerTimeout = 5 * time.Minute
	killTimeout      = 5 * time.Second
	pollStep         = 20 * time.Millisecond
)

// testDB describes one reachable database server. eachBackend hands a fresh
// *testDB to every subtest.
type testDB struct {
	// Name is the subtest name: "mariadb", "mysql" or "postgres".
	Name string
	// Dialect is "mysql" (MariaDB and MySQL) or "postgres".
	Dialect string
	// DSN is the data source name used for every connection.
	DSN string
	// Version is the server's SELECT VERSION() string.
	Version string
	// Source says where the server came from: "$DLOCK_TEST_..._DSN",
	// "local" or "container <image>".
	Source string

	obsMu sync.Mutex
	obs   *sql.DB // independent observer pool, see observer
}

// probe is the cached result of checking one server.
type probe struct {
	once    sync.Once
	env     string // environment variable that configures the DSN
	dialect string
	label   string // human name for messages
	dsn     string
	source  string // "$DLOCK_TEST_..._DSN", "local" or "container <image>"
	name    string // subtest name after flavour detection
	version string
	err     error
}

var probes = []*probe{
	{env: envMySQL, dialect: dialectMySQL, label: "MariaDB/MySQL", name: "mysql"},
	{env: envPostgres, dialect: dialectPostgres, label: "PostgreSQL", name: "postgres"},
}

// eachBackend runs fn as a subtest for every database server: "mariadb" (or
// "mysql") and "postgres". An unreachable server skips its subtest, or fails
// it when CI or DLOCK_TEST_REQUIRE_DB is set.
func eachBackend(t *testing.T, fn func(t *testing.T, b *testDB)) {
	t.Helper()
	eachBackendOf(t, false, fn)
}

// eachBackendParallel is eachBackend with the servers' subtests run at
// once (t.Parallel): for a test that sleeps and measures no duration. As
// each subtest talks to its own server, neither server sees more sessions
// than with eachBackend.
func eachBackendParallel(t *testing.T, fn func(t *testing.T, b *testDB)) {
	t.Helper()
	eachBackendOf(t, true, fn)
}

func eachBackendOf(t *testing.T, parallel bool, fn func(t *testing.T, b *testDB)) {
	t.Helper()
	for _, p := range probes {
		p.once.Do(p.run)
		t.Run(p.name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			if p.err != nil {
				if v := requireVar(); v != "" {
					t.Fatalf("%s is set but %s is unreachable at %s (%s): %v",
						v, p.label, redact(p.dialect, p.dsn), p.env, p.err)
				}
				t.Skipf("no %s at %s; set %s to run (%v)",
					p.label, redact(p.dialect, p.dsn), p.env, p.err)
			}
			b := &testDB{Name: p.name, Dialect: p.dialect, DSN: p.dsn, Version: p.version, Source: p.source}
			t.Cleanup(b.closeObserver)
			fn(t, b)
		})
	}
}

// requireVar returns the name of the environment variable that makes an
// unreachable server a failure, or "" when none is set.
func requireVar() string {
	for _, v := range []string{envRequire, envCI} {
		switch strings.ToLower(strings.TrimSpace(os.Getenv(v))) {
		case "", "0", "false", "no":
		default:
			return v
		}
	}
	return ""
}

// run finds the server: the DSN in p.env if set, else the local default,
// else a container when a Docker engine answers. It pings the server and
// detects its flavour.
func (p *probe) run() {
	dsn, source := os.Getenv(p.env), "$"+p.env
	if dsn == "" {
		dsn, source = defaultMySQLDSN, "local"
		if p.dialect == dialectPostgres {
			dsn = defaultPostgresDSN
		}
	}
	p.source = source
	if p.err = p.connect(dsn); p.err == nil || source != "local" {
		return
	}
	localDSN, localErr := p.dsn, p.err
	cdsn, image, err := startContainer(p.dialect)
	if err != nil {
		p.dsn, p.err = localDSN, fmt.Errorf("%w; no container either: %w", localErr, err)
		return
	}
	p.source = "container " + image
	p.err = p.connect(cdsn)
}

// connect sets p.dsn from dsn, pings the server and reads its version.
func (p *probe) connect(dsn string) error {
	p.dsn = dsn
	if p.dialect == dialectMySQL {
		fixed, err := mysqlDSN(dsn)
		if err != nil {
			return fmt.Errorf("bad DSN: %w", err)
		}
		p.dsn = fixed
	}
	db, err := sql.Open(driverName(p.dialect), p.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&p.version); err != nil {
		return err
	}
	p.name = p.dialect
	if p.dialect == dialectMySQL && strings.Contains(p.version, "MariaDB") {
		p.name = "mariadb"
	}
	return nil
}

var (
	// The answer of dockerEngine, asked once.
	dockerOnce sync.Once
	dockerErr  error

	// Containers started by startContainer, removed by TestMain.
	containersMu sync.Mutex
	containers   []testcontainers.Container
)

// dockerEngine reports whether a Docker engine answers, as testcontainers
// finds it (DOCKER_HOST, the Docker context, the default socket,
// ~/.testcontainers.properties). It gives up after dockerTimeout, even if
// the lookup ignores its context, and asks only once.
func dockerEngine() error {
	dockerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			cli, err := testcontainers.NewDockerClientWithOpts(ctx)
			if err != nil {
				done <- err
				return
			}
			defer cli.Close()
			_, err = cli.Ping(ctx, client.PingOptions{})
			done <- err
		}()
		select {
		case dockerErr = <-done:
		case <-ctx.Done():
			dockerErr = ctx.Err()
		}
		if dockerErr != nil {
			dockerErr = fmt.Errorf("no Docker engine for testcontainers (DOCKER_HOST, /var/run/docker.sock, Docker context): %w", dockerErr)
		}
	})
	return dockerErr
}

// startContainer starts a MariaDB or PostgreSQL container with
// testcontainers-go when a Docker engine answers, and returns its DSN and
// image. The container is removed by TestMain.
func startContainer(dialect string) (dsn, image string, err error) {
	if err := dockerEngine(); err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), containerTimeout)
	defer cancel()
	var ctr testcontainers.Container
	switch dialect {
	case dialectMySQL:
		image = envOr(envMariaDBImage, defaultMariaDBImage)
		var c *tcmariadb.MariaDBContainer
		c, err = tcmariadb.Run(ctx, image,
			tcmariadb.WithDatabase("test"), tcmariadb.WithUsername("root"), tcmariadb.WithPassword(""))
		if c != nil {
			ctr = c
			if err == nil {
				dsn, err = c.ConnectionString(ctx)
			}
		}
	default:
		image = envOr(envPostgresImage, defaultPostgresImage)
		var c *tcpostgres.PostgresContainer
		c, err = tcpostgres.Run(ctx, image,
			tcpostgres.WithDatabase("test"), tcpostgres.WithUsername("postgres"),
			tcpostgres.WithPassword("dlock"), tcpostgres.BasicWaitStrategies())
		if c != nil {
			ctr = c
			if err == nil {
				dsn, err = c.ConnectionString(ctx, "sslmode=disable")
			}
		}
	}
	if ctr != nil {
		containersMu.Lock()
		containers = append(containers, ctr)
		containersMu.Unlock()
	}
	if err != nil {
		return "", image, fmt.Errorf("start %s container: %w", image, err)
	}
	return dsn, image, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// TestMain runs the tests, then removes the containers they started.
func TestMain(m *testing.M) {
	before := goleak.IgnoreCurrent()
	code := m.Run()
	containersMu.Lock()
	for _, c := range containers {
		if err := testcontainers.TerminateContainer(c); err != nil {
			fmt.Fprintf(os.Stderr, "remove container: %v\n", err)
		}
	}
	containersMu.Unlock()
	// No goroutine of dlock's (watchers, discards) or of the pools the
	// tests opened may outlive the tests.
	if code == 0 {
		// GORM's PrepareStmt cache runs a goroutine per pool that it never
		// stops; it is not dlock's.
		gormLRU := goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1")
		if err := goleak.Find(before, gormLRU); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// mysqlDSN adds interpolateParams=true and parseTime=true to a
// go-sql-driver/mysql DSN.
func mysqlDSN(dsn string) (string, error) {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	cfg.InterpolateParams = true
	cfg.ParseTime = true
	return cfg.FormatDSN(), nil
}

func driverName(dialect string) string {
	if dialect == dialectMySQL {
		return "mysql"
	}
	return "pgx"
}

var pgPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)

// redact hides a password in a DSN for messages.
func redact(dialect, dsn string) string {
	if dialect == dialectMySQL {
		if cfg, err := gomysql.ParseDSN(dsn); err == nil && cfg.Passwd != "" {
			cfg.Passwd = "xxxxx"
			return cfg.FormatDSN()
		}
		return dsn
	}
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return pgPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// Dialector returns a new GORM dialector for the server.
func (b *testDB) Dialector() gorm.Dialector {
	if b.Dialect == dialectMySQL {
		return mysql.Open(b.DSN)
	}
	return postgres.Open(b.DSN)
}

// Open opens a fresh *gorm.DB with its own connection pool and a silent
// logger; opts may change the gorm.Config. The pool is closed when the test
// ends. No plugin is registered.
func (b *testDB) Open(t testing.TB, opts ...func(*gorm.Config)) *gorm.DB {
	t.Helper()
	cfg := &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)}
	for _, o := range opts {
		o(cfg)
	}
	db, err := gorm.Open(b.Dialector(), cfg)
	if err != nil {
		t.Fatalf("%s: gorm.Open: %v", b.Name, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("%s: db.DB(): %v", b.Name, err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}

// Raw opens a plain *sql.DB ("mysql" or "pgx" driver) with its own pool,
// for work on sessions independent of GORM. It is closed when the test ends.
func (b *testDB) Raw(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open(driverName(b.Dialect), b.DSN)
	if err != nil {
		t.Fatalf("%s: sql.Open: %v", b.Name, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// observer returns a pool of sessions that belong to no test code, used by
// Kill and the HeldBy helpers. It lives until the subtest of eachBackend ends.
func (b *testDB) observer(t testing.TB) *sql.DB {
	t.Helper()
	b.obsMu.Lock()
	defer b.obsMu.Unlock()
	if b.obs == nil {
		db, err := sql.Open(driverName(b.Dialect), b.DSN)
		if err != nil {
			t.Fatalf("%s: sql.Open: %v", b.Name, err)
		}
		db.SetMaxIdleConns(2)
		b.obs = db
	}
	return b.obs
}

func (b *testDB) closeObserver() {
	b.obsMu.Lock()
	defer b.obsMu.Unlock()
	if b.obs != nil {
		_ = b.obs.Close()
		b.obs = nil
	}
}

var keyUnsafe = regexp.MustCompile(`[^A-Za-z0-9._:-]+`)

// UniqueKey returns a lock name unique to this call: the test name (only
// [A-Za-z0-9._:-], other runs of characters become ".", at most 30
// characters), "-" and 8 random hex digits. It is at most 39 characters.
func (b *testDB) UniqueKey(t testing.TB) string {
	t.Helper()
	name := strings.Trim(keyUnsafe.ReplaceAllString(t.Name(), "."), ".")
	if len(name) > 30 {
		name = name[:30]
	}
	if name == "" {
		name = "dlock"
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return name + "-" + hex.EncodeToString(r[:])
}

// sessionIDQuery is the query for the current session's server id.
func (b *testDB) sessionIDQuery() string {
	if b.Dialect == dialectPostgres {
		return "SELECT pg_backend_pid()"
	}
	return "SELECT CONNECTION_ID()"
}

// SessionID returns the server's id of the session behind conn:
// CONNECTION_ID() on MariaDB/MySQL, pg_backend_pid() on PostgreSQL.
func (b *testDB) SessionID(t testing.TB, conn *sql.Conn) int64 {
	t.Helper()
	q := b.sessionIDQuery()
	var id int64
	if err := conn.QueryRowContext(context.Background(), q).Scan(&id); err != nil {
		t.Fatalf("%s: %s: %v", b.Name, q, err)
	}
	return id
}

// Kill ends the session with the given id from an independent session (KILL
// on MariaDB/MySQL, pg_terminate_backend on PostgreSQL) and waits up to 5 s
// until the server no longer lists it. Locks the session held may need a
// moment longer to disappear; poll HeldBy* when that matters.
func (b *testDB) Kill(t testing.TB, id int64) {
	t.Helper()
	ctx := context.Background()
	obs := b.observer(t)
	var err error
	if b.Dialect == dialectMySQL {
		_, err = obs.ExecContext(ctx, fmt.Sprintf("KILL %d", id))
	} else {
		var ok bool
		err = obs.QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", id).Scan(&ok)
		if err == nil && !ok {
			err = errors.New("pg_terminate_backend returned false")
		}
	}
	if err != nil && b.sessionExists(t, id) {
		t.Fatalf("%s: kill session %d: %v", b.Name, id, err)
	}
	deadline := time.Now().Add(killTimeout)
	for b.sessionExists(t, id) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: session %d still present %v after kill", b.Name, id, killTimeout)
		}
		time.Sleep(pollStep)
	}
}

// sessionExists reports whether the server lists a session with that id.
func (b *testDB) sessionExists(t testing.TB, id int64) bool {
	t.Helper()
	q := "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?"
	if b.Dialect == dialectPostgres {
		q = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
	}
	var n int64
	if err := b.observer(t).QueryRowContext(context.Background(), q, id).Scan(&n); err != nil {
		t.Fatalf("%s: look up session %d: %v", b.Name, id, err)
	}
	return n > 0
}

// HeldByMySQL reports, from an independent session, whether the GET_LOCK
// lock with that name is held, and the id (CONNECTION_ID) of the holder.
// Only for the "mysql" dialect.
func (b *testDB) HeldByMySQL(t testing.TB, name string) (held bool, owner int64) {
	t.Helper()
	if b.Dialect != dialectMySQL {
		t.Fatalf("HeldByMySQL called on %s", b.Name)
	}
	var id sql.NullInt64
	if err := b.observer(t).QueryRowContext(context.Background(),
		"SELECT IS_USED_LOCK(?)", name).Scan(&id); err != nil {
		t.Fatalf("%s: IS_USED_LOCK(%q): %v", b.Name, name, err)
	}
	return id.Valid, id.Int64
}

// HeldByPg reports, from an independent session, whether the advisory lock
// with the single int64 key k (pg_advisory_lock(bigint) form) is granted,
// and the pids of the sessions holding it (several for a shared lock),
// in ascending order. Session- and transaction-level holds both count.
// Only for the "postgres" dialect.
func (b *testDB) HeldByPg(t testing.TB, k int64) (held bool, pids []int64) {
	t.Helper()
	u := uint64(k)
	return b.pgAdvisory(t, int64(uint32(u>>32)), int64(uint32(u)), 1)
}

// HeldByPgPair is HeldByPg for the two-int32 key form
// pg_advisory_lock(a integer, b integer).
func (b *testDB) HeldByPgPair(t testing.TB, a, bb int32) (held bool, pids []int64) {
	t.Helper()
	return b.pgAdvisory(t, int64(uint32(a)), int64(uint32(bb)), 2)
}

func (b *testDB) pgAdvisory(t testing.TB, classid, objid int64, subid int) (bool, []int64) {
	t.Helper()
	if b.Dialect != dialectPostgres {
		t.Fatalf("HeldByPg called on %s", b.Name)
	}
	rows, err := b.observer(t).QueryContext(context.Background(),
		`SELECT DISTINCT pid FROM pg_locks
		 WHERE locktype = 'advisory' AND granted
		   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		   AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = $3
		 ORDER BY pid`, classid, objid, subid)
	if err != nil {
		t.Fatalf("%s: query pg_locks: %v", b.Name, err)
	}
	defer rows.Close()
	var pids []int64
	for rows.Next() {
		var pid int64
		if err := rows.Scan(&pid); err != nil {
			t.Fatalf("%s: scan pg_locks: %v", b.Name, err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: read pg_locks: %v", b.Name, err)
	}
	return len(pids) > 0, pids
}

// TestDatabasesReachable checks that every configured server answers a query
// through Open.
func TestDatabasesReachable(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		db := b.Open(t)
		var one int
		if err := db.Raw("SELECT 1").Scan(&one).Error; err != nil {
			t.Fatalf("SELECT 1: %v", err)
		}
		if one != 1 {
			t.Fatalf("SELECT 1 = %d", one)
		}
		t.Logf("%s %s (%s)", b.Name, b.Version, b.Source)
	})
}
