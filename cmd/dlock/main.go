// Command dlock shows and takes dlock's database locks from a shell: who
// holds or waits for a lock, every lock held, the key a server sees for a
// name, a lock held until interrupted (an operator's pause switch for a
// job that takes the same lock), and a command run under a lock (a cron
// job that runs once across a fleet).
//
// Usage:
//
//	dlock who  [-dsn DSN] [-prefix P] [-int] [-json] KEY
//	dlock list [-dsn DSN] [-prefix P] [-json]
//	dlock key  [-prefix P] [-int] KEY
//	dlock hold [-dsn DSN] [-prefix P] [-int] [-timeout D] KEY
//	dlock run  [-dsn DSN] [-prefix P] [-int] [-timeout D] [-kill-after D] [-quiet] KEY -- CMD [ARGS...]
//	dlock -version
//
// The DSN comes from -dsn or the environment variable DLOCK_DSN. A DSN
// that starts with postgres:// or postgresql://, or a key=value DSN with
// host=, is PostgreSQL; a go-sql-driver/mysql DSN
// (user:password@tcp(host:3306)/db) is MySQL or MariaDB; anything else
// (mysql://... included) is a usage error. -prefix is the
// Plugin.KeyPrefix of the application whose locks you look at. Connecting
// gives up after 10 s; SIGINT, SIGTERM and SIGHUP end who, list and key at
// once, and end hold's wait or hold (releasing the lock); a second signal,
// or 7 s without an end, exits at once with 128+N.
//
// # Output
//
// who and list print a table, or with -json one JSON object per line per
// session (no line when there is none), with these fields: db_key (the
// lock as the server names it, always a string: PostgreSQL's int64 key in
// decimal, since JSON numbers lose int64 precision in many parsers),
// session_id, granted, shared, user, application, client_addr, database,
// state, query, and since (RFC 3339, null when the server does not tell).
// Keys and names that hold control characters, invalid UTF-8, leading or
// trailing spaces, or nothing at all are printed quoted, as Go's
// strconv.Quote writes them, so that no key can forge a line of output.
//
// # dlock run
//
// run takes the lock KEY on a session of its own, runs CMD with ARGS in a
// process group of its own (stdin, stdout and stderr passed through), and
// releases the lock when CMD exits. Without -timeout it waits for the lock
// as long as it takes; -timeout D gives up after D, and -timeout 0 tries
// once. For a cron job that must run once per schedule across hosts, give
// -timeout 0 (or less than the period): a waiting host would otherwise run
// the job again after the first one finished. The lock makes runs
// exclusive, not unique: a host whose cron starts after the first run
// ended runs the job too.
//
//	*/5 * * * * DLOCK_DSN='app:pw@tcp(db:3306)/app' /usr/local/bin/dlock run -timeout 0 -quiet report -- /usr/local/bin/report
//
// dlock checks about every 0.5 s that the server still holds the lock.
// When it finds the lock lost (the session killed, the server restarted,
// the network cut for longer than 5 s), it sends SIGTERM to CMD's process
// group, SIGKILL after -kill-after (default 10 s), and exits 70 once CMD
// is gone. SIGINT, SIGTERM and SIGHUP sent to dlock run go to CMD's
// process group; the lock is released when CMD has exited. Before the lock
// is acquired they end the wait instead, and CMD is not run. If dlock run
// itself is killed with SIGKILL, its session ends, which frees the lock;
// on Linux CMD then gets SIGKILL too (its own children do not).
//
// CMD is run in its own process group so that a loss can end the whole of
// it; it is therefore not the terminal's foreground job, so an
// interactive CMD that reads the terminal is stopped (SIGTTIN).
//
// # Exit status
//
//	0      success; for run: CMD exited 0
//	1      who, list, hold: the work failed (the database could not be
//	       reached, a server error, interrupted while waiting)
//	2      a usage error, or a DSN in none of the accepted forms
//	70     run: the lock was lost while CMD ran (CMD was sent SIGTERM)
//	75     hold, run: the lock was not acquired: busy (with -timeout 0),
//	       or -timeout ran out (EX_TEMPFAIL: try again later)
//	125    run: dlock failed before CMD ran (database unreachable, a
//	       server error)
//	126    run: CMD was found but could not be executed
//	127    run: CMD was not found
//	128+N  run: CMD was killed by signal N (143 for SIGTERM); or dlock run
//	       got signal N before the lock was acquired
//	other  run: CMD's own exit status
//
// A failure of the release after CMD exited is reported on stderr and
// does not change the exit status (the server frees the lock when the
// session it was held on ends).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// Exit codes; the package doc and usage list them all.
const (
	exitOK        = 0
	exitFailure   = 1
	exitUsage     = 2
	exitLost      = 70  // run: the lock was lost while CMD ran (EX_SOFTWARE)
	exitBusy      = 75  // hold, run: not acquired (EX_TEMPFAIL)
	exitRunFailed = 125 // run: dlock failed before CMD ran
	exitNoExec    = 126 // run: CMD not executable
	exitNotFound  = 127 // run: CMD not found
	exitSignal    = 128 // + N: killed by signal N
)

