package dlock

import (
	"net"
	"reflect"
	"unsafe"
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
	return v, v.IsValid() && !(v.Kind() == reflect.Interface && v.IsNil())
}
