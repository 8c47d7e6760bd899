package tests

// A measured prototype for issue 22 item 4: a loss-check statement whose
// SQL text does not grow with the number of holds. dlock took a JSON_TABLE
// form on MySQL and MariaDB (holding.go); bench's BenchmarkLossCheck times
// the statements dlock sends. This test is not a test of dlock (it sends
// its own SQL) and runs only with DLOCK_CHECK_SCALE=1,
// without -race (it reports client CPU):
//
//	DLOCK_CHECK_SCALE=1 go test -count=1 -run TestLossCheckScale -v ./
//
// It opens 100 sessions, has them hold 100, 1,000 and 10,000 locks, and
// times one check round of each form (the median of several rounds): wall
// time on the loopback, which is the server's time plus a round trip of
// ~0.1 ms, and the client's CPU time. 10,000 PostgreSQL advisory locks
// need max_locks_per_transaction × max_connections ≥ 10,000 or so, and
// 100 sessions need max_connections to spare: run it against a private
// server (DLOCK_TEST_MYSQL_DSN, DLOCK_TEST_POSTGRES_DSN), not a shared one.

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scaleHold is one lock held by one session.
type scaleHold struct {
	name    string // MySQL
	key     int64  // PostgreSQL
	session int64
}

// checkForm is one way to ask the server which holds are gone. It returns
// the indexes of the holds the server does not show held by their session,
// and the bytes of SQL text and arguments it sent.
type checkForm struct {
	name  string
	check func(ctx context.Context, db *sql.DB, holds []scaleHold) (lost []int, sent int, err error)
}

func TestLossCheckScale(t *testing.T) {
	if os.Getenv("DLOCK_CHECK_SCALE") == "" {
		t.Skip("set DLOCK_CHECK_SCALE=1 to measure loss-check statements at 100 to 10,000 holds")
	}
	eachBackend(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		const sessions = 100
		db := b.Raw(t)
		db.SetMaxOpenConns(sessions + 4)
		conns := make([]*sql.Conn, sessions)
		ids := make([]int64, sessions)
		for i := range conns {
			c, err := db.Conn(ctx)
			if err != nil {
				t.Fatalf("Conn %d: %v", i, err)
			}
			t.Cleanup(func() { _ = c.Close() })
			conns[i], ids[i] = c, b.SessionID(t, c)
		}
		forms := slices.Clone(mysqlCheckForms)
		if b.Dialect == dialectPostgres {
			forms = slices.Clone(pgCheckForms)
		}
		table, tableServerTime := b.tableCheckForm(t, db)
		forms = append(forms, table)
		if b.Dialect == dialectMySQL {
			forms = append(forms, preparedCheckForm(t, db))
		}
		if b.Name == "mariadb" && !b.hasMetadataLockInfo(t) {
			forms = slices.DeleteFunc(slices.Clone(forms), func(f checkForm) bool { return strings.HasPrefix(f.name, "plugin") })
			t.Logf("no metadata_lock_info plugin: its form is not measured")
		}
		prefix := b.UniqueKey(t) + ":"
		base := randomInt(t) >> 8
		var holds []scaleHold
		serverCPU := b.serverCPU(t)
		t.Logf("%-8s %-44s %12s %12s %12s %12s", "holds", "form", "wall/round", "server CPU", "client CPU", "sent bytes")
		for _, n := range []int{100, 1000, 10000} {
			// Each session takes its share of the new holds in one statement.
			per := make([][]scaleHold, sessions)
			for i := len(holds); i < n; i++ {
				s := i % sessions
				h := scaleHold{name: prefix + strconv.Itoa(i), key: base + int64(i), session: ids[s]}
				per[s] = append(per[s], h)
				holds = append(holds, h)
			}
			for s, hs := range per {
				if len(hs) > 0 {
					takeAll(t, b, conns[s], hs)
				}
			}
			for _, f := range forms {
				wall, scpu, cpu, sent := measureCheck(t, ctx, db, f, holds, serverCPU)
				t.Logf("%-8d %-44s %12v %12v %12v %12d", n, f.name, wall, scpu, cpu, sent)
			}
			t.Logf("%-8d %-44s %12v (the server's own count, median of 5)", n, "table: server time of the check", tableServerTime())
		}
		// Every form finds a hold released behind its session's back, and
		// only that one.
		gone := len(holds) / 2
		releaseOne(t, b, conns[gone%sessions], holds[gone])
		for _, f := range forms {
			if strings.HasPrefix(f.name, "sessions:") || strings.HasPrefix(f.name, "floor:") {
				continue // not a check of each hold
			}
			lost, _, err := f.check(ctx, db, holds)
			if err != nil || !slices.Equal(lost, []int{gone}) {
				t.Errorf("%s: lost = %v, %v; want [%d]", f.name, lost, err, gone)
			}
		}
	})
}

