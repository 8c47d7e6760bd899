package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/gormdlock/dlock"
	"gorm.io/gorm"
)

// defaultKillAfter is the default of run's -kill-after.
const defaultKillAfter = 10 * time.Second

// groupPoll is how often run looks whether the rest of CMD's process group
// has gone after a loss.
const groupPoll = 50 * time.Millisecond

// runHelp is the part of run's help after the flags.
const runHelp = `run takes the lock KEY on a database session of its own, runs CMD with ARGS in a
process group of its own (stdin, stdout and stderr passed through), and releases
the lock when CMD exits. Without -timeout it waits for the lock as long as it
takes; -timeout 0 tries once. A cron job that must run once per schedule across
hosts wants -timeout 0 (or less than its period): a waiting host would otherwise
run the job again once the first one finished. The lock makes runs exclusive, not
unique: a host whose cron starts after the first run ended runs the job too.

dlock checks about every 0.5 s that the server still holds the lock. If the lock
is lost while CMD runs (its session killed, the server restarted, the network
cut for more than 5 s), CMD's process group gets SIGTERM, SIGKILL after
-kill-after, and dlock run exits 70 once CMD is gone. SIGINT, SIGTERM and SIGHUP
sent to dlock run go to CMD's process group, and the lock is released when CMD
has exited; before the lock is acquired they end the wait and CMD is not run.
CMD is not the terminal's foreground job: an interactive CMD that reads the
terminal is stopped.

Exit status:
  CMD's own      CMD exited (0 included)
  128+N          CMD was killed by signal N (143: SIGTERM), or dlock run got
                 signal N before the lock was acquired (CMD not run)
  70             the lock was lost while CMD ran
  75             the lock was not acquired: busy, or -timeout ran out (EX_TEMPFAIL)
  2              a usage error, or a DSN in none of the accepted forms
  125            dlock failed before CMD ran (database unreachable, a server error)
  126, 127       CMD could not be executed, or was not found
A failed release after CMD exited is reported on stderr and leaves CMD's status.

Example crontab line (one host runs the report; the others exit 75 at once):
  ` + crontabLine + `
`

// errLostWhileRunning is fn's error when the lock was lost while CMD ran.
var errLostWhileRunning = errors.New("lock lost while CMD ran")

// errInterrupted is fn's error when a signal came before CMD started.
var errInterrupted = errors.New("interrupted")

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f := newFlags("run", stdout, stderr, true, true)
	var timeout waitFlag
	f.Var(&timeout, "timeout", "give up when the lock is not acquired within `D` (exit 75); 0: try once (default: wait as long as it takes)")
	killAfter := f.Duration("kill-after", defaultKillAfter, "after a loss, send SIGKILL to CMD's process group `D` after SIGTERM")
	quiet := f.Bool("quiet", false, "print nothing when the lock is not acquired (exit 75)")
	f.extra = runHelp
	ours, cmdArgs := args, []string(nil)
	if i := slices.Index(args, "--"); i >= 0 {
		ours, cmdArgs = args[:i], args[i+1:]
	}
	pos, code, ok := f.parse(ours, 1)
	if !ok {
		return code
	}
	if len(cmdArgs) == 0 {
		return f.usageError("want KEY -- CMD [ARGS...]")
	}
	if *killAfter < 0 {
		return usageErr(f, errors.New("-kill-after is negative"))
	}
	key, err := lockKey(pos[0], f.intKey)
	if err != nil {
		return usageErr(f, err)
	}
	if _, err := dlock.DBKey("mysql", key, f.prefix); err != nil {
		return usageErr(f, err) // an empty key, before any connection
	}
	if !runSupported {
		fmt.Fprintf(stderr, "dlock run: not supported on this system (it needs process groups)\n")
		return exitRunFailed
	}
	if _, err := exec.LookPath(cmdArgs[0]); err != nil {
		return execFailed(stderr, err)
	}
	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.SysProcAttr = procAttr()

	r := &runner{cmd: cmd, killAfter: *killAfter, stderr: stderr}
	var waitCtx context.Context
	waitCtx, r.cancelWait = context.WithCancel(context.Background())
	defer r.cancelWait()
	stopRoute := r.route(signalsOf(ctx), ctx.Done())
	defer stopRoute()

	db, err := open(waitCtx, f.dsn, f.prefix)
	if err != nil {
		if s := r.interrupted(); s != nil {
			return r.notRun(pos[0], s)
		}
		fmt.Fprintf(stderr, "dlock run: %s; CMD not run\n", errText(err))
		return exitRunFailed
	}
	defer closeDB(db)
	// The session is pinned first, so that a failure to get one is told
	// from a busy lock (WithLock would report both as not acquired).
	var pinned bool
	err = db.WithContext(waitCtx).Connection(func(tx *gorm.DB) error {
		pinned = true
		return dlock.WithLock(waitCtx, tx, key, r.fn, timeout.options()...)
	})

	r.mu.Lock()
	r.finished = true
	started, startErr, lost := r.started, r.startErr, r.lost
	r.mu.Unlock()
	switch {
	case !started && startErr != nil:
		return execFailed(stderr, startErr)
	case !started && r.interrupted() != nil:
		return r.notRun(pos[0], r.interrupted())
	case !started && pinned && errors.Is(err, dlock.ErrNotAcquired):
		if !*quiet {
			fmt.Fprintf(stderr, "dlock run: %s; CMD not run\n", errText(err))
		}
		return exitBusy
	case !started:
		fmt.Fprintf(stderr, "dlock run: %s; CMD not run\n", errText(err))
		return exitRunFailed
	case lost:
		return exitLost
	case errors.Is(err, dlock.ErrLockLost):
		fmt.Fprintf(stderr, "dlock run: CMD exited, then the lock was found lost: %s\n", errText(err))
		return exitLost
	case err != nil:
		fmt.Fprintf(stderr, "dlock run: CMD exited; releasing the lock: %s\n", errText(err))
	}
	return exitStatus(cmd.ProcessState)
}

