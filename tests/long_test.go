package tests

// The long group: tests that wait seconds by design (loss and release
// bounds measured against a clock, idle-session reapers, elections and
// their back-off, heap measurements that need a quiet process). `make
// test-long` runs them (DLOCK_TEST_LONG=1); `make test` skips them, so
// that it stays under a minute, and its summary names the target.

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const envLong = "DLOCK_TEST_LONG"

// needLongRun skips the test unless the long group is asked for. The
// group needs nothing but the databases, whose absence fails the test
// under CI or DLOCK_TEST_REQUIRE_DB as everywhere (eachBackend).
func needLongRun(t *testing.T) {
	t.Helper()
	if os.Getenv(envLong) == "" {
		t.Skipf("waits seconds by design: runs with make test-long (%s=1)", envLong)
	}
}

// TestLongGroupInMakefile checks that `make test-long` runs exactly the
// tests that begin with needLongRun(t): its -run patterns (LONG_TESTS for
// this package, LONG_CLI_TESTS for cmd/dlock, in the Makefile) must match
// each of them and no other test of the package, or a test would be run
// by no target, or twice.
func TestLongGroupInMakefile(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct{ dir, variable string }{{".", "LONG_TESTS"}, {"../cmd/dlock", "LONG_CLI_TESTS"}} {
		m := regexp.MustCompile(`(?m)^` + g.variable + ` := (.+)$`).FindSubmatch(mk)
		if m == nil {
			t.Errorf("Makefile: no %s := line", g.variable)
			continue
		}
		// make turns $$ into $; the shell removes the quotes.
		pattern := strings.ReplaceAll(strings.Trim(strings.TrimSpace(string(m[1])), "'"), "$$", "$")
		run, err := regexp.Compile(pattern)
		if err != nil {
			t.Errorf("Makefile: %s %q: %v", g.variable, pattern, err)
			continue
		}
		long, all := testFuncs(t, g.dir)
		if len(long) == 0 {
			t.Errorf("%s: no test begins with needLongRun(t)", g.dir)
		}
		for _, name := range all {
			// go test -run matches the pattern anywhere in the name.
			matched := run.MatchString(name)
			if want := slices.Contains(long, name); matched != want {
				t.Errorf("Makefile %s matches %s: %v; it begins with needLongRun(t): %v", g.variable, name, matched, want)
			}
		}
	}
}

// testFuncs returns the names of the TestX functions in dir's test files,
// and of those that begin with needLongRun(t).
func testFuncs(t *testing.T, dir string) (long, all []string) {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	funcRE := regexp.MustCompile(`(?m)^func (Test\w+)\(t \*testing\.T\) \{\n((?:\t.*\n|\n)*?)\}`)
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), "_test.go") {
			continue
		}
		src, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, fm := range funcRE.FindAllSubmatch(src, -1) {
			name := string(fm[1])
			all = append(all, name)
			if strings.HasPrefix(string(fm[2]), "\tneedLongRun(t)\n") {
				long = append(long, name)
			}
		}
	}
	return long, all
}
