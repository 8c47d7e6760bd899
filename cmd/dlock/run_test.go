//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// dlockCmd returns the built command with args, DLOCK_DSN set to dsn.
func dlockCmd(t testing.TB, dsn string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(build(t), args...)
	cmd.Env = append(os.Environ(), envDSN+"="+dsn)
	return cmd
}

// exitCode runs cmd and returns its exit status and stderr.
func exitCode(t testing.TB, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("%v: %v", cmd.Args, err)
	return -1, ""
}

// startRun starts `dlock run KEY -- sh -c script` with the environment
// variable DIR set to a fresh directory, and returns the command, the
// directory and its stderr. The process is killed when the test ends.
func startRun(t testing.TB, s server, key, script string, flags ...string) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	args := append(append([]string{"run"}, flags...), key, "--", "sh", "-c", script)
	cmd := dlockCmd(t, s.dsn, args...)
	cmd.Env = append(cmd.Env, "DIR="+dir)
	stderr := &syncBuffer{mu: make(chanMutex, 1)}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dlock run: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, dir, stderr
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  chanMutex
	buf bytes.Buffer
}

type chanMutex chan struct{}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.lock()
	defer b.unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.lock()
	defer b.unlock()
	return b.buf.String()
}

func (b *syncBuffer) lock() {
	if b.mu == nil {
		panic("syncBuffer: zero value")
	}
	b.mu <- struct{}{}
}
func (b *syncBuffer) unlock() { <-b.mu }

// waitFile waits until the file name exists and returns its content.
func waitFile(t testing.TB, name string) string {
	t.Helper()
	var b []byte
	waitUntil(t, func() bool {
		var err error
		b, err = os.ReadFile(name)
		return err == nil && len(b) > 0
	})
	return string(b)
}

// waitExit waits at most d for cmd to exit and returns its exit status.
func waitExit(t testing.TB, cmd *exec.Cmd, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("wait: %v", err)
		}
		return cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("%v still running after %v", cmd.Args, d)
	}
	return -1
}

// holderOf returns the session holding key, waiting until there is one.
func holderOf(t testing.TB, db *gorm.DB, key string) int64 {
	t.Helper()
	var id int64
	waitUntil(t, func() bool {
		hs, err := dlock.Holders(context.Background(), db, key)
		if err != nil {
			t.Fatalf("Holders(%q): %v", key, err)
		}
		for i := range hs {
			if hs[i].Granted {
				id = hs[i].SessionID
				return true
			}
		}
		return false
	})
	return id
}

// wantFree fails unless nobody holds or waits for key.
func wantFree(t testing.TB, db *gorm.DB, key string) {
	t.Helper()
	if hs, err := dlock.Holders(context.Background(), db, key); err != nil || len(hs) != 0 {
		t.Fatalf("Holders(%q) = %+v, %v; want free", key, hs, err)
	}
}

