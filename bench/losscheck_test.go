package bench

// BenchmarkLossCheck: one round of the loss check at 100, 1,000 and
// 10,000 holds on 100 sessions: on MariaDB and MySQL dlock's statement
// against v0.2's; on PostgreSQL, where dlock keeps v0.2's statement, against
// the anti-join it measured and did not take. The
// monitor that sends it is unexported, so the benchmark sends the same
// SQL with the same arguments on a control session of its own;
// TestLossCheckSQLIsDlocks checks, on the wire, that dlock sends this
// text.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/gormdlock/dlock"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// lcMySQLSQL and lcPgSQL are dlock's check statements (holding.go).
const (
	lcMySQLSQL = "SELECT j.b + j.i - 1, j.s IN (SELECT ID FROM information_schema.PROCESSLIST)" +
		" FROM JSON_TABLE(?, '$[*]' COLUMNS (s BIGINT PATH '$[0]', b BIGINT PATH '$[1]'," +
		" NESTED PATH '$[2][*]' COLUMNS (i FOR ORDINALITY, n VARCHAR(64) CHARACTER SET utf8mb4 PATH '$'))) j" +
		" WHERE NOT (IS_USED_LOCK(j.n) <=> j.s)"
	lcPgAntiJoinSQL = "SELECT h.i - 1, h.pid IN (SELECT pid FROM pg_stat_activity)" +
		" FROM unnest($1::int[], $2::bigint[], $3::bool[]) WITH ORDINALITY h(pid, k, shared, i)" +
		" LEFT JOIN (SELECT pid, (classid::bigint << 32) | objid::bigint AS k, mode = 'ShareLock' AS shared FROM pg_locks" +
		" WHERE locktype = 'advisory' AND granted AND objsubid = 1) l ON l.pid = h.pid AND l.k = h.k AND l.shared = h.shared" +
		" WHERE l.pid IS NULL"
	lcMySQLChunk = 256 << 10 // bytes of JSON per statement, as dlock
	// The anti-join: the holds as three array arguments, only the lost
	// ones returned. Measured, not taken: at 10,000 holds the server
	// spends more on it than on listing the locks.
	lcPgSQL = "SELECT pid, (classid::bigint << 32) | objid::bigint, mode = 'ShareLock' FROM pg_locks" +
		" WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = ANY (string_to_array($1, ',')::int[])" +
		" UNION ALL SELECT pid, NULL, NULL FROM pg_stat_activity WHERE pid = ANY (string_to_array($1, ',')::int[])"
)

// lcHold is one watched hold: its session, MySQL name, PostgreSQL key.
type lcHold struct {
	session int64
	name    string
	key     int64
}

// lcSessions is how many sessions hold the locks.
const lcSessions = 100

func BenchmarkLossCheck(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		ctx := context.Background()
		db, err := s.open(nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		sessions := lcSessions
		if s.dialect == "postgres" {
			sessions = min(sessions, pgFreeSlots(b, db)-4)
		}
		db.SetMaxOpenConns(sessions + 1)
		conns := make([]*sql.Conn, sessions)
		ids := make([]int64, sessions)
		for i := range conns {
			c, err := db.Conn(ctx)
			if err != nil {
				b.Fatalf("session %d: %v", i, err)
			}
			defer c.Close()
			q := "SELECT CONNECTION_ID()"
			if s.dialect == "postgres" {
				q = "SELECT pg_backend_pid()"
			}
			if err := c.QueryRowContext(ctx, q).Scan(&ids[i]); err != nil {
				b.Fatal(err)
			}
			conns[i] = c
		}
		ctl, err := db.Conn(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer ctl.Close()
		serverCPU := lcServerCPU(b, s.name, ctl)
		var holds []lcHold
		for _, n := range []int{100, 1000, 10000} {
			per := make([][]lcHold, sessions)
			for i := len(holds); i < n; i++ {
				name := lockName("lc", i)
				h := lcHold{session: ids[i%sessions], name: name, key: pgKey(name)}
				per[i%sessions] = append(per[i%sessions], h)
				holds = append(holds, h)
			}
			for i, hs := range per {
				if len(hs) > 0 {
					lcTake(b, s.dialect, conns[i], hs)
				}
			}
			forms := []string{"dlock", "v0.2"}
			if s.dialect == "postgres" {
				forms = []string{"dlock", "anti-join"}
			}
			for _, form := range forms {
				b.Run(fmt.Sprintf("holds=%d/check=%s", n, form), func(b *testing.B) {
					round := lcRound(s.dialect, form)
					if lost, _, err := round(ctx, ctl, holds); err != nil || lost != 0 {
						b.Fatalf("check: %d lost, %v; want none", lost, err)
					}
					cpu0 := cpuTime()
					var server0 time.Duration
					if serverCPU != nil {
						server0 = serverCPU()
					}
					var sqlBytes, argBytes int
					for b.Loop() {
						lost, sent, err := round(ctx, ctl, holds)
						if err != nil || lost != 0 {
							b.Fatalf("check: %d lost, %v; want none", lost, err)
						}
						sqlBytes, argBytes = sent[0], sent[1]
					}
					cpu := cpuTime() - cpu0
					b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "client-cpu-ms/round")
					if serverCPU != nil {
						b.ReportMetric(float64((serverCPU()-server0).Microseconds())/1000/float64(b.N), "server-cpu-ms/round")
					}
					b.ReportMetric(float64(sessions), "sessions")
					b.ReportMetric(float64(sqlBytes), "sql-bytes")
					b.ReportMetric(float64(argBytes), "arg-bytes")
				})
			}
		}
	})
}

