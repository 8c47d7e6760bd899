// Command benchtab runs the benchmarks of github.com/gormdlock/dlock/bench,
// interleaved, and prints one markdown table per database with every
// figure beside its ratio to the hand-written SQL, the speed targets of
// the speed targets (bench/README.md) with their verdicts, and the growth tables. It writes
// into its output folder (default results/ in the bench module):
//
//	results.txt    every benchmark line of the run, for benchstat
//	benchstat.txt  benchstat's comparison of the uncontended series
//	tables.md      the tables it printed
//	growth.png     how the cost grows with locks held and with sessions
//
// Usage, from the bench module:
//
//	go run ./cmd/benchtab [-rounds 3] [-out results] [-from results.txt]
//
// Each round runs every group of benchmarks once, in turn, so the series
// are interleaved rather than run back to back; the tables show the
// median over the rounds. With -from it reads an earlier results.txt
// instead of running anything.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
)

// group is a set of benchmarks run by one invocation of the test binary.
type group struct {
	bench     string // -test.bench pattern
	benchtime string
	count     string // runs per round
}

var groups = []group{
	{"^BenchmarkRoundTrip$", "0.3s", "2"},
	{"^BenchmarkProbe$", "100x", "1"},
	{"^BenchmarkUncontended$", "0.3s", "2"},
	{"^BenchmarkPaired$", "0.5s", "2"},
	{"^BenchmarkWithLockPaired$", "3000x", "1"},
	{"^BenchmarkWithLockAllocs$", "1000x", "1"},
	{"^BenchmarkContentionPaired$", "15x", "1"},
	{"^BenchmarkHandoff$", "100x", "1"},
	{"^BenchmarkContention$", "0.4s", "1"},
	{"^BenchmarkHeldKeys$", "0.3s", "1"},
	{"^BenchmarkHeldMemory$", "1x", "1"},
	{"^BenchmarkSessions$", "0.25s", "1"},
}

func main() {
	rounds := flag.Int("rounds", 3, "rounds of every benchmark group, interleaved")
	out := flag.String("out", "results", "folder for results.txt, benchstat.txt, tables.md, growth.png")
	from := flag.String("from", "", "read this results file instead of running the benchmarks")
	only := flag.String("only", "", "run only the groups whose pattern contains this")
	flag.Parse()
	if err := run(*rounds, *out, *from, *only); err != nil {
		fmt.Fprintln(os.Stderr, "benchtab:", err)
		os.Exit(1)
	}
}

func run(rounds int, out, from, only string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	resultsPath := filepath.Join(out, "results.txt")
	if from == "" {
		if err := runBenchmarks(rounds, resultsPath, only); err != nil {
			return err
		}
		from = resultsPath
	}
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	res, err := parse(data, from)
	if err != nil {
		return err
	}
	if len(res.med) == 0 {
		fmt.Fprintf(os.Stderr, "benchtab: no benchmark results in %s: did a database answer? (DLOCK_TEST_MYSQL_DSN, DLOCK_TEST_POSTGRES_DSN)\n", from)
	}
	var md bytes.Buffer
	writeTables(&md, res)
	os.Stdout.Write(md.Bytes())
	if err := os.WriteFile(filepath.Join(out, "tables.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	if err := plotGrowth(res, filepath.Join(out, "growth.png")); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := benchstat(from, filepath.Join(out, "benchstat.txt")); err != nil {
		fmt.Fprintln(os.Stderr, "benchtab: benchstat:", err)
	}
	fmt.Fprintf(os.Stderr, "benchtab: wrote tables.md, benchstat.txt and growth.png in %s\n", out)
	return nil
}

// runBenchmarks builds the test binary once and runs every group once
// per round, appending the output to path.
func runBenchmarks(rounds int, path, only string) error {
	tmp, err := os.MkdirTemp("", "benchtab")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "bench.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go test -c: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	fmt.Fprintf(w, "machine: %s\n", machine())
	fmt.Fprintf(w, "go: %s\n", runtime.Version())
	start := time.Now()
	for r := 1; r <= rounds; r++ {
		for _, g := range groups {
			if only != "" && !strings.Contains(g.bench, only) {
				continue
			}
			fmt.Fprintf(os.Stderr, "benchtab: round %d/%d %s (%s elapsed)\n", r, rounds, g.bench, time.Since(start).Round(time.Second))
			cmd := exec.Command(bin, "-test.run", "^$", "-test.bench", g.bench,
				"-test.benchtime", g.benchtime, "-test.benchmem", "-test.count", g.count)
			var stdout bytes.Buffer
			cmd.Stdout = &stdout
			cmd.Stderr = os.Stderr
			err := cmd.Run()
			keep(w, stdout.Bytes(), r == 1)
			if err != nil {
				os.Stderr.Write(stdout.Bytes())
				return fmt.Errorf("%s: %w", g.bench, err)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "benchtab: benchmarks took %s\n", time.Since(start).Round(time.Second))
	return nil
}

// keep copies the benchmark lines of one run to w, and its configuration
// lines (goos, cpu, server versions) the first time.
func keep(w io.Writer, out []byte, config bool) {
	seen := map[string]bool{}
	for line := range strings.SplitSeq(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "Benchmark"):
			fmt.Fprintln(w, line)
		case config && strings.Contains(line, ": ") && !strings.HasPrefix(line, " ") &&
			!strings.HasPrefix(line, "PASS") && !strings.HasPrefix(line, "ok"):
			k, _, _ := strings.Cut(line, ":")
			if !seen[k] && !strings.ContainsAny(k, " \t") {
				seen[k] = true
				fmt.Fprintln(w, line)
			}
		}
	}
}

// machine describes the host: CPU model, cores, memory, OS.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %d GiB", (kb+512*1024)/(1024*1024))
		}
	}
	osName := runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	return fmt.Sprintf("%s, %d cores%s, %s", model, runtime.NumCPU(), mem, osName)
}

