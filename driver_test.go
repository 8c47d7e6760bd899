package dlock

import (
	"runtime"
	"testing"
	"time"
)

// The shape of pgx's stdlib connection that dlock reads by reflection:
// Conn().PgConn() with TxStatus and PID.
type (
	fakeStdlibConn struct{ c *fakePgxConn }
	fakePgxConn    struct{ pg *fakePgConn }
	fakePgConn     struct {
		status byte
		pid    uint32
		kept   any // what pgx keeps: the context of the last statement
	}
)

func (c *fakeStdlibConn) Conn() *fakePgxConn { return c.c }
func (c *fakePgxConn) PgConn() *fakePgConn   { return c.pg }
func (pg *fakePgConn) TxStatus() byte        { return pg.status }
func (pg *fakePgConn) PID() uint32           { return pg.pid }
func (pg *fakePgConn) IsClosed() bool        { return false }
func newFakeStdlibConn(pid uint32) *fakeStdlibConn {
	return &fakeStdlibConn{c: &fakePgxConn{pg: &fakePgConn{status: 'I', pid: pid}}}
}

// A session's PgConn is read through a weak reference, without an
// allocation, and the reference keeps nothing alive: pgx keeps the context
// of a connection's last statement in its PgConn, and fn's context leads
// back to the pinned *sql.Conn that keys dlock's registries.
func TestPgConnRefIsWeak(t *testing.T) {
	dc := newFakeStdlibConn(42)
	ref := pgRefOf(dc)
	if v := ref.view(); v == nil || v.PID() != 42 || v.TxStatus() != 'I' {
		t.Fatalf("view() = %v, want the PgConn with pid 42", v)
	}
	if n := testing.AllocsPerRun(100, func() { _ = ref.view().TxStatus() }); n != 0 {
		t.Errorf("view() allocates %v times, want 0", n)
	}
	if v := pgRefOf(struct{}{}).view(); v != nil {
		t.Errorf("view() of another driver's connection = %v, want nil", v)
	}
	runtime.KeepAlive(dc)

	// The PgConn refers to what refers to the session (the registry's key
	// here), as pgx's kept context does: the entry must still go.
	var collected chan struct{}
	ref, collected = registerPgSession()
	for deadline := time.Now().Add(5 * time.Second); ; {
		runtime.GC()
		select {
		case <-collected:
			if ref.view() != nil {
				t.Errorf("the PgConn outlived its connection")
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("a registry key reachable from its PgConn was never collected")
		}
	}
}

// registerPgSession keeps the state of a new fake pgx connection in
// driverSessions, keyed by an object its PgConn refers to, and returns
// the reference to the PgConn and a channel closed when the key is
// collected.
func registerPgSession() (pgConnRef, chan struct{}) {
	dc := newFakeStdlibConn(7)
	key := new(byte)
	s := driverSessions.loadOrStore(key, func() *session {
		s := newSession()
		s.pg = pgRefOf(dc)
		return s
	})
	dc.c.pg.kept = key
	collected := make(chan struct{})
	runtime.AddCleanup(key, func(c chan struct{}) { close(c) }, collected)
	return s.pg, collected
}
