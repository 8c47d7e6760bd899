package dlock

import (
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The statements of Holders and Locks, checked without a server: MySQL's
// performance_schema path cannot run on this machine's MariaDB, nor can
// MariaDB's METADATA_LOCK_INFO without its plugin.

func TestPgHoldersStmtKeySplit(t *testing.T) {
	for _, tt := range []struct {
		key           int64
		classid, objd int64
	}{
		{42, 0, 42},
		{-1, 0xffffffff, 0xffffffff},
		{-8841863937742578886, 2236310424, 1183079226},
		{1 << 32, 1, 0},
	} {
		q := pgHoldersStmt(tt.key)
		if want := []any{tt.classid, tt.objd}; !reflect.DeepEqual(q.args, want) {
			t.Errorf("pgHoldersStmt(%d).args = %v, want %v", tt.key, q.args, want)
		}
		if !q.pg || !strings.Contains(q.sql, "l.objsubid = 1") || !strings.Contains(q.sql, "current_database()") {
			t.Errorf("pgHoldersStmt(%d).sql = %q, want bigint advisory locks of the current database", tt.key, q.sql)
		}
	}
}

func TestMySQLStatementForms(t *testing.T) {
	for _, tt := range []struct {
		name string
		want []string
	}{
		{"my-lock", []string{`X'6d792d6c6f636b'`, `'my-lock'`}},
		{`it's`, []string{`X'69742773'`, `'it\'s'`, `'it''s'`}},
		{`a\b`, []string{`X'615c62'`, `'a\\b'`}},
	} {
		if got := mysqlStatementForms(tt.name); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("mysqlStatementForms(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// fixedLiterals are the string literals dlock may put in MySQL text: hex
// literals, and the fixed strings of the statements.
var fixedLiterals = regexp.MustCompile(`X'[0-9a-f]*'|'User lock'|''`)

func TestMySQLHoldersStmt(t *testing.T) {
	for _, be := range []*mysqlBackend{{}, {mariadb: true}} {
		q := be.holdersStmt("it's")
		bin := "" // MySQL's names are case-insensitive, MariaDB's are not
		if be.mariadb {
			bin = " COLLATE utf8mb4_bin"
		}
		for _, want := range []string{
			"IS_USED_LOCK(_utf8mb4 X'69742773')",
			"p.STATE = 'User lock'",
			"LOCATE(" + mysqlLiteral(`X'69742773'`) + ", p.INFO) > 0",
			"LOCATE(" + mysqlLiteral(`'it\'s'`) + bin + ", p.INFO) > 0",
			"LOCATE(" + mysqlLiteral(`'it''s'`) + bin + ", p.INFO) > 0",
		} {
			if !strings.Contains(q.sql, want) {
				t.Errorf("holdersStmt() mariadb=%v = %q, want it to contain %q", be.mariadb, q.sql, want)
			}
		}
		if rest := fixedLiterals.ReplaceAllString(q.sql, ""); strings.Contains(rest, "'") {
			t.Errorf("holdersStmt() mariadb=%v = %q: a quote outside the hex literals and fixed strings", be.mariadb, q.sql)
		}
		if !strings.Contains(q.sql, mysqlProcessCheck) {
			t.Errorf("holdersStmt() mariadb=%v = %q, want the PROCESS check %s", be.mariadb, q.sql, mysqlProcessCheck)
		}
		elapsed := map[bool]string{false: "p.TIME * 1000000", true: "p.TIME_MS * 1000"}[be.mariadb]
		if !strings.Contains(q.sql, elapsed) {
			t.Errorf("holdersStmt() mariadb=%v = %q, want Since from %s", be.mariadb, q.sql, elapsed)
		}
	}
}

func TestMySQLLocksStmt(t *testing.T) {
	tests := []struct {
		name   string
		be     *mysqlBackend
		prefix string
		want   []string
		not    []string
	}{
		{
			"mariadb all", &mysqlBackend{mariadb: true}, "",
			[]string{
				"FROM information_schema.METADATA_LOCK_INFO m", "m.LOCK_TYPE = 'User lock'",
				"JOIN information_schema.PROCESSLIST p ON p.STATE = 'User lock' AND p.ID <> m.THREAD_ID AND " + mariadbWaitsFor,
			},
			[]string{"LEFT(CAST"},
		},
		{
			"mariadb prefix", &mysqlBackend{mariadb: true}, "app:é",
			[]string{"LEFT(CAST(m.TABLE_SCHEMA AS BINARY), 6) = X'6170703ac3a9'"},
			nil,
		},
		{
			"mysql all", &mysqlBackend{}, "",
			[]string{
				"FROM performance_schema.metadata_locks m JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID",
				"m.OBJECT_TYPE = 'USER LEVEL LOCK'", "m.LOCK_STATUS = 'GRANTED'", "t.PROCESSLIST_ID",
			},
			[]string{"LEFT("},
		},
		{
			"mysql prefix", &mysqlBackend{}, "app:é",
			[]string{"LOWER(LEFT(m.OBJECT_NAME, 5)) = LOWER(_utf8mb4 X'6170703ac3a9')"},
			nil,
		},
	}
	for _, tt := range tests {
		q := tt.be.locksStmt(tt.prefix)
		for _, w := range tt.want {
			if !strings.Contains(q.sql, w) {
				t.Errorf("%s: locksStmt(%q) = %q, want it to contain %q", tt.name, tt.prefix, q.sql, w)
			}
		}
		for _, w := range tt.not {
			if strings.Contains(q.sql, w) {
				t.Errorf("%s: locksStmt(%q) = %q, want no %q", tt.name, tt.prefix, q.sql, w)
			}
		}
		if !strings.Contains(q.sql, mysqlProcessCheck) {
			t.Errorf("%s: locksStmt(%q) = %q, want the PROCESS check", tt.name, tt.prefix, q.sql)
		}
		if q.pg || len(q.args) != 0 {
			t.Errorf("%s: locksStmt(%q) has pg=%v args=%v, want names in the text", tt.name, tt.prefix, q.pg, q.args)
		}
	}
}

func TestNoMetadataLockInfoError(t *testing.T) {
	for _, err := range []error{errNoMetadataLockInfo, errNoMetadataLocks} {
		if !errors.Is(err, ErrUnsupported) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: want one line matching ErrUnsupported", err)
		}
	}
	if !strings.Contains(errNoMetadataLockInfo.Error(), "INSTALL SONAME 'metadata_lock_info'") {
		t.Errorf("%q: want the way to enable the plugin", errNoMetadataLockInfo)
	}
}

func TestDBKey(t *testing.T) {
	tests := []struct {
		dialect string
		key     any
		prefix  string
		want    any
	}{
		{"postgres", "my-lock", "", int64(-8841863937742578886)},
		{"postgres", "a", "", int64(3405396810240292928)},
		{"postgres", "lock", "my-", int64(-8841863937742578886)},
		{"postgres", []byte("a"), "", int64(3405396810240292928)},
		{"postgres", 42, "p:", int64(42)},
		{"mysql", "my-lock", "", "my-lock"},
		{"mysql", "lock", "app:", "app:lock"},
		{"mysql", uint8(42), "app:", "42"},
	}
	for _, tt := range tests {
		got, err := DBKey(tt.dialect, tt.key, tt.prefix)
		if err != nil || got != tt.want {
			t.Errorf("DBKey(%q, %#v, %q) = %#v, %v; want %#v, nil", tt.dialect, tt.key, tt.prefix, got, err, tt.want)
		}
	}
	if _, err := DBKey("sqlite", "k", ""); !errors.Is(err, ErrUnsupportedDialect) {
		t.Errorf("DBKey(sqlite) error = %v, want ErrUnsupportedDialect", err)
	}
	if _, err := DBKey("mysql", "", ""); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("DBKey(mysql, \"\") error = %v, want ErrInvalidKey", err)
	}
}

// numberedErr has the Number field by which mysqlErrNumber reads a
// go-sql-driver/mysql error.
type numberedErr struct{ Number uint16 }

func (e *numberedErr) Error() string { return "Error " + strconv.Itoa(int(e.Number)) }

func TestListError(t *testing.T) {
	denied := &numberedErr{erSpecificAccessDenied}
	tests := []struct {
		op          string
		err         error
		unsupported bool
		want        string
	}{
		{"Holders", denied, true, "Holders needs the PROCESS privilege"},
		{"Locks", denied, true, "Locks needs the PROCESS privilege"},
		{"Locks", &numberedErr{erTableAccessDenied}, true, "SELECT on performance_schema"},
		{"Holders", &numberedErr{erTableAccessDenied}, false, "dlock: Holders: Error 1142"},
		{"Locks", errNoMetadataLockInfo, true, "INSTALL SONAME 'metadata_lock_info'"},
		{"Holders", errors.New("boom"), false, "dlock: Holders: boom"},
	}
	for _, tt := range tests {
		got := listError(tt.op, tt.err)
		if errors.Is(got, ErrUnsupported) != tt.unsupported || !strings.Contains(got.Error(), tt.want) || !errors.Is(got, tt.err) {
			t.Errorf("listError(%q, %v) = %q; want ErrUnsupported=%v, %q, and the error itself", tt.op, tt.err, got, tt.unsupported, tt.want)
		}
		if strings.Count(got.Error(), "dlock:") != 1 {
			t.Errorf("listError(%q, %v) = %q; want one dlock: prefix", tt.op, tt.err, got)
		}
	}
}
