package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// The integration tests read the same variables as the tests/ module.
const (
	envMySQL           = "DLOCK_TEST_MYSQL_DSN"
	envPostgres        = "DLOCK_TEST_POSTGRES_DSN"
	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/test"
	defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	waitTimeout        = 10 * time.Second
)

// runCLI runs the command line in-process and returns its exit code,
// stdout and stderr.
func runCLI(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestDialectOf(t *testing.T) {
	tests := []struct {
		dsn, dialect, driverDSN string
	}{
		{"postgres://u@db:5432/app?sslmode=disable", "postgres", "postgres://u@db:5432/app?application_name=dlock&connect_timeout=10&sslmode=disable"},
		{"postgresql://u@db/app?application_name=job&connect_timeout=3", "postgres", "postgresql://u@db/app?application_name=job&connect_timeout=3"},
		{"host=db user=u dbname=app", "postgres", "host=db user=u dbname=app application_name=dlock connect_timeout=10"},
		{"user=u host=db application_name=x connect_timeout=3", "postgres", "user=u host=db application_name=x connect_timeout=3"},
		{"u:pw@tcp(db:3306)/app", "mysql", "u:pw@tcp(db:3306)/app?interpolateParams=true"},
		{"u@tcp(db:3306)/app?interpolateParams=false", "mysql", "u@tcp(db:3306)/app?interpolateParams=true"},
	}
	for _, tt := range tests {
		dialect, driverDSN, err := dialectOf(tt.dsn)
		if err != nil || dialect != tt.dialect || driverDSN != tt.driverDSN {
			t.Errorf("dialectOf(%q) = %q, %q, %v; want %q, %q, nil", tt.dsn, dialect, driverDSN, err, tt.dialect, tt.driverDSN)
		}
	}
	for _, dsn := range []string{"not a dsn", "mysql://root@db:3306/app", "postgres://u@db:bad-port/app"} {
		if _, _, err := dialectOf(dsn); !errors.Is(err, errBadDSN) {
			t.Errorf("dialectOf(%q) error = %v, want errBadDSN", dsn, err)
		}
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		args     []string
		pg, name string
	}{
		{[]string{"key", "my-lock"}, "-8841863937742578886", "my-lock"},
		{[]string{"key", "a"}, "3405396810240292928", "a"},
		{[]string{"key", "-prefix", "my-", "lock"}, "-8841863937742578886", "my-lock"},
		{[]string{"key", "lock", "-prefix", "my-"}, "-8841863937742578886", "my-lock"},
		{[]string{"key", "-int", "42"}, "42", "42"},
		{[]string{"key", "-int", "-prefix", "p", "42"}, "42", "42"},
		{[]string{"key", "42"}, "8820412187630416983", "42"}, // the string "42"
		{[]string{"key", strings.Repeat("0123456789", 10)}, "5840797023804805224", "01234567890123456789012345678901234567890123456~68500b81f2ad0e51"},
		// Names that could forge output are quoted.
		{[]string{"key", "a\nFAKE: line"}, "-9034990087722973080", `"a\nFAKE: line"`},
		{[]string{"key", "tab\there"}, "3793770582030537620", `"tab\there"`},
		{[]string{"key", " padded"}, "4582317528952796134", `" padded"`},
		{[]string{"key", "\"quoted"}, "-3166005755539822705", `"\"quoted"`},
		{[]string{"key", "rtl\u202eevil"}, "7494949394413167404", `"rtl\u202eevil"`},
		{[]string{"key", "ünïcödé ok"}, "-3440802544630470808", "ünïcödé ok"},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(context.Background(), tt.args...)
		want := fmt.Sprintf("postgres\t%s\nmysql\t%s\n", tt.pg, tt.name)
		if code != exitOK || out != want {
			t.Errorf("dlock %s = %d, %q (stderr %q); want 0, %q", strings.Join(tt.args, " "), code, out, errOut, want)
		}
	}
}

func TestUsage(t *testing.T) {
	t.Setenv(envDSN, "")
	tests := []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"nope"}, exitUsage},
		{[]string{"who"}, exitUsage},
		{[]string{"who", "-dsn", defaultMySQLDSN}, exitUsage},
		{[]string{"who", "a", "b", "-dsn", defaultMySQLDSN}, exitUsage},
		{[]string{"who", "a"}, exitUsage}, // no DSN
		{[]string{"list"}, exitUsage},
		{[]string{"list", "-dsn", defaultMySQLDSN, "extra"}, exitUsage},
		{[]string{"key"}, exitUsage},
		{[]string{"key", "-int", "x"}, exitUsage},
		{[]string{"key", "-bogus", "k"}, exitUsage},
		{[]string{"hold", "-timeout", "soon", "k"}, exitUsage},
		{[]string{"key", ""}, exitUsage},
		{[]string{"run", "k"}, exitUsage},                                   // no CMD
		{[]string{"run", "k", "--"}, exitUsage},                             // no CMD
		{[]string{"run", "-dsn", defaultMySQLDSN, "k", "true"}, exitUsage},  // no --
		{[]string{"run", "-dsn", defaultMySQLDSN, "--", "true"}, exitUsage}, // no KEY
		{[]string{"run", "-dsn", defaultMySQLDSN, "a", "b", "--", "true"}, exitUsage},
		{[]string{"run", "-dsn", defaultMySQLDSN, "-kill-after", "-1s", "k", "--", "true"}, exitUsage},
		{[]string{"run", "-dsn", defaultMySQLDSN, "-timeout", "-1s", "k", "--", "true"}, exitUsage},
		{[]string{"run", "-dsn", defaultMySQLDSN, "", "--", "true"}, exitUsage}, // empty key
		{[]string{"run", "-h"}, exitOK},
		{[]string{"run", "-h", "k", "--", "true"}, exitOK},
		{[]string{"-version"}, exitOK},
		{[]string{"-h"}, exitOK},
		{[]string{"help"}, exitOK},
		{[]string{"who", "-h"}, exitOK},
		{[]string{"list", "-h"}, exitOK},
		{[]string{"key", "-h"}, exitOK},
		{[]string{"hold", "-h"}, exitOK},
	}
	for _, tt := range tests {
		code, out, errOut := runCLI(context.Background(), tt.args...)
		if code != tt.code {
			t.Errorf("dlock %s = %d, want %d (stdout %q, stderr %q)", strings.Join(tt.args, " "), code, tt.code, out, errOut)
		}
		switch {
		case code == exitUsage && (out != "" || !strings.HasPrefix(errOut, "dlock") || strings.Count(errOut, "dlock:") > 1):
			t.Errorf("dlock %s: stdout %q, stderr %q; want nothing, and a usage message with one \"dlock:\"", strings.Join(tt.args, " "), out, errOut)
		case code == exitOK && (out == "" || errOut != ""):
			// Help (and the version) go to stdout.
			t.Errorf("dlock %s: stdout %q, stderr %q; want the help on stdout only", strings.Join(tt.args, " "), out, errOut)
		}
	}
	// A bad DSN is a usage error that names the accepted forms.
	for _, dsn := range []string{"not a dsn", "mysql://root@127.0.0.1:3306/test", "root@tcp(127.0.0.1:3306/test"} {
		t.Setenv(envDSN, dsn)
		for _, args := range [][]string{{"who", "k"}, {"list"}, {"hold", "k"}, {"run", "k", "--", "true"}} {
			code, _, errOut := runCLI(context.Background(), args...)
			if code != exitUsage || !strings.Contains(errOut, "postgres://") || !strings.Contains(errOut, "@tcp(host:3306)/db") ||
				strings.Count(errOut, "\n") != 1 {
				t.Errorf("dlock %s with $%s=%q = %d, %q; want 2 and one line naming the accepted forms", args[0], envDSN, dsn, code, errOut)
			}
		}
	}
}

