package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// The implementations, in table order, as named in the benchmarks.
var impls = []string{"dlock", "withlock", "raw", "rawctx", "peer"}

func dbsOf(r *results) []string {
	var dbs []string
	for _, db := range []string{"mariadb", "mysql", "postgres"} {
		for name := range r.med {
			if strings.Contains(name+"/", "/db="+db+"/") {
				dbs = append(dbs, db)
				break
			}
		}
	}
	return dbs
}

func dbTitle(db string) string {
	switch db {
	case "mariadb":
		return "MariaDB"
	case "mysql":
		return "MySQL"
	}
	return "PostgreSQL"
}

func peerName(db string) string {
	if db == "postgres" {
		return "go-pglock"
	}
	return "go-mysql-lock"
}

func implLabel(db, impl string) string {
	switch impl {
	case "dlock":
		return "**dlock**"
	case "withlock":
		return "dlock `WithLock` ²"
	case "raw":
		return "raw SQL"
	case "rawctx":
		return "raw SQL, caller's ctx"
	}
	return peerName(db) + " ¹"
}

// fmtNs formats a duration in ns for a table.
func fmtNs(ns float64) string {
	a := math.Abs(ns)
	switch {
	case a >= 1e6:
		return fmt.Sprintf("%.1f ms", ns/1e6)
	case a >= 100e3:
		return fmt.Sprintf("%.0f µs", ns/1e3)
	case a >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}

// fmtNsSigned is fmtNs with a real minus sign.
func fmtNsSigned(ns float64) string { return strings.Replace(fmtNs(ns), "-", "−", 1) }

func fmtRatio(v, base float64) string {
	if base == 0 {
		return ""
	}
	return fmt.Sprintf(" (%.2f×)", v/base)
}

func fmtCount(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	if len(s) > 3 {
		s = s[:len(s)-3] + " " + s[len(s)-3:]
	}
	return s
}

func fmtSigned(ns float64) string {
	s := fmtNs(ns)
	if ns >= 0 {
		s = "+" + s
	}
	return strings.Replace(s, "-", "−", 1)
}

// cell formats the value of one implementation with its ratio to raw.
func cell(r *results, name func(impl string) string, impl, unit string, format func(float64) string) string {
	v, ok := r.get(name(impl), unit)
	if !ok {
		return "—"
	}
	s := format(v)
	if impl == "raw" {
		return s
	}
	if base, ok := r.get(name("raw"), unit); ok {
		s += fmtRatio(v, base)
	}
	return s
}

func writeTables(w io.Writer, r *results) {
	dbs := dbsOf(r)
	if m := r.config["machine"]; m != "" {
		fmt.Fprintf(w, "Machine: %s", m)
		if cpu := r.config["cpu"]; cpu != "" {
			fmt.Fprintf(w, " (%s)", strings.TrimSpace(cpu))
		}
		fmt.Fprintf(w, "; %s", r.config["go"])
		for _, db := range dbs {
			if v := r.config[db]; v != "" {
				v, _, _ = strings.Cut(v, " on ")
				fmt.Fprintf(w, "; %s %s", dbTitle(db), strings.TrimPrefix(v, "PostgreSQL "))
			}
		}
		fmt.Fprint(w, ".\n\n")
	}
	for _, db := range dbs {
		writeMain(w, r, db)
	}
	fmt.Fprint(w, "¹ The peers take a session from the pool for every lock and hold it until the release: "+
		"one connection per held lock. dlock and the raw SQL hold every lock on one pinned session.\n"+
		"Ratios are against raw SQL (the same statements written by hand on the same `*sql.Conn`, "+
		"sent with a context that cannot be cancelled: one round trip per statement and nothing else). "+
		"Hand-off is the waiter's return minus the holder's release return; it can be negative, since the server "+
		"wakes the waiter before the holder reads the reply to its release, so beside it is the difference "+
		"to raw SQL, not a ratio.\n"+
		"² `dlock.WithLock` on the pool: it pins a session per call; dlock keeps its per-session state by physical "+
		"connection, so a pooled connection it has used before pays nothing more.\n\n")
	writeModes(w, r, dbs)
	writeTargets(w, r, dbs)
	writeGrowth(w, r, dbs)
}

func writeMain(w io.Writer, r *results, db string) {
	rt, _ := r.get("RoundTrip/db="+db, "ns/op")
	probe, _ := r.get("Probe/db="+db, "probe-roundtrips/session")
	fmt.Fprintf(w, "### %s\n\n", dbTitle(db))
	fmt.Fprintf(w, "One round trip (`SELECT 1` on a pinned session): %s. The first lock on a new connection costs "+
		"%.0f round trip(s) more, not counted below: dlock's once-per-connection statement (the session id; "+
		"on PostgreSQL the server keepalive instead, pgx knowing the pid) and, on PostgreSQL, pgx preparing the "+
		"try and unlock statements at their first use.\n\n", fmtNs(rt), probe)
	fmt.Fprintln(w, "| | acquire+release | allocs/op | round trips/cycle | 10 000 keys, round-robin | hand-off p50 / p99 | hand-off p50 / p99, `Timeout` | 1 session | 4 sessions | 16 sessions |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	unc := func(keys string) func(string) string {
		return func(impl string) string { return "Uncontended/db=" + db + "/keys=" + keys + "/mode=block/impl=" + impl }
	}
	for _, impl := range impls {
		cols := []string{implLabel(db, impl)}
		cols = append(cols, cell(r, unc("1"), impl, "ns/op", fmtNs))
		cols = append(cols, cell(r, unc("1"), impl, "allocs/op", fmtCount))
		rts := "—"
		if v, ok := r.get(unc("1")(impl), "roundtrips/op"); ok {
			rts = fmt.Sprintf("%.2f", v)
		}
		cols = append(cols, rts)
		cols = append(cols, cell(r, unc("10000"), impl, "ns/op", fmtNs))
		for _, mode := range []string{"block", "timeout"} {
			name := "Handoff/db=" + db + "/mode=" + mode + "/impl="
			p50, ok1 := r.get(name+impl, "p50-ns")
			p99, ok2 := r.get(name+impl, "p99-ns")
			if !ok1 || !ok2 {
				cols = append(cols, "—")
				continue
			}
			s := fmtNsSigned(p50) + " / " + fmtNsSigned(p99)
			if b50, ok := r.get(name+"raw", "p50-ns"); ok && impl != "raw" {
				b99, _ := r.get(name+"raw", "p99-ns")
				s += " (" + fmtSigned(p50-b50) + " / " + fmtSigned(p99-b99) + ")"
			}
			cols = append(cols, s)
		}
		for _, n := range []string{"1", "4", "16"} {
			name := func(impl string) string { return "Contention/db=" + db + "/sessions=" + n + "/impl=" + impl }
			cols = append(cols, cell(r, name, impl, "cycles/s", func(v float64) string { return fmtCount(v) + "/s" }))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cols, " | "))
	}
	fmt.Fprintln(w)
}