// killSession ends the server session id, as an operator would.
func killSession(t testing.TB, db *gorm.DB, id int64) {
	t.Helper()
	q := "KILL " + strconv.FormatInt(id, 10)
	if db.Dialector.Name() == "postgres" {
		q = "SELECT pg_terminate_backend(" + strconv.FormatInt(id, 10) + ")"
	}
	if err := db.Exec(q).Error; err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestRunExitStatus: CMD's exit status is dlock run's, the lock is held
// while CMD runs and free after.
func TestRunExitStatus(t *testing.T) {
	t.Parallel() // the built command on keys of its own, no duration measured
	eachServerParallel(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		tests := []struct {
			script string
			want   int
		}{
			{`exit 0`, 0},
			{`exit 3`, 3},
			{`exit 75`, 75},
			{`kill -KILL $$`, exitSignal + int(syscall.SIGKILL)},
		}
		for _, tt := range tests {
			code, stderr := exitCode(t, dlockCmd(t, s.dsn, "run", "-timeout", "5s", key, "--", "sh", "-c", tt.script))
			if code != tt.want || stderr != "" {
				t.Errorf("dlock run -- sh -c %q = %d, stderr %q; want %d and nothing", tt.script, code, stderr, tt.want)
			}
		}
		// CMD sees the lock held by dlock run's session, gets its
		// arguments and stdin, and writes to stdout.
		cmd := dlockCmd(t, s.dsn, "run", key, "--", "sh", "-c", `"$0" who -json "$1"; cat`, build(t), key)
		cmd.Stdin = strings.NewReader("from stdin\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("dlock run -- dlock who: %v", err)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		var h holderJSON
		if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &h) != nil || !h.Granted || lines[1] != "from stdin" {
			t.Fatalf("dlock run -- dlock who -json KEY; cat printed %q; want the holder and the stdin line", out)
		}
		wantFree(t, db, key)
		// CMD not found or not executable: 127, 126, and no lock taken.
		if code, stderr := exitCode(t, dlockCmd(t, s.dsn, "run", key, "--", "dlock-no-such-command")); code != exitNotFound || !strings.Contains(stderr, "not found") {
			t.Errorf("dlock run -- dlock-no-such-command = %d, %q; want 127", code, stderr)
		}
		if code, _ := exitCode(t, dlockCmd(t, s.dsn, "run", key, "--", t.TempDir())); code != exitNoExec {
			t.Errorf("dlock run -- DIRECTORY = %d, want 126", code)
		}
	})
}

// TestRunBusy: a busy key exits 75 within -timeout + 1 s, and CMD does
// not run.
func TestRunBusy(t *testing.T) {
	needLongRun(t)
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		holdLock(t, db, key)
		for _, timeout := range []time.Duration{0, time.Second} {
			dir := t.TempDir()
			begin := time.Now()
			cmd := dlockCmd(t, s.dsn, "run", "-timeout", timeout.String(), key, "--", "touch", filepath.Join(dir, "ran"))
			code, stderr := exitCode(t, cmd)
			took := time.Since(begin)
			t.Logf("-timeout %v on a busy key: exit %d after %v", timeout, code, took)
			if code != exitBusy || !strings.Contains(stderr, "not acquired") || strings.Count(stderr, "\n") != 1 {
				t.Errorf("dlock run -timeout %v on a held key = %d, %q; want 75 and one line", timeout, code, stderr)
			}
			if took < timeout || took > timeout+time.Second {
				t.Errorf("dlock run -timeout %v on a held key took %v, want [%v, %v]", timeout, took, timeout, timeout+time.Second)
			}
			if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
				t.Errorf("dlock run -timeout %v ran CMD without the lock", timeout)
			}
		}
		// -quiet: no message.
		if code, stderr := exitCode(t, dlockCmd(t, s.dsn, "run", "-quiet", "-timeout", "0", key, "--", "true")); code != exitBusy || stderr != "" {
			t.Errorf("dlock run -quiet -timeout 0 on a held key = %d, %q; want 75 and nothing", code, stderr)
		}
	})
}

// trapTERM is a script that writes "started" to $DIR/started, and on
// SIGTERM writes "TERM" to $DIR/term and exits 7.
const trapTERM = `trap 'echo TERM > "$DIR/term"; exit 7' TERM; echo started > "$DIR/started"; while :; do sleep 0.05; done`

