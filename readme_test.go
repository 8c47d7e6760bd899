package dlock_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// quickStart returns the Go code block of the README's "## Quick start"
// section. tests/readme_test.go builds the same block with the drivers.
func quickStart(t *testing.T, readme string) string {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Quick start\n")
	if !ok {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []string
	for {
		_, rest, ok := strings.Cut(section, "```go\n")
		if !ok {
			break
		}
		block, after, ok := strings.Cut(rest, "\n```")
		if !ok {
			t.Fatal("README.md: a ```go block of the Quick start is not closed")
		}
		blocks = append(blocks, block)
		section = after
	}
	if len(blocks) != 1 {
		t.Fatalf("README.md: the Quick start has %d Go code blocks, want 1 (a whole program)", len(blocks))
	}
	return blocks[0]
}

// exampleBody returns the trimmed, non-blank lines of the body of the
// function name in src.
func exampleBody(t *testing.T, fset *token.FileSet, f *ast.File, src []byte, name string) []string {
	t.Helper()
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != name || fn.Body == nil {
			continue
		}
		from := fset.Position(fn.Body.Lbrace).Offset + 1
		to := fset.Position(fn.Body.Rbrace).Offset
		lines := nonBlankLines(string(src[from:to]))
		if len(lines) == 0 {
			t.Fatalf("example_test.go: %s has an empty body", name)
		}
		return lines
	}
	t.Fatalf("example_test.go has no func %s", name)
	return nil
}

func nonBlankLines(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// TestReadmeQuickStart keeps the README's Quick start and the compiled
// examples Example and ExampleNew in step: every line of their bodies
// must appear, in the same order, in the Quick start program, which must
// be a main package that parses. (tests/readme_test.go builds it.)
func TestReadmeQuickStart(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	code := quickStart(t, string(readme))
	fset := token.NewFileSet()
	prog, err := parser.ParseFile(fset, "README.md", code, parser.ParseComments)
	if err != nil {
		t.Fatalf("README.md: the Quick start does not parse: %v", err)
	}
	if prog.Name.Name != "main" {
		t.Fatalf("README.md: the Quick start is package %s, want main", prog.Name.Name)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := parser.ParseFile(fset, "example_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	lines := nonBlankLines(code)
	for _, name := range []string{"Example", "ExampleNew"} {
		next := 0
		for _, want := range exampleBody(t, fset, examples, src, name) {
			i := next
			for i < len(lines) && lines[i] != want {
				i++
			}
			if i == len(lines) {
				t.Errorf("README.md: the Quick start lacks, after line %d of its program, this line of %s in example_test.go:\n\t%s", next, name, want)
				break
			}
			next = i + 1
		}
	}
}
