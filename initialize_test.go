package dlock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/logger"
	"gorm.io/gorm/schema"
)

// versionDriver is a database/sql driver whose only query answer is the
// server version in its DSN (and 0 for each server variable a query asks
// for, no rows for SHOW VARIABLES: a plain, writable server; and a
// CONNECTION_ID() of its own for each connection). It lets
// Plugin.Initialize be tested for dialects and servers this machine does
// not run; nothing here locks.
type versionDriver struct{}

// versionConnIDs numbers the connections of versionDriver.
var versionConnIDs atomic.Int64

func (versionDriver) Open(dsn string) (driver.Conn, error) {
	return versionConn{dsn, versionConnIDs.Add(1)}, nil
}

type versionConn struct {
	version string
	id      int64
}

func (c versionConn) Prepare(q string) (driver.Stmt, error) {
	switch {
	case strings.HasPrefix(q, "SELECT @@"):
		return versionStmt(strings.Repeat("0,", strings.Count(q, "@@"))), nil
	case strings.HasPrefix(q, "SHOW "):
		return versionStmt("Variable_name,Value,,"), nil // no rows
	case q == "SELECT CONNECTION_ID()":
		return versionStmt(strconv.FormatInt(c.id, 10)), nil
	}
	return versionStmt(c.version), nil
}
func (versionConn) Close() error              { return nil }
func (versionConn) Begin() (driver.Tx, error) { return nil, errors.New("no transactions") }

type versionStmt string

func (versionStmt) Close() error                               { return nil }
func (versionStmt) NumInput() int                              { return 0 }
func (versionStmt) Exec([]driver.Value) (driver.Result, error) { return nil, errors.New("no exec") }
func (s versionStmt) Query([]driver.Value) (driver.Rows, error) {
	return &versionRows{v: string(s)}, nil
}

// versionRows is one row: v, or the values of a comma-terminated list; a
// list ending in two commas names the columns of no rows.
type versionRows struct {
	v    string
	done bool
}

func (r *versionRows) Columns() []string {
	if vs, ok := strings.CutSuffix(r.v, ",,"); ok {
		return strings.Split(vs, ",")
	}
	if vs, ok := strings.CutSuffix(r.v, ","); ok {
		return strings.Split(vs, ",")
	}
	return []string{"version"}
}

func (*versionRows) Close() error { return nil }
func (r *versionRows) Next(dest []driver.Value) error {
	if r.done || strings.HasSuffix(r.v, ",,") {
		return io.EOF
	}
	r.done = true
	vs, list := strings.CutSuffix(r.v, ",")
	if !list {
		dest[0] = r.v
		return nil
	}
	for i, v := range strings.Split(vs, ",") {
		dest[i] = v
	}
	return nil
}

func init() { sql.Register("dlock-version", versionDriver{}) }

// fakeDialector is a GORM dialector with a chosen name over versionDriver.
type fakeDialector struct{ name, version string }

func (d fakeDialector) Name() string { return d.name }
func (d fakeDialector) Initialize(db *gorm.DB) error {
	pool, err := sql.Open("dlock-version", d.version)
	db.ConnPool = pool
	return err
}
func (fakeDialector) Migrator(*gorm.DB) gorm.Migrator                { return nil }
func (fakeDialector) DataTypeOf(*schema.Field) string                { return "" }
func (fakeDialector) DefaultValueOf(*schema.Field) clause.Expression { return nil }
func (fakeDialector) BindVarTo(clause.Writer, *gorm.Statement, any)  {}
func (fakeDialector) QuoteTo(w clause.Writer, s string)              { _, _ = w.WriteString(s) }
func (fakeDialector) Explain(sql string, _ ...any) string            { return sql }

func openFake(t *testing.T, name, version string) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(fakeDialector{name, version}, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("gorm.Open: %v", err)
	}
	t.Cleanup(func() {
		if s, err := db.DB(); err == nil {
			_ = s.Close()
		}
	})
	return db
}