// TestRunLost: killing dlock run's session ends CMD within 3 s, by
// SIGTERM to its group, and dlock run exits 70.
func TestRunLost(t *testing.T) {
	needLongRun(t)
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		cmd, dir, stderr := startRun(t, s, key, trapTERM)
		waitFile(t, filepath.Join(dir, "started"))
		id := holderOf(t, db, key)
		killSession(t, db, id)
		killed := time.Now()
		code := waitExit(t, cmd, 3*time.Second)
		took := time.Since(killed)
		if code != exitLost {
			t.Fatalf("dlock run after its session was killed = %d after %v (stderr %q); want 70", code, took, stderr)
		}
		t.Logf("session %d killed: dlock run exited %d after %v", id, code, took)
		if b, err := os.ReadFile(filepath.Join(dir, "term")); err != nil || string(b) != "TERM\n" {
			t.Fatalf("CMD's trap wrote %q, %v; want TERM (stderr %q)", b, err, stderr)
		}
		if !strings.Contains(stderr.String(), "lock lost") || !strings.Contains(stderr.String(), "SIGTERM") {
			t.Fatalf("dlock run stderr = %q, want the loss and the SIGTERM", stderr)
		}
	})
}

// TestRunLostKillAfter: a CMD that ignores SIGTERM gets SIGKILL after
// -kill-after, and so does the rest of its process group.
func TestRunLostKillAfter(t *testing.T) {
	needLongRun(t)
	t.Parallel() // the built command on keys of its own, no duration measured
	eachServerParallel(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		// A child in the background that ignores SIGTERM too, and writes
		// its pid.
		script := `trap '' TERM; sh -c 'trap "" TERM; echo $$ > "$DIR/child"; while :; do sleep 0.05; done' & echo started > "$DIR/started"; while :; do sleep 0.05; done`
		cmd, dir, stderr := startRun(t, s, key, script, "-kill-after", "500ms")
		waitFile(t, filepath.Join(dir, "started"))
		child, err := strconv.Atoi(strings.TrimSpace(waitFile(t, filepath.Join(dir, "child"))))
		if err != nil {
			t.Fatal(err)
		}
		killSession(t, db, holderOf(t, db, key))
		if code := waitExit(t, cmd, 4*time.Second); code != exitLost {
			t.Fatalf("dlock run = %d (stderr %q), want 70", code, stderr)
		}
		if !strings.Contains(stderr.String(), "SIGKILL") {
			t.Fatalf("dlock run stderr = %q, want the SIGKILL", stderr)
		}
		waitUntil(t, func() bool { return syscall.Kill(child, 0) != nil })
	})
}

// TestRunForwardSignal: SIGTERM to dlock run reaches CMD; dlock run exits
// with CMD's status once CMD is gone, and the lock is free then.
func TestRunForwardSignal(t *testing.T) {
	t.Parallel() // the built command on keys of its own, no duration measured
	eachServerParallel(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		// CMD takes 500 ms to finish after SIGTERM; the lock stays held
		// until it has.
		script := `trap 'echo TERM > "$DIR/term"; sleep 0.5; exit 7' TERM; echo started > "$DIR/started"; while :; do sleep 0.05; done`
		cmd, dir, stderr := startRun(t, s, key, script)
		waitFile(t, filepath.Join(dir, "started"))
		id := holderOf(t, db, key)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if got := waitFile(t, filepath.Join(dir, "term")); got != "TERM\n" {
			t.Fatalf("CMD's trap wrote %q, want TERM", got)
		}
		if got := holderOf(t, db, key); got != id {
			t.Fatalf("while CMD finishes, the holder is session %d, want dlock run's %d", got, id)
		}
		if code := waitExit(t, cmd, 3*time.Second); code != 7 {
			t.Fatalf("dlock run after SIGTERM = %d (stderr %q), want CMD's 7", code, stderr)
		}
		wantFree(t, db, key)
	})
}

// TestRunSignalWhileWaiting: SIGINT while dlock run waits for the lock
// ends the wait, CMD does not run, and the status is 128+SIGINT.
func TestRunSignalWhileWaiting(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		holdLock(t, db, key)
		cmd, dir, stderr := startRun(t, s, key, `echo ran > "$DIR/started"`)
		waitUntil(t, func() bool { // dlock run waits in the server
			hs, err := dlock.Holders(context.Background(), db, key)
			return err == nil && len(hs) == 2
		})
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := waitExit(t, cmd, 3*time.Second); code != exitSignal+int(syscall.SIGINT) {
			t.Fatalf("dlock run interrupted while waiting = %d (stderr %q), want 130", code, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "started")); err == nil {
			t.Fatal("CMD ran after an interrupted wait")
		}
	})
}

