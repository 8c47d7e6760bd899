package bench

import (
	"database/sql"
	"fmt"
	"testing"
	"time"
)

// worker is one session's locker in a concurrent benchmark.
type worker struct {
	l    locker
	done func() // gives the pinned session back
}

// workers pins n sessions (for dlock and the raw SQL; the peers take
// theirs from the pool per lock) and makes a locker on each, for the key
// keyOf(i).
func workers(b *testing.B, p *pool, impl string, n int, keyOf func(i int) key) []worker {
	b.Helper()
	if impl == implPeer {
		// The peers take a session from the pool per lock: open n of them
		// now, so that no dial falls into the measured time.
		conns := make([]*sql.Conn, n)
		for i := range conns {
			conns[i] = p.conn(b)
		}
		for _, c := range conns {
			_ = c.Close()
		}
	}
	ws := make([]worker, n)
	for i := range ws {
		w := &ws[i]
		w.done = func() {}
		o := on{p: p}
		if impl != implPeer {
			o.tx, o.conn, w.done = p.pin(b)
		}
		l, err := newLocker(impl, o, keyOf(i), modeBlock)
		if err != nil {
			b.Fatal(err)
		}
		w.l = l
	}
	return ws
}

// runConcurrently runs b.N acquire+release cycles shared among the
// workers, each on its own goroutine, and reports the cycles per second
// and the round trips per cycle. The sessions are given back after.
func runConcurrently(b *testing.B, p *pool, ws []worker) {
	b.Helper()
	defer func() {
		for _, w := range ws {
			w.done()
		}
	}()
	run := func(cycles int64) { runBlock(b, ws, cycles) }
	// Warm up: every session makes its first statements (and the peers'
	// pool its sessions) before the clock starts.
	run(int64(2 * len(ws)))
	b.ReportAllocs()
	rt, dials := p.roundTrips(), p.cnt.dials.Load()
	b.ResetTimer()
	start := time.Now()
	run(int64(b.N))
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cycles/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())*float64(len(ws))/float64(b.N), "session-ns/cycle")
	reportRoundTrips(b, p, rt, dials)
}

// BenchmarkContention is 1, 4 and 16 sessions contending for one key, each
// in a loop of acquire (waiting until acquired) and release. ns/op is the
// wall time per cycle of all sessions together; cycles/s its inverse.
func BenchmarkContention(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		p.db.SetMaxIdleConns(maxSessions) // keep the sessions from one case to the next
		defer p.trim()
		for _, n := range []int{1, 4, 16} {
			for _, impl := range []string{implDlock, implRaw, implRawCtx, implPeer} {
				b.Run(fmt.Sprintf("sessions=%d/impl=%s", n, impl), func(b *testing.B) {
					name := lockName("c", n, impl)
					k := newKey(name)
					ws := workers(b, p, impl, n, func(int) key { return k })
					runConcurrently(b, p, ws)
				})
			}
		}
	})
}
