package bench

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkHeldKeys is how the cost grows with the number of locks one
// session holds at once: each iteration acquires keys=K distinct locks
// on one session, then releases them all. ns/lock is the time per lock
// (one acquire and one release). The peers are left out: they spend one
// session per held lock, so 1000 held locks would need 1000 sessions.
func BenchmarkHeldKeys(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for _, n := range []int{1, 10, 100, 1000, 10000} {
			for _, impl := range []string{implDlock, implRaw} {
				b.Run(fmt.Sprintf("keys=%d/impl=%s", n, impl), func(b *testing.B) {
					tx, conn := p.session(b)
					ls := make([]locker, n)
					for i := range ls {
						l, err := newLocker(impl, on{p: p, tx: tx, conn: conn}, newKey(lockName("g", n, impl, i)), modeBlock)
						if err != nil {
							b.Fatal(err)
						}
						ls[i] = l
					}
					b.ReportAllocs()
					rt := p.roundTrips()
					start := time.Now()
					for b.Loop() {
						for _, l := range ls {
							if ok, err := l.acquire(ctx); err != nil || !ok {
								b.Fatalf("acquire = %v, %v", ok, err)
							}
						}
						for _, l := range ls {
							if err := l.release(ctx); err != nil {
								b.Fatalf("release: %v", err)
							}
						}
					}
					elapsed := time.Since(start)
					locks := float64(b.N * n)
					b.ReportMetric(float64(elapsed.Nanoseconds())/locks, "ns/lock")
					b.ReportMetric(float64(p.roundTrips()-rt)/locks, "roundtrips/lock")
				})
			}
		}
	})
}

// BenchmarkSessions is how the cost grows with concurrent sessions on
// distinct keys: sessions=N sessions each run acquire+release cycles on a
// key of their own. cycles/s is the throughput of all of them together;
// session-ns/cycle the time of one cycle as one session sees it.
func BenchmarkSessions(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		p.db.SetMaxIdleConns(maxSessions) // keep the sessions from one case to the next
		defer p.trim()
		for _, n := range []int{1, 2, 4, 8, 16, 32, 64} {
			for _, impl := range []string{implDlock, implRaw, implPeer} {
				b.Run(fmt.Sprintf("sessions=%d/impl=%s", n, impl), func(b *testing.B) {
					ws := workers(b, p, impl, n, func(i int) key { return newKey(lockName("s", n, impl, i)) })
					runConcurrently(b, p, ws)
				})
			}
		}
	})
}