// measureCheck runs f until it has taken 5 rounds and 1 s (at most 50
// rounds), after two rounds of warm-up, and returns the median wall time,
// the mean server and client CPU time per round and the bytes sent in one
// round. On a machine as loaded as the shared one, the CPU times are the
// numbers to compare: the wall time waits for the other programs too.
func measureCheck(t *testing.T, ctx context.Context, db *sql.DB, f checkForm, holds []scaleHold, serverCPU func() time.Duration) (wall, scpu, cpu time.Duration, sent int) {
	t.Helper()
	for range 2 {
		lost, _, err := f.check(ctx, db, holds)
		if strings.HasPrefix(f.name, "floor:") {
			lost = nil
		}
		if err != nil || len(lost) != 0 {
			t.Fatalf("%s at %d holds: lost %v, %v; want none", f.name, len(holds), lost, err)
		}
	}
	var walls []time.Duration
	start, cpu0, scpu0 := time.Now(), cpuTime(t), serverCPU()
	for len(walls) < 5 || (time.Since(start) < time.Second && len(walls) < 50) {
		t0 := time.Now()
		_, s, err := f.check(ctx, db, holds)
		walls = append(walls, time.Since(t0))
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		sent = s
	}
	cpu = (cpuTime(t) - cpu0) / time.Duration(len(walls))
	scpu = (serverCPU() - scpu0) / time.Duration(len(walls))
	slices.Sort(walls)
	return walls[len(walls)/2].Round(10 * time.Microsecond), scpu.Round(10 * time.Microsecond), cpu.Round(10 * time.Microsecond), sent
}

