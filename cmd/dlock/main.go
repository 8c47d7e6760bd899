// Command dlock shows and takes dlock's database locks from a shell: who
// holds or waits for a lock, every lock held, the key a server sees for a
// name, and a lock held until interrupted (an operator's pause switch for
// a job that takes the same lock).
//
// Usage:
//
//	dlock who  [-dsn DSN] [-prefix P] [-int] KEY
//	dlock list [-dsn DSN] [-prefix P]
//	dlock key  [-prefix P] [-int] KEY
//	dlock hold [-dsn DSN] [-prefix P] [-int] [-timeout D] KEY
//
// The DSN comes from -dsn or the environment variable DLOCK_DSN. A DSN
// that starts with postgres:// or postgresql://, or a key=value DSN with
// host=, is PostgreSQL; anything else is a go-sql-driver/mysql DSN
// (user:password@tcp(host:3306)/db) for MySQL or MariaDB. -prefix is the
// Plugin.KeyPrefix of the application whose locks you look at.
//
// Exit status: 0 on success, 1 when the work failed (the database could
// not be reached, a lock was not acquired), 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command describes one subcommand for the help.
type command struct {
	name, args, summary string
}

var commands = []command{
	{"who", "[-dsn DSN] [-prefix P] [-int] KEY", "show the sessions that hold or wait for the lock KEY"},
	{"list", "[-dsn DSN] [-prefix P]", "show every lock held (PostgreSQL, MySQL; MariaDB with metadata_lock_info)"},
	{"key", "[-prefix P] [-int] KEY", "print the PostgreSQL key and the MySQL name KEY locks"},
	{"hold", "[-dsn DSN] [-prefix P] [-int] [-timeout D] KEY", "take the lock KEY and hold it until interrupted"},
}

// runner returns the function of the subcommand name, or nil.
func runner(name string) func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	switch name {
	case "who":
		return runWho
	case "list":
		return runList
	case "key":
		return runKey
	case "hold":
		return runHold
	}
	return nil
}

// run runs the command line args (without the program name) and returns
// the exit code. ctx ends the wait of hold.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	}
	if r := runner(args[0]); r != nil {
		return r(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "dlock: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "dlock shows and takes dlock's database locks (MySQL, MariaDB, PostgreSQL).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage:")
	for _, c := range commands {
		fmt.Fprintf(w, "  dlock %s %s\n        %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The DSN comes from -dsn or $DLOCK_DSN: postgres://... or host=... for PostgreSQL,")
	fmt.Fprintln(w, "user:password@tcp(host:3306)/db for MySQL and MariaDB. Run dlock COMMAND -h for its flags.")
}

// flags is a subcommand's flag set with the flags they share.
type flags struct {
	*flag.FlagSet
	dsn    string
	prefix string
	intKey bool
}

// newFlags makes the flag set of command c; withDSN adds -dsn, withKey -int.
func newFlags(c string, stderr io.Writer, withDSN, withKey bool) *flags {
	f := &flags{FlagSet: flag.NewFlagSet("dlock "+c, flag.ContinueOnError)}
	f.SetOutput(stderr)
	if withDSN {
		f.StringVar(&f.dsn, "dsn", "", "database `DSN` (default $"+envDSN+")")
	}
	f.StringVar(&f.prefix, "prefix", "", "the application's Plugin.KeyPrefix, prepended to string keys")
	if withKey {
		f.BoolVar(&f.intKey, "int", false, "KEY is an integer key (42 is then the integer 42, not the string \"42\")")
	}
	for _, cmd := range commands {
		if cmd.name == c {
			f.Usage = func() {
				fmt.Fprintf(f.Output(), "Usage: dlock %s %s\n\n%s.\n\nFlags:\n", c, cmd.args, cmd.summary)
				f.PrintDefaults()
			}
		}
	}
	return f
}

// parse parses args, flags before or after the positional arguments, and
// checks that there are want of those. It returns the positional
// arguments, or an exit code when the command must stop.
func (f *flags) parse(args []string, want int) ([]string, int, bool) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) != want {
		if want == 0 {
			fmt.Fprintf(f.Output(), "%s: unexpected argument %q\n", f.Name(), pos[0])
		} else {
			fmt.Fprintf(f.Output(), "%s: want %d argument (KEY), got %d\n", f.Name(), want, len(pos))
		}
		f.Usage()
		return nil, exitUsage, false
	}
	if f.Lookup("dsn") != nil && f.dsn == "" {
		f.dsn = os.Getenv(envDSN)
	}
	if f.Lookup("dsn") != nil && f.dsn == "" {
		fmt.Fprintf(f.Output(), "%s: no database: give -dsn or set %s\n", f.Name(), envDSN)
		return nil, exitUsage, false
	}
	return pos, exitOK, true
}

// fail prints err as the one line of a failed command and returns exitFailure.
func fail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "dlock %s: %s\n", cmd, strings.TrimPrefix(err.Error(), "dlock: "))
	return exitFailure
}