// TestJSON: who -json and list -json print one object per session, with
// the Holder fields.
func TestJSON(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		db := openDB(t, s)
		key := uniqueKey(t)
		code, out, errOut := runCLI(context.Background(), "who", "-json", "-dsn", s.dsn, key)
		if code != exitOK || out != "" {
			t.Fatalf("dlock who -json on a free key = %d, %q, %q; want 0 and no output", code, out, errOut)
		}
		l, hid := holdLock(t, db, key)
		wid := waitFor(t, db, key)
		code, out, errOut = runCLI(context.Background(), "who", "-json", "-dsn", s.dsn, key)
		if code != exitOK {
			t.Fatalf("dlock who -json = %d, %q; want 0", code, errOut)
		}
		hs := parseJSON(t, out)
		if len(hs) != 2 || hs[0].SessionID != hid || !hs[0].Granted || hs[1].SessionID != wid || hs[1].Granted ||
			hs[0].DBKey != fmt.Sprint(l.DBKey()) || hs[0].User == "" || hs[0].Since == nil {
			t.Fatalf("dlock who -json = %+v; want holder %d then waiter %d of %v", hs, hid, wid, l.DBKey())
		}
		// Every field is there, by its documented name.
		var raw map[string]any
		if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &raw); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"db_key", "session_id", "granted", "shared", "user", "application", "client_addr", "database", "state", "query", "since"} {
			if _, ok := raw[name]; !ok {
				t.Errorf("dlock who -json object %v has no %q", raw, name)
			}
		}
		if _, ok := raw["db_key"].(string); !ok {
			t.Errorf("db_key = %#v, want a string", raw["db_key"])
		}

		code, out, errOut = runCLI(context.Background(), "list", "-json", "-dsn", s.dsn)
		switch {
		case code == exitFailure && strings.Contains(errOut, "metadata_lock_info"):
			return // MariaDB without the plugin
		case code != exitOK:
			t.Fatalf("dlock list -json = %d, %q; want 0", code, errOut)
		}
		found := false
		for _, h := range parseJSON(t, out) {
			found = found || (h.SessionID == hid && h.DBKey == fmt.Sprint(l.DBKey()) && h.Granted)
		}
		if !found {
			t.Fatalf("dlock list -json = %q; no line for session %d holding %v", out, hid, l.DBKey())
		}
	})
}

func parseJSON(t testing.TB, out string) []holderJSON {
	t.Helper()
	var hs []holderJSON
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var h holderJSON
		if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		hs = append(hs, h)
	}
	return hs
}

// TestWhoQuotesKey: a key that holds a newline cannot forge a line of
// who's output.
func TestWhoQuotesKey(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		key := uniqueKey(t) + "\nFAKE: line"
		code, out, _ := runCLI(context.Background(), "who", "-dsn", s.dsn, key)
		if code != exitOK || strings.Count(out, "\n") != 1 || !strings.Contains(out, strconv.Quote(key)) {
			t.Fatalf("dlock who KEY-with-newline = %d, %q; want one line with the key quoted", code, out)
		}
	})
}

// TestHelp: -h prints the help to stdout everywhere; dlock -h lists
// every exit status and a crontab line.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"who", "-h"}, {"list", "-h"}, {"key", "-h"}, {"hold", "-h"}, {"run", "-h"}} {
		cmd := exec.Command(build(t), args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), "Usage") || stderr.Len() != 0 {
			t.Errorf("dlock %s = %v, stdout %q, stderr %q; want exit 0 and the help on stdout", strings.Join(args, " "), err, out, stderr.String())
		}
	}
	for _, args := range [][]string{{"-h"}, {"run", "-h"}} {
		_, out, _ := runCLI(context.Background(), args...)
		for _, code := range []string{"70", "75", "125", "126", "127", "128+N", "*/5 * * * *", "-timeout 0"} {
			if !strings.Contains(out, code) {
				t.Errorf("dlock %s does not mention %q", strings.Join(args, " "), code)
			}
		}
	}
	if out, err := exec.Command(build(t), "-version").Output(); err != nil || !strings.HasPrefix(string(out), "dlock (devel)") {
		t.Errorf("dlock -version = %q, %v; want \"dlock (devel) ...\" from a clone", out, err)
	}
}