// pgFreeSlots returns how many more sessions the server takes.
func pgFreeSlots(b *testing.B, db *sql.DB) int {
	var free int
	err := db.QueryRow("SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int" +
		" - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')").Scan(&free)
	if err != nil {
		b.Fatal(err)
	}
	return free
}

// lcTake has conn take every lock of hs, 500 per statement.
func lcTake(b *testing.B, dialect string, conn *sql.Conn, hs []lcHold) {
	for len(hs) > 500 {
		lcTake(b, dialect, conn, hs[:500])
		hs = hs[500:]
	}
	var q string
	if dialect == "postgres" {
		keys := make([]string, len(hs))
		for i, h := range hs {
			keys[i] = strconv.FormatInt(h.key, 10)
		}
		q = "SELECT count(pg_advisory_lock(k)) FROM unnest('{" + strings.Join(keys, ",") + "}'::bigint[]) k"
	} else {
		parts := make([]string, len(hs))
		for i, h := range hs {
			parts[i] = "GET_LOCK(X'" + hex.EncodeToString([]byte(h.name)) + "', 0)"
		}
		q = "SELECT " + strings.Join(parts, " + ")
	}
	var got int
	if err := conn.QueryRowContext(context.Background(), q).Scan(&got); err != nil || got != len(hs) {
		b.Fatalf("taking %d locks: %d, %v", len(hs), got, err)
	}
}

// lcRoundFunc runs one check round; it returns how many holds the server
// does not show held, and the bytes of SQL text and of arguments sent.
type lcRoundFunc func(ctx context.Context, c *sql.Conn, holds []lcHold) (lost int, sent [2]int, err error)

func lcRound(dialect, form string) lcRoundFunc {
	switch {
	case dialect == "postgres" && form == "dlock":
		return lcPgRound
	case dialect == "postgres":
		return lcPgAntiJoinRound
	case form == "dlock":
		return lcMySQLRound
	}
	return lcMySQLV02Round
}

// lcPrepared holds the statement mysqlBackend.holding prepares once per
// control connection, here once per control session of the benchmark.
var lcPrepared = map[*sql.Conn]*sql.Stmt{}

// lcMySQLRound is mysqlBackend.holding: the holds grouped by session, as
// ASCII JSON, one execution of the prepared statement per 256 KiB.
func lcMySQLRound(ctx context.Context, c *sql.Conn, holds []lcHold) (int, [2]int, error) {
	order := lcBySession(holds)
	st, ok := lcPrepared[c]
	if !ok {
		var err error
		if st, err = c.PrepareContext(ctx, lcMySQLSQL); err != nil {
			return 0, [2]int{}, err
		}
		lcPrepared[c] = st
	}
	sent := [2]int{len(lcMySQLSQL), 0}
	doc := make([]byte, 0, min(lcMySQLChunk+1024, 64*len(holds)+64))
	lost := 0
	for next := 0; next < len(order); {
		doc, next = lcMySQLDoc(doc[:0], holds, order, next)
		sent[1] += len(doc)
		rows, err := st.QueryContext(ctx, string(doc))
		n, err := lcCount(rows, err)
		if err != nil {
			return 0, sent, err
		}
		lost += n
	}
	return lost, sent, nil
}

