package tests

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The distributed engines dlock refuses (issue 18), each against a real
// server when its DSN variable is set (the CI job "engines" runs them in
// containers), skipped otherwise:
//
//	DLOCK_TEST_TIDB_DSN          root@tcp(127.0.0.1:4000)/test
//	DLOCK_TEST_YUGABYTE_DSN      postgres://yugabyte@127.0.0.1:5433/yugabyte?sslmode=disable (2025.1 or later)
//	DLOCK_TEST_YUGABYTE_OLD_DSN  the same for a release from 2.20 to 2024.2
//	DLOCK_TEST_COCKROACH_DSN     postgres://root@127.0.0.1:26257/defaultdb?sslmode=disable
//
// Each asserts that db.Use refuses with ErrUnsupportedDialect and the
// reason measured on that engine, and logs what the engine does with the
// lock functions, so the CI log shows the facts the refusal rests on.
func TestEngineRefused(t *testing.T) {
	for _, tc := range []struct {
		name, env, dialect string
		words              []string
		probe              func(t *testing.T, db *sql.DB)
	}{
		{"TiDB", "DLOCK_TEST_TIDB_DSN", dialectMySQL, []string{"TiDB", "expires silently at max-txn-ttl"}, probeTiDB},
		{"YugabyteDB", "DLOCK_TEST_YUGABYTE_DSN", dialectPostgres, []string{"YugabyteDB", "no multi-node proof"}, probePgAdvisory},
		{"YugabyteDB 2.20-2024.2", "DLOCK_TEST_YUGABYTE_OLD_DSN", dialectPostgres, []string{"YugabyteDB", "0A000"}, probePgAdvisory},
		{"CockroachDB", "DLOCK_TEST_COCKROACH_DSN", dialectPostgres, []string{"CockroachDB", "stubs that always return true"}, probeCockroach},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := os.Getenv(tc.env)
			if dsn == "" {
				t.Skipf("set %s to run against a real %s", tc.env, tc.name)
			}
			var d gorm.Dialector
			if tc.dialect == dialectMySQL {
				d = mysql.Open(dsn)
			} else {
				d = postgres.Open(dsn)
			}
			raw, err := sql.Open(driverName(tc.dialect), dsn)
			if err != nil {
				t.Fatalf("sql.Open: %v", err)
			}
			defer raw.Close()
			waitAnswers(t, raw, tc.name)
			db, err := gorm.Open(d, &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
			if err != nil {
				t.Fatalf("gorm.Open(%s): %v", tc.name, err)
			}
			if sqlDB, err := db.DB(); err == nil {
				defer sqlDB.Close()
			}
			err = db.Use(dlock.Plugin{})
			t.Logf("db.Use on %s: %v", tc.name, err)
			wantRefused(t, "db.Use(dlock.Plugin{}) on "+tc.name, err, tc.words...)
			tc.probe(t, raw)
		})
	}
}

// waitAnswers waits up to three minutes for a server that is starting.
func waitAnswers(t *testing.T, db *sql.DB, name string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer after 3 minutes: %v", name, err)
		}
		time.Sleep(time.Second)
	}
}

// twoSessions pins two sessions of db, closed when the test ends.
func twoSessions(t *testing.T, db *sql.DB) (*sql.Conn, *sql.Conn) {
	t.Helper()
	var cs [2]*sql.Conn
	for i := range cs {
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatalf("db.Conn: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		cs[i] = c
	}
	return cs[0], cs[1]
}

// probeTiDB logs what another session's IS_USED_LOCK says of a held
// GET_LOCK, against the holder's CONNECTION_ID().
func probeTiDB(t *testing.T, db *sql.DB) {
	ctx := context.Background()
	holder, other := twoSessions(t, db)
	var got, id int64
	var owner sql.NullInt64
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK('dlock-engine-probe', 0), CONNECTION_ID()").Scan(&got, &id); err != nil {
		t.Logf("TiDB GET_LOCK: %v", err)
		return
	}
	defer func() { _, _ = holder.ExecContext(ctx, "SELECT RELEASE_LOCK('dlock-engine-probe')") }()
	if err := other.QueryRowContext(ctx, "SELECT IS_USED_LOCK('dlock-engine-probe')").Scan(&owner); err != nil {
		t.Logf("TiDB IS_USED_LOCK: %v", err)
		return
	}
	t.Logf("TiDB: GET_LOCK = %d on CONNECTION_ID() %d; another session's IS_USED_LOCK = %v", got, id, owner)
}

