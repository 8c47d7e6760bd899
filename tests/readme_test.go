package tests

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeQuickStartBuilds builds the README's Quick start program with
// this module's go.mod, which has the drivers it imports: pasted into a
// main, it must compile. (readme_test.go in the root checks that it holds
// the statements of Example and ExampleNew.)
func TestReadmeQuickStartBuilds(t *testing.T) {
	t.Parallel() // a go build, measuring nothing: alongside the sleeping tests
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: the README's Quick start is not built")
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Quick start\n")
	if !ok {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, rest, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal("README.md: the Quick start has no Go code block")
	}
	code, _, ok := strings.Cut(rest, "\n```")
	if !ok {
		t.Fatal("README.md: the Quick start's Go code block is not closed")
	}
	// Inside this module, so that its go.mod resolves the imports; the
	// leading underscore keeps ./... patterns away from it.
	dir, err := os.MkdirTemp(".", "_readme")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(code+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(goTool, "build", "-o", os.DevNull, "./"+filepath.Base(dir))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of the README's Quick start: %v\n%s\n--- main.go:\n%s", err, out, code)
	}
}

// TestReadmeProvedByNamesExist checks that every test the README's
// topology and guarantee tables name in their "proved by" column is a
// func TestX in one of the repository's test files: a renamed or removed
// test must take its README line with it. "…Held" after
// TestNetworkCutBoundsRelease stands for TestNetworkCutBoundsHeld.
func TestReadmeProvedByNamesExist(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	funcRE := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range funcRE.FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nameRE := regexp.MustCompile("`(…?[A-Z]\\w*)`")
	lastWordRE := regexp.MustCompile(`[A-Z][a-z0-9]*$`)
	tables, names := 0, 0
	inTable := false
	for _, line := range strings.Split(string(readme), "\n") {
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		last := strings.TrimSpace(cells[len(cells)-1])
		if !inTable {
			inTable = last == "proved by"
			if inTable {
				tables++
			}
			continue
		}
		prev := ""
		for _, m := range nameRE.FindAllStringSubmatch(last, -1) {
			name := m[1]
			if rest, ok := strings.CutPrefix(name, "…"); ok {
				if prev == "" {
					t.Errorf("README: %q has no name before it to complete in %q", name, last)
					continue
				}
				name = lastWordRE.ReplaceAllString(prev, "") + rest
			}
			if !strings.HasPrefix(name, "Test") {
				continue
			}
			names++
			prev = name
			if !defined[name] {
				t.Errorf("README names %s as a proof, but no test file defines func %s", name, name)
			}
		}
	}
	if tables < 2 || names < 20 {
		t.Fatalf("found %d \"proved by\" tables with %d test names in README.md; want the topology and guarantee tables", tables, names)
	}
	t.Logf("%d test names in %d tables, all defined", names, tables)
}
