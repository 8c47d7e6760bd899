package tests

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gormdlock/dlock"
)

// The loss check tells each hold apart, whatever its name or mode: names
// that need JSON escapes or are beyond ASCII (MySQL and MariaDB), a shared
// and an exclusive hold of one key on one session, and a bigint key beside
// the two-int4 key with the same halves (PostgreSQL). Each case drops one
// hold behind dlock's back on the session that keeps the others, and only
// that hold is told lost.
func TestLossCheckTellsEachHold(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *testDB) {
		ctx := context.Background()
		db := b.openLocked(t, dlock.Plugin{CheckInterval: 50 * time.Millisecond})
		base := b.UniqueKey(t)
		type hold struct {
			l    *dlock.Lock
			lost bool
		}
		var holds []hold
		tx, conn := pin(t, db)
		other, _ := pin(t, db) // a second session with holds of its own
		take := func(onOther bool, key any, opts ...dlock.Option) *dlock.Lock {
			t.Helper()
			on := tx
			if onOther {
				on = other
			}
			l := mustNew(t, on, key, opts...)
			t.Cleanup(func() { _ = l.Close(context.Background()) })
			mustAcquire(t, l)
			holds = append(holds, hold{l: l})
			return l
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := conn.ExecContext(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		var drop *dlock.Lock
		if b.Dialect == dialectPostgres {
			shared := take(false, base+"-s", dlock.Shared())
			excl := take(false, base+"-x")
			take(true, base+"-o", dlock.Shared())
			take(true, base+"-p")
			// The same session also holds the other mode of each key, and
			// the two-int4 key with the halves of excl's key.
			k := uint64(excl.DBKey().(int64))
			exec("SELECT pg_advisory_lock($1), pg_advisory_lock_shared($2), pg_advisory_lock($3::int, $4::int)",
				shared.DBKey().(int64), excl.DBKey().(int64), int64(int32(k>>32)), int64(int32(k&0xffffffff)))
			t.Cleanup(func() { _, _ = conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock_all()") })
			exec("SELECT pg_advisory_unlock_shared($1)", shared.DBKey().(int64))
			exec("SELECT pg_advisory_unlock($1)", excl.DBKey().(int64))
			holds[0].lost, holds[1].lost = true, true
		} else {
			for _, k := range []string{`quote" back\ ctl` + "\x01\x1f\x7f", "é-ключ-漢字", strings.Repeat("long", 30) + base} {
				take(false, base+k)
			}
			take(false, 7_000_000_000+int64(len(base)))
			take(true, base+"é-другой")
			drop = holds[1].l
			exec("SELECT RELEASE_LOCK(?)", drop.DBKey().(string))
			holds[1].lost = true
		}
		deadline := time.Now().Add(lossBound)
		for _, h := range holds {
			if !h.lost {
				continue
			}
			select {
			case <-h.l.Done():
			case <-time.After(time.Until(deadline)):
				t.Fatalf("%v (key %v): Done() not closed %v after its drop", h.l.Key(), h.l.DBKey(), lossBound)
			}
			if err := h.l.Release(ctx); !errors.Is(err, dlock.ErrLockLost) {
				t.Errorf("%v: Release() = %v, want ErrLockLost", h.l.Key(), err)
			}
		}
		time.Sleep(4 * 50 * time.Millisecond) // a few more rounds
		for _, h := range holds {
			if h.lost {
				continue
			}
			select {
			case <-h.l.Done():
				t.Errorf("%v (key %v): told lost, but its session still holds it", h.l.Key(), h.l.DBKey())
			default:
			}
		}
	})
}
