package bench

// The servers, the pools and the counting dialer shared by every benchmark.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/gormdlock/dlock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/crypto/blake2b"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

const (
	envMySQL    = "DLOCK_TEST_MYSQL_DSN"
	envPostgres = "DLOCK_TEST_POSTGRES_DSN"

	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/test"
	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

	// maxSessions bounds the sessions one pool opens on a server. With the
	// observer pool, a run never holds more than maxSessions+1 sessions on
	// either server.
	maxSessions = 66
	// idleSessions is how many idle sessions a pool keeps between
	// benchmarks, so that idle connections do not hold server slots.
	idleSessions = 4
)

// runID makes the lock names of one process unique, so that two runs, or
// a run and the integration tests, never contend by accident.
var runID = func() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// lockName returns a lock name unique to this process.
func lockName(parts ...any) string {
	var sb strings.Builder
	sb.WriteString("dlb-")
	sb.WriteString(runID)
	for _, p := range parts {
		fmt.Fprintf(&sb, "-%v", p)
	}
	return sb.String()
}

// counter counts round trips and dials of all connections of one pool.
type counter struct {
	roundTrips atomic.Int64
	dials      atomic.Int64
	tap        func(p []byte) // when set, sees every byte the client writes
}

// countingConn counts round trips on one connection: a burst of writes
// that follows a read (or opens the connection) is one round trip.
type countingConn struct {
	net.Conn
	c       *counter
	writing atomic.Bool
}

func (cc *countingConn) Write(p []byte) (int, error) {
	if !cc.writing.Swap(true) {
		cc.c.roundTrips.Add(1)
	}
	if cc.c.tap != nil {
		cc.c.tap(p)
	}
	return cc.Conn.Write(p)
}

func (cc *countingConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	if n > 0 {
		cc.writing.Store(false)
	}
	return n, err
}

// SyscallConn lets go-sql-driver/mysql run its liveness check on the
// socket, as it does on an unwrapped connection. The check reads nothing.
func (cc *countingConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := cc.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("bench: not a syscall.Conn")
	}
	return sc.SyscallConn()
}

func (c *counter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.dials.Add(1)
	return &countingConn{Conn: conn, c: c}, nil
}

// server is one database server under test.
type server struct {
	name    string // "mariadb", "mysql" or "postgres"
	dialect string // "mysql" or "postgres"
	env     string
	dsn     string
	version string
	err     error

	mu   sync.Mutex
	main *pool   // counted, for every library
	obs  *sql.DB // uncounted observer, to see a waiter wait
}

// pool is a *sql.DB with a counting dialer, and a *gorm.DB over it with
// dlock registered.
type pool struct {
	srv  *server
	db   *sql.DB
	gdb  *gorm.DB
	cnt  *counter
	name string
}

var (
	serversOnce sync.Once
	allServers  []*server
)

// servers returns the reachable servers, probing them once.
func servers() []*server {
	serversOnce.Do(func() {
		for _, s := range []*server{
			{dialect: "mysql", env: envMySQL, dsn: getenv(envMySQL, defaultMySQLDSN)},
			{dialect: "postgres", env: envPostgres, dsn: getenv(envPostgres, defaultPostgresDSN)},
		} {
			s.probe()
			allServers = append(allServers, s)
		}
	})
	return allServers
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (s *server) probe() {
	db, err := s.open(nil)
	if err != nil {
		s.err = err
		return
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&s.version); err != nil {
		s.err = err
		return
	}
	switch {
	case s.dialect == "postgres":
		s.name = "postgres"
	case strings.Contains(s.version, "MariaDB"):
		s.name = "mariadb"
	default:
		s.name = "mysql"
	}
}

// forEachServer runs body as a sub-benchmark per server, "db=<name>".
func forEachServer(b *testing.B, body func(b *testing.B, s *server)) {
	for _, s := range servers() {
		if s.err != nil {
			b.Logf("skipping %s: %v (set %s)", s.dialect, s.err, s.env)
			continue
		}
		b.Run("db="+s.name, func(b *testing.B) { body(b, s) })
	}
}

var mysqlNets atomic.Int64

// open opens a *sql.DB on the server; c counts its round trips when not
// nil. go-sql-driver/mysql gets interpolateParams=true, so that a
// statement with arguments is one round trip instead of prepare, execute
// and close.
func (s *server) open(c *counter) (*sql.DB, error) {
	switch s.dialect {
	case "mysql":
		cfg, err := gomysql.ParseDSN(s.dsn)
		if err != nil {
			return nil, err
		}
		cfg.InterpolateParams = true
		if c != nil {
			network := cfg.Net
			if network == "" {
				network = "tcp"
			}
			name := fmt.Sprintf("dlockbench%d", mysqlNets.Add(1))
			gomysql.RegisterDialContext(name, func(ctx context.Context, addr string) (net.Conn, error) {
				return c.dial(ctx, network, addr)
			})
			cfg.Net = name
		}
		conn, err := gomysql.NewConnector(cfg)
		if err != nil {
			return nil, err
		}
		return sql.OpenDB(conn), nil
	default:
		cfg, err := pgx.ParseConfig(s.dsn)
		if err != nil {
			return nil, err
		}
		if c != nil {
			cfg.DialFunc = c.dial
		}
		return stdlib.OpenDB(*cfg), nil
	}
}

// pool returns the server's counted pool, opening it once.
func (s *server) pool(b *testing.B) *pool {
	b.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.main != nil {
		return s.main
	}
	c := new(counter)
	db, err := s.open(c)
	if err != nil {
		b.Fatalf("open %s: %v", s.name, err)
	}
	db.SetMaxOpenConns(maxSessions)
	db.SetMaxIdleConns(idleSessions)
	var dialector gorm.Dialector
	if s.dialect == "mysql" {
		dialector = mysql.New(mysql.Config{Conn: db})
	} else {
		dialector = postgres.New(postgres.Config{Conn: db})
	}
	gdb, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		b.Fatalf("gorm.Open %s: %v", s.name, err)
	}
	if err := gdb.Use(dlock.Plugin{}); err != nil {
		b.Fatalf("db.Use(dlock.Plugin{}) on %s: %v", s.name, err)
	}
	s.main = &pool{srv: s, db: db, gdb: gdb, cnt: c, name: s.name}
	return s.main
}

