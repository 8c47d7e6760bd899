package topology

// The servers of the topology tests. Each is started by the test binary
// itself, in a temporary directory, on free ports, and stopped by the pid
// it started when the tests end (TestMain); the temporary directories are
// removed. The shared servers at 127.0.0.1:3306 and 127.0.0.1:5432 are
// never reconfigured: PgBouncer only forwards to the shared PostgreSQL.
//
// PostgreSQL and PgBouncer refuse to run as root, so they run as the
// postgres user; mariadbd switches to the mysql user itself.

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

const (
	envTopology = "DLOCK_TEST_TOPOLOGY"
	envRequire  = "DLOCK_TEST_REQUIRE_DB"
	envCI       = "CI"

	sharedPostgres = "127.0.0.1:5432" // PgBouncer forwards to it, database test
	startTimeout   = 60 * time.Second
	stopTimeout    = 15 * time.Second
)

// galeraLibs are where Debian's galera-4 and other distributions put the
// Galera provider.
var galeraLibs = []string{
	"/usr/lib/galera/libgalera_smm.so",
	"/usr/lib/libgalera_smm.so",
	"/usr/lib64/galera-4/libgalera_smm.so",
	"/usr/lib64/galera/libgalera_smm.so",
}

// procs are the servers started by the tests, stopped by TestMain.
var (
	procsMu sync.Mutex
	procs   []*proc
)

// TestMain runs the tests, then stops every server they started and
// removes its directory.
func TestMain(m *testing.M) {
	code := m.Run()
	stopAll()
	os.Exit(code)
}

func stopAll() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop %s: %v\n", procs[i].name, err)
		}
	}
	procs = nil
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
	dirs = nil
}

// requireVar names the variable that turns a missing piece into a
// failure, or is "".
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

// topologyTest skips the test unless the topology suite was asked for
// (make topology sets DLOCK_TEST_TOPOLOGY=1).
func topologyTest(t *testing.T) {
	t.Helper()
	if os.Getenv(envTopology) == "" {
		t.Skipf("topology tests start their own servers; run make topology (or set %s=1)", envTopology)
	}
}

// missing skips the test, or fails it under CI or DLOCK_TEST_REQUIRE_DB,
// because something the topology needs is not there.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if v := requireVar(); v != "" {
		t.Fatalf("%s is set and make topology asked for this test, but %s", v, msg)
	}
	t.Skipf("%s (make topology runs it; it fails instead under CI or %s)", msg, envRequire)
}

// needRoot makes sure the test can start servers as other users.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "the topology tests must run as root (they start servers as the postgres and mysql users)")
	}
}

