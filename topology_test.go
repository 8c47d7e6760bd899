package dlock

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// wantRefusal fails unless err is nil when want is "", or else a one-line
// error wrapping ErrUnsupportedDialect that names every string in want.
func wantRefusal(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if len(want) == 0 || want[0] == "" {
		if err != nil {
			t.Errorf("%s = %v, want nil", what, err)
		}
		return
	}
	if !errors.Is(err, ErrUnsupportedDialect) {
		t.Errorf("%s = %v, want ErrUnsupportedDialect", what, err)
		return
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s = %q, want it to name %q", what, msg, w)
		}
	}
	if strings.Contains(msg, "\n") || strings.Count(msg, "dlock:") != 1 {
		t.Errorf("%s = %q, want one line with one dlock: prefix", what, msg)
	}
}

func TestMySQLTopologyError(t *testing.T) {
	for _, tt := range []struct {
		name string
		vars map[string]string // as SHOW GLOBAL VARIABLES gives them
		want []string          // none: accepted
	}{
		{"MariaDB primary", map[string]string{"read_only": "OFF", "innodb_read_only": "OFF", "wsrep_on": "OFF"}, nil},
		{"MariaDB without Galera support", map[string]string{"read_only": "OFF", "innodb_read_only": "OFF"}, nil},
		{"MySQL primary", map[string]string{"read_only": "OFF", "super_read_only": "OFF", "innodb_read_only": "OFF"}, nil},
		{"Galera node", map[string]string{"read_only": "OFF", "wsrep_on": "ON"}, []string{"Galera cluster node (@@wsrep_on = ON)"}},
		{"read-only Galera node", map[string]string{"read_only": "ON", "wsrep_on": "ON"}, []string{"Galera"}},
		{"Percona XtraDB Cluster node", map[string]string{"read_only": "OFF", "super_read_only": "OFF", "wsrep_on": "ON"}, []string{"Galera"}},
		{"MariaDB replica", map[string]string{"read_only": "ON", "wsrep_on": "OFF"}, []string{"@@read_only = ON"}},
		{"MariaDB 11 read_only NO_LOCK", map[string]string{"read_only": "NO_LOCK"}, []string{"@@read_only = ON"}},
		{"MySQL replica", map[string]string{"read_only": "ON", "super_read_only": "OFF"}, []string{"@@read_only = ON"}},
		{"MySQL super_read_only", map[string]string{"read_only": "ON", "super_read_only": "ON"}, []string{"@@super_read_only = ON"}},
		{"Aurora MySQL reader", map[string]string{"read_only": "OFF", "super_read_only": "OFF", "innodb_read_only": "ON"}, []string{"@@innodb_read_only = ON", "Aurora MySQL reader", "writer"}},
		{"Aurora MySQL writer", map[string]string{"read_only": "OFF", "super_read_only": "OFF", "innodb_read_only": "OFF"}, nil},
		{"Group Replication single-primary primary", map[string]string{
			"read_only": "OFF", "super_read_only": "OFF", "group_replication_single_primary_mode": "ON",
			"group_replication_group_name": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
		}, nil},
		{"Group Replication single-primary secondary", map[string]string{
			"read_only": "ON", "super_read_only": "ON", "group_replication_single_primary_mode": "ON",
			"group_replication_group_name": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
		}, []string{"@@super_read_only = ON"}},
		{"Group Replication multi-primary", map[string]string{
			"read_only": "OFF", "super_read_only": "OFF", "group_replication_single_primary_mode": "OFF",
			"group_replication_group_name": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
		}, []string{"Group Replication member in multi-primary mode", "@@group_replication_single_primary_mode = OFF", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "certification ignores named locks"}},
		{"MySQL without the Group Replication plugin", map[string]string{"read_only": "OFF", "super_read_only": "OFF"}, nil},
	} {
		wantRefusal(t, tt.name+": mysqlTopologyError()", mysqlTopologyError(tt.vars), tt.want...)
	}
}

func TestMySQLCheckVersion(t *testing.T) {
	for _, tt := range []struct {
		version string
		want    []string
	}{
		// TiDB: the silent expiry first.
		{"8.0.11-TiDB-v7.5.1", []string{"TiDB", "expires silently at max-txn-ttl", "KILL QUERY does not stop"}},
		{"8.0.11-TiDB-v8.4.0", []string{"TiDB"}},
		// Vitess: the ids that differ, the rejected held check, KILL refused.
		{"8.0.30-Vitess", []string{"Vitess", "CONNECTION_ID() is not the id IS_USED_LOCK reports", "1235", "VT07001"}},
		{"5.7.9-vitess-17.0.0", []string{"Vitess"}},
		{"8.4.3", nil},
		{"8.0.28", nil}, // Aurora MySQL 3 reports the MySQL version: read from @@innodb_read_only instead
		{"10.11.19-MariaDB-0+deb12u1", nil},
	} {
		wantRefusal(t, "mysqlCheckVersion("+tt.version+")", mysqlCheckVersion(tt.version), tt.want...)
	}
	// Each refusal leads with what was measured first.
	for _, tt := range []struct{ version, first, then string }{
		{"8.0.11-TiDB-v8.4.0", "expires silently", "KILL QUERY"},
		{"8.0.30-Vitess", "CONNECTION_ID() is not", "VT07001"},
	} {
		msg := mysqlCheckVersion(tt.version).Error()
		if i, j := strings.Index(msg, tt.first), strings.Index(msg, tt.then); i < 0 || i > j {
			t.Errorf("refusal of %s = %q, want %q before %q", tt.version, msg, tt.first, tt.then)
		}
	}
}