// exitCodes is the exit status section of the help.
const exitCodes = `Exit status:
  0      success; for run: CMD exited 0
  1      who, list, hold: the work failed (database unreachable, a server error,
         interrupted while waiting; 128+N after a second signal N)
  2      a usage error, or a DSN in none of the accepted forms
  70     run: the lock was lost while CMD ran; CMD's process group got SIGTERM,
         and SIGKILL after -kill-after
  75     hold, run: the lock was not acquired: busy, or -timeout ran out
         (EX_TEMPFAIL: try again later)
  125    run: dlock failed before CMD ran (database unreachable, a server error)
  126    run: CMD was found but could not be executed
  127    run: CMD was not found
  128+N  run: CMD was killed by signal N (143: SIGTERM), or dlock run got
         signal N before the lock was acquired (CMD not run)
  other  run: CMD's own exit status
`

// crontabLine is the example of the help.
const crontabLine = `*/5 * * * * DLOCK_DSN='app:pw@tcp(db:3306)/app' /usr/local/bin/dlock run -timeout 0 -quiet report -- /usr/local/bin/report`

// interruptGrace is how long a command other than run has to end after
// the first SIGINT, SIGTERM or SIGHUP before dlock exits anyway: more than
// the 5 s that bound hold's release. A second signal exits at once.
const interruptGrace = 7 * time.Second

func main() {
	sigs := make(chan os.Signal, 8)
	for _, s := range []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		// A signal ignored at start (nohup's SIGHUP, SIGINT in a
		// background job of a script) stays ignored, by dlock and by CMD.
		if !signal.Ignored(s) {
			signal.Notify(sigs, s)
		}
	}
	ctx := context.WithValue(context.Background(), signalsKey{}, (<-chan os.Signal)(sigs))
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// signalsKey is the context key of the channel of the signals main
// receives.
type signalsKey struct{}

// signalsOf returns the signal channel main put in ctx, or nil (in tests).
func signalsOf(ctx context.Context) <-chan os.Signal {
	ch, _ := ctx.Value(signalsKey{}).(<-chan os.Signal)
	return ch
}

// interruptible returns a context that ends at the first signal of ctx's
// channel; after a second signal, or interruptGrace after the first, the
// process exits with 128+N. stop ends the watch.
func interruptible(ctx context.Context, stderr io.Writer) (_ context.Context, stop func()) {
	sigs := signalsOf(ctx)
	ctx, cancel := context.WithCancel(ctx)
	if sigs == nil {
		return ctx, cancel
	}
	done := make(chan struct{})
	go func() {
		var first os.Signal
		select {
		case first = <-sigs:
		case <-done:
			return
		}
		cancel()
		select {
		case <-sigs:
		case <-time.After(interruptGrace):
		case <-done:
			return
		}
		fmt.Fprintf(stderr, "dlock: %v: exiting\n", first)
		os.Exit(exitSignal + signalNumber(first))
	}()
	return ctx, func() { close(done); cancel() }
}