func TestPluginRefusesUnsupported(t *testing.T) {
	for _, tt := range []struct{ dialect, version string }{
		{"sqlite", "3.45.0"},
		{"sqlserver", "Microsoft SQL Server 2022"},
		{"postgres", "CockroachDB CCL v23.2.0 (x86_64-pc-linux-gnu)"},
		{"postgres", "PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu"},
		{"postgres", "PostgreSQL 15.12-YB-2025.1.0.0-b168 on x86_64-pc-linux-gnu"},
		{"mysql", "8.0.11-TiDB-v7.5.1"},
		{"mysql", "8.0.30-Vitess"},
	} {
		db := openFake(t, tt.dialect, tt.version)
		err := db.Use(Plugin{})
		if !errors.Is(err, ErrUnsupportedDialect) {
			t.Errorf("Use(Plugin{}) on %s %q = %v, want ErrUnsupportedDialect", tt.dialect, tt.version, err)
		}
		if _, ok := db.Plugins[pluginName]; ok {
			t.Errorf("%s: plugin registered after a refusal", tt.dialect)
		}
	}
}

func TestPluginDetectsFlavour(t *testing.T) {
	for _, tt := range []struct {
		dialect, version string
		mariadb          bool
	}{
		{"mysql", "8.4.3", false},
		{"mysql", "10.11.19-MariaDB-0+deb12u1", true},
	} {
		db := openFake(t, tt.dialect, tt.version)
		if err := db.Use(&Plugin{KeyPrefix: "app:"}); err != nil {
			t.Fatalf("Use(&Plugin{}) = %v", err)
		}
		r, err := registered(db)
		if err != nil {
			t.Fatalf("registered() = %v", err)
		}
		be, ok := r.server.backend.(*mysqlBackend)
		if !ok || be.mariadb != tt.mariadb {
			t.Errorf("%q: backend %#v, want mariadb=%v", tt.version, r.server.backend, tt.mariadb)
		}
		if r.cfg.KeyPrefix != "app:" || r.cfg.ReleaseTimeout != defaultReleaseTimeout {
			t.Errorf("registration config = %+v", r.cfg)
		}
		if _, err := New(db, "k"); !errors.Is(err, ErrNotPinned) {
			t.Errorf("New(pool) = %v, want ErrNotPinned", err)
		}
		conn, err := r.pool.Conn(context.Background())
		if err != nil {
			t.Fatalf("Conn: %v", err)
		}
		tx := db.Session(&gorm.Session{NewDB: true})
		tx.Statement.ConnPool = conn
		if _, err := New(tx, "k", Shared()); !errors.Is(err, ErrUnsupported) {
			t.Errorf("New(Shared) on MySQL = %v, want ErrUnsupported", err)
		}
		l, err := New(tx, "k")
		if err != nil {
			t.Fatalf("New() = %v", err)
		}
		if got := l.DBKey(); got != "app:k" {
			t.Errorf("DBKey() = %v, want app:k", got)
		}
		if l.Key() != "k" || l.DB() != tx || l.Acquired() {
			t.Errorf("Key/DB/Acquired = %v, %v, %v", l.Key(), l.DB() == tx, l.Acquired())
		}
		_ = conn.Close()
	}
}

func TestPluginOptionsValidated(t *testing.T) {
	db := openFake(t, "mysql", "8.0.36")
	if err := db.Use(Plugin{ReleaseTimeout: -1}); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Use(negative ReleaseTimeout) = %v, want ErrInvalidOption", err)
	}
	if Plugin.Name(Plugin{}) != "gorm:dlock" {
		t.Fatalf("Name() = %q", Plugin{}.Name())
	}
	if _, err := New(db, "k"); !errors.Is(err, ErrNotRegistered) || !strings.Contains(err.Error(), "db.Use") {
		t.Fatalf("New() unregistered = %v, want ErrNotRegistered", err)
	}
}