// lookPath finds a program in PATH or in the given directories.
func lookPath(name string, dirs ...string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// pgBinDir returns the newest /usr/lib/postgresql/<v>/bin that has initdb.
func pgBinDir() (string, bool) {
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(ms, func(i, j int) bool { return pgMajor(ms[i]) > pgMajor(ms[j]) })
	if len(ms) == 0 {
		return "", false
	}
	return filepath.Dir(ms[0]), true
}

func pgMajor(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// galeraLib returns the path of the Galera provider library.
func galeraLib() (string, bool) {
	for _, p := range galeraLibs {
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// osUser returns the uid and gid of a system user.
func osUser(name string) (uid, gid uint32, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	a, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, 0, err
	}
	b, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return 0, 0, err
	}
	return uint32(a), uint32(b), nil
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dirs are the temporary directories to remove after the servers stop.
var dirs []string

// tempDir makes a short temporary directory (socket paths must stay under
// 108 bytes) owned by owner, removed by TestMain after the servers stop.
func tempDir(t *testing.T, prefix, owner string) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dlock-"+prefix+"-")
	if err != nil {
		t.Fatalf("MkdirTemp: %v", err)
	}
	procsMu.Lock()
	dirs = append(dirs, d)
	procsMu.Unlock()
	if owner != "" {
		uid, gid, err := osUser(owner)
		if err != nil {
			t.Fatalf("user %s: %v", owner, err)
		}
		if err := os.Chown(d, int(uid), int(gid)); err != nil {
			t.Fatalf("chown %s: %v", d, err)
		}
	}
	return d
}

// proc is one server process the tests started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	sig  syscall.Signal // the signal that shuts it down cleanly
	done chan struct{}  // closed when it exited
	err  error          // its exit status, once done
}

// command builds a command that runs as the user (as root when "").
func command(t *testing.T, as, dir, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if as != "" {
		uid, gid, err := osUser(as)
		if err != nil {
			missing(t, "no %s user to run %s: %v", as, filepath.Base(bin), err)
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	}
	return cmd
}

// run runs a setup command to its end and fails the test with its output
// if it fails.
func run(t *testing.T, as, dir, bin string, args ...string) {
	t.Helper()
	cmd := command(t, as, dir, bin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
}

// start starts a server in the background, its output going to log, and
// registers it to be stopped by TestMain with sig.
func start(t *testing.T, name, as, dir, log string, sig syscall.Signal, bin string, args ...string) *proc {
	t.Helper()
	cmd := command(t, as, dir, bin, args...)
	f, err := os.Create(log)
	if err != nil {
		t.Fatalf("create %s: %v", log, err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: log, sig: sig, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p
}

// exited reports whether the server has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the server by its pid: the clean shutdown signal, then
// SIGKILL if it has not exited within stopTimeout.
func (p *proc) stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(p.sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("pid %d did not stop within %v; killed", p.cmd.Process.Pid, stopTimeout)
}

// tail returns the end of the server's log, for failure messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitReady pings dsn until it answers, the server exits, or startTimeout.
func waitReady(t *testing.T, p *proc, driver, dsn string) {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("sql.Open(%s): %v", p.name, err)
	}
	defer db.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		switch {
		case err == nil:
			return
		case p.exited():
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.tail())
		case time.Now().After(deadline):
			t.Fatalf("%s did not answer within %v: %v\n%s", p.name, startTimeout, err, p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- PgBouncer ---

// pgBouncer is a PgBouncer in front of the shared PostgreSQL.
type pgBouncer struct {
	mode string // "session" or "transaction"
	port int
	ini  string // its configuration file
	proc *proc
}

// reload rewrites the pool mode in the configuration and makes PgBouncer
// read it again (SIGHUP), as an operator would.
func (b *pgBouncer) reload(t *testing.T, mode string) {
	t.Helper()
	old, err := os.ReadFile(b.ini)
	if err != nil {
		t.Fatalf("read %s: %v", b.ini, err)
	}
	conf := strings.Replace(string(old), "pool_mode = "+b.mode, "pool_mode = "+mode, 1)
	writeOwned(t, b.ini, conf, "postgres")
	if err := b.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP pgbouncer: %v", err)
	}
	b.mode = mode
	// PgBouncer reloads in its event loop: wait until its admin console
	// says the new mode, for the setting and for the pool of database test.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conf, pool := b.poolMode(t)
		if conf == mode && (pool == "" || pool == mode) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PgBouncer still says pool_mode %q (pool of test: %q) 5s after SIGHUP; want %q", conf, pool, mode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// poolMode asks PgBouncer's admin console for its pool_mode setting (SHOW
// CONFIG) and the mode of the pool of database test (SHOW POOLS; "" on a
// PgBouncer whose SHOW POOLS has no pool_mode column, before 1.18).
func (b *pgBouncer) poolMode(t *testing.T) (conf, pool string) {
	t.Helper()
	admin, err := sql.Open("pgx", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/pgbouncer?sslmode=disable&default_query_exec_mode=simple_protocol", b.port))
	if err != nil {
		t.Fatalf("sql.Open(pgbouncer admin): %v", err)
	}
	defer admin.Close()
	for _, r := range adminRows(t, admin, "SHOW CONFIG") {
		if r["key"] == "pool_mode" {
			conf = r["value"]
		}
	}
	if conf == "" {
		t.Fatalf("PgBouncer's SHOW CONFIG has no pool_mode")
	}
	for _, r := range adminRows(t, admin, "SHOW POOLS") {
		if r["database"] == "test" {
			pool = r["pool_mode"]
		}
	}
	return conf, pool
}

// adminRows runs a SHOW on PgBouncer's admin console and returns its rows
// by column name, as text.
func adminRows(t *testing.T, admin *sql.DB, q string) []map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := admin.QueryContext(ctx, q)
	if err != nil {
		t.Fatalf("PgBouncer admin %s: %v", q, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatalf("PgBouncer admin %s: %v", q, err)
	}
	var out []map[string]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("PgBouncer admin %s: %v", q, err)
		}
		r := make(map[string]string, len(cols))
		for i, c := range cols {
			r[c] = vals[i].String
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("PgBouncer admin %s: %v", q, err)
	}
	return out
}

// DSN returns a pgx DSN for the database test through PgBouncer; extra is
// appended to the query string.
func (b *pgBouncer) DSN(extra string) string {
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/test?sslmode=disable", b.port)
	if extra != "" {
		dsn += "&" + extra
	}
	return dsn
}

var (
	bouncersMu sync.Mutex
	bouncers   = map[string]*pgBouncer{}
)

// bouncer returns a PgBouncer in the pool mode, started on first use.
func bouncer(t *testing.T, mode string) *pgBouncer {
	t.Helper()
	topologyTest(t)
	needRoot(t)
	if _, ok := lookPath("pgbouncer", "/usr/sbin"); !ok {
		missing(t, "no pgbouncer binary (apt-get install pgbouncer)")
	}
	if err := pingShared(); err != nil {
		missing(t, "the shared PostgreSQL at %s does not answer: %v", sharedPostgres, err)
	}
	bouncersMu.Lock()
	defer bouncersMu.Unlock()
	if b := bouncers[mode]; b != nil && !b.proc.exited() {
		return b
	}
	b := startBouncer(t, mode)
	bouncers[mode] = b
	return b
}

// startBouncer starts a PgBouncer of the test's own in the pool mode.
func startBouncer(t *testing.T, mode string) *pgBouncer {
	t.Helper()
	topologyTest(t)
	needRoot(t)
	bin, ok := lookPath("pgbouncer", "/usr/sbin")
	if !ok {
		missing(t, "no pgbouncer binary (apt-get install pgbouncer)")
	}
	dir := tempDir(t, "pgbouncer", "postgres")
	port := freePort(t)
	ini := fmt.Sprintf(`[databases]
test = host=127.0.0.1 port=5432 dbname=test user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/userlist.txt
pool_mode = %s
max_client_conn = 200
default_pool_size = 20
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
admin_users = postgres
`, port, dir, mode)
	writeOwned(t, filepath.Join(dir, "pgbouncer.ini"), ini, "postgres")
	writeOwned(t, filepath.Join(dir, "userlist.txt"), `"postgres" ""`+"\n", "postgres")
	p := start(t, "pgbouncer ("+mode+")", "postgres", dir, filepath.Join(dir, "pgbouncer.log"), syscall.SIGINT,
		bin, filepath.Join(dir, "pgbouncer.ini"))
	b := &pgBouncer{mode: mode, port: port, ini: filepath.Join(dir, "pgbouncer.ini"), proc: p}
	waitReady(t, p, "pgx", b.DSN("default_query_exec_mode=simple_protocol"))
	return b
}

func pingShared() error {
	db, err := sql.Open("pgx", "postgres://postgres@"+sharedPostgres+"/test?sslmode=disable")
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// writeOwned writes a file and gives it to owner.
func writeOwned(t *testing.T, path, content, owner string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	uid, gid, err := osUser(owner)
	if err != nil {
		t.Fatalf("user %s: %v", owner, err)
	}
	if err := os.Chown(path, int(uid), int(gid)); err != nil {
		t.Fatalf("chown %s: %v", path, err)
	}
}

// --- PostgreSQL primary and streaming hot standby ---

// pgServer is one PostgreSQL server the tests started.
type pgServer struct {
	port int
	proc *proc
}

// DSN returns a pgx DSN for the database test.
func (s *pgServer) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/test?sslmode=disable", s.port)
}

// pgPair is an own PostgreSQL primary with a streaming hot standby.
type pgPair struct {
	primary, standby *pgServer
}

// startPgPair starts a fresh primary (initdb) and a hot standby cloned
// from it with pg_basebackup -R, streaming from it. Each call starts its
// own pair; they are stopped by TestMain.
func startPgPair(t *testing.T) *pgPair {
	t.Helper()
	topologyTest(t)
	needRoot(t)
	bin, ok := pgBinDir()
	if !ok {
		missing(t, "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
	}
	dir := tempDir(t, "pg", "postgres")
	primaryDir, standbyDir := filepath.Join(dir, "primary"), filepath.Join(dir, "standby")
	run(t, "postgres", dir, filepath.Join(bin, "initdb"), "-D", primaryDir, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--no-sync")
	primary := startPostgres(t, bin, "postgres primary", dir, primaryDir)
	db, err := sql.Open("pgx", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", primary.port))
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE test"); err != nil {
		t.Fatalf("CREATE DATABASE test: %v", err)
	}
	run(t, "postgres", dir, filepath.Join(bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(primary.port),
		"-U", "postgres", "-D", standbyDir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	standby := startPostgres(t, bin, "postgres standby", dir, standbyDir)
	return &pgPair{primary: primary, standby: standby}
}

// startPostgres starts postgres on a data directory, on a free port.
func startPostgres(t *testing.T, bin, name, sockDir, dataDir string) *pgServer {
	t.Helper()
	port := freePort(t)
	p := start(t, name, "postgres", sockDir, dataDir+".log", syscall.SIGINT, filepath.Join(bin, "postgres"),
		"-D", dataDir, "-p", strconv.Itoa(port), "-k", sockDir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=40")
	s := &pgServer{port: port, proc: p}
	waitReady(t, p, "pgx", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
	return s
}

// --- MariaDB: a single Galera node, a read-only server ---

// mariaServer is one MariaDB server the tests started.
type mariaServer struct {
	sock string
	proc *proc
}

// DSN returns a go-sql-driver/mysql DSN for the database test.
func (s *mariaServer) DSN() string {
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "unix", s.sock, "test"
	cfg.InterpolateParams, cfg.ParseTime = true, true
	return cfg.FormatDSN()
}

// startMariaDB starts an own mariadbd (datadir from mariadb-install-db)
// with the extra server options, and creates the database test.
func startMariaDB(t *testing.T, name string, opts ...string) *mariaServer {
	t.Helper()
	topologyTest(t)
	needRoot(t)
	server, ok := lookPath("mariadbd", "/usr/sbin")
	if !ok {
		missing(t, "no mariadbd binary (apt-get install mariadb-server)")
	}
	install, ok := lookPath("mariadb-install-db", "/usr/bin")
	if !ok {
		missing(t, "no mariadb-install-db (apt-get install mariadb-server)")
	}
	if _, _, err := osUser("mysql"); err != nil {
		missing(t, "no mysql user: %v", err)
	}
	dir := tempDir(t, "mariadb", "mysql")
	data := filepath.Join(dir, "data")
	run(t, "", dir, install, "--no-defaults", "--datadir="+data, "--user=mysql",
		"--auth-root-authentication-method=normal", "--skip-test-db")
	s := &mariaServer{sock: filepath.Join(dir, "sock")}
	args := append([]string{
		"--no-defaults", "--user=mysql", "--datadir=" + data, "--socket=" + s.sock,
		"--skip-networking", "--pid-file=" + filepath.Join(dir, "mariadbd.pid"),
		"--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--skip-innodb-doublewrite",
		"--innodb-flush-log-at-trx-commit=0",
	}, opts...)
	s.proc = start(t, name, "", dir, filepath.Join(dir, "mariadbd.log"), syscall.SIGTERM, server, args...)
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", s.sock
	waitReady(t, s.proc, "mysql", cfg.FormatDSN())
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE IF NOT EXISTS test"); err != nil {
		t.Fatalf("CREATE DATABASE test: %v", err)
	}
	return s
}

// startGalera starts a single-node Galera cluster (wsrep_on=ON,
// gcomm://).
func startGalera(t *testing.T) *mariaServer {
	t.Helper()
	topologyTest(t)
	lib, ok := galeraLib()
	if !ok {
		missing(t, "no Galera provider (%s; apt-get install galera-4)", strings.Join(galeraLibs, ", "))
	}
	gport, iport := freePort(t), freePort(t)
	s := startMariaDB(t, "mariadbd (Galera)",
		"--wsrep-on=ON", "--wsrep-provider="+lib, "--wsrep-cluster-address=gcomm://",
		"--wsrep-cluster-name=dlock-topology", "--wsrep-node-address=127.0.0.1",
		fmt.Sprintf("--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:%d;ist.recv_addr=127.0.0.1:%d;gcache.size=16M", gport, iport),
		"--binlog-format=ROW", "--innodb-autoinc-lock-mode=2", "--default-storage-engine=InnoDB")
	waitGaleraReady(t, s)
	return s
}

// waitGaleraReady waits until the node says it is ready (wsrep_ready=ON).
func waitGaleraReady(t *testing.T, s *mariaServer) {
	t.Helper()
	db, err := sql.Open("mysql", s.DSN())
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer db.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		var name, value string
		err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'wsrep_ready'").Scan(&name, &value)
		if err == nil && value == "ON" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Galera node not ready within %v (wsrep_ready=%q, %v)\n%s", startTimeout, value, err, s.proc.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
