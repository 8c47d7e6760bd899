package bench

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkPaired runs dlock and the hand-written SQL in alternation, one
// cycle each per iteration, on the same pinned session, and times every
// cycle. Interleaving at this grain puts all of them under the same
// background load, so the ratio of their medians is steadier than a ratio
// of separate runs. keys=10000 goes round-robin over 10 000 names and
// makes the dlock Lock anew per cycle (dlock.New included). It reports
// the median cycle of each (dlock-ns/cycle, raw-ns/cycle for the SQL sent
// with a context that cannot be cancelled, rawctx-ns/cycle for the SQL
// sent with the caller's context) and the ratios of the medians
// (dlock/raw, dlock/rawctx).
func BenchmarkPaired(b *testing.B) {
	forEachServer(b, func(b *testing.B, s *server) {
		p := s.pool(b)
		tx, conn := p.session(b)
		where := on{p: p, tx: tx, conn: conn}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const nKeys = 10000
		keys := make([]key, nKeys)
		for i := range keys {
			keys[i] = newKey(lockName("pk", i))
		}
		impls := []string{implDlock, implRaw, implRawCtx}
		for _, c := range []struct {
			keys int
			mode string
		}{{1, modeBlock}, {1, modeTimeout}, {1, modeTry}, {nKeys, modeBlock}} {
			b.Run("keys="+strconv.Itoa(c.keys)+"/mode="+c.mode, func(b *testing.B) {
				k := newKey(lockName("pair", c.mode))
				ls := make([]locker, len(impls))
				times := make([][]time.Duration, len(impls))
				for j, impl := range impls {
					l, err := newLocker(impl, where, k, c.mode)
					if err != nil {
						b.Fatal(err)
					}
					cycle(b, ctx, l)
					ls[j] = l
				}
				i, round := 0, 0
				for b.Loop() {
					if c.keys > 1 {
						for j, impl := range impls {
							l, err := newLocker(impl, where, keys[i], c.mode)
							if err != nil {
								b.Fatal(err)
							}
							ls[j] = l
						}
						if i++; i == c.keys {
							i = 0
						}
					}
					// Rotate the order, so that no series always runs first.
					for n := range ls {
						j := (n + round) % len(ls)
						t0 := time.Now()
						cycle(b, ctx, ls[j])
						times[j] = append(times[j], time.Since(t0))
					}
					round++
				}
				med := make([]float64, len(impls))
				for j, impl := range impls {
					slices.Sort(times[j])
					med[j] = float64(percentile(times[j], 50))
					b.ReportMetric(med[j], impl+"-ns/cycle")
				}
				b.ReportMetric(med[0]/med[1], "dlock/raw")
				b.ReportMetric(med[0]/med[2], "dlock/rawctx")
			})
		}
	})
}