// server is one database the integration tests run against.
type server struct {
	name, dsn string
}

var (
	serversOnce sync.Once
	servers     []server
	serverErrs  []error
)

// eachServer runs fn as a subtest per reachable server: "mysql"
// (MariaDB or MySQL) and "postgres". An unreachable one is skipped, or
// fails when CI or DLOCK_TEST_REQUIRE_DB is set.
func eachServer(t *testing.T, fn func(t *testing.T, s server)) {
	t.Helper()
	eachServerOf(t, false, fn)
}

// eachServerParallel is eachServer with the servers' subtests run at once
// (t.Parallel): for a test that runs the built command, not run in this
// process, and measures no duration. Each subtest talks to its own server.
func eachServerParallel(t *testing.T, fn func(t *testing.T, s server)) {
	t.Helper()
	eachServerOf(t, true, fn)
}

func eachServerOf(t *testing.T, parallel bool, fn func(t *testing.T, s server)) {
	t.Helper()
	serversOnce.Do(findServers)
	for i, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			if err := serverErrs[i]; err != nil {
				if required() {
					t.Fatalf("%s unreachable: %v", s.name, err)
				}
				t.Skipf("%s unreachable (set %s or %s): %v", s.name, envMySQL, envPostgres, err)
			}
			fn(t, s)
		})
	}
}

