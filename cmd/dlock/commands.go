package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// queryTimeout bounds who and list.
const queryTimeout = 30 * time.Second

// lockKey returns the key the command line names: the string, or with
// -int the integer.
func lockKey(arg string, intKey bool) (any, error) {
	if !intKey {
		return arg, nil
	}
	n, err := strconv.ParseInt(arg, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("-int: %q is not an int64", arg)
	}
	return n, nil
}

// usageErr reports a bad argument and returns exitUsage.
func usageErr(f *flags, err error) int {
	fmt.Fprintf(f.Output(), "%s: %v\n", f.Name(), err)
	return exitUsage
}

func runWho(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("who", stderr, true, true)
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	key, err := lockKey(pos[0], f.intKey)
	if err != nil {
		return usageErr(f, err)
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	db, err := open(ctx, f.dsn, f.prefix)
	if err != nil {
		return fail(stderr, "who", err)
	}
	defer closeDB(db)
	hs, err := dlock.Holders(ctx, db, key)
	if err != nil {
		return fail(stderr, "who", err)
	}
	if len(hs) == 0 {
		fmt.Fprintf(stdout, "free: nobody holds or waits for %s (%s)\n", pos[0], serverKey(db, key, f.prefix))
		return exitOK
	}
	printHolders(stdout, hs, false)
	// A leading dlock.Elector names itself in its session's statement.
	if e, err := dlock.NewElector(db, key); err == nil {
		if l, ok, err := e.Leader(ctx); err == nil && ok && l.Identity != "" {
			fmt.Fprintf(stdout, "leader: %s (session %d) since %s\n", l.Identity, l.SessionID, l.Since.Format(time.RFC3339))
		}
	}
	return exitOK
}

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("list", stderr, true, false)
	if _, code, ok := f.parse(args, 0); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	db, err := open(ctx, f.dsn, f.prefix)
	if err != nil {
		return fail(stderr, "list", err)
	}
	defer closeDB(db)
	prefix := f.prefix
	if db.Dialector.Name() == "postgres" && prefix != "" {
		fmt.Fprintln(stderr, "dlock list: note: PostgreSQL string keys are hashed, so -prefix cannot filter them; listing every advisory lock")
		prefix = ""
	}
	hs, err := dlock.Locks(ctx, db, prefix)
	if err != nil {
		return fail(stderr, "list", err)
	}
	if len(hs) == 0 {
		fmt.Fprintln(stdout, "no locks held")
		return exitOK
	}
	printHolders(stdout, hs, true)
	return exitOK
}

func runKey(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("key", stderr, false, true)
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	key, err := lockKey(pos[0], f.intKey)
	if err != nil {
		return usageErr(f, err)
	}
	pg, err := dlock.DBKey("postgres", key, f.prefix)
	if err != nil {
		return usageErr(f, err)
	}
	my, err := dlock.DBKey("mysql", key, f.prefix)
	if err != nil {
		return usageErr(f, err)
	}
	fmt.Fprintf(stdout, "postgres\t%d\n", pg)
	fmt.Fprintf(stdout, "mysql\t%s\n", my)
	return exitOK
}

func runHold(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("hold", stderr, true, true)
	timeout := f.Duration("timeout", 0, "give up when the lock is not acquired within `D` (default: wait until interrupted)")
	pos, code, ok := f.parse(args, 1)
	if !ok {
		return code
	}
	key, err := lockKey(pos[0], f.intKey)
	if err != nil {
		return usageErr(f, err)
	}
	db, err := open(ctx, f.dsn, f.prefix)
	if err != nil {
		return fail(stderr, "hold", err)
	}
	defer closeDB(db)
	var opts []dlock.Option
	if *timeout > 0 {
		opts = append(opts, dlock.Timeout(*timeout))
	}
	fmt.Fprintf(stdout, "waiting for %s (%s)\n", pos[0], serverKey(db, key, f.prefix))
	var since time.Time
	err = dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
		since = time.Now()
		fmt.Fprintf(stdout, "acquired %s (session %s); holding until interrupted\n", pos[0], sessionID(tx))
		<-tx.Statement.Context.Done()
		return nil
	}, opts...)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "released %s after %v\n", pos[0], time.Since(since).Round(time.Millisecond))
		return exitOK
	case errors.Is(err, dlock.ErrNotAcquired) && ctx.Err() != nil:
		return fail(stderr, "hold", fmt.Errorf("interrupted before %s was acquired", pos[0]))
	case errors.Is(err, dlock.ErrNotAcquired) && *timeout > 0:
		return fail(stderr, "hold", fmt.Errorf("%s not acquired within %v: busy", pos[0], *timeout))
	}
	return fail(stderr, "hold", err)
}

// serverKey describes what the server sees for key: "postgres key N" or
// "mysql name N".
func serverKey(db *gorm.DB, key any, prefix string) string {
	dialect := db.Dialector.Name()
	k, err := dlock.DBKey(dialect, key, prefix)
	if err != nil {
		return err.Error()
	}
	if dialect == "postgres" {
		return fmt.Sprintf("postgres key %d", k)
	}
	return fmt.Sprintf("mysql name %q", k)
}

// sessionID returns the server's id of tx's session, or "?".
func sessionID(tx *gorm.DB) string {
	q := "SELECT CONNECTION_ID()"
	if tx.Dialector.Name() == "postgres" {
		q = "SELECT pg_backend_pid()"
	}
	var id int64
	if err := tx.Raw(q).Scan(&id).Error; err != nil {
		return "?"
	}
	return strconv.FormatInt(id, 10)
}

// printHolders writes one line per holder, with the lock first when
// withKey.
func printHolders(w io.Writer, hs []dlock.Holder, withKey bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "SESSION\tSTATE\tMODE\tUSER\tAPPLICATION\tCLIENT\tSINCE"
	if withKey {
		head = "KEY\t" + head
	}
	fmt.Fprintln(tw, head)
	now := time.Now()
	for i := range hs {
		h := &hs[i]
		cols := []string{
			strconv.FormatInt(h.SessionID, 10),
			map[bool]string{true: "held", false: "waiting"}[h.Granted],
			map[bool]string{true: "shared", false: "exclusive"}[h.Shared],
			dash(h.User), dash(h.Application), dash(h.ClientAddr), since(h.Since, now),
		}
		if withKey {
			cols = append([]string{fmt.Sprint(h.DBKey)}, cols...)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// since formats t as an RFC 3339 time and how long ago it was.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%v ago)", t.Local().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}