func TestMySQLMultiplexError(t *testing.T) {
	for _, tt := range []struct {
		ids  [4]int64 // first session, again, second session, first again
		want []string
	}{
		{[4]int64{10, 10, 11, 10}, nil},
		{[4]int64{10, 10, 0, 10}, nil}, // no second session could be had
		{[4]int64{10, 10, 10, 10}, []string{"two client sessions pinned at once both reported CONNECTION_ID() 10", "multiplexes"}},
		{[4]int64{10, 11, 10, 11}, []string{"one client session reported CONNECTION_ID() 10, then 11"}},
		{[4]int64{10, 10, 11, 12}, []string{"one client session reported CONNECTION_ID() 10, then 12"}},
	} {
		wantRefusal(t, fmt.Sprintf("mysqlMultiplexError(%v)", tt.ids), mysqlMultiplexError(tt.ids), tt.want...)
	}
}

func TestPgServerRefusals(t *testing.T) {
	for _, tt := range []struct {
		version, silenced string
		want              []string
	}{
		{"PostgreSQL 15.8 (Debian 15.8-0+deb12u1) on x86_64-pc-linux-gnu", "", nil},
		{"CockroachDB CCL v24.2.4 (x86_64-pc-linux-gnu, built 2024/10/07 21:45:44, go1.22.5 X:nocoverageredesign)", "", []string{"CockroachDB", "stubs that always return true"}},
		{"PostgreSQL 11.2-YB-2.18.4.0-b0 on x86_64-pc-linux-gnu, compiled by clang version 16.0.6", "", []string{"YugabyteDB 2.18.4.0-b0", "before 2.20", "silent no-ops"}},
		{"PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu, compiled by clang version 16.0.6", "off", []string{"YugabyteDB 2.20.1.0-b0", "0A000", "yb_silence_advisory_locks_not_supported_error = on"}},
		{"PostgreSQL 11.2-YB-2024.2.2.0-b70 on x86_64-pc-linux-gnu", "on", []string{"YugabyteDB 2024.2.2.0-b70", "0A000", "is on for this session"}},
		{"PostgreSQL 11.2-YB-2.25.1.0-b381 on x86_64-pc-linux-gnu", "", []string{"0A000", "preview from 2.25.1"}},
		{"PostgreSQL 15.12-YB-2025.1.0.0-b168 on x86_64-pc-linux-gnu, compiled by clang version 17.0.6", "off", []string{"YugabyteDB 2025.1.0.0-b168", "cluster-wide from 2025.1", "no multi-node proof", "cancelled", "Holders"}},
		{"PostgreSQL 15.12-YB-2025.2.0.0-b1 on x86_64-pc-linux-gnu", "on", []string{"no multi-node proof", "is on for this session"}},
		{"PostgreSQL 15.12-YB-x on x86_64-pc-linux-gnu", "", []string{"YugabyteDB", "cannot read"}},
	} {
		var err error
		if strings.Contains(tt.version, "CockroachDB") {
			err = cockroachError(tt.version)
		} else if strings.Contains(tt.version, "-YB-") {
			err = ybError(tt.version, tt.silenced)
		}
		wantRefusal(t, "refusal of "+tt.version, err, tt.want...)
		if err != nil && strings.Contains(err.Error(), "is on for this session") != (tt.silenced == "on") {
			t.Errorf("refusal of %s with the setting %q = %q", tt.version, tt.silenced, err)
		}
	}
}

func TestYBRelease(t *testing.T) {
	for _, tt := range []struct {
		version string
		want    []int
	}{
		{"PostgreSQL 11.2-YB-2.20.1.0-b0 on x86_64-pc-linux-gnu", []int{2, 20, 1, 0}},
		{"PostgreSQL 15.12-YB-2025.1.0.0-b168 on x86_64", []int{2025, 1, 0, 0}},
		{"PostgreSQL 11.2-YB-2.14 on x", []int{2, 14}},
		{"PostgreSQL 11.2-YB-b0", nil},
		{"PostgreSQL 15.8", nil},
	} {
		got, ok := ybRelease(tt.version)
		if ok != (tt.want != nil) || fmt.Sprint(got) != fmt.Sprint(tt.want) && tt.want != nil {
			t.Errorf("ybRelease(%q) = %v, %v; want %v", tt.version, got, ok, tt.want)
		}
	}
}

func TestCitusError(t *testing.T) {
	wantRefusal(t, "citusError(coordinator)", citusError(true, true))
	wantRefusal(t, "citusError(worker)", citusError(true, false), "Citus node that is not the coordinator", "citus_is_coordinator() = false")
	wantRefusal(t, "citusError(Citus 10)", citusError(false, false), "before 11.0")
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