// probePgAdvisory logs what two sessions get from pg_try_advisory_lock on
// one key.
func probePgAdvisory(t *testing.T, db *sql.DB) {
	first, second := pgTryTwice(t, db)
	t.Logf("pg_try_advisory_lock on one key from two sessions: %s, %s", first, second)
}

// probeCockroach shows CockroachDB's stub: both sessions get the lock.
func probeCockroach(t *testing.T, db *sql.DB) {
	first, second := pgTryTwice(t, db)
	t.Logf("CockroachDB pg_try_advisory_lock on one key from two sessions: %s, %s", first, second)
	if first != "true" || second != "true" {
		t.Errorf("CockroachDB: two sessions got %s and %s from pg_try_advisory_lock; the refusal says both get true, check it again", first, second)
	}
}

// pgTryTwice runs pg_try_advisory_lock on one key from two sessions and
// returns each answer (or its error) as text.
func pgTryTwice(t *testing.T, db *sql.DB) (string, string) {
	ctx := context.Background()
	a, b := twoSessions(t, db)
	try := func(c *sql.Conn) string {
		var ok bool
		if err := c.QueryRowContext(ctx, "SELECT pg_try_advisory_lock(918273645)").Scan(&ok); err != nil {
			return "error: " + err.Error()
		}
		if ok {
			return "true"
		}
		return "false"
	}
	first, second := try(a), try(b)
	for _, c := range []*sql.Conn{a, b} {
		_, _ = c.ExecContext(ctx, "SELECT pg_advisory_unlock_all()")
	}
	return first, second
}

// openEngine opens a gorm pool and a plain pool on dsn once the server
// answers; both are closed when the test ends.
func openEngine(t *testing.T, dialect, dsn, name string) (*gorm.DB, *sql.DB) {
	t.Helper()
	raw, err := sql.Open(driverName(dialect), dsn)
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	waitAnswers(t, raw, name)
	d := postgres.Open(dsn)
	if dialect == dialectMySQL {
		d = mysql.Open(dsn)
	}
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)})
	if err != nil {
		t.Fatalf("gorm.Open(%s): %v", name, err)
	}
	if sqlDB, err := db.DB(); err == nil {
		t.Cleanup(func() { _ = sqlDB.Close() })
	}
	return db, raw
}

// A Citus node that is not the coordinator is refused; once the node is
// registered as the coordinator (citus_set_coordinator_host), dlock locks
// on it. DLOCK_TEST_CITUS_DSN names a single-node Citus (the CI job runs
// citusdata/citus), skipped otherwise.
func TestCitusCoordinatorOnly(t *testing.T) {
	dsn := os.Getenv("DLOCK_TEST_CITUS_DSN")
	if dsn == "" {
		t.Skip("set DLOCK_TEST_CITUS_DSN to run against a real Citus node")
	}
	db, raw := openEngine(t, dialectPostgres, dsn, "Citus")
	var coordinator bool
	if err := raw.QueryRow("SELECT citus_is_coordinator()").Scan(&coordinator); err != nil {
		t.Fatalf("SELECT citus_is_coordinator(): %v", err)
	}
	if !coordinator {
		err := db.Use(dlock.Plugin{})
		t.Logf("db.Use on a Citus node with citus_is_coordinator() = false: %v", err)
		wantRefused(t, "db.Use(dlock.Plugin{}) on a Citus node that is not the coordinator", err, "Citus node that is not the coordinator")
		if _, err := raw.Exec("SELECT citus_set_coordinator_host('localhost')"); err != nil {
			t.Fatalf("citus_set_coordinator_host: %v", err)
		}
		db, _ = openEngine(t, dialectPostgres, dsn, "Citus")
	}
	if err := db.Use(dlock.Plugin{}); err != nil {
		t.Fatalf("db.Use(dlock.Plugin{}) on the Citus coordinator = %v, want nil", err)
	}
	err := dlock.WithLock(context.Background(), db, "citus-coordinator", func(*gorm.DB) error { return nil }, dlock.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("WithLock() on the Citus coordinator = %v, want nil", err)
	}
}

