package dlock

import (
	"errors"
	"strings"
	"testing"
)

func TestMySQLTopologyError(t *testing.T) {
	for _, tt := range []struct {
		name                     string
		mariadb, readOnly, other bool
		want                     string // "" = accepted
	}{
		{"MariaDB primary", true, false, false, ""},
		{"MySQL primary", false, false, false, ""},
		{"Galera node", true, false, true, "Galera cluster node (@@wsrep_on = ON)"},
		{"read-only Galera node", true, true, true, "Galera"},
		{"MariaDB replica", true, true, false, "@@read_only = ON"},
		{"MySQL replica", false, true, false, "@@read_only = ON"},
		{"MySQL super_read_only", false, false, true, "@@super_read_only = ON"},
	} {
		err := mysqlTopologyError(tt.mariadb, tt.readOnly, tt.other)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: mysqlTopologyError() = %v, want nil", tt.name, err)
		case tt.want != "" && (!errors.Is(err, ErrUnsupportedDialect) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: mysqlTopologyError() = %v, want ErrUnsupportedDialect naming %q", tt.name, err, tt.want)
		}
	}
}

func TestMySQLCheckVersion(t *testing.T) {
	for _, tt := range []struct{ version, want string }{
		{"8.0.11-TiDB-v7.5.1", "TiDB"},
		{"8.0.30-Vitess", "Vitess"},
		{"5.7.9-vitess-17.0.0", "Vitess"},
		{"8.4.3", ""},
		{"10.11.19-MariaDB-0+deb12u1", ""},
	} {
		err := mysqlCheckVersion(tt.version)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("mysqlCheckVersion(%q) = %v, want nil", tt.version, err)
		case tt.want != "" && (!errors.Is(err, ErrUnsupportedDialect) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("mysqlCheckVersion(%q) = %v, want ErrUnsupportedDialect naming %q", tt.version, err, tt.want)
		}
	}
}

func TestPgTxPoolingError(t *testing.T) {
	for _, tt := range []struct {
		pid1, pid2, again int64
		want              string
	}{
		{10, 10, 10, "two client sessions ran on backend 10"},
		{10, 11, 12, "one client session moved from backend 10 to 12"},
	} {
		err := pgTxPoolingError(tt.pid1, tt.pid2, tt.again)
		msg := err.Error()
		if !errors.Is(err, ErrUnsupportedDialect) || !strings.Contains(msg, tt.want) ||
			!strings.Contains(msg, "transaction pooling") || !strings.Contains(msg, "session pooling") || strings.Contains(msg, "\n") {
			t.Errorf("pgTxPoolingError(%d, %d, %d) = %q, want one line with %q and the fix", tt.pid1, tt.pid2, tt.again, msg, tt.want)
		}
	}
}

// A refusal is settled as "nothing ran": not a lost session.
func TestPgClassifyRefusal(t *testing.T) {
	if got := (pgBackend{}).classify(errStandby); got != failTxAborted {
		t.Errorf("classify(errStandby) = %v, want failTxAborted", got)
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
