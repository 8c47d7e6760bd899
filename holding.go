package dlock

import (
	"context"
	"database/sql"
	"strconv"
	"unicode/utf16"
)

// The loss check (see monitor): one statement per round whose text is the
// same for any number of holds. The holds travel as argument data, and
// the server returns only the holds it does not show held by their
// session, each with whether that session is still there. A round with
// nothing lost reads no rows.

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

// holding runs mysqlHoldingSQL, prepared on the server so that the text
// sent and parsed is the same whatever the driver's interpolateParams,
// once per mysqlCheckChunk bytes of holds.
func (*mysqlBackend) holding(ctx context.Context, c *sql.Conn, holds []watchedHold) ([]holdStatus, error) {
	order := bySession(holds)
	st, err := c.PrepareContext(ctx, mysqlHoldingSQL)
	if err != nil {
		return nil, err
	}
	defer st.Close()
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

// pgHoldingSQL checks the holds given as three array literals of the
// same length, in the same order: $1 the backend pids, $2 the bigint keys,
// $3 whether each is shared. It returns the position of each hold that
// pg_locks does not show granted to its pid in its mode, and whether that
// backend is still there. PostgreSQL shows an advisory lock on a bigint
// key as classid = high 32 bits, objid = low 32 bits, objsubid = 1 (a key
// of two int4 has objsubid = 2, and is not dlock's). The arrays travel as
// text ('{1,2}'), which every driver can send: pgx sends a string
// argument in text format whatever the parameter's type.
const pgHoldingSQL = "SELECT h.i - 1, h.pid IN (SELECT pid FROM pg_stat_activity)" +
	" FROM unnest($1::int[], $2::bigint[], $3::bool[]) WITH ORDINALITY h(pid, k, shared, i)" +
	" LEFT JOIN (SELECT pid, (classid::bigint << 32) | objid::bigint AS k, mode = 'ShareLock' AS shared FROM pg_locks" +
	" WHERE locktype = 'advisory' AND granted AND objsubid = 1) l ON l.pid = h.pid AND l.k = h.k AND l.shared = h.shared" +
	" WHERE l.pid IS NULL"

func (pgBackend) holding(ctx context.Context, c *sql.Conn, holds []watchedHold) ([]holdStatus, error) {
	pids, keys, modes := pgHoldsArrays(holds)
	out := make([]holdStatus, len(holds))
	rows, err := c.QueryContext(ctx, pgHoldingSQL, pids, keys, modes)
	if err := readLost(rows, err, nil, out); err != nil {
		return nil, err
	}
	return out, nil
}

// pgHoldsArrays returns the three array literals of pgHoldingSQL.
func pgHoldsArrays(holds []watchedHold) (pids, keys, modes string) {
	p := make([]byte, 0, 8*len(holds)+2)
	k := make([]byte, 0, 21*len(holds)+2)
	m := make([]byte, 0, 2*len(holds)+2)
	p, k, m = append(p, '{'), append(k, '{'), append(m, '{')
	for i, h := range holds {
		if i > 0 {
			p, k, m = append(p, ','), append(k, ','), append(m, ',')
		}
		p = strconv.AppendInt(p, h.sessionID, 10)
		k = strconv.AppendInt(k, h.dbKey.(int64), 10)
		if h.shared {
			m = append(m, 't')
		} else {
			m = append(m, 'f')
		}
	}
	return string(append(p, '}')), string(append(k, '}')), string(append(m, '}'))
}

// readLost reads the rows of a check statement and marks in out each
// hold they name: holdDropped when its session is alive, holdSessionEnd
// when not. A position p is order[p]'s hold, or hold p when order is nil.
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
		if order != nil {
			p = order[p]
		}
		if alive.Bool {
			out[p] = holdDropped
		} else {
			out[p] = holdSessionEnd
		}
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