func writeModes(w io.Writer, r *results, dbs []string) {
	fmt.Fprintln(w, "### Uncontended cycle by wait mode")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Acquire and release of a free lock on a pinned session, per wait mode, and over 10 000 keys "+
		"(a new `dlock.New` per cycle). The last rows come from `BenchmarkPaired`, which alternates dlock with one "+
		"other series cycle by cycle on the same session (dlock, raw SQL, dlock, raw SQL, ...), so that the two share the same "+
		"background load and each always follows the other: the median of each, and their ratio.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| | | wait (default) | `Timeout(5s)` | `NoWait()` | wait, 10 000 keys |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	cases := []struct{ keys, mode string }{{"1", "block"}, {"1", "timeout"}, {"1", "try"}, {"10000", "block"}}
	for _, db := range dbs {
		for _, impl := range impls {
			cols := []string{dbTitle(db), implLabel(db, impl)}
			for _, c := range cases {
				name := func(impl string) string {
					return "Uncontended/db=" + db + "/keys=" + c.keys + "/mode=" + c.mode + "/impl=" + impl
				}
				s := cell(r, name, impl, "ns/op", fmtNs)
				if a, ok := r.get(name(impl), "allocs/op"); ok {
					s += fmt.Sprintf(", %.0f allocs", a)
				}
				cols = append(cols, s)
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cols, " | "))
		}
		for _, ratio := range []string{"dlock/raw", "dlock/rawctx"} {
			label := "interleaved: dlock / raw SQL"
			if ratio == "dlock/rawctx" {
				label = "interleaved: dlock / raw SQL, caller's ctx"
			}
			cols := []string{dbTitle(db), label}
			for _, c := range cases {
				name := "Paired/db=" + db + "/keys=" + c.keys + "/mode=" + c.mode + "/vs=" + strings.TrimPrefix(ratio, "dlock/")
				v, ok := r.get(name, ratio)
				if !ok {
					cols = append(cols, "—")
					continue
				}
				d, _ := r.get(name, "dlock-ns/cycle")
				raw, _ := r.get(name, strings.TrimPrefix(ratio, "dlock/")+"-ns/cycle")
				cols = append(cols, fmt.Sprintf("**%.2f×** (%s / %s)", v, fmtNs(d), fmtNs(raw)))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cols, " | "))
		}
	}
	fmt.Fprintln(w)
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func writeTargets(w io.Writer, r *results, dbs []string) {
	fmt.Fprintln(w, "### Targets")
	fmt.Fprintln(w)
	head := "| target |"
	sep := "|---|"
	for _, db := range dbs {
		head += " " + dbTitle(db) + " | met |"
		sep += "---|---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	row := func(label string, f func(db string) (string, bool)) {
		s := "| " + label + " |"
		for _, db := range dbs {
			v, ok := f(db)
			s += " " + v + " | " + verdict(ok) + " |"
		}
		fmt.Fprintln(w, s)
	}
	paired := func(keys string) func(db string) (string, bool) {
		return func(db string) (string, bool) {
			v, ok := r.get("Paired/db="+db+"/keys="+keys+"/mode=block/vs=raw", "dlock/raw")
			if !ok {
				return "—", false
			}
			return fmt.Sprintf("%.2f×", v), v <= 1.10
		}
	}
	row("uncontended cycle within 10 % of one round trip per statement (dlock / raw SQL, interleaved)", paired("1"))
	row("the same, round-robin over 10 000 keys", paired("10000"))
	row("client CPU per uncontended cycle within 10 % of raw SQL's (process CPU time, interleaved)", func(db string) (string, bool) {
		v, ok := r.get("Paired/db="+db+"/keys=1/mode=block/vs=raw", "cpu-dlock/raw")
		if !ok {
			return "—", false
		}
		return fmt.Sprintf("%.2f×", v), v <= 1.10
	})
	row("exactly two round trips per uncontended cycle, every wait mode (probe apart)", func(db string) (string, bool) {
		var vs []float64
		for _, m := range []string{"block", "timeout", "try"} {
			if v, ok := r.get("Uncontended/db="+db+"/keys=1/mode="+m+"/impl=dlock", "roundtrips/op"); ok {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			return "—", false
		}
		lo, hi := slices.Min(vs), slices.Max(vs)
		probe, _ := r.get("Probe/db="+db, "probe-roundtrips/session")
		span := fmt.Sprintf("%.3f", lo)
		if hi-lo >= 0.0005 {
			span += fmt.Sprintf("–%.3f", hi)
		}
		return fmt.Sprintf("%s (+%.0f on a new connection)", span, probe), lo >= 1.995 && hi <= 2.005
	})
	row("the same through `WithLock`, which pins a session per call", func(db string) (string, bool) {
		v, ok := r.get("Uncontended/db="+db+"/keys=1/mode=block/impl=withlock", "roundtrips/op")
		if !ok {
			return "—", false
		}
		return fmt.Sprintf("%.3f", v), v >= 1.995 && v <= 2.005
	})
	// withLockPair reads the ratio metric ("a/b", or "cpu-a/b" for client
	// CPU) of BenchmarkWithLockPaired's pair a-b against limit, with the
	// ratio of the floor pair beside it when one is named.
	withLockPair := func(metric string, limit float64, floor, floorText string) func(db string) (string, bool) {
		get := func(db, metric string) (float64, bool) {
			a, b, _ := strings.Cut(strings.TrimPrefix(metric, "cpu-"), "/")
			return r.get("WithLockPaired/db="+db+"/pair="+a+"-"+b, metric)
		}
		return func(db string) (string, bool) {
			v, ok := get(db, metric)
			if !ok {
				return "—", false
			}
			s := fmt.Sprintf("%.2f×", v)
			if f, ok := get(db, floor); floor != "" && ok {
				s += fmt.Sprintf(" (%s: %.2f×)", floorText, f)
			}
			return s, v <= limit
		}
	}
	row("`WithLock` on the pool within 10 % of the same cycle written by hand (`db.Conn`, try, unlock, `Close`; interleaved)",
		withLockPair("withlock/hand", 1.10, "", ""))
	row("`WithLock` on the pool within 5 % of the hand-written cycle on a context the driver does not watch (interleaved)",
		withLockPair("withlock/handquiet", 1.05, "gorm/handquiet", "GORM's own `db.Connection` around the same statements"))
	row("client CPU per `WithLock` cycle within 10 % of that hand-written cycle's",
		withLockPair("cpu-withlock/handquiet", 1.10, "", ""))
	row("`WithLock` on the pool at most 0.95× the Go peer's cycle (go-mysql-lock, go-pglock; interleaved)",
		withLockPair("withlock/peer", 0.95, "handquiet/peer", "the hand-written cycle on a quiet context"))
	row("`WithLock` allocates at most 8 more objects than the hand-written cycle on a context the driver does not watch", func(db string) (string, bool) {
		w, ok := r.get("WithLockAllocs/db="+db+"/series=withlock", "allocs/op")
		h, ok2 := r.get("WithLockAllocs/db="+db+"/series=handquiet", "allocs/op")
		if !ok || !ok2 {
			return "—", false
		}
		s := fmt.Sprintf("%.0f (hand, quiet %.0f", w, h)
		if c, ok := r.get("WithLockAllocs/db="+db+"/series=hand", "allocs/op"); ok {
			s += fmt.Sprintf("; caller's ctx %.0f", c)
		}
		if g, ok := r.get("WithLockAllocs/db="+db+"/series=gorm", "allocs/op"); ok {
			s += fmt.Sprintf("; GORM's `db.Connection` around it %.0f", g)
		}
		return s + ")", w-h <= 8
	})
	contention := func(n string) func(db string) (string, bool) {
		return func(db string) (string, bool) {
			v, ok := r.get("ContentionPaired/db="+db+"/sessions="+n, "dlock/rawctx")
			if !ok {
				return "—", false
			}
			return fmt.Sprintf("%.2f×", v), v >= 0.95
		}
	}
	row("throughput with 4 sessions on one key, against raw SQL with the caller's context (alternating blocks)", contention("4"))
	row("the same with 16 sessions", contention("16"))
	handoff := func(mode string) func(db string) (string, bool) {
		return func(db string) (string, bool) {
			p50, ok := r.get("Handoff/db="+db+"/mode="+mode+"/impl=dlock", "p50-ns")
			rt, ok2 := r.get("RoundTrip/db="+db, "ns/op")
			if !ok || !ok2 {
				return "—", false
			}
			p90, _ := r.get("Handoff/db="+db+"/mode="+mode+"/impl=dlock", "p90-ns")
			return fmt.Sprintf("p50 %s, p90 %s; 1 round trip = %s", fmtNsSigned(p50), fmtNsSigned(p90), fmtNs(rt)), p50 <= rt
		}
	}
	row("hand-off p50 within one round trip of the release, waiting", handoff("block"))
	row("the same with `Timeout`", handoff("timeout"))
	row("no polling: round trips per cycle with 16 sessions on one key", func(db string) (string, bool) {
		v, ok := r.get("Contention/db="+db+"/sessions=16/impl=dlock", "roundtrips/op")
		if !ok {
			return "—", false
		}
		return fmt.Sprintf("%.3f", v), v < 2.05
	})
	row("allocations per uncontended cycle, reported (raw SQL beside)", func(db string) (string, bool) {
		d, ok := r.get("Uncontended/db="+db+"/keys=1/mode=block/impl=dlock", "allocs/op")
		raw, _ := r.get("Uncontended/db="+db+"/keys=1/mode=block/impl=raw", "allocs/op")
		return fmt.Sprintf("%.0f (raw %.0f)", d, raw), ok
	})
	fmt.Fprintln(w)
}

func writeGrowth(w io.Writer, r *results, dbs []string) {
	fmt.Fprintln(w, "### Growth")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Locks held at once on one session: each iteration acquires K distinct locks, then releases them all; time per lock (one acquire and one release). "+
		"The peers cannot take part: they hold one connection per lock.")
	fmt.Fprintln(w)
	head, sep := "| locks held |", "|---|"
	for _, db := range dbs {
		head += fmt.Sprintf(" %s dlock | %s raw SQL |", dbTitle(db), dbTitle(db))
		sep += "---|---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	for _, k := range []string{"1", "10", "100", "1000", "10000"} {
		s := "| " + k + " |"
		for _, db := range dbs {
			name := func(impl string) string { return "HeldKeys/db=" + db + "/keys=" + k + "/impl=" + impl }
			s += " " + cell(r, name, "dlock", "ns/lock", fmtNs) + " | " + cell(r, name, "raw", "ns/lock", fmtNs) + " |"
		}
		fmt.Fprintln(w, s)
	}
	fmt.Fprintln(w)
	var mem []string
	for _, db := range dbs {
		if v, ok := r.get("HeldMemory/db="+db, "B/hold"); ok {
			mem = append(mem, fmt.Sprintf("%s %.0f B", dbTitle(db), v))
		}
	}
	if len(mem) > 0 {
		fmt.Fprintln(w, "Heap per held lock, 10 000 locks held at once on one session (`BenchmarkHeldMemory`): "+strings.Join(mem, ", ")+".")
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Concurrent sessions on distinct keys: N sessions, each in a loop of acquire and release on a key of its own; cycles per second of all together.")
	fmt.Fprintln(w)
	head, sep = "| sessions |", "|---|"
	for _, db := range dbs {
		head += fmt.Sprintf(" %s dlock | %s raw SQL | %s %s |", dbTitle(db), dbTitle(db), dbTitle(db), peerName(db))
		sep += "---|---|---|"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, sep)
	perSec := func(v float64) string { return fmtCount(v) + "/s" }
	for _, n := range sessionCounts {
		s := fmt.Sprintf("| %d |", n)
		for _, db := range dbs {
			name := func(impl string) string { return fmt.Sprintf("Sessions/db=%s/sessions=%d/impl=%s", db, n, impl) }
			for _, impl := range []string{"dlock", "raw", "peer"} {
				s += " " + cell(r, name, impl, "cycles/s", perSec) + " |"
			}
		}
		fmt.Fprintln(w, s)
	}
	fmt.Fprintln(w)
}

var sessionCounts = []int{1, 2, 4, 8, 16, 32, 64}