// A MySQL server with the Group Replication plugin loaded in multi-primary
// mode is refused, read from the variables only the loaded plugin has.
// DLOCK_TEST_GR_MULTI_PRIMARY_DSN names one (the CI job installs the
// plugin on MySQL 8.4 and sets group_replication_single_primary_mode =
// OFF, the group not started), skipped otherwise.
func TestGroupReplicationMultiPrimaryRefused(t *testing.T) {
	dsn := os.Getenv("DLOCK_TEST_GR_MULTI_PRIMARY_DSN")
	if dsn == "" {
		t.Skip("set DLOCK_TEST_GR_MULTI_PRIMARY_DSN to run against a MySQL server with Group Replication in multi-primary mode")
	}
	db, raw := openEngine(t, dialectMySQL, dsn, "MySQL with Group Replication")
	var mode string
	if err := raw.QueryRow("SELECT @@global.group_replication_single_primary_mode").Scan(&mode); err != nil {
		t.Fatalf("SELECT @@group_replication_single_primary_mode: %v", err)
	}
	err := db.Use(dlock.Plugin{})
	t.Logf("db.Use with @@group_replication_single_primary_mode = %s: %v", mode, err)
	wantRefused(t, "db.Use(dlock.Plugin{}) on a multi-primary Group Replication member", err, "Group Replication member in multi-primary mode")
}

// A MySQL server with @@super_read_only = ON (a replica, or an Aurora
// reader's MySQL side) grants GET_LOCK locally, excluding nobody on the
// primary: db.Use must refuse it, and the same server once writable must
// lock. DLOCK_TEST_MYSQL_SUPER_READ_ONLY_DSN names a MySQL 8 server that
// this test may switch super_read_only on and off (the CI job "engines"
// starts one of its own), skipped otherwise: MariaDB has no
// super_read_only, and the shared servers' settings are not the tests' to
// change.
func TestMySQLSuperReadOnlyRefused(t *testing.T) {
	dsn := os.Getenv("DLOCK_TEST_MYSQL_SUPER_READ_ONLY_DSN")
	if dsn == "" {
		t.Skip("set DLOCK_TEST_MYSQL_SUPER_READ_ONLY_DSN to run against a MySQL 8 server whose super_read_only the test may switch")
	}
	ctx := context.Background()
	_, raw := openEngine(t, dialectMySQL, dsn, "MySQL")
	setGlobal := func(on bool) {
		t.Helper()
		v := "OFF"
		if on {
			v = "ON"
		}
		if _, err := raw.ExecContext(ctx, "SET GLOBAL super_read_only = "+v); err != nil {
			t.Fatalf("SET GLOBAL super_read_only = %s: %v", v, err)
		}
	}
	setGlobal(true)
	t.Cleanup(func() { _, _ = raw.ExecContext(ctx, "SET GLOBAL super_read_only = OFF") })

	db, _ := openEngine(t, dialectMySQL, dsn, "MySQL")
	var got int64
	holder, _ := twoSessions(t, raw)
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK('dlock-super-read-only-probe', 0)").Scan(&got); err != nil {
		t.Fatalf("GET_LOCK on a super_read_only server: %v", err)
	}
	_, _ = holder.ExecContext(ctx, "SELECT RELEASE_LOCK('dlock-super-read-only-probe')")
	t.Logf("GET_LOCK on a super_read_only server = %d (granted locally)", got)
	err := db.Use(dlock.Plugin{})
	t.Logf("db.Use with @@super_read_only = ON: %v", err)
	wantRefused(t, "db.Use(dlock.Plugin{}) on a super_read_only server", err, "@@super_read_only = ON")

	setGlobal(false)
	db, _ = openEngine(t, dialectMySQL, dsn, "MySQL")
	if err := db.Use(dlock.Plugin{}); err != nil {
		t.Fatalf("db.Use(dlock.Plugin{}) once writable = %v, want nil", err)
	}
	err = dlock.WithLock(ctx, db, "dlock-super-read-only", func(*gorm.DB) error { return nil }, dlock.NoWait())
	if err != nil {
		t.Fatalf("WithLock once writable = %v, want nil", err)
	}
}