func lcMySQLDoc(doc []byte, holds []lcHold, order []int, from int) ([]byte, int) {
	doc = append(doc, '[')
	p := from
	for p < len(order) && (p == from || len(doc) < lcMySQLChunk) {
		s := holds[order[p]].session
		if p > from {
			doc = append(doc, ',')
		}
		doc = append(doc, '[')
		doc = strconv.AppendInt(doc, s, 10)
		doc = append(doc, ',')
		doc = strconv.AppendInt(doc, int64(p), 10)
		doc = append(doc, ",["...)
		for first := p; p < len(order) && holds[order[p]].session == s && (p == first || len(doc) < lcMySQLChunk); p++ {
			if p > first {
				doc = append(doc, ',')
			}
			doc = lcJSONName(doc, holds[order[p]].name)
		}
		doc = append(doc, "]]"...)
	}
	return append(doc, ']'), p
}

func lcJSONName(b []byte, name string) []byte {
	const hexDigits = "0123456789abcdef"
	u := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
	}
	b = append(b, '"')
	for _, r := range name {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r >= 0x20 && r < 0x7f:
			b = append(b, byte(r))
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			b = u(u(b, r1), r2)
		default:
			b = u(b, r)
		}
	}
	return append(b, '"')
}

func lcBySession(holds []lcHold) []int {
	count := make(map[int64]int)
	var sessions []int64
	for _, h := range holds {
		if count[h.session] == 0 {
			sessions = append(sessions, h.session)
		}
		count[h.session]++
	}
	slot := make(map[int64]int, len(sessions))
	n := 0
	for _, s := range sessions {
		slot[s] = n
		n += count[s]
	}
	order := make([]int, len(holds))
	for i, h := range holds {
		order[slot[h.session]] = i
		slot[h.session]++
	}
	return order
}

// lcPgAntiJoinRound sends the holds as three array literals (text).
func lcPgAntiJoinRound(ctx context.Context, c *sql.Conn, holds []lcHold) (int, [2]int, error) {
	p := make([]byte, 0, 8*len(holds)+2)
	k := make([]byte, 0, 21*len(holds)+2)
	m := make([]byte, 0, 2*len(holds)+2)
	p, k, m = append(p, '{'), append(k, '{'), append(m, '{')
	for i, h := range holds {
		if i > 0 {
			p, k, m = append(p, ','), append(k, ','), append(m, ',')
		}
		p = strconv.AppendInt(p, h.session, 10)
		k = strconv.AppendInt(k, h.key, 10)
		m = append(m, 'f')
	}
	p, k, m = append(p, '}'), append(k, '}'), append(m, '}')
	sent := [2]int{len(lcPgAntiJoinSQL), len(p) + len(k) + len(m)}
	rows, err := c.QueryContext(ctx, lcPgAntiJoinSQL, string(p), string(k), string(m))
	n, err := lcCount(rows, err)
	return n, sent, err
}

// lcCount reads the rows of a check statement: (position, session alive).
func lcCount(rows *sql.Rows, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			p     int
			alive sql.NullBool
		)
		if err := rows.Scan(&p, &alive); err != nil {
			return 0, err
		}
		n++
	}
	return n, rows.Err()
}

// lcMySQLV02Round is v0.2's check: IS_USED_LOCK of every name in the
// statement's text, and the live sessions among the holders' ids.
func lcMySQLV02Round(ctx context.Context, c *sql.Conn, holds []lcHold) (int, [2]int, error) {
	col := make(map[string]int)
	ids := make(map[int64]bool)
	var q, in strings.Builder
	q.WriteString("SELECT ")
	for _, h := range holds {
		if !ids[h.session] {
			if len(ids) > 0 {
				in.WriteString(",")
			}
			ids[h.session] = true
			in.WriteString(strconv.FormatInt(h.session, 10))
		}
		lit := "_utf8mb4 X'" + hex.EncodeToString([]byte(h.name)) + "'"
		if _, ok := col[lit]; ok {
			continue
		}
		col[lit] = len(col)
		q.WriteString("IS_USED_LOCK(" + lit + "), ")
	}
	q.WriteString("(SELECT GROUP_CONCAT(ID) FROM information_schema.PROCESSLIST WHERE ID IN (" + in.String() + "))")
	owners := make([]sql.NullInt64, len(col))
	dest := make([]any, len(col)+1)
	for i := range owners {
		dest[i] = &owners[i]
	}
	var alive sql.NullString
	dest[len(col)] = &alive
	sent := [2]int{q.Len(), 0}
	if err := c.QueryRowContext(ctx, q.String()).Scan(dest...); err != nil {
		return 0, sent, err
	}
	living := make(map[int64]bool)
	for _, f := range strings.Split(alive.String, ",") {
		if id, err := strconv.ParseInt(f, 10, 64); err == nil {
			living[id] = true
		}
	}
	lost := 0
	for _, h := range holds {
		o := owners[col["_utf8mb4 X'"+hex.EncodeToString([]byte(h.name))+"'"]]
		if !o.Valid || o.Int64 != h.session {
			lost++
		}
	}
	return lost, sent, nil
}