// signalNumber returns the number of signal s, or 0.
func signalNumber(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 0
}

// command describes one subcommand for the help.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands []command

func init() {
	commands = []command{
		{"who", "[-dsn DSN] [-prefix P] [-int] [-json] KEY", "show the sessions that hold or wait for the lock KEY", runWho},
		{"list", "[-dsn DSN] [-prefix P] [-json]", "show every lock held (PostgreSQL, MySQL; MariaDB with metadata_lock_info)", runList},
		{"key", "[-prefix P] [-int] KEY", "print the PostgreSQL key and the MySQL name KEY locks", runKey},
		{"hold", "[-dsn DSN] [-prefix P] [-int] [-timeout D] KEY", "take the lock KEY and hold it until interrupted", runHold},
		{"run", "[-dsn DSN] [-prefix P] [-int] [-timeout D] [-kill-after D] [-quiet] KEY -- CMD [ARGS...]", "take the lock KEY, run CMD, release the lock when CMD exits", runRun},
	}
}

// run runs the command line args (without the program name) and returns
// the exit code. ctx's signal channel (see main) interrupts the command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	case "-version", "--version", "version":
		fmt.Fprintln(stdout, "dlock", version())
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return runCommand(ctx, c, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "dlock: unknown command %s\n", quote(args[0]))
	usage(stderr)
	return exitUsage
}

// runCommand runs c with args. Signals end every command but run, which
// passes them on to CMD instead.
func runCommand(ctx context.Context, c command, args []string, stdout, stderr io.Writer) int {
	if c.name != "run" {
		var stop func()
		ctx, stop = interruptible(ctx, stderr)
		defer stop()
	}
	return c.run(ctx, args, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "dlock shows and takes dlock's database locks (MySQL, MariaDB, PostgreSQL).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage:")
	for _, c := range commands {
		fmt.Fprintf(w, "  dlock %s %s\n        %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "  dlock -version\n        print the version of dlock")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The DSN comes from -dsn or $"+envDSN+": postgres://user@host:5432/db or a key=value")
	fmt.Fprintln(w, "DSN with host= for PostgreSQL; user:password@tcp(host:3306)/db for MySQL and MariaDB.")
	fmt.Fprintln(w, "Run dlock COMMAND -h for its flags and output.")
	fmt.Fprintln(w)
	fmt.Fprint(w, exitCodes)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Example crontab line (one host runs the report; the others exit 75 at once):")
	fmt.Fprintln(w, "  "+crontabLine)
}

// version returns the main module's version: the tag it was installed at
// (go install ...@v0.3.0), or "(devel)" with the VCS revision when built
// from a clone.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if v == "(devel)" && rev != "" {
		v += " (" + rev + modified + ")"
	}
	return v + " " + bi.GoVersion
}

// flags is a subcommand's flag set with the flags they share.
type flags struct {
	*flag.FlagSet
	stdout io.Writer
	extra  string // more help, after the flags
	dsn    string
	prefix string
	intKey bool
	json   bool
}

// newFlags makes the flag set of command c; withDSN adds -dsn, withKey
// -int. Errors go to stderr; -h prints the help to stdout.
func newFlags(c string, stdout, stderr io.Writer, withDSN, withKey bool) *flags {
	f := &flags{FlagSet: flag.NewFlagSet("dlock "+c, flag.ContinueOnError), stdout: stdout}
	f.SetOutput(stderr)
	if withDSN {
		f.StringVar(&f.dsn, "dsn", "", "database `DSN` (default $"+envDSN+")")
	}
	f.StringVar(&f.prefix, "prefix", "", "the application's Plugin.KeyPrefix, prepended to string keys")
	if withKey {
		f.BoolVar(&f.intKey, "int", false, "KEY is an integer key (42 is then the integer 42, not the string \"42\")")
	}
	// The flag package calls Usage for -h and for a bad flag; parse prints
	// the help itself, to stdout or stderr.
	f.Usage = func() {}
	return f
}

