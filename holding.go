package dlock

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"unicode/utf16"
)

// The loss check (see monitor): one statement per round whose text is the
// same for any number of holds. On MySQL and MariaDB the holds travel as
// argument data, and the server returns only the holds it does not show
// held by their session; on PostgreSQL the server lists the locks of the
// holders' backends.

// controlConn is the loss monitor's control connection, with the check
// statements prepared on it, which live as long as it does.
type controlConn struct {
	*sql.Conn
	prepared map[string]*sql.Stmt
	byName   bool // the server has no JSON_TABLE: mysqlHoldingByName
}

// prepare returns q prepared on c, preparing it at its first use. The
// prepare blocks until the server answers or ctx ends.
func (c *controlConn) prepare(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := c.prepared[q]; ok {
		return st, nil
	}
	st, err := c.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if c.prepared == nil {
		c.prepared = make(map[string]*sql.Stmt)
	}
	c.prepared[q] = st
	return st, nil
}

// Close closes the prepared statements and gives the connection back to
// the pool.
func (c *controlConn) Close() error {
	for _, st := range c.prepared {
		_ = st.Close()
	}
	c.prepared = nil
	return c.Conn.Close()
}

// mysqlHoldingSQL checks the holds of the JSON document ?, which lists
// them grouped by session: [[session id, position of its first hold,
// [name, ...]], ...]. It returns the position of each hold whose name
// IS_USED_LOCK does not show held by its session, and whether that
// session is in the processlist (the pool's user sees its own sessions).
// The names arrive as JSON strings, decoded into utf8mb4, so IS_USED_LOCK
// sees the same characters as the lock statements' _utf8mb4 literal;
// the document itself is ASCII (see appendJSONName), so the connection's
// character set does not matter. NOT (...) keeps its meaning under the
// HIGH_NOT_PRECEDENCE SQL mode. JSON_TABLE needs MariaDB 10.6 or MySQL 8.0.
const mysqlHoldingSQL = "SELECT j.b + j.i - 1, j.s IN (SELECT ID FROM information_schema.PROCESSLIST)" +
	" FROM JSON_TABLE(?, '$[*]' COLUMNS (s BIGINT PATH '$[0]', b BIGINT PATH '$[1]'," +
	" NESTED PATH '$[2][*]' COLUMNS (i FOR ORDINALITY, n VARCHAR(64) CHARACTER SET utf8mb4 PATH '$'))) j" +
	" WHERE NOT (IS_USED_LOCK(j.n) <=> j.s)"

// mysqlCheckChunk bounds the JSON document of one check statement, far
// below any max_allowed_packet a server takes by default (MariaDB 16 MiB,
// MySQL 64 MiB): 10,000 holds of 20-character names take about 230 KB.
// More holds are checked by the same statement run again.
const mysqlCheckChunk = 256 << 10