// needLongRun skips the test unless `make test-long` asked for the tests
// that wait seconds by design (DLOCK_TEST_LONG=1), as in tests/: `make
// test` skips them to stay under a minute. LONG_CLI_TESTS in the Makefile
// names them (tests/long_test.go checks it).
func needLongRun(t *testing.T) {
	t.Helper()
	if os.Getenv("DLOCK_TEST_LONG") == "" {
		t.Skip("waits seconds by design: runs with make test-long (DLOCK_TEST_LONG=1)")
	}
}

// required reports whether CI or DLOCK_TEST_REQUIRE_DB asks for the
// databases ("", "0", "false" and "no" do not).
func required() bool {
	for _, v := range []string{"CI", "DLOCK_TEST_REQUIRE_DB"} {
		switch strings.ToLower(strings.TrimSpace(os.Getenv(v))) {
		case "", "0", "false", "no":
		default:
			return true
		}
	}
	return false
}

func findServers() {
	for _, s := range []server{{"mysql", envOr(envMySQL, defaultMySQLDSN)}, {"postgres", envOr(envPostgres, defaultPostgresDSN)}} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		db, err := open(ctx, s.dsn, "")
		cancel()
		if err == nil {
			closeDB(db)
		}
		servers, serverErrs = append(servers, s), append(serverErrs, err)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// uniqueKey returns a lock name no other test uses, in lower case as
// MySQL's performance_schema shows names.
func uniqueKey(t testing.TB) string {
	t.Helper()
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return strings.ToLower("cli-" + strings.ReplaceAll(t.Name(), "/", ".") + "-" + hex.EncodeToString(r[:]))
}

// openDB opens a pool with dlock registered, closed when the test ends.
func openDB(t testing.TB, s server) *gorm.DB {
	t.Helper()
	db, err := open(context.Background(), s.dsn, "")
	if err != nil {
		t.Fatalf("open(%s): %v", s.name, err)
	}
	t.Cleanup(func() { closeDB(db) })
	return db
}

// pinnedLock pins a session of db and makes a Lock on key there. It
// returns the lock and the session id.
func pinnedLock(t testing.TB, db *gorm.DB, key string) (*dlock.Lock, int64) {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("db.DB(): %v", err)
	}
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatalf("Conn: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	q := "SELECT CONNECTION_ID()"
	if db.Dialector.Name() == "postgres" {
		q = "SELECT pg_backend_pid()"
	}
	var id int64
	if err := conn.QueryRowContext(context.Background(), q).Scan(&id); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	tx := db.WithContext(context.Background())
	tx.Statement.ConnPool = conn
	l, err := dlock.New(tx, key)
	if err != nil {
		t.Fatalf("New(%q): %v", key, err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l, id
}

// holdLock takes key on a fresh session of db and returns its session id.
func holdLock(t testing.TB, db *gorm.DB, key string) (*dlock.Lock, int64) {
	t.Helper()
	l, id := pinnedLock(t, db, key)
	if ok, err := l.Acquire(context.Background(), dlock.NoWait()); !ok || err != nil {
		t.Fatalf("Acquire(%q) = %v, %v; want true, nil", key, ok, err)
	}
	return l, id
}

// waitFor starts an Acquire of key on a fresh session of db that waits,
// and holds the lock once acquired, until the test ends. It returns the session id once the server shows
// it waiting.
func waitFor(t testing.TB, db *gorm.DB, key string) int64 {
	t.Helper()
	l, id := pinnedLock(t, db, key)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if ok, _ := l.Acquire(ctx); ok {
			<-ctx.Done() // hold it until the test ends
			_ = l.Close(context.Background())
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, func() bool {
		hs, err := dlock.Holders(context.Background(), db, key)
		if err != nil {
			t.Fatalf("Holders(%q): %v", key, err)
		}
		for i := range hs {
			if hs[i].SessionID == id && !hs[i].Granted {
				return true
			}
		}
		return false
	})
	return id
}

func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantLine fails unless out has a line whose fields start with fields.
func wantLine(t testing.TB, out string, fields ...string) {
	t.Helper()
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= len(fields) && slicesEqual(f[:len(fields)], fields) {
			return
		}
	}
	t.Fatalf("output %q has no line starting %q", out, fields)
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWho(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		holder, hid := holdLock(t, db, key)
		wid := waitFor(t, db, key)
		code, out, errOut := runCLI(context.Background(), "who", "-dsn", s.dsn, key)
		if code != exitOK {
			t.Fatalf("dlock who = %d, %q, %q; want 0", code, out, errOut)
		}
		wantLine(t, out, "SESSION", "STATE", "MODE", "USER", "APPLICATION", "CLIENT", "SINCE")
		wantLine(t, out, strconv.FormatInt(hid, 10), "held", "exclusive")
		wantLine(t, out, strconv.FormatInt(wid, 10), "waiting", "exclusive")
		if n := strings.Count(out, "\n"); n != 3 {
			t.Fatalf("dlock who printed %d lines, want 3: %q", n, out)
		}

		// The same lock through -prefix.
		code, out, _ = runCLI(context.Background(), "who", "-dsn", s.dsn, "-prefix", key[:4], key[4:])
		if code != exitOK || !strings.Contains(out, "held") {
			t.Fatalf("dlock who -prefix = %d, %q; want the holder", code, out)
		}

		if err := holder.Release(context.Background()); err != nil {
			t.Fatalf("Release: %v", err)
		}
		waitUntil(t, func() bool {
			_, out, _ := runCLI(context.Background(), "who", "-dsn", s.dsn, key)
			return strings.HasPrefix(out, "SESSION") && strings.Contains(out, "\n"+strconv.FormatInt(wid, 10)+" ") &&
				strings.Contains(out, " held ") && strings.Count(out, "\n") == 2 // the waiter took it
		})
	})
}

func TestList(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		l, hid := holdLock(t, db, key)
		code, out, errOut := runCLI(context.Background(), "list", "-dsn", s.dsn, "-prefix", key)
		switch {
		case code == exitFailure && strings.Contains(errOut, "metadata_lock_info"):
			// MariaDB without the plugin: the documented answer.
			if !strings.Contains(errOut, "INSTALL SONAME") {
				t.Fatalf("dlock list stderr = %q, want how to enable the plugin", errOut)
			}
			return
		case code != exitOK:
			t.Fatalf("dlock list = %d, %q, %q; want 0", code, out, errOut)
		}
		if s.name == "postgres" && !strings.Contains(errOut, "cannot filter") {
			t.Errorf("dlock list -prefix on PostgreSQL: stderr %q, want a note that it cannot filter", errOut)
		}
		wantLine(t, out, fmt.Sprint(l.DBKey()), strconv.FormatInt(hid, 10), "held")
	})
}

