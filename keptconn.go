package dlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"gorm.io/gorm"
)

// resolverCallback is the name gorm.io/plugin/dbresolver registers its
// routing callback under, first in each chain: it moves every statement
// that is not in a transaction (whose ConnPool has no Commit) to one of
// its pools, a pinned *sql.Conn included.
const resolverCallback = "gorm:db_resolver"

// keptConn is a pinned session (*sql.Conn) while the routing callback
// runs: its Commit and Rollback make the router take the statement for
// one in a transaction and leave it on its session. keepSession puts it on
// before the router and unkeepSession takes it off again before GORM's
// own callbacks, which never see it. Converting between the two pointer
// types allocates nothing.
type keptConn sql.Conn

func (c *keptConn) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return (*sql.Conn)(c).PrepareContext(ctx, query)
}

func (c *keptConn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return (*sql.Conn)(c).ExecContext(ctx, query, args...)
}

func (c *keptConn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return (*sql.Conn)(c).QueryContext(ctx, query, args...)
}

func (c *keptConn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return (*sql.Conn)(c).QueryRowContext(ctx, query, args...)
}

var errKeptConn = errors.New("dlock: Commit or Rollback on a pinned session outside a transaction")

func (*keptConn) Commit() error   { return errKeptConn }
func (*keptConn) Rollback() error { return errKeptConn }

func keepSession(db *gorm.DB) {
	if c, ok := db.Statement.ConnPool.(*sql.Conn); ok {
		db.Statement.ConnPool = (*keptConn)(c)
	}
}

func unkeepSession(db *gorm.DB) {
	if c, ok := db.Statement.ConnPool.(*keptConn); ok {
		db.Statement.ConnPool = (*sql.Conn)(c)
	}
}

// registerKeepSession keeps the statements of a pinned session (the tx of
// db.Connection, WithLock and Connection) on that session when a router
// registered before dlock (dbresolver) would move them to its pools: in
// each chain the router has, keepSession runs before it and unkeepSession
// after it, before GORM's first own callback. Without a router it
// registers nothing, and GORM's statements pay nothing.
func registerKeepSession(db *gorm.DB) error {
	cb := db.Callback()
	for _, err := range []error{
		keepIn(cb.Create().Get, cb.Create().Before, "gorm:begin_transaction"),
		keepIn(cb.Query().Get, cb.Query().Before, "gorm:query"),
		keepIn(cb.Update().Get, cb.Update().Before, "gorm:begin_transaction"),
		keepIn(cb.Delete().Get, cb.Delete().Before, "gorm:begin_transaction"),
		keepIn(cb.Row().Get, cb.Row().Before, "gorm:row"),
		keepIn(cb.Raw().Get, cb.Raw().Before, "gorm:raw"),
	} {
		if err != nil {
			return fmt.Errorf("dlock: registering the callbacks that keep a pinned session under %s: %w", resolverCallback, err)
		}
	}
	return nil
}

// keepIn registers keepSession and unkeepSession in one chain (given by
// its Get and Before) that has the router; first is GORM's first own
// callback there. unkeepSession goes first, so that a failure leaves no
// keptConn behind.
func keepIn[C interface {
	Register(string, func(*gorm.DB)) error
}](get func(string) func(*gorm.DB), before func(string) C, first string) error {
	if get(resolverCallback) == nil {
		return nil
	}
	if err := before(first).Register("dlock:unkeep_session", unkeepSession); err != nil {
		return err
	}
	// Of the callbacks that run before all others, the one registered
	// last runs first: before the router, registered earlier.
	return before("*").Register("dlock:keep_session", keepSession)
}
