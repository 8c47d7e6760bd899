// Command testsum runs `go test -json` and prints what plain `go test`
// prints (a line per package, the output of failing tests), and records
// every test's result; with -report it prints one summary of the records:
// how many tests passed, failed and were skipped, and which make target
// runs each group of skipped tests. The target is the first "make NAME"
// in the test's skip message (make test-long, make topology, make
// partition, make stress): a new group needs only a skip message that
// names its target. `make test` uses it.
//
// Usage:
//
//	testsum -record FILE -- go test -json [flags] [packages]
//	testsum -report FILE
//
// The exit status of a run is the command's, or 1 when a test or package
// failed.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// record is one test's result, as written to the record file.
type record struct {
	Dir     string `json:"dir"`
	Package string `json:"package"`
	Test    string `json:"test"`
	Action  string `json:"action"` // pass, fail, skip
	Reason  string `json:"reason,omitempty"`
}

func main() {
	recordFile := flag.String("record", "", "append each test's result to `file` (JSON lines)")
	report := flag.String("report", "", "print the summary of the results in `file` and exit")
	flag.Parse()
	if *report != "" {
		recs, err := readRecords(*report)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testsum: %v\n", err)
			os.Exit(1)
		}
		os.Exit(summarize(os.Stdout, recs))
	}
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: testsum -record FILE -- go test -json ...; testsum -report FILE")
		os.Exit(2)
	}
	os.Exit(run(*recordFile, flag.Args()))
}

func run(recordFile string, args []string) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	cmd.Stdin = os.Stdin
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testsum: %v\n", err)
		return 1
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "testsum: %v\n", err)
		return 1
	}
	dir, _ := os.Getwd()
	recs, failed := follow(stdout, os.Stdout, dir)
	status := 0
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			fmt.Fprintf(os.Stderr, "testsum: %v\n", err)
		}
		status = 1
	}
	if failed {
		status = 1
	}
	if recordFile != "" {
		if err := appendRecords(recordFile, recs); err != nil {
			fmt.Fprintf(os.Stderr, "testsum: %v\n", err)
			return 1
		}
	}
	return status
}

// follow reads the events from r, prints what plain go test would to w,
// and returns the tests' results and whether anything failed.
func follow(r io.Reader, w io.Writer, dir string) ([]record, bool) {
	type key struct{ pkg, test string }
	output := map[key][]string{}
	var recs []record
	failed := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(w, "%s\n", line) // not an event: pass it on
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output", "build-output":
			if e.Test != "" {
				output[k] = append(output[k], e.Output)
				continue
			}
			if e.Action == "build-output" || isPackageResult(e.Output) || strings.HasPrefix(e.Output, "panic:") {
				fmt.Fprint(w, e.Output)
			} else {
				output[k] = append(output[k], e.Output)
			}
		case "pass", "skip", "fail":
			if e.Test == "" {
				if e.Action == "fail" {
					failed = true
					if len(output[k]) > 0 {
						fmt.Fprint(w, strings.Join(output[k], ""))
					}
				}
				delete(output, k)
				continue
			}
			rec := record{Dir: dir, Package: e.Package, Test: e.Test, Action: e.Action}
			switch e.Action {
			case "fail":
				failed = true
				fmt.Fprint(w, strings.Join(output[k], ""))
			case "skip":
				rec.Reason = skipReason(output[k])
			}
			recs = append(recs, rec)
			delete(output, k)
		case "build-fail":
			failed = true
		}
	}
	return recs, failed
}

// isPackageResult reports whether a package's output line is the one plain
// go test prints for it: "ok", "FAIL", "?" or "--- FAIL".
func isPackageResult(s string) bool {
	for _, p := range []string{"ok  \t", "ok \t", "FAIL\t", "FAIL", "?   \t", "--- FAIL"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

var skipLine = regexp.MustCompile(`^\s*\S+\.go:\d+: (.*)$`)

// skipReason returns the message a skipped test gave (t.Skip), from its
// output, or "".
func skipReason(out []string) string {
	var msg []string
	for _, o := range out {
		o = strings.TrimRight(o, "\n")
		switch t := strings.TrimSpace(o); {
		case strings.HasPrefix(t, "=== "), strings.HasPrefix(t, "--- SKIP"), t == "":
		default:
			if m := skipLine.FindStringSubmatch(o); m != nil {
				msg = append(msg[:0], m[1])
			} else if len(msg) > 0 {
				msg = append(msg, t)
			}
		}
	}
	return strings.Join(msg, " ")
}

func appendRecords(name string, recs []record) error {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			_ = f.Close()
			return err
		}
	}
	return f.Close()
}

func readRecords(name string) ([]record, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []record
	for line := range strings.Lines(string(b)) {
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

var makeTarget = regexp.MustCompile(`\bmake ([a-z][a-z-]*)`)

// target returns the make target a skip message names, or "".
func target(reason string) string {
	if m := makeTarget.FindStringSubmatch(reason); m != nil {
		return "make " + m[1]
	}
	return ""
}

// summarize prints the summary of recs and returns 1 if a test failed.
func summarize(w io.Writer, recs []record) int {
	var passed, failed int
	var failedNames []string
	groups := map[string][]record{} // by target; "" for none
	for _, r := range recs {
		switch r.Action {
		case "pass":
			passed++
		case "fail":
			failed++
			failedNames = append(failedNames, r.Package+" "+r.Test)
		case "skip":
			t := target(r.Reason)
			groups[t] = append(groups[t], r)
		}
	}
	skipped := len(recs) - passed - failed
	fmt.Fprintf(w, "\n==> make test: %d tests (subtests included) ran: %d passed, %d failed; %d skipped\n", passed+failed, passed, failed, skipped)
	for _, n := range failedNames {
		fmt.Fprintf(w, "    FAIL %s\n", n)
	}
	targets := make([]string, 0, len(groups))
	for t := range groups {
		if t != "" {
			targets = append(targets, t)
		}
	}
	sort.Strings(targets)
	for _, t := range targets {
		g := groups[t]
		fmt.Fprintf(w, "    %d skipped here, run by %s:\n", len(g), t)
		printGroup(w, g)
	}
	if g := groups[""]; len(g) > 0 {
		fmt.Fprintf(w, "    %d skipped for the reason given (another database, a server feature, no server):\n", len(g))
		printGroup(w, g)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// printGroup prints the tests of one group, those with the same reason on
// one line.
func printGroup(w io.Writer, g []record) {
	byReason := map[string][]string{}
	var reasons []string
	for _, r := range g {
		if _, ok := byReason[r.Reason]; !ok {
			reasons = append(reasons, r.Reason)
		}
		pkg := r.Package[strings.LastIndex(r.Package, "/")+1:]
		byReason[r.Reason] = append(byReason[r.Reason], pkg+"."+r.Test)
	}
	for _, reason := range reasons {
		names := slices.Compact(byReason[reason])
		if reason == "" {
			reason = "no message"
		}
		fmt.Fprintf(w, "      %s\n        (%s)\n", strings.Join(names, ", "), reason)
	}
}
