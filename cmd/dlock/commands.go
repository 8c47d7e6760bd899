package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

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
	return f.usageError(errText(err))
}

// jsonHelp is the help of -json.
const jsonHelp = `With -json: one JSON object per line per session (nothing when there is none):
  {"db_key":"-8841863937742578886","session_id":4242,"granted":true,"shared":false,
   "user":"app","application":"dlock","client_addr":"10.0.0.7:51034","database":"app",
   "state":"idle","query":"SELECT pg_advisory_lock($1)","since":"2026-01-02T15:04:05.123Z"}
db_key is the lock as the server names it, always a string (PostgreSQL's int64 key in
decimal); since is null when the server does not tell. Holders come before waiters.
`

func runWho(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("who", stdout, stderr, true, true)
	f.jsonFlag()
	f.extra = jsonHelp
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
	switch {
	case f.json:
		return printJSON(stdout, stderr, "who", hs)
	case len(hs) == 0:
		fmt.Fprintf(stdout, "free: nobody holds or waits for %s (%s)\n", quote(pos[0]), serverKey(db, key, f.prefix))
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
	f := newFlags("list", stdout, stderr, true, false)
	f.jsonFlag()
	f.extra = jsonHelp
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
	switch {
	case f.json:
		return printJSON(stdout, stderr, "list", hs)
	case len(hs) == 0:
		fmt.Fprintln(stdout, "no locks held")
		return exitOK
	}
	printHolders(stdout, hs, true)
	return exitOK
}

func runKey(_ context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("key", stdout, stderr, false, true)
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
	fmt.Fprintf(stdout, "mysql\t%s\n", quote(fmt.Sprint(my)))
	return exitOK
}

func runHold(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("hold", stdout, stderr, true, true)
	var timeout waitFlag
	f.Var(&timeout, "timeout", "give up when the lock is not acquired within `D` (exit 75); 0: try once (default: wait until interrupted)")
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
	fmt.Fprintf(stdout, "waiting for %s (%s)\n", quote(pos[0]), serverKey(db, key, f.prefix))
	var since time.Time
	err = dlock.WithLock(ctx, db, key, func(tx *gorm.DB) error {
		since = time.Now()
		fmt.Fprintf(stdout, "acquired %s (session %s); holding until interrupted\n", quote(pos[0]), sessionID(tx))
		<-tx.Statement.Context.Done()
		return nil
	}, timeout.options()...)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "released %s after %v\n", quote(pos[0]), time.Since(since).Round(time.Millisecond))
		return exitOK
	case errors.Is(err, dlock.ErrNotAcquired) && ctx.Err() != nil:
		return fail(stderr, "hold", fmt.Errorf("interrupted before %s was acquired", quote(pos[0])))
	case errors.Is(err, dlock.ErrNotAcquired) && timeout.set && timeout.d > 0:
		fail(stderr, "hold", fmt.Errorf("%s not acquired within %v: busy", quote(pos[0]), timeout.d))
		return exitBusy
	case errors.Is(err, dlock.ErrNotAcquired) && timeout.set:
		fail(stderr, "hold", fmt.Errorf("%s not acquired: busy", quote(pos[0])))
		return exitBusy
	}
	return fail(stderr, "hold", err)
}

// waitFlag is -timeout: unset waits until acquired, 0 tries once, D waits
// at most D.
type waitFlag struct {
	d   time.Duration
	set bool
}

func (w *waitFlag) String() string {
	if w == nil || !w.set {
		return ""
	}
	return w.d.String()
}

func (w *waitFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (10s, 1m30s, 0)")
	}
	if d < 0 {
		return errors.New("negative")
	}
	w.d, w.set = d, true
	return nil
}

// options returns the dlock wait option -timeout asks for.
func (w *waitFlag) options() []dlock.Option {
	if !w.set {
		return nil
	}
	return []dlock.Option{dlock.Timeout(w.d)} // 0: NoWait
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
			cols = append([]string{quote(fmt.Sprint(h.DBKey))}, cols...)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	_ = tw.Flush()
}

// dash returns s quoted as quote does, or "-" for "".
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return quote(s)
}

// holderJSON is a Holder as -json prints it.
type holderJSON struct {
	DBKey       string     `json:"db_key"`
	SessionID   int64      `json:"session_id"`
	Granted     bool       `json:"granted"`
	Shared      bool       `json:"shared"`
	User        string     `json:"user"`
	Application string     `json:"application"`
	ClientAddr  string     `json:"client_addr"`
	Database    string     `json:"database"`
	State       string     `json:"state"`
	Query       string     `json:"query"`
	Since       *time.Time `json:"since"`
}

// printJSON writes one JSON object per holder, a line each, and returns
// the exit code.
func printJSON(stdout, stderr io.Writer, cmd string, hs []dlock.Holder) int {
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for i := range hs {
		h := &hs[i]
		j := holderJSON{
			DBKey: fmt.Sprint(h.DBKey), SessionID: h.SessionID, Granted: h.Granted, Shared: h.Shared,
			User: h.User, Application: h.Application, ClientAddr: h.ClientAddr, Database: h.Database,
			State: h.State, Query: h.Query,
		}
		if !h.Since.IsZero() {
			t := h.Since.UTC()
			j.Since = &t
		}
		if err := enc.Encode(j); err != nil {
			return fail(stderr, cmd, err)
		}
	}
	return exitOK
}

// quote returns s as it is when it prints as one unambiguous word or
// phrase, else quoted as strconv.Quote does: when s is empty, holds a
// control or other non-printing character or invalid UTF-8, starts with
// a double quote, or starts or ends with a space. No key can then forge a
// line or a column of dlock's output.
func quote(s string) string {
	if s == "" || !utf8.ValidString(s) || s[0] == '"' || s[0] == ' ' || s[len(s)-1] == ' ' {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// oneLine returns s on one line: a line break and the indent after it
// become "; ", and any other non-printing character is escaped as
// strconv.Quote would.
func oneLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\r' || r == '\n':
			for i += n; i < len(s) && strings.ContainsRune(" \t\r\n", rune(s[i])); i++ {
			}
			if b.Len() > 0 && i < len(s) {
				b.WriteString("; ")
			}
			continue
		case r == utf8.RuneError && n == 1, !strconv.IsPrint(r):
			q := strconv.Quote(s[i : i+n])
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// since formats t as an RFC 3339 time and how long ago it was.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%v ago)", t.Local().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}