// silentServer accepts connections and never answers: a host that takes
// the TCP connection and then hangs. It returns its address.
func silentServer(t testing.TB, reply []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if reply != nil {
				_, _ = c.Write(reply)
				_ = c.Close()
				continue
			}
			conns = append(conns, c)
		}
	}()
	return ln.Addr().String()
}

// TestSignalWhileConnecting: SIGTERM ends who at once while the server
// accepted the connection and says nothing.
func TestSignalWhileConnecting(t *testing.T) {
	addr := silentServer(t, nil)
	host, port, _ := net.SplitHostPort(addr)
	for _, dsn := range []string{"root@tcp(" + addr + ")/test", "postgres://postgres@" + host + ":" + port + "/test?sslmode=disable"} {
		cmd := dlockCmd(t, dsn, "who", "k")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if code := waitExit(t, cmd, 2*time.Second); code != exitFailure || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("dlock who on a silent server (%s), SIGTERM = %d, %q; want 1 and one line within 2 s", dsn, code, stderr.String())
		}
	}
}

// TestDriverLogSilenced: the MySQL driver's own log lines do not reach
// stderr; the error is one line that carries the driver's reason.
func TestDriverLogSilenced(t *testing.T) {
	addr := silentServer(t, []byte("\x64\x00\x00\x00abc")) // a packet cut short
	code, stderr := exitCode(t, dlockCmd(t, "root@tcp("+addr+")/test", "who", "k"))
	if code != exitFailure || strings.Contains(stderr, "[mysql]") || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, "unexpected EOF") {
		t.Fatalf("dlock who on a broken MySQL server = %d, %q; want 1 and one line with the driver's reason", code, stderr)
	}
}

// TestConnectBounded: a server that accepts the connection and says
// nothing makes who fail after connectTimeout, not hang.
func TestConnectBounded(t *testing.T) {
	defer func(d time.Duration) { connectTimeout = d }(connectTimeout)
	connectTimeout = 500 * time.Millisecond
	addr := silentServer(t, nil)
	host, port, _ := net.SplitHostPort(addr)
	for _, dsn := range []string{"root@tcp(" + addr + ")/test", "postgres://postgres@" + host + ":" + port + "/test?sslmode=disable"} {
		begin := time.Now()
		code, _, errOut := runCLI(context.Background(), "who", "-dsn", dsn, "k")
		if took := time.Since(begin); code != exitFailure || took > 2*time.Second || strings.Count(errOut, "\n") != 1 {
			t.Errorf("dlock who on a silent server (%s) = %d after %v, %q; want 1 and one line within 2 s", dsn, code, took, errOut)
		}
	}
}

// TestRunKeepsIgnoredSignals: a signal ignored when dlock run starts
// (nohup's SIGHUP) stays ignored for CMD.
func TestRunKeepsIgnoredSignals(t *testing.T) {
	eachServer(t, func(t *testing.T, s server) {
		key := uniqueKey(t)
		cmd := exec.Command("sh", "-c", `trap '' HUP; exec "$0" run "$1" -- sh -c 'kill -HUP $$; echo survived'`, build(t), key)
		cmd.Env = append(os.Environ(), envDSN+"="+s.dsn)
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "survived\n" {
			t.Fatalf("nohup-like dlock run -- (kill -HUP itself) = %v, %q; want CMD to survive", err, out)
		}
	})
}
