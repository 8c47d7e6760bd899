package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeQuickStartBuilds builds the README's Quick start program with
// this module's go.mod, which has the drivers it imports: pasted into a
// main, it must compile. (readme_test.go in the root checks that it holds
// the statements of Example and ExampleNew.)
func TestReadmeQuickStartBuilds(t *testing.T) {
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