// benchstat writes benchstat's comparison of the uncontended series, with
// the hand-written SQL as the baseline column.
func benchstat(results, path string) error {
	var out bytes.Buffer
	for _, filter := range []string{".name:Uncontended", ".name:Paired", ".name:Contention"} {
		cmd := exec.Command("go", "tool", "benchstat", "-filter", filter,
			"-col", "/impl@(raw dlock withlock rawctx peer)", "-ignore", "goos,goarch,pkg", results)
		if filter == ".name:Paired" {
			cmd = exec.Command("go", "tool", "benchstat", "-filter", filter, "-ignore", "goos,goarch,pkg", results)
		}
		fmt.Fprintf(&out, "$ benchstat -filter %s ...\n", filter)
		cmd.Stdout = &out
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return errors.Join(err, errors.New(stderr.String()))
		}
		out.WriteString("\n")
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}

// results holds the median of every measurement, by benchmark name
// (without the GOMAXPROCS suffix) and unit.
type results struct {
	med    map[string]map[string]float64
	n      map[string]int // runs per name
	config map[string]string
}

func (r *results) get(name, unit string) (float64, bool) {
	v, ok := r.med[name][unit]
	return v, ok
}

func parse(data []byte, file string) (*results, error) {
	samples := map[string]map[string][]float64{}
	res := &results{med: map[string]map[string]float64{}, n: map[string]int{}, config: map[string]string{}}
	rd := benchfmt.NewReader(bytes.NewReader(data), file)
	for rd.Scan() {
		r, ok := rd.Result().(*benchfmt.Result)
		if !ok {
			continue
		}
		for _, c := range r.Config {
			if c.File {
				res.config[c.Key] = string(c.Value)
			}
		}
		base, parts := r.Name.Parts()
		name := string(base)
		for _, p := range parts {
			if p[0] == '/' {
				name += string(p)
			}
		}
		if samples[name] == nil {
			samples[name] = map[string][]float64{}
		}
		res.n[name]++
		for _, v := range r.Values {
			unit, val := v.Unit, v.Value
			if v.OrigUnit != "" {
				unit, val = v.OrigUnit, v.OrigValue
			}
			samples[name][unit] = append(samples[name][unit], val)
		}
	}
	if err := rd.Err(); err != nil {
		return nil, err
	}
	for name, units := range samples {
		res.med[name] = map[string]float64{}
		for unit, vs := range units {
			slices.Sort(vs)
			m := vs[len(vs)/2]
			if len(vs)%2 == 0 {
				m = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
			}
			res.med[name][unit] = m
		}
	}
	return res, nil
}