// execFailed reports that CMD could not be run and returns 127 when it was
// not found, else 126.
func execFailed(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "dlock run: %s\n", errText(err))
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return exitNotFound
	}
	return exitNoExec
}

// runner runs CMD under the lock and routes signals: to the wait before
// CMD starts, to CMD's process group while it runs.
type runner struct {
	cmd        *exec.Cmd
	killAfter  time.Duration
	stderr     io.Writer
	cancelWait context.CancelFunc // ends the connection and the wait for the lock

	mu       sync.Mutex
	sig      os.Signal // the signal that ended the wait, before CMD started
	started  bool      // CMD started: signals go to its group
	finished bool      // CMD and its group are done with: no more signals
	startErr error
	lost     bool // the lock was lost while CMD ran
}

// route passes each signal from sigs to r.signal until stop is called. A
// ctxDone that closes stands for a SIGTERM (the in-process tests, which
// have no signal channel).
func (r *runner) route(sigs <-chan os.Signal, ctxDone <-chan struct{}) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				r.signal(s)
			case <-ctxDone:
				ctxDone = nil
				r.signal(syscall.SIGTERM)
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// signal passes s on to CMD's process group while CMD runs, or ends the
// wait for the lock before CMD starts.
func (r *runner) signal(s os.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.finished:
	case r.started:
		if n, ok := s.(syscall.Signal); ok {
			_ = signalGroup(r.cmd.Process.Pid, n)
		}
	case r.sig == nil:
		r.sig = s
		r.cancelWait()
	}
}

// interrupted returns the signal that ended the wait, or nil.
func (r *runner) interrupted() os.Signal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sig
}

// notRun reports that signal s ended the wait and returns 128+N.
func (r *runner) notRun(key string, s os.Signal) int {
	fmt.Fprintf(r.stderr, "dlock run: %v before %s was acquired; CMD not run\n", s, quote(key))
	return exitSignal + signalNumber(s)
}

// fn is WithLock's fn: it starts CMD, unless a signal came first, and
// waits until CMD exits or the lock is lost (tx's context ends). After a
// loss it sends SIGTERM to CMD's process group, SIGKILL after killAfter,
// and returns errLostWhileRunning once CMD has exited.
func (r *runner) fn(tx *gorm.DB) error {
	r.mu.Lock()
	if r.sig != nil {
		r.mu.Unlock()
		return errInterrupted
	}
	if err := r.cmd.Start(); err != nil {
		r.startErr = err
		r.mu.Unlock()
		return err
	}
	r.started = true
	r.mu.Unlock()

	exited := make(chan struct{})
	go func() {
		_ = r.cmd.Wait() // the status is read from cmd.ProcessState
		close(exited)
	}()
	lockCtx := tx.Statement.Context
	select {
	case <-exited:
		return nil
	case <-lockCtx.Done():
	}
	r.mu.Lock()
	r.lost = true
	r.mu.Unlock()
	pgid := r.cmd.Process.Pid
	fmt.Fprintf(r.stderr, "dlock run: %s; sending SIGTERM to CMD (process group %d)\n", errText(context.Cause(lockCtx)), pgid)
	_ = signalGroup(pgid, syscall.SIGTERM)
	kill := time.NewTimer(r.killAfter)
	defer kill.Stop()
	select {
	case <-exited:
	case <-kill.C:
		fmt.Fprintf(r.stderr, "dlock run: CMD still running %v after SIGTERM; sending SIGKILL\n", r.killAfter)
		_ = signalGroup(pgid, syscall.SIGKILL)
		<-exited
		return errLostWhileRunning
	}
	// CMD has exited; wait, until the same deadline, for the rest of its
	// group.
	tick := time.NewTicker(groupPoll)
	defer tick.Stop()
	for groupAlive(pgid) {
		select {
		case <-tick.C:
		case <-kill.C:
			fmt.Fprintf(r.stderr, "dlock run: processes of CMD's group still running %v after SIGTERM; sending SIGKILL\n", r.killAfter)
			_ = signalGroup(pgid, syscall.SIGKILL)
			return errLostWhileRunning
		}
	}
	return errLostWhileRunning
}