// observer returns an uncounted pool of one session, for asking the
// server whether a waiter is waiting.
func (s *server) observer(b *testing.B) *sql.DB {
	b.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.obs == nil {
		db, err := s.open(nil)
		if err != nil {
			b.Fatalf("open observer on %s: %v", s.name, err)
		}
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		s.obs = db
	}
	return s.obs
}

// closeAll closes every pool that was opened.
func closeAll() {
	for _, s := range allServers {
		if s.main != nil {
			_ = s.main.db.Close()
		}
		if s.obs != nil {
			_ = s.obs.Close()
		}
	}
}

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		// Configuration lines for benchstat and cmd/benchtab.
		for _, s := range servers() {
			if s.err == nil {
				fmt.Printf("%s: %s\n", s.name, s.version)
			}
		}
	}
	code := m.Run()
	closeAll()
	os.Exit(code)
}

// roundTrips returns the pool's round trips so far.
func (p *pool) roundTrips() int64 { return p.cnt.roundTrips.Load() }

// session pins one session of the pool, as db.Connection does, and returns
// its tx and *sql.Conn. The session goes back to the pool at the end of
// the benchmark.
func (p *pool) session(b *testing.B) (*gorm.DB, *sql.Conn) {
	b.Helper()
	tx, conn, done := p.pin(b)
	b.Cleanup(done)
	return tx, conn
}

// pin pins one session and returns a func that gives it back. When the
// server has no slot free (other work shares it), it retries for a while.
func (p *pool) pin(b *testing.B) (*gorm.DB, *sql.Conn, func()) {
	b.Helper()
	deadline := time.Now().Add(connectPatience)
	for {
		tx, conn, done, err := p.tryPin()
		if err == nil {
			return tx, conn, done
		}
		if time.Now().After(deadline) {
			b.Fatalf("db.Connection on %s: %v", p.name, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// connectPatience is how long a benchmark waits for a free server slot.
const connectPatience = 60 * time.Second

// conn takes a session from the pool, retrying like pin.
func (p *pool) conn(b *testing.B) *sql.Conn {
	b.Helper()
	deadline := time.Now().Add(connectPatience)
	for {
		c, err := p.db.Conn(context.Background())
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			b.Fatalf("session on %s: %v", p.name, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (p *pool) tryPin() (*gorm.DB, *sql.Conn, func(), error) {
	type pinned struct {
		tx *gorm.DB
	}
	got := make(chan pinned)
	release := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- p.gdb.Connection(func(tx *gorm.DB) error {
			got <- pinned{tx}
			<-release
			return nil
		})
	}()
	select {
	case pn := <-got:
		conn := pn.tx.Statement.ConnPool.(*sql.Conn)
		return pn.tx, conn, func() { close(release); <-errc }, nil
	case err := <-errc:
		return nil, nil, nil, err
	}
}

// trim lets the pool close its idle sessions beyond idleSessions.
func (p *pool) trim() {
	p.db.SetMaxIdleConns(0)
	p.db.SetMaxIdleConns(idleSessions)
}

// pgKey returns the PostgreSQL key dlock uses for a string key without
// prefix (BLAKE2b with an 8-byte digest, read as a little-endian int64),
// so that the raw SQL and the peers lock the same key as dlock.
func pgKey(name string) int64 {
	h, _ := blake2b.New(8, nil)
	h.Write([]byte(name))
	return int64(binary.LittleEndian.Uint64(h.Sum(nil)))
}

// newKey returns the key for name on both servers.
func newKey(name string) key { return key{name: name, pg: pgKey(name)} }

// TestPGKey checks pgKey against dlock on a key vector of the design.
func TestPGKey(t *testing.T) {
	if got, want := pgKey("my-lock"), int64(-8841863937742578886); got != want {
		t.Fatalf("pgKey(%q) = %d, want %d", "my-lock", got, want)
	}
}
