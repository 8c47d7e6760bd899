package bench

import (
	"context"
	"testing"
)

// cycle runs one acquire and one release, failing the benchmark if the
// lock was not granted.
func cycle(b *testing.B, ctx context.Context, l locker) {
	ok, err := l.acquire(ctx)
	if err != nil || !ok {
		b.Fatalf("acquire = %v, %v; want true, nil", ok, err)
	}
	if err := l.release(ctx); err != nil {
		b.Fatalf("release: %v", err)
	}
}

// reportRoundTrips reports the pool's round trips per iteration since
// before, and the dials if any (a dial is a new session, whose handshake
// round trips are in the count).
func reportRoundTrips(b *testing.B, p *pool, before, dialsBefore int64) {
	b.ReportMetric(float64(p.roundTrips()-before)/float64(b.N), "roundtrips/op")
	if d := p.cnt.dials.Load() - dialsBefore; d > 0 {
		b.ReportMetric(float64(d)/float64(b.N), "dials/op")
	}
}

// BenchmarkUncontended is one acquire and one release of a free lock, on
// one session that stays pinned: dlock and the raw SQL share it, the
// peers take a session from the pool per lock as they do. The caller's
// context can be cancelled (as a request's is), which dlock must honour
// without handing it to the driver. impl=raw sends the hand-written SQL
// with a context that cannot be cancelled, the cheapest call there is:
// one round trip per statement and nothing else, the limit. impl=rawctx
// sends it with the caller's context, as most hand-written code does.
//
// impl=withlock is dlock.WithLock on the pool, which pins a session per
// call.
//
// mode=block waits until acquired, mode=timeout waits at most 5 s,
// mode=try tries once. keys=1 reuses one Lock; keys=10000 goes round-robin
// over 10 000 names and makes each lock anew (dlock.New, with the key
// mapped to the server's name or hash), as a caller with many keys does.
func BenchmarkUncontended(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		tx, conn := p.session(b)
		where := on{p: p, tx: tx, conn: conn}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		// One name per case: a lock released by one case is free for the
		// next. Warm the session so the once-per-session probe is done.
		for _, m := range []string{modeBlock, modeTimeout, modeTry} {
			for _, impl := range []string{implDlock, implWithLock, implRaw, implRawCtx, implPeer} {
				b.Run("keys=1/mode="+m+"/impl="+impl, func(b *testing.B) {
					name := lockName("u", m)
					k := newKey(name)
					l, err := newLocker(impl, where, k, m)
					if err != nil {
						b.Fatal(err)
					}
					cycle(b, ctx, l)
					b.ReportAllocs()
					rt, dials := p.roundTrips(), p.cnt.dials.Load()
					for b.Loop() {
						cycle(b, ctx, l)
					}
					reportRoundTrips(b, p, rt, dials)
				})
			}
		}

		const nKeys = 10000
		keys := make([]key, nKeys)
		for i := range keys {
			name := lockName("k", i)
			keys[i] = newKey(name)
		}
		for _, impl := range []string{implDlock, implRaw, implRawCtx, implPeer} {
			b.Run("keys=10000/mode=block/impl="+impl, func(b *testing.B) {
				b.ReportAllocs()
				rt, dials := p.roundTrips(), p.cnt.dials.Load()
				i := 0
				for b.Loop() {
					l, err := newLocker(impl, where, keys[i], modeBlock)
					if err != nil {
						b.Fatal(err)
					}
					cycle(b, ctx, l)
					if i++; i == nKeys {
						i = 0
					}
				}
				reportRoundTrips(b, p, rt, dials)
			})
		}
	})
}

// BenchmarkRoundTrip is one trivial statement on a pinned session: the
// cost of one round trip, the unit of the targets.
func BenchmarkRoundTrip(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		_, conn := p.session(b)
		b.ReportAllocs()
		rt := p.roundTrips()
		var one int
		for b.Loop() {
			if err := conn.QueryRowContext(context.Background(), "SELECT 1").Scan(&one); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(p.roundTrips()-rt)/float64(b.N), "roundtrips/op")
	})
}

// BenchmarkProbe measures the once-per-session cost of dlock: the first
// cancellable Acquire on a session asks the server for the session id
// (used to cancel a wait from a control connection). It reports the
// round trips of the first and of a later cycle on a fresh session.
func BenchmarkProbe(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		name := lockName("probe")
		// dlock keeps its per-session state by physical connection: a
		// connection back from the pool pays nothing again, so every
		// iteration here dials a new one.
		p.db.SetMaxIdleConns(0)
		defer p.db.SetMaxIdleConns(idleSessions)
		var first, later int64
		for b.Loop() {
			tx, conn, done := p.pin(b)
			l, err := newLocker(implDlock, on{p: p, tx: tx, conn: conn}, key{name: name}, modeBlock)
			if err != nil {
				b.Fatal(err)
			}
			rt := p.roundTrips()
			cycle(b, ctx, l)
			mid := p.roundTrips()
			cycle(b, ctx, l)
			first += mid - rt
			later += p.roundTrips() - mid
			done()
		}
		b.ReportMetric(float64(first)/float64(b.N), "first-cycle-roundtrips")
		b.ReportMetric(float64(later)/float64(b.N), "later-cycle-roundtrips")
		b.ReportMetric(float64(first-later)/float64(b.N), "probe-roundtrips/session")
	})
}