// lcPgRound is pgBackend.holding (as in v0.2): every advisory lock of the
// holders' pids, compared here.
func lcPgRound(ctx context.Context, c *sql.Conn, holds []lcHold) (int, [2]int, error) {
	type held struct {
		pid, key int64
		shared   bool
	}
	pids := make([]string, 0, len(holds))
	seen := make(map[int64]bool)
	for _, h := range holds {
		if !seen[h.session] {
			seen[h.session] = true
			pids = append(pids, strconv.FormatInt(h.session, 10))
		}
	}
	arg := strings.Join(pids, ",")
	sent := [2]int{len(lcPgSQL), len(arg)}
	rows, err := c.QueryContext(ctx, lcPgSQL, arg)
	if err != nil {
		return 0, sent, err
	}
	defer rows.Close()
	shown := make(map[held]bool)
	for rows.Next() {
		var (
			pid    int64
			key    sql.NullInt64
			shared sql.NullBool
		)
		if err := rows.Scan(&pid, &key, &shared); err != nil {
			return 0, sent, err
		}
		if key.Valid {
			shown[held{pid, key.Int64, shared.Bool}] = true
		}
	}
	lost := 0
	for _, h := range holds {
		if !shown[held{h.session, h.key, false}] {
			lost++
		}
	}
	return lost, sent, rows.Err()
}

// lcServerCPU returns a function that reads the CPU time the server has
// spent on session c so far, from /proc: the backend process of a
// PostgreSQL session (pg_backend_pid()), the thread of a MariaDB session
// (PROCESSLIST.TID; MySQL: performance_schema.threads.THREAD_OS_ID). It
// works for a server on this machine; elsewhere it returns nil.
func lcServerCPU(b *testing.B, name string, c *sql.Conn) func() time.Duration {
	q := "SELECT pg_backend_pid()"
	switch name {
	case "mariadb":
		q = "SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"
	case "mysql":
		q = "SELECT THREAD_OS_ID FROM performance_schema.threads WHERE PROCESSLIST_ID = CONNECTION_ID()"
	}
	var tid int64
	if err := c.QueryRowContext(context.Background(), q).Scan(&tid); err != nil {
		b.Logf("server CPU not measured: %s: %v", q, err)
		return nil
	}
	path := fmt.Sprintf("/proc/%d/schedstat", tid)
	read := func() (time.Duration, error) {
		st, err := os.ReadFile(path) // nanoseconds on a CPU, waiting, time slices
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseInt(strings.Fields(string(st))[0], 10, 64)
		return time.Duration(ns), err
	}
	if _, err := read(); err != nil {
		b.Logf("server CPU not measured: %v", err)
		return nil
	}
	return func() time.Duration {
		d, _ := read()
		return d
	}
}

// TestLossCheckSQLIsDlocks watches what dlock's monitor writes on the
// wire while a lock is held, and finds BenchmarkLossCheck's copy of the
// check statement in it.
func TestLossCheckSQLIsDlocks(t *testing.T) {
	for _, s := range servers() {
		if s.err != nil {
			t.Logf("skipping %s: %v", s.dialect, s.err)
			continue
		}
		t.Run("db="+s.name, func(t *testing.T) {
			var (
				mu   sync.Mutex
				sent bytes.Buffer
			)
			c := &counter{tap: func(p []byte) {
				mu.Lock()
				sent.Write(p)
				mu.Unlock()
			}}
			db, err := s.open(c)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var dialector gorm.Dialector = postgres.New(postgres.Config{Conn: db})
			want := lcPgSQL
			if s.dialect == "mysql" {
				dialector, want = mysql.New(mysql.Config{Conn: db}), lcMySQLSQL
			}
			gdb, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
			if err != nil {
				t.Fatal(err)
			}
			if err := gdb.Use(dlock.Plugin{CheckInterval: 20 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			err = dlock.WithLock(context.Background(), gdb, lockName("lc-wire"), func(*gorm.DB) error {
				time.Sleep(300 * time.Millisecond)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !bytes.Contains(sent.Bytes(), []byte(want)) {
				t.Fatalf("dlock's monitor did not send the benchmark's check statement:\n%s", want)
			}
		})
	}
}