// binary is the dlock command, built once by TestMain.
var binary string

// build returns the dlock command TestMain built.
func build(t testing.TB) string {
	t.Helper()
	if binary == "" {
		t.Fatal("TestMain did not build the dlock command")
	}
	return binary
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dlock-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dlock")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v: %s\n", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// TestHold runs the built command as an operator would: hold, see it
// in who, interrupt it, see the lock free.
func TestHold(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		bin := build(t)
		db := openDB(t, s)
		key := uniqueKey(t)
		cmd := exec.Command(bin, "hold", key)
		cmd.Env = append(os.Environ(), envDSN+"="+s.dsn)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start dlock hold: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		lines := bufio.NewScanner(stdout)
		var id int64
		for id == 0 && lines.Scan() {
			if _, err := fmt.Sscanf(lines.Text(), "acquired "+key+" (session %d)", &id); err == nil {
				break
			}
		}
		if id == 0 {
			t.Fatalf("dlock hold printed no \"acquired\" line; stderr %q", stderr.String())
		}
		hs, err := dlock.Holders(context.Background(), db, key)
		if err != nil || len(hs) != 1 || hs[0].SessionID != id || !hs[0].Granted {
			t.Fatalf("Holders(%q) = %+v, %v; want session %d holding", key, hs, err, id)
		}
		if s.name == "postgres" && hs[0].Application != appName {
			t.Errorf("Holders()[0].Application = %q, want %q", hs[0].Application, appName)
		}
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatalf("interrupt: %v", err)
		}
		var rest strings.Builder
		for lines.Scan() {
			rest.WriteString(lines.Text() + "\n")
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("dlock hold after SIGINT: %v; stderr %q", err, stderr.String())
		}
		if !strings.HasPrefix(rest.String(), "released "+key) {
			t.Fatalf("dlock hold printed %q after SIGINT, want \"released %s ...\"", rest.String(), key)
		}
		if hs, err := dlock.Holders(context.Background(), db, key); err != nil || len(hs) != 0 {
			t.Fatalf("Holders(%q) after dlock hold ended = %+v, %v; want free", key, hs, err)
		}
	})
}

