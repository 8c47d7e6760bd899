package dlock

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// pgError has the shape of pgconn.PgError.
type pgError struct{ Code string }

func (e *pgError) Error() string    { return "ERROR (SQLSTATE " + e.Code + ")" }
func (e *pgError) SQLState() string { return e.Code }

func TestPgClassify(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want failure
	}{
		{&pgError{"55P03"}, failTimeout},
		{&pgError{"57014"}, failInterrupted},
		{&pgError{"40P01"}, failDeadlock},
		{&pgError{"25P02"}, failTxAborted},
		{&pgError{"57P01"}, failLost},
		{&pgError{"57P02"}, failLost},
		{&pgError{"57P03"}, failLost},
		{&pgError{"57P05"}, failLost},
		{&pgError{"08006"}, failLost},
		{errors.New("conn closed"), failLost},
		{&pgError{"42883"}, failOther},
	} {
		if got := (pgBackend{}).classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestPgFunc(t *testing.T) {
	for _, tt := range []struct {
		prefix, action string
		o              options
		want           string
	}{
		{"", "lock", options{}, "pg_advisory_lock($1)"},
		{"try_", "lock", options{shared: true}, "pg_try_advisory_lock_shared($1)"},
		{"", "lock", options{xact: true, shared: true}, "pg_advisory_xact_lock_shared($1)"},
		{"try_", "lock", options{xact: true}, "pg_try_advisory_xact_lock($1)"},
		{"", "unlock", options{shared: true}, "pg_advisory_unlock_shared($1)"},
	} {
		if got := pgFunc(tt.prefix, tt.action, tt.o); got != tt.want {
			t.Errorf("pgFunc(%q, %q, %+v) = %q, want %q", tt.prefix, tt.action, tt.o, got, tt.want)
		}
	}
}

func TestPgKeepaliveSQL(t *testing.T) {
	got := pgKeepaliveSQL(5*time.Second, 2*time.Second, 10*time.Second)
	want := "SELECT set_config('tcp_keepalives_idle', '5', false), set_config('tcp_keepalives_interval', '2', false), " +
		"set_config('tcp_keepalives_count', '2', false), set_config('tcp_user_timeout', '10000', false)"
	if got != want {
		t.Fatalf("pgKeepaliveSQL(5s, 2s, 10s) =\n%s\nwant\n%s", got, want)
	}
}

// The try and the release are SELECT 1 WHERE, whose answer is the command
// tag: no row to read.
func TestPgStatements(t *testing.T) {
	for _, tt := range []struct {
		o           options
		try, unlock string
	}{
		{options{}, "SELECT 1 WHERE pg_try_advisory_lock($1)", "SELECT 1 WHERE pg_advisory_unlock($1)"},
		{options{shared: true}, "SELECT 1 WHERE pg_try_advisory_lock_shared($1)", "SELECT 1 WHERE pg_advisory_unlock_shared($1)"},
		// A transaction-level lock is never released by a statement.
		{options{xact: true}, "SELECT 1 WHERE pg_try_advisory_xact_lock($1)", ""},
		{options{xact: true, shared: true}, "SELECT 1 WHERE pg_try_advisory_xact_lock_shared($1)", ""},
	} {
		if s := pgStmt(tt.o); s.try != tt.try || (tt.unlock != "" && s.unlock != tt.unlock) {
			t.Errorf("pgStmt(%+v) = %q, %q; want %q, %q", tt.o, s.try, s.unlock, tt.try, tt.unlock)
		}
	}
}

// On a session with a verified backend pid, the statements carry the pid
// back, and a release runs only on that backend.
func TestPgStatementsOnBackend(t *testing.T) {
	for _, tt := range []struct {
		o                       options
		tryPID, unlockPID, undo string
	}{
		{
			options{},
			"SELECT pg_try_advisory_lock($1), pg_backend_pid()",
			"SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_advisory_unlock($1) END, pg_backend_pid()",
			"SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_advisory_unlock($1) END",
		},
		{
			options{shared: true},
			"SELECT pg_try_advisory_lock_shared($1), pg_backend_pid()",
			"SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_advisory_unlock_shared($1) END, pg_backend_pid()",
			"SELECT CASE WHEN pg_backend_pid() = $2 THEN pg_advisory_unlock_shared($1) END",
		},
	} {
		s := pgStmt(tt.o)
		if s.tryPID != tt.tryPID || s.unlockPID != tt.unlockPID || s.undo != tt.undo {
			t.Errorf("pgStmt(%+v) = %q, %q, %q; want %q, %q, %q", tt.o, s.tryPID, s.unlockPID, s.undo, tt.tryPID, tt.unlockPID, tt.undo)
		}
	}
}

// A session that moved is lost, and its error names both backends.
func TestPgMovedError(t *testing.T) {
	err := pgMovedError(10, 12)
	if !errors.Is(err, ErrLockLost) || (pgBackend{}).classify(err) != failLost ||
		!strings.Contains(err.Error(), "from 10 to 12") || strings.Contains(err.Error(), "\n") {
		t.Errorf("pgMovedError(10, 12) = %q (classify %v), want one line matching ErrLockLost, classified lost", err, (pgBackend{}).classify(err))
	}
}