// holding runs mysqlHoldingSQL, once per mysqlCheckChunk bytes of holds.
// It runs prepared on the server, once per control connection: the text
// is neither sent nor parsed again, and a driver's interpolateParams does
// not put the document into it.
//
// A server older than the versions dlock supports (MariaDB 10.5, MySQL
// 5.7) has no JSON_TABLE and refuses the statement as a syntax error; on
// it the check names every hold in its text, as v0.2 did, rather than
// fail every round and report every hold lost.
func (*mysqlBackend) holding(ctx context.Context, c *controlConn, holds []watchedHold) ([]holdStatus, error) {
	if c.byName {
		return mysqlHoldingByName(ctx, c, holds)
	}
	st, err := c.prepare(ctx, mysqlHoldingSQL)
	if n, ok := mysqlErrNumber(err); ok && n == erParseError {
		c.byName = true
		return mysqlHoldingByName(ctx, c, holds)
	}
	if err != nil {
		return nil, err
	}
	order := bySession(holds)
	out := make([]holdStatus, len(holds))
	doc := make([]byte, 0, min(mysqlCheckChunk+1024, 64*len(holds)+64))
	for next := 0; next < len(order); {
		doc, next = mysqlHoldsDoc(doc[:0], holds, order, next)
		rows, err := st.QueryContext(ctx, string(doc))
		if err := readLost(rows, err, order, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// erParseError is MySQL's and MariaDB's syntax error.
const erParseError = 1064

// mysqlHoldingByName asks IS_USED_LOCK of every name held in one
// statement whose text names them all, and compares the holder's
// connection id with each hold's session; the last column lists which of
// those sessions are still there.
func mysqlHoldingByName(ctx context.Context, c *controlConn, holds []watchedHold) ([]holdStatus, error) {
	col := make(map[string]int)
	ids := make(map[int64]bool)
	var q, in strings.Builder
	q.WriteString("SELECT ")
	for _, h := range holds {
		if !ids[h.sessionID] {
			if len(ids) > 0 {
				in.WriteString(",")
			}
			ids[h.sessionID] = true
			in.WriteString(strconv.FormatInt(h.sessionID, 10))
		}
		lit := h.stmtKey.(*mysqlStmts).lit
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
	if err := c.QueryRowContext(ctx, q.String()).Scan(dest...); err != nil {
		return nil, err
	}
	living := make(map[int64]bool)
	for _, f := range strings.Split(alive.String, ",") {
		if id, err := strconv.ParseInt(f, 10, 64); err == nil {
			living[id] = true
		}
	}
	out := make([]holdStatus, len(holds))
	for i, h := range holds {
		o := owners[col[h.stmtKey.(*mysqlStmts).lit]]
		out[i] = statusOf(o.Valid && o.Int64 == h.sessionID, living[h.sessionID])
	}
	return out, nil
}

// mysqlHoldsDoc appends to doc the JSON document of mysqlHoldingSQL for
// the holds order[from:], up to mysqlCheckChunk bytes (at least one hold),
// and returns it with the position of the first hold left out.
func mysqlHoldsDoc(doc []byte, holds []watchedHold, order []int, from int) ([]byte, int) {
	doc = append(doc, '[')
	p := from
	for p < len(order) && (p == from || len(doc) < mysqlCheckChunk) {
		s := holds[order[p]].sessionID
		if p > from {
			doc = append(doc, ',')
		}
		doc = append(doc, '[')
		doc = strconv.AppendInt(doc, s, 10)
		doc = append(doc, ',')
		doc = strconv.AppendInt(doc, int64(p), 10)
		doc = append(doc, ",["...)
		for first := p; p < len(order) && holds[order[p]].sessionID == s && (p == first || len(doc) < mysqlCheckChunk); p++ {
			if p > first {
				doc = append(doc, ',')
			}
			doc = appendJSONName(doc, holds[order[p]].dbKey.(string))
		}
		doc = append(doc, "]]"...)
	}
	return append(doc, ']'), p
}

// appendJSONName appends name as a JSON string in ASCII: '"', '\\',
// control characters and every character beyond ASCII as \u escapes (a
// lock name has no character above U+FFFF; one would be a surrogate
// pair). A name is valid UTF-8 (see mysqlName).
func appendJSONName(b []byte, name string) []byte {
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

// pgHoldingSQL lists the advisory locks on bigint keys that the backends
// in $1 (a comma-separated list of pids) hold, with the key rebuilt from
// its two halves and whether it is shared, then each of those backends
// that is still there, with a NULL key. PostgreSQL shows an advisory lock
// on a bigint key as classid = high 32 bits, objid = low 32 bits,
// objsubid = 1 (a key of two int4 has objsubid = 2, and is not dlock's).
// Its text is the same for any number of holds, and its argument grows
// with the sessions, not the holds. It returns every lock of those
// backends: at 10,000 holds that costs the server less than sending the
// holds and having it return only the lost ones (an anti-join of an
// unnest of three array arguments with pg_locks; see bench/README.md).
const pgHoldingSQL = "SELECT pid, (classid::bigint << 32) | objid::bigint, mode = 'ShareLock' FROM pg_locks" +
	" WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = ANY (string_to_array($1, ',')::int[])" +
	" UNION ALL SELECT pid, NULL, NULL FROM pg_stat_activity WHERE pid = ANY (string_to_array($1, ',')::int[])"

// holding runs pgHoldingSQL (pgx prepares it once per connection, in its
// statement cache) and compares its rows with the holds.
func (pgBackend) holding(ctx context.Context, c *controlConn, holds []watchedHold) ([]holdStatus, error) {
	type held struct {
		pid    int64
		key    int64
		shared bool
	}
	pids := make([]byte, 0, 8*len(holds))
	seen := make(map[int64]bool)
	for _, h := range holds {
		if !seen[h.sessionID] {
			if len(seen) > 0 {
				pids = append(pids, ',')
			}
			seen[h.sessionID] = true
			pids = strconv.AppendInt(pids, h.sessionID, 10)
		}
	}
	rows, err := c.QueryContext(ctx, pgHoldingSQL, string(pids))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	shown := make(map[held]bool, len(holds))
	alive := make(map[int64]bool, len(seen))
	for rows.Next() {
		var (
			pid    int64
			key    sql.NullInt64
			shared sql.NullBool
		)
		if err := rows.Scan(&pid, &key, &shared); err != nil {
			return nil, err
		}
		if key.Valid {
			shown[held{pid, key.Int64, shared.Bool}] = true
		} else {
			alive[pid] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]holdStatus, len(holds))
	for i, h := range holds {
		out[i] = statusOf(shown[held{h.sessionID, h.dbKey.(int64), h.shared}], alive[h.sessionID])
	}
	return out, nil
}

// statusOf is the status of a hold that the server shows held by its
// session or not, and whose session is alive or not.
func statusOf(held, alive bool) holdStatus {
	switch {
	case held:
		return holdHeld
	case alive:
		return holdDropped
	}
	return holdSessionEnd
}

// readLost reads the rows of mysqlHoldingSQL and marks in out each hold
// they name (position p is hold order[p]): holdDropped when its session
// is alive, holdSessionEnd when not.
func readLost(rows *sql.Rows, err error, order []int, out []holdStatus) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			p     int
			alive sql.NullBool
		)
		if err := rows.Scan(&p, &alive); err != nil {
			return err
		}
		out[order[p]] = statusOf(false, alive.Bool)
	}
	return rows.Err()
}

// bySession returns the positions of holds grouped by session, in the
// order each session first appears.
func bySession(holds []watchedHold) []int {
	count := make(map[int64]int)
	var sessions []int64
	for _, h := range holds {
		if count[h.sessionID] == 0 {
			sessions = append(sessions, h.sessionID)
		}
		count[h.sessionID]++
	}
	slot := make(map[int64]int, len(sessions)) // each session's next slot
	n := 0
	for _, s := range sessions {
		slot[s] = n
		n += count[s]
	}
	order := make([]int, len(holds))
	for i, h := range holds {
		order[slot[h.sessionID]] = i
		slot[h.sessionID]++
	}
	return order
}