// jsonFlag adds -json.
func (f *flags) jsonFlag() {
	f.BoolVar(&f.json, "json", false, "print one JSON object per line per session (see below)")
}

// help prints the help of f's command to w.
func (f *flags) help(w io.Writer) {
	fmt.Fprintf(w, "Usage: dlock %s\n\n%s.\n\nFlags:\n", f.synopsis(), f.summary())
	out := f.Output()
	f.SetOutput(w)
	f.PrintDefaults()
	f.SetOutput(out)
	if f.extra != "" {
		fmt.Fprintln(w)
		fmt.Fprint(w, f.extra)
	}
}

// usageError prints msg, the synopsis and where the help is to stderr,
// and returns exitUsage.
func (f *flags) usageError(msg string) int {
	fmt.Fprintf(f.Output(), "%s: %s\nUsage: dlock %s\nRun '%s -h' for the flags.\n", f.Name(), msg, f.synopsis(), f.Name())
	return exitUsage
}

// synopsis returns "who [-dsn DSN] ... KEY" for f's command.
func (f *flags) synopsis() string {
	c := strings.TrimPrefix(f.Name(), "dlock ")
	for _, cmd := range commands {
		if cmd.name == c {
			return c + " " + cmd.args
		}
	}
	return c
}

// summary returns the one-line description of f's command.
func (f *flags) summary() string {
	c := strings.TrimPrefix(f.Name(), "dlock ")
	for _, cmd := range commands {
		if cmd.name == c {
			return cmd.summary
		}
	}
	return ""
}

// parse parses args, flags before or after the positional arguments, and
// checks that there are want of those, and that a command with -dsn has a
// DSN in one of the accepted forms. It returns the positional arguments,
// or an exit code when the command must stop.
func (f *flags) parse(args []string, want int) ([]string, int, bool) {
	var pos []string
	for {
		// The flag package would print its error and call Usage; dlock
		// prints both itself, on one line each.
		out := f.Output()
		f.SetOutput(io.Discard)
		err := f.Parse(args)
		f.SetOutput(out)
		if errors.Is(err, flag.ErrHelp) {
			f.help(f.stdout)
			return nil, exitOK, false
		}
		if err != nil {
			return nil, f.usageError(oneLine(err.Error())), false
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	switch {
	case len(pos) == want:
	case want == 0:
		return nil, f.usageError("unexpected argument " + quote(pos[0])), false
	default:
		return nil, f.usageError(fmt.Sprintf("want %d argument (KEY), got %d", want, len(pos))), false
	}
	if f.Lookup("dsn") != nil {
		if f.dsn == "" {
			f.dsn = os.Getenv(envDSN)
		}
		if f.dsn == "" {
			fmt.Fprintf(f.Output(), "%s: no database: give -dsn or set %s (%s)\n", f.Name(), envDSN, dsnForms)
			return nil, exitUsage, false
		}
		if _, _, err := dialectOf(f.dsn); err != nil {
			fmt.Fprintf(f.Output(), "%s: %s\n", f.Name(), oneLine(err.Error()))
			return nil, exitUsage, false
		}
	}
	return pos, exitOK, true
}

// fail prints err as the one line of a failed command and returns
// exitFailure.
func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "dlock %s: %s\n", cmd, errText(err))
	return exitFailure
}

// errText returns err's text as one line without a leading "dlock: ",
// with the MySQL driver's first log line added when err says no more than
// that the connection was bad.
func errText(err error) string {
	s := err.Error()
	if strings.HasSuffix(s, "invalid connection") || strings.HasSuffix(s, "bad connection") {
		if l := driverLog.first(); l != "" {
			s += " (mysql driver: " + l + ")"
		}
	}
	return oneLine(strings.TrimPrefix(s, "dlock: "))
}