func TestHoldBusy(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		holdLock(t, db, key)
		code, out, errOut := runCLI(context.Background(), "hold", "-dsn", s.dsn, "-timeout", "200ms", key)
		if code != exitBusy || !strings.Contains(errOut, "not acquired within 200ms") {
			t.Fatalf("dlock hold -timeout 200ms on a held lock = %d, %q, %q; want 75 and \"not acquired\"", code, out, errOut)
		}
		code, out, errOut = runCLI(context.Background(), "hold", "-dsn", s.dsn, "-timeout", "0", key)
		if code != exitBusy || !strings.Contains(errOut, "busy") {
			t.Fatalf("dlock hold -timeout 0 on a held lock = %d, %q, %q; want 75 and \"busy\"", code, out, errOut)
		}
		// Interrupted while waiting: nothing held, exit 1.
		ctx, cancel := context.WithCancel(context.Background())
		defer time.AfterFunc(300*time.Millisecond, cancel).Stop()
		code, _, errOut = runCLI(ctx, "hold", "-dsn", s.dsn, key)
		if code != exitFailure || !strings.Contains(errOut, "interrupted before") {
			t.Fatalf("dlock hold interrupted while waiting = %d, %q; want 1 and \"interrupted before\"", code, errOut)
		}
	})
}

func TestUnreachable(t *testing.T) {
	code, _, errOut := runCLI(context.Background(), "who", "-dsn", "root@tcp(127.0.0.1:1)/test", "k")
	if code != exitFailure || !strings.HasPrefix(errOut, "dlock who: ") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("dlock who on a closed port = %d, %q; want 1 and one line", code, errOut)
	}
}
