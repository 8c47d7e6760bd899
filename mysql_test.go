package dlock

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The SQL dlock sends to MySQL and MariaDB, checked without a server:
// MySQL-only rules (whole seconds, no negative timeout, the hint that
// disables max_execution_time) cannot run on this machine's MariaDB.
func TestMySQLLockSQL(t *testing.T) {
	my, maria := &mysqlBackend{}, &mysqlBackend{mariadb: true}
	lit := "_utf8mb4 X'6b6579'"
	tests := []struct {
		name string
		be   *mysqlBackend
		b    waitBound
		want string
	}{
		{"mysql try", my, waitBound{try: true}, "SELECT GET_LOCK(" + lit + ", 0), CONNECTION_ID()"},
		{"mariadb try", maria, waitBound{try: true}, "SELECT GET_LOCK(" + lit + ", 0), CONNECTION_ID()"},
		{"mysql forever", my, waitBound{}, "SELECT /*+ MAX_EXECUTION_TIME(0) */ GET_LOCK(" + lit + ", 31536000), CONNECTION_ID()"},
		{"mariadb forever", maria, waitBound{}, "SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK(" + lit + ", 31536000), CONNECTION_ID()"},
		{"mysql 1.2s rounds up", my, waitBound{wait: 1200 * time.Millisecond}, "SELECT /*+ MAX_EXECUTION_TIME(0) */ GET_LOCK(" + lit + ", 2), CONNECTION_ID()"},
		{"mysql 300ms rounds up", my, waitBound{wait: 300 * time.Millisecond}, "SELECT /*+ MAX_EXECUTION_TIME(0) */ GET_LOCK(" + lit + ", 1), CONNECTION_ID()"},
		{"mariadb 1.25s", maria, waitBound{wait: 1250 * time.Millisecond}, "SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK(" + lit + ", 1.25), CONNECTION_ID()"},
		{"mariadb sub-ms", maria, waitBound{wait: time.Microsecond}, "SET STATEMENT max_statement_time=0 FOR SELECT GET_LOCK(" + lit + ", 0.001), CONNECTION_ID()"},
		{"mysql beyond a year", my, waitBound{wait: 2 * mysqlForever}, "SELECT /*+ MAX_EXECUTION_TIME(0) */ GET_LOCK(" + lit + ", 31536000), CONNECTION_ID()"},
	}
	for _, tt := range tests {
		if got := tt.be.lockSQL(tt.be.stmtKey("key").(*mysqlStmts), tt.b); got != tt.want {
			t.Errorf("%s: lockSQL() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestMySQLServerWait(t *testing.T) {
	my, maria := &mysqlBackend{}, &mysqlBackend{mariadb: true}
	for _, tt := range []struct {
		be      *mysqlBackend
		d, want time.Duration
		cut     bool
	}{
		{my, 300 * time.Millisecond, time.Second, true},
		{my, 2 * time.Second, 2 * time.Second, false},
		{my, 2500 * time.Millisecond, 3 * time.Second, true},
		{maria, 300 * time.Millisecond, 300 * time.Millisecond, false},
	} {
		got, cut := tt.be.serverWait(tt.d)
		if got != tt.want || cut != tt.cut {
			t.Errorf("serverWait(%v) mariadb=%v = %v, %v; want %v, %v", tt.d, tt.be.mariadb, got, cut, tt.want, tt.cut)
		}
	}
}

func TestMySQLModes(t *testing.T) {
	be := &mysqlBackend{}
	if err := be.checkMode(options{shared: true}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("checkMode(Shared) = %v, want ErrUnsupported", err)
	}
	if err := be.checkMode(options{xact: true}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("checkMode(Xact) = %v, want ErrUnsupported", err)
	}
}

// mysqlError has the shape of go-sql-driver/mysql's *MySQLError.
type mysqlError struct {
	Number   uint16
	SQLState [5]byte
	Message  string
}

func (e *mysqlError) Error() string { return fmt.Sprintf("Error %d: %s", e.Number, e.Message) }

func TestMySQLClassify(t *testing.T) {
	be := &mysqlBackend{}
	for _, tt := range []struct {
		err  error
		want failure
	}{
		{&mysqlError{Number: 3058}, failDeadlock}, // MySQL user-lock deadlock
		{&mysqlError{Number: 1213}, failDeadlock}, // MariaDB
		{fmt.Errorf("wrapped: %w", &mysqlError{Number: 3058}), failDeadlock},
		{&mysqlError{Number: 1317}, failInterrupted},
		{&mysqlError{Number: 3024}, failInterrupted}, // max_execution_time
		{&mysqlError{Number: 1969}, failInterrupted}, // max_statement_time
		{errInterrupted, failInterrupted},
		{&mysqlError{Number: 1927}, failLost},
		{errors.New("invalid connection"), failLost},
		{&mysqlError{Number: 1064}, failOther},
	} {
		if got := be.classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// MySQL compares short lock names case-insensitively, MariaDB byte-wise;
// dlock sends the name as given, so "Report" and "report" are one lock on
// MySQL and two on MariaDB. Hashed names carry the case of the key only in
// the readable part, and their digest differs by case, so a hashed name is
// case-sensitive on both servers.
func TestMySQLNameCase(t *testing.T) {
	upper, _ := mysqlName("Nightly-Report", "")
	lower, _ := mysqlName("nightly-report", "")
	if upper != "Nightly-Report" || lower != "nightly-report" {
		t.Fatalf("short names changed: %q, %q", upper, lower)
	}
	long := strings.Repeat("x", 70)
	hu, _ := mysqlName("A"+long, "")
	hl, _ := mysqlName("a"+long, "")
	if strings.EqualFold(hu, hl) {
		t.Fatalf("hashed names %q and %q differ only by case: MySQL would fold them into one lock", hu, hl)
	}
}

// The name limit: 64 characters for MySQL (after conversion to utf8mb3),
// so a name dlock sends as is never has more than 64 runes, none outside
// the BMP.
func TestMySQLNameLimit(t *testing.T) {
	for _, key := range []string{strings.Repeat("é", 64), strings.Repeat("é", 65), "a🔒", strings.Repeat("ß", 200)} {
		name, err := mysqlName(key, "")
		if err != nil {
			t.Fatalf("mysqlName(%q) = %v", key, err)
		}
		if n := utf8.RuneCountInString(name); n > 64 {
			t.Errorf("mysqlName(%q) has %d runes", key, n)
		}
		for _, r := range name {
			if r > 0xFFFF {
				t.Errorf("mysqlName(%q) = %q has rune %U outside the BMP", key, name, r)
			}
		}
	}
}

// A MySQL lock statement on another server session is a lost session
// (discarded) and a refusal, and its error names both server sessions.
func TestMySQLMovedError(t *testing.T) {
	for _, tt := range []struct {
		err  *mysqlMovedError
		want string
	}{
		{&mysqlMovedError{id: 11, at: 12, granted: true, undone: true}, "was released there"},
		{&mysqlMovedError{id: 11, at: 12, granted: true}, "could not be released there"},
		{&mysqlMovedError{id: 11, at: 12}, "session is discarded"},
	} {
		err := error(tt.err)
		wantRefusal(t, "mysqlMovedError", err, "ran on server session 12, not on the session's own 11", tt.want)
		if !errors.Is(err, ErrLockLost) || (&mysqlBackend{}).classify(err) != failLost {
			t.Errorf("%q: want ErrLockLost, classified lost (got %v)", err, (&mysqlBackend{}).classify(err))
		}
		if !tt.err.granted && strings.Contains(err.Error(), "released") {
			t.Errorf("%q speaks of a release with no grant", err)
		}
	}
}

// TestMySQLStmtKeyText checks the statements stmtKey writes in one
// allocation against the literal of mysqlLiteral.
func TestMySQLStmtKeyText(t *testing.T) {
	be := &mysqlBackend{}
	for _, name := range []string{"", "key", "Ünïcödé ключ", "a'b\\c\x00\xff", strings.Repeat("x", 64)} {
		for range 2 { // built, then remembered
			k := be.stmtKey(name).(*mysqlStmts)
			lit := mysqlLiteral(name)
			if k.lit != lit || k.try != "SELECT GET_LOCK("+lit+", 0), CONNECTION_ID()" || k.release != "SELECT RELEASE_LOCK("+lit+")" {
				t.Errorf("stmtKey(%q) = %+v, want the literal %s", name, *k, lit)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = be.stmtKey("key") }); n > 1 {
		t.Errorf("stmtKey of a recent name allocates %v times, want 1", n)
	}
}
