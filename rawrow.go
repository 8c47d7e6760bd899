package dlock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// queryRow runs query, which returns one row of ncol columns, on q and
// returns the row's values as the driver gives them (nil for
// NULL; decimal text as int64, other text as string; see ownValue). It
// does what q.QueryRowContext(ctx, query, args...).Scan does with
// destinations of type *any, with the same statement on the wire and the
// same errors, but on a pinned session (*sql.Conn), with a context that
// cannot be cancelled (dlock's short statements), it hands the
// statement to the driver inside (*sql.Conn).Raw: no sql.Rows, no
// argument and value conversion by database/sql, about ten allocations
// fewer per statement. It is for dlock's own short statements, whose
// arguments (an int64, or a string, or none) need no conversion. Raw holds
// the connection as a query does, and a driver.ErrBadConn or invalid
// connection makes database/sql discard it as after a query.
func queryRow(ctx context.Context, q querier, query string, ncol int, args ...any) (row [maxRowCols]driver.Value, err error) {
	if ncol > maxRowCols || len(args) > maxRowArgs {
		return row, fmt.Errorf("dlock: queryRow: %d columns, %d arguments", ncol, len(args))
	}
	// One allocation for everything the driver or database/sql keeps a
	// pointer to; args is only read, so it stays on the caller's stack.
	b := new(rowBuf)
	b.nargs = copy(b.args[:], args)
	dest := b.dest[:ncol]
	if done, err := onDriver(ctx, q, func(dc any) (bool, error) {
		return driverQueryRow(ctx, dc, query, dest, b)
	}); done {
		return b.dest, err
	}
	ptrs := b.ptrs[:ncol]
	for i := range dest {
		ptrs[i] = &dest[i]
	}
	if err := q.QueryRowContext(ctx, query, b.args[:b.nargs]...).Scan(ptrs...); err != nil {
		return b.dest, err
	}
	for i, v := range dest {
		dest[i] = ownValue(v)
	}
	return b.dest, nil
}

// onDriver runs fn on the driver connection of q inside (*sql.Conn).Raw
// when q is a pinned session and ctx cannot be cancelled (database/sql
// adds its own watching of a cancellable one). done is false when it
// could not run that way: q is not a *sql.Conn, ctx can be cancelled, or
// fn reported skip (the driver cannot take the statement so); the caller
// then goes through database/sql.
func onDriver(ctx context.Context, q querier, fn func(dc any) (skip bool, err error)) (done bool, err error) {
	c, ok := q.(*sql.Conn)
	if !ok || ctx.Done() != nil {
		return false, nil
	}
	var skip bool
	err = c.Raw(func(dc any) error {
		var err error
		skip, err = fn(dc)
		return err
	})
	return !skip, err
}

// The most columns and arguments a queryRow statement has.
const (
	maxRowCols = 2
	maxRowArgs = 1
)

// rowBuf is what one queryRow hands to the driver or database/sql.
type rowBuf struct {
	dest  [maxRowCols]driver.Value
	ptrs  [maxRowCols]any
	args  [maxRowArgs]any
	named [maxRowArgs]driver.NamedValue
	nargs int
}

// driverQueryRow is queryRow on the driver connection dc. skip says the
// driver cannot run it this way (the caller goes through database/sql).
func driverQueryRow(ctx context.Context, dc any, query string, dest []driver.Value, b *rowBuf) (skip bool, err error) {
	qc, ok := dc.(driver.QueryerContext)
	if !ok {
		return true, nil
	}
	named, ok := namedArgs(dc, b)
	if !ok {
		return true, nil
	}
	rows, err := qc.QueryContext(ctx, query, named)
	switch {
	case errors.Is(err, driver.ErrSkip):
		return true, nil
	case err != nil:
		return false, err
	}
	if len(rows.Columns()) != len(dest) {
		_ = rows.Close()
		return false, fmt.Errorf("sql: expected %d destination arguments in Scan, not %d", len(rows.Columns()), len(dest))
	}
	err = rows.Next(dest)
	if errors.Is(err, io.EOF) {
		err = sql.ErrNoRows
	}
	for i, v := range dest {
		dest[i] = ownValue(v) // before Close: the driver reuses its buffer
	}
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return false, err
}

// namedArgs returns b's arguments as the driver takes them, or false when
// one needs a conversion that database/sql would make.
func namedArgs(dc any, b *rowBuf) ([]driver.NamedValue, bool) {
	if b.nargs == 0 {
		return nil, true
	}
	named := b.named[:b.nargs]
	checker, _ := dc.(driver.NamedValueChecker)
	for i, a := range b.args[:b.nargs] {
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
		if checker == nil {
			if !driver.IsValue(a) {
				return nil, false
			}
			continue
		}
		switch err := checker.CheckNamedValue(&named[i]); {
		case errors.Is(err, driver.ErrSkip):
			if !driver.IsValue(a) {
				return nil, false
			}
		case err != nil:
			return nil, false // let database/sql say it
		}
	}
	return named, true
}

// execRows runs query, with at most maxRowArgs arguments, on q and
// returns the rows it affected, as the driver reports them: for a SELECT
// on PostgreSQL, the rows it returned (the command tag). Like queryRow it
// hands the statement to the driver (see onDriver), and goes through
// database/sql otherwise, with the same statement on the wire.
func execRows(ctx context.Context, q querier, query string, args ...any) (int64, error) {
	if len(args) > maxRowArgs {
		return 0, fmt.Errorf("dlock: execRows: %d arguments", len(args))
	}
	b := new(rowBuf)
	b.nargs = copy(b.args[:], args)
	var n int64
	if done, err := onDriver(ctx, q, func(dc any) (skip bool, err error) {
		ec, ok := dc.(driver.ExecerContext)
		named, ok2 := namedArgs(dc, b)
		if !ok || !ok2 {
			return true, nil
		}
		res, err := ec.ExecContext(ctx, query, named)
		switch {
		case errors.Is(err, driver.ErrSkip):
			return true, nil
		case err != nil:
			return false, err
		}
		n, err = res.RowsAffected()
		return false, err
	}); done {
		return n, err
	}
	res, err := q.ExecContext(ctx, query, b.args[:b.nargs]...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ownValue returns v, a value of a row, as a value that does not share
// the driver's buffer: text (MySQL's text protocol sends numbers as text)
// becomes an int64 when it is a decimal integer, else a string.
func ownValue(v driver.Value) driver.Value {
	b, ok := v.([]byte)
	if !ok {
		return v
	}
	if n, ok := decimal(b); ok {
		return n
	}
	return string(b)
}

// decimal parses b as a decimal int64 of at most 18 digits, with an
// optional minus sign.
func decimal(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// valueInt reads an integer column that queryRow stored; valid is false
// for NULL.
func valueInt(v driver.Value) (n int64, valid bool, err error) {
	switch x := v.(type) {
	case nil:
		return 0, false, nil
	case int64:
		return x, true, nil
	case string:
		n, err = strconv.ParseInt(x, 10, 64)
		return n, err == nil, err
	case bool:
		if x {
			return 1, true, nil
		}
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("dlock: unexpected %T in an integer column", v)
}
