package dlock

// What dlock reads from the drivers without importing them: pgx's session
// status, pid and reported parameters, the network connection under a
// driver connection, and the codes of server errors. Each looks for a
// known shape by reflection and answers "unknown" for any other driver.

import (
	"database/sql"
	"errors"
	"net"
	"reflect"
	"unsafe"
	"weak"
)

// networkConn returns the network connection under a driver connection,
// for the drivers whose shape dlock knows: pgx's stdlib connection
// (Conn().PgConn().Conn(), exported) and go-sql-driver/mysql's (its
// netConn field, read once when dlock first sees the connection). It
// returns nil for any other driver.
//
// dlock uses it for one thing: when a statement outlives its bound, a
// deadline in the past wakes the read that waits for an answer which a
// cut network may never deliver, so that the call returns within its
// bound; the session is discarded, as it would be anyway.
func networkConn(dc any) net.Conn {
	v := reflect.ValueOf(dc)
	if c, ok := callChain(v, "Conn", "PgConn", "Conn"); ok {
		nc, _ := c.Interface().(net.Conn)
		return nc
	}
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("netConn")
	if !f.IsValid() || f.Type() != reflect.TypeFor[net.Conn]() || !f.CanAddr() {
		return nil
	}
	nc, _ := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(net.Conn)
	return nc
}

// callChain calls the methods named, each on the result of the one
// before, if each takes no argument and returns one value.
func callChain(v reflect.Value, methods ...string) (reflect.Value, bool) {
	for _, name := range methods {
		if !v.IsValid() || (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) && v.IsNil() {
			return reflect.Value{}, false
		}
		m := v.MethodByName(name)
		if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
			return reflect.Value{}, false
		}
		v = m.Call(nil)[0]
	}
	return v, v.IsValid() && (v.Kind() != reflect.Interface || !v.IsNil())
}

// pgConnView is the part of pgx's *pgconn.PgConn that dlock reads,
// named without importing pgx.
type pgConnView interface {
	TxStatus() byte
	PID() uint32
	IsClosed() bool
}

// pgConnOf returns the *pgconn.PgConn behind a pgx stdlib connection
// (Conn().PgConn()), or nil for other drivers. It is found by reflection
// once per physical session and kept weakly: see pgConnRef and pgViewOf.
func pgConnOf(dc any) pgConnView {
	pg, ok := callChain(reflect.ValueOf(dc), "Conn", "PgConn")
	if !ok || !pg.CanInterface() {
		return nil
	}
	v, _ := pg.Interface().(pgConnView)
	return v
}

// pgConnRef is the PgConn behind a session, kept in dlock's state of that
// session without keeping it alive. It must be weak: pgx keeps the
// context of the last statement of each kind in the PgConn
// (resultReader.ctx, multiResultReader.ctx), and fn's context leads to the
// pinned *sql.Conn, its *gorm.DB and pool (outerSession). A strong
// reference from the registries' values would make their keys reachable
// from their values, and every physical connection's *sql.Conn, PgConn,
// pgx.Conn and pool would stay in memory for good.
type pgConnRef struct {
	typ reflect.Type       // *pgconn.PgConn
	ptr weak.Pointer[byte] // the PgConn object
}

// pgRefOf returns a weak reference to the PgConn behind a pgx stdlib
// connection; its view is nil for other drivers.
func pgRefOf(dc any) pgConnRef {
	v := reflect.ValueOf(pgConnOf(dc))
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return pgConnRef{}
	}
	return pgConnRef{typ: v.Type(), ptr: weak.Make((*byte)(v.UnsafePointer()))}
}

// view returns the PgConn, or nil if there is none (another driver) or it
// is gone. It allocates nothing.
func (r pgConnRef) view() pgConnView {
	if r.typ == nil {
		return nil
	}
	p := r.ptr.Value()
	if p == nil {
		return nil
	}
	v, _ := reflect.NewAt(r.typ.Elem(), unsafe.Pointer(p)).Interface().(pgConnView)
	return v
}

// pgViewOf returns the PgConn behind a driver connection: the one named in
// dlock's state of that physical session, else found anew.
func pgViewOf(dc any) pgConnView {
	if v := reflect.ValueOf(dc); v.Kind() == reflect.Pointer && !v.IsNil() {
		if s, ok := driverSessions.load((*byte)(v.UnsafePointer())); ok {
			if pg := s.pg.view(); pg != nil || s.pg.typ == nil {
				return pg
			}
		}
	}
	return pgConnOf(dc)
}

// pgxTxStatus asks pgx for the protocol's transaction status of the
// session c pins ('I' idle, 'T' in a transaction, 'E' failed), without a
// round trip. known is false for other drivers.
func pgxTxStatus(c *sql.Conn) (status byte, known bool) {
	_ = c.Raw(func(dc any) error {
		if v := pgViewOf(dc); v != nil {
			status, known = v.TxStatus(), true
		}
		return nil
	})
	return status, known
}

// driverSessionID returns the server's id of the session when the driver
// tells it without a query: pgx's (*stdlib.Conn).Conn().PgConn().PID().
func driverSessionID(q querier) (int64, bool) {
	c, ok := q.(*sql.Conn)
	if !ok {
		return 0, false
	}
	v, ok := pgxCall(c, "PID")
	if ok && v.Kind() == reflect.Uint32 && v.Uint() != 0 {
		return int64(v.Uint()), true
	}
	return 0, false
}

// pgxCall calls Conn().PgConn().<method>() on the driver connection of c,
// if it has that shape, and returns the result.
func pgxCall(c *sql.Conn, method string) (result reflect.Value, ok bool) {
	_ = c.Raw(func(dc any) error {
		result, ok = callChain(reflect.ValueOf(dc), "Conn", "PgConn", method)
		return nil
	})
	return result, ok
}

// pgxParameterStatus returns a run-time parameter the server reported to
// pgx, without importing pgx: (*stdlib.Conn).Conn().PgConn()
// .ParameterStatus(name). ok is false for other drivers and for a
// parameter the server did not report.
func pgxParameterStatus(c *sql.Conn, name string) (value string, ok bool) {
	_ = c.Raw(func(dc any) error {
		pg, found := callChain(reflect.ValueOf(dc), "Conn", "PgConn")
		if !found {
			return nil
		}
		f := pg.MethodByName("ParameterStatus")
		if !f.IsValid() {
			return nil
		}
		ft := f.Type()
		if ft.NumIn() != 1 || ft.In(0).Kind() != reflect.String || ft.NumOut() != 1 || ft.Out(0).Kind() != reflect.String {
			return nil
		}
		value = f.Call([]reflect.Value{reflect.ValueOf(name)})[0].String()
		ok = value != ""
		return nil
	})
	return value, ok
}

// sqlState returns the SQLSTATE of a PostgreSQL error (pgx and lib/pq
// errors have a SQLState method), or "".
func sqlState(err error) string {
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		return s.SQLState()
	}
	return ""
}

// mysqlErrNumber returns the server error number of a MySQL driver error.
// dlock does not import a driver, so it looks for the exported uint16
// field Number that go-sql-driver/mysql's *MySQLError has.
func mysqlErrNumber(err error) (uint16, bool) {
	for e := err; e != nil; {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct {
			if f := v.FieldByName("Number"); f.IsValid() && f.Kind() == reflect.Uint16 {
				return uint16(f.Uint()), true
			}
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return 0, false
}
