package bench

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkPaired runs dlock and one hand-written series in strict
// alternation, one cycle each per iteration, on the same pinned session,
// and times every cycle. Interleaving at this grain puts both under the
// same background load, so the ratio of their medians is steadier than a
// ratio of separate runs. vs=raw is the SQL sent with a context that
// cannot be cancelled, vs=rawctx the SQL sent with the caller's context.
//
// Only two series take turns, so each always follows the other: a cycle
// pays for what the cycle before it left running (the driver's context
// watcher after a rawctx cycle, say), and with three series in rotation
// one of them would follow that series more often than the others.
//
// keys=10000 goes round-robin over 10 000 names and makes the dlock Lock
// anew per cycle (dlock.New included). It reports the median cycle of
// each series (dlock-ns/cycle, raw-ns/cycle or rawctx-ns/cycle) and the
// ratio of the medians (dlock/raw or dlock/rawctx), and the client CPU
// time per cycle of each series (process user+system time around each
// cycle, dlock-cpu-ns/cycle ...) with its ratio (cpu-dlock/raw or
// cpu-dlock/rawctx).
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
		for _, c := range []struct {
			keys int
			mode string
		}{{1, modeBlock}, {1, modeTimeout}, {1, modeTry}, {nKeys, modeBlock}} {
			for _, vs := range []string{implRaw, implRawCtx} {
				name := "keys=" + strconv.Itoa(c.keys) + "/mode=" + c.mode + "/vs=" + vs
				b.Run(name, func(b *testing.B) {
					impls := []string{implDlock, vs}
					k := newKey(lockName("pair", c.mode))
					ls := make([]locker, len(impls))
					times := make([][]time.Duration, len(impls))
					cpu := make([]time.Duration, len(impls))
					for j, impl := range impls {
						l, err := newLocker(impl, where, k, c.mode)
						if err != nil {
							b.Fatal(err)
						}
						cycle(b, ctx, l)
						ls[j] = l
					}
					i := 0
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
						for j, l := range ls {
							c0, t0 := cpuTime(), time.Now()
							cycle(b, ctx, l)
							times[j] = append(times[j], time.Since(t0))
							cpu[j] += cpuTime() - c0
						}
					}
					med := make([]float64, len(impls))
					for j, impl := range impls {
						slices.Sort(times[j])
						med[j] = float64(percentile(times[j], 50))
						b.ReportMetric(med[j], impl+"-ns/cycle")
						b.ReportMetric(float64(cpu[j])/float64(len(times[j])), impl+"-cpu-ns/cycle")
					}
					b.ReportMetric(med[0]/med[1], "dlock/"+vs)
					b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "cpu-dlock/"+vs)
				})
			}
		}
	})
}