// serverCPU returns a function that reads the CPU time the server has used
// so far, from /proc: every thread of mariadbd or mysqld, or the postmaster
// and all its children. It works for a server on this machine that the
// test may read (its pid file); elsewhere the function returns 0. Run the
// server for this test alone, or other sessions' work is counted too.
func (b *testDB) serverCPU(t *testing.T) func() time.Duration {
	t.Helper()
	q := "SELECT @@pid_file"
	if b.Dialect == dialectPostgres {
		q = "SELECT current_setting('data_directory') || '/postmaster.pid'"
	}
	var file string
	if err := b.observer(t).QueryRowContext(context.Background(), q).Scan(&file); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Logf("server CPU not measured: %v", err)
		return func() time.Duration { return 0 }
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
	if err != nil {
		t.Logf("server CPU not measured: pid file %s: %v", file, err)
		return func() time.Duration { return 0 }
	}
	return func() time.Duration {
		pids := []int{pid}
		if b.Dialect == dialectPostgres {
			pids = append(pids, childrenOf(pid)...)
		}
		var sum time.Duration
		for _, p := range pids {
			tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
			for _, task := range tasks {
				// schedstat: nanoseconds on a CPU, waiting, time slices.
				st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", p, task.Name()))
				if err != nil {
					continue
				}
				ns, _ := strconv.ParseInt(strings.Fields(string(st))[0], 10, 64)
				sum += time.Duration(ns)
			}
		}
		return sum
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		st, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after ')'.
		_, rest, ok := strings.Cut(string(st), ") ")
		if f := strings.Fields(rest); ok && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if k, err := strconv.Atoi(p.Name()); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// takeAll has conn take every lock of hs at once.
func takeAll(t *testing.T, b *testDB, conn *sql.Conn, hs []scaleHold) {
	t.Helper()
	var q string
	var args []any
	if b.Dialect == dialectPostgres {
		keys := make([]string, len(hs))
		for i, h := range hs {
			keys[i] = strconv.FormatInt(h.key, 10)
		}
		q, args = "SELECT count(pg_advisory_lock(k)) FROM unnest($1::bigint[]) k", []any{"{" + strings.Join(keys, ",") + "}"}
	} else {
		parts := make([]string, len(hs))
		for i, h := range hs {
			parts[i] = "GET_LOCK(X'" + hex.EncodeToString([]byte(h.name)) + "', 0)"
		}
		q = "SELECT " + strings.Join(parts, " + ")
	}
	var got int
	if err := conn.QueryRowContext(context.Background(), q, args...).Scan(&got); err != nil || got != len(hs) {
		t.Fatalf("taking %d locks: %d, %v", len(hs), got, err)
	}
}

// releaseOne releases h on conn, the session that holds it.
func releaseOne(t *testing.T, b *testDB, conn *sql.Conn, h scaleHold) {
	t.Helper()
	q := "SELECT RELEASE_LOCK(X'" + hex.EncodeToString([]byte(h.name)) + "') = 1"
	if b.Dialect == dialectPostgres {
		q = "SELECT pg_advisory_unlock(" + strconv.FormatInt(h.key, 10) + ")"
	}
	var ok bool
	if err := conn.QueryRowContext(context.Background(), q).Scan(&ok); err != nil || !ok {
		t.Fatalf("%s = %v, %v", q, ok, err)
	}
}

// hasMetadataLockInfo reports whether MariaDB's metadata_lock_info plugin
// is active.
func (b *testDB) hasMetadataLockInfo(t testing.TB) bool {
	t.Helper()
	var n int
	q := "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'"
	if err := b.observer(t).QueryRowContext(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n == 1
}

var mysqlCheckForms = []checkForm{
	sessionsForm("sessions: PROCESSLIST of the ids", "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ($1)"),
	{"today: IS_USED_LOCK per name in the text", func(ctx context.Context, db *sql.DB, holds []scaleHold) ([]int, int, error) {
		var q strings.Builder
		q.WriteString("SELECT ")
		for i, h := range holds {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("IS_USED_LOCK(_utf8mb4 X'" + hex.EncodeToString([]byte(h.name)) + "')")
		}
		owners := make([]sql.NullInt64, len(holds))
		dest := make([]any, len(holds))
		for i := range owners {
			dest[i] = &owners[i]
		}
		if err := db.QueryRowContext(ctx, q.String()).Scan(dest...); err != nil {
			return nil, q.Len(), err
		}
		var lost []int
		for i, h := range holds {
			if !owners[i].Valid || owners[i].Int64 != h.session {
				lost = append(lost, i)
			}
		}
		return lost, q.Len(), nil
	}},
	{"json: JSON_TABLE(?), returns the lost only", func(ctx context.Context, db *sql.DB, holds []scaleHold) ([]int, int, error) {
		// [["hex name", session], ...]: hex keeps any name valid JSON;
		// UNHEX gives the same bytes, so the same lock, as _utf8mb4 X'…'.
		rows := make([][2]any, len(holds))
		for i, h := range holds {
			rows[i] = [2]any{hex.EncodeToString([]byte(h.name)), h.session}
		}
		arg, err := json.Marshal(rows)
		if err != nil {
			return nil, 0, err
		}
		return lostRows(ctx, db, mysqlJSONCheck, len(mysqlJSONCheck)+len(arg), string(arg))
	}},
	{"plugin: METADATA_LOCK_INFO of the sessions", func(ctx context.Context, db *sql.DB, holds []scaleHold) ([]int, int, error) {
		var ids []string
		seen := map[int64]bool{}
		for _, h := range holds {
			if !seen[h.session] {
				seen[h.session] = true
				ids = append(ids, strconv.FormatInt(h.session, 10))
			}
		}
		q := "SELECT THREAD_ID, TABLE_SCHEMA FROM information_schema.METADATA_LOCK_INFO" +
			" WHERE LOCK_TYPE = 'User lock' AND THREAD_ID IN (" + strings.Join(ids, ",") + ")"
		r, err := db.QueryContext(ctx, q)
		if err != nil {
			return nil, len(q), err
		}
		defer r.Close()
		type held struct {
			session int64
			name    string
		}
		shown := make(map[held]bool, len(holds))
		for r.Next() {
			var h held
			if err := r.Scan(&h.session, &h.name); err != nil {
				return nil, len(q), err
			}
			shown[h] = true
		}
		var lost []int
		for i, h := range holds {
			if !shown[held{h.session, h.name}] {
				lost = append(lost, i)
			}
		}
		return lost, len(q), r.Err()
	}},
}

// mysqlJSONCheck returns the 0-based index of each hold of the JSON array
// ? that the server does not show held by its session.
const mysqlJSONCheck = "SELECT j.i - 1 FROM JSON_TABLE(?, '$[*]' COLUMNS (i FOR ORDINALITY, h LONGTEXT PATH '$[0]', s BIGINT PATH '$[1]')) j" +
	" WHERE NOT IS_USED_LOCK(UNHEX(j.h)) <=> j.s"

var pgCheckForms = []checkForm{
	sessionsForm("sessions: pg_stat_activity of the pids", "SELECT pid FROM pg_stat_activity WHERE pid IN ($1)"),
	{"floor: SELECT count(*) FROM pg_locks", func(ctx context.Context, db *sql.DB, holds []scaleHold) ([]int, int, error) {
		const q = "SELECT count(*) FROM pg_locks"
		var n int
		return nil, len(q), db.QueryRowContext(ctx, q).Scan(&n)
	}},
	{"today: pg_locks of the pids, compared here", func(ctx context.Context, db *sql.DB, holds []scaleHold) ([]int, int, error) {
		var pids []string
		seen := map[int64]bool{}
		for _, h := range holds {
			if !seen[h.session] {
				seen[h.session] = true
				pids = append(pids, strconv.FormatInt(h.session, 10))
			}
		}
		const q = "SELECT pid, (classid::bigint << 32) | objid::bigint FROM pg_locks" +
			" WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = ANY (string_to_array($1, ',')::int[])"
		arg := strings.Join(pids, ",")
		r, err := db.QueryContext(ctx, q, arg)
		if err != nil {
			return nil, len(q) + len(arg), err
		}
		defer r.Close()
		shown := make(map[[2]int64]bool, len(holds))
		for r.Next() {
			var k [2]int64
			if err := r.Scan(&k[0], &k[1]); err != nil {
				return nil, 0, err
			}
			shown[k] = true
		}
		var lost []int
		for i, h := range holds {
			if !shown[[2]int64{h.session, h.key}] {
				lost = append(lost, i)
			}
		}
		return lost, len(q) + len(arg), r.Err()
	}},
	{"anti-join: unnest($1, $2) NOT IN pg_locks", func(ctx context.Context, db *sql.DB, holds []scaleHold) ([]int, int, error) {
		pids := make([]string, len(holds))
		keys := make([]string, len(holds))
		for i, h := range holds {
			pids[i], keys[i] = strconv.FormatInt(h.session, 10), strconv.FormatInt(h.key, 10)
		}
		a, k := "{"+strings.Join(pids, ",")+"}", "{"+strings.Join(keys, ",")+"}"
		return lostRows(ctx, db, pgAntiJoinCheck, len(pgAntiJoinCheck)+len(a)+len(k), a, k)
	}},
}

// sessionsForm asks only whether each hold's session is still there: q
// lists the ids in $1 (a comma-separated list) that the server shows. It
// finds a killed, reaped or dropped session, not a lock released by SQL
// on a live session, so its check of TestLossCheckScale's released hold
// is expected to fail; it is measured as the cheap half of a two-tier
// check.
func sessionsForm(name, q string) checkForm {
	return checkForm{name, func(ctx context.Context, db *sql.DB, holds []scaleHold) ([]int, int, error) {
		var ids []string
		seen := map[int64]bool{}
		for _, h := range holds {
			if !seen[h.session] {
				seen[h.session] = true
				ids = append(ids, strconv.FormatInt(h.session, 10))
			}
		}
		arg := strings.Join(ids, ",")
		q := strings.Replace(q, "$1", arg, 1)
		r, err := db.QueryContext(ctx, q)
		if err != nil {
			return nil, len(q), err
		}
		defer r.Close()
		alive := map[int64]bool{}
		for r.Next() {
			var id int64
			if err := r.Scan(&id); err != nil {
				return nil, len(q), err
			}
			alive[id] = true
		}
		var lost []int
		for i, h := range holds {
			if !alive[h.session] {
				lost = append(lost, i)
			}
		}
		return lost, len(q), r.Err()
	}}
}

// pgAntiJoinCheck returns the 0-based index of each hold ($1 pids, $2
// keys) that pg_locks does not show granted to its pid.
const pgAntiJoinCheck = "SELECT h.i - 1 FROM unnest($1::int[], $2::bigint[]) WITH ORDINALITY h(pid, k, i)" +
	" LEFT JOIN (SELECT pid, (classid::bigint << 32) | objid::bigint AS k FROM pg_locks" +
	" WHERE locktype = 'advisory' AND granted AND objsubid = 1) l ON l.pid = h.pid AND l.k = h.k WHERE l.pid IS NULL"

// lostRows runs a statement that returns the indexes of the lost holds.
func lostRows(ctx context.Context, db *sql.DB, q string, sent int, args ...any) ([]int, int, error) {
	r, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, sent, err
	}
	defer r.Close()
	var lost []int
	for r.Next() {
		var i int
		if err := r.Scan(&i); err != nil {
			return nil, sent, err
		}
		lost = append(lost, i)
	}
	return lost, sent, r.Err()
}

// tableCheckForm is the proposal: the names live in a temporary table of
// the monitor's own control session, which each round brings up to date
// with the holds added and removed since the last (one INSERT and one
// DELETE, only when there are any; here only added), and then asks with a
// statement of constant text which rows the server does not show held by
// their session. A new control session starts from an empty table.
//
// It also returns a function that asks the server how long the check
// statement takes (SHOW PROFILES on MariaDB, EXPLAIN ANALYZE's execution
// time on PostgreSQL), without the round trip.
func (b *testDB) tableCheckForm(t *testing.T, db *sql.DB) (checkForm, func() time.Duration) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("Conn: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	create := "CREATE TEMPORARY TABLE dlock_holds (i INT PRIMARY KEY, name VARBINARY(3072) NOT NULL, s BIGINT NOT NULL)"
	check := "SELECT i FROM dlock_holds WHERE NOT IS_USED_LOCK(name) <=> s"
	if b.Dialect == dialectPostgres {
		create = "CREATE TEMPORARY TABLE dlock_holds (i int PRIMARY KEY, pid int NOT NULL, k bigint NOT NULL)"
		check = "SELECT h.i FROM dlock_holds h LEFT JOIN (SELECT pid, (classid::bigint << 32) | objid::bigint AS k FROM pg_locks" +
			" WHERE locktype = 'advisory' AND granted AND objsubid = 1) l ON l.pid = h.pid AND l.k = h.k WHERE l.pid IS NULL"
	}
	if _, err := conn.ExecContext(ctx, create); err != nil {
		t.Fatalf("%s: %v", create, err)
	}
	known := 0 // holds[:known] are in the table
	serverTime := func() time.Duration {
		t.Helper()
		var times []time.Duration
		if b.Dialect == dialectPostgres {
			q := "EXPLAIN (ANALYZE, FORMAT JSON) " + check
			for range 5 {
				var plan string
				if err := conn.QueryRowContext(ctx, q).Scan(&plan); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				_, rest, ok := strings.Cut(plan, `"Execution Time":`)
				f := strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || r == '}' || r == '\n' || r == ' ' })
				if !ok || len(f) == 0 {
					t.Fatalf("%s: no Execution Time in %s", q, plan)
				}
				ms, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				times = append(times, time.Duration(ms*float64(time.Millisecond)))
			}
		} else {
			// The session's profiling (SHOW PROFILES): the server's time
			// for the whole statement, parsing included.
			for _, q := range []string{"SET SESSION profiling = 1", check, check, check, check, check, "SET SESSION profiling = 0"} {
				if _, err := conn.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			r, err := conn.QueryContext(ctx, "SHOW PROFILES")
			if err != nil {
				t.Fatalf("SHOW PROFILES: %v", err)
			}
			for r.Next() {
				var id int
				var secs float64
				var q string
				if err := r.Scan(&id, &secs, &q); err != nil {
					t.Fatalf("SHOW PROFILES: %v", err)
				}
				if q == check {
					times = append(times, time.Duration(secs*float64(time.Second)))
				}
			}
			_ = r.Close()
			if len(times) < 5 {
				t.Fatalf("SHOW PROFILES: %d rows of the check, want 5", len(times))
			}
			times = times[len(times)-5:]
		}
		slices.Sort(times)
		return times[2].Round(10 * time.Microsecond)
	}
	return checkForm{"table: temp table of the control session", func(ctx context.Context, _ *sql.DB, holds []scaleHold) ([]int, int, error) {
		sent := 0
		if known < len(holds) {
			var q strings.Builder
			q.WriteString("INSERT INTO dlock_holds VALUES ")
			for i := known; i < len(holds); i++ {
				if i > known {
					q.WriteString(", ")
				}
				h := holds[i]
				if b.Dialect == dialectPostgres {
					fmt.Fprintf(&q, "(%d, %d, %d)", i, h.session, h.key)
				} else {
					fmt.Fprintf(&q, "(%d, X'%x', %d)", i, h.name, h.session)
				}
			}
			t0 := time.Now()
			if _, err := conn.ExecContext(ctx, q.String()); err != nil {
				return nil, q.Len(), err
			}
			t.Logf("table: %d holds added in one INSERT of %d bytes: %v", len(holds)-known, q.Len(), time.Since(t0).Round(10*time.Microsecond))
			known, sent = len(holds), q.Len()
		}
		r, err := conn.QueryContext(ctx, check)
		if err != nil {
			return nil, sent + len(check), err
		}
		defer r.Close()
		var lost []int
		for r.Next() {
			var i int
			if err := r.Scan(&i); err != nil {
				return nil, 0, err
			}
			lost = append(lost, i)
		}
		slices.Sort(lost)
		return lost, sent + len(check), r.Err()
	}}, serverTime
}

// preparedCheckForm is the other proposal for MySQL and MariaDB, one that
// writes nothing (a temporary table's changes go to the binary log when
// binlog_format is STATEMENT or MIXED, MariaDB's default): the names stay
// in statements prepared on the control session, one per chunk of
// preparedChunk holds, which each round only executes (a packet of a few
// bytes each). Each returns one short string, the 0-based indexes of its
// lost holds joined by commas (CONCAT_WS skips the NULLs of the holds that
// are held). A chunk is prepared again when its holds change, so a change
// costs one chunk, not every hold.
func preparedCheckForm(t *testing.T, db *sql.DB) checkForm {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("Conn: %v", err)
	}
	type chunk struct {
		stmt *sql.Stmt
		n    int // holds in it
	}
	var chunks []chunk
	t.Cleanup(func() {
		for _, c := range chunks {
			_ = c.stmt.Close()
		}
		_ = conn.Close()
	})
	name := fmt.Sprintf("prepared: %d-hold chunks, EXECUTE each", preparedChunk)
	return checkForm{name, func(ctx context.Context, _ *sql.DB, holds []scaleHold) ([]int, int, error) {
		sent, prepared, t0 := 0, 0, time.Now()
		for c := 0; c*preparedChunk < len(holds); c++ {
			lo, hi := c*preparedChunk, min((c+1)*preparedChunk, len(holds))
			if c < len(chunks) && chunks[c].n == hi-lo {
				continue
			}
			var q strings.Builder
			q.WriteString("SELECT CONCAT_WS(','")
			for i := lo; i < hi; i++ {
				fmt.Fprintf(&q, ", IF(IS_USED_LOCK(_utf8mb4 X'%x') <=> %d, NULL, %d)", holds[i].name, holds[i].session, i)
			}
			q.WriteString(")")
			stmt, err := conn.PrepareContext(ctx, q.String())
			if err != nil {
				return nil, sent, err
			}
			if c < len(chunks) {
				_ = chunks[c].stmt.Close()
				chunks[c] = chunk{stmt, hi - lo}
			} else {
				chunks = append(chunks, chunk{stmt, hi - lo})
			}
			sent += q.Len()
			prepared += hi - lo
		}
		if prepared > 0 {
			t.Logf("prepared: %d holds prepared in %d bytes: %v", prepared, sent, time.Since(t0).Round(10*time.Microsecond))
		}
		var lost []int
		for _, c := range chunks {
			var list string
			if err := c.stmt.QueryRowContext(ctx).Scan(&list); err != nil {
				return nil, sent, err
			}
			for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' }) {
				i, err := strconv.Atoi(f)
				if err != nil {
					return nil, sent, err
				}
				lost = append(lost, i)
			}
			sent += 10 // COM_STMT_EXECUTE: a header, the statement id, flags
		}
		return lost, sent, nil
	}}
}

// preparedChunk is the number of holds per prepared statement.
const preparedChunk = 500
