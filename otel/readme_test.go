package dlockotel_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeSnippets keeps the Prometheus and tracing snippets of this
// module's README (the first Go block under "### Metrics" and under
// "### Traces") and the compiled Example_prometheus and Example_tracing in
// step: every line of an example's body appears, in order, in its snippet.
func TestReadmeSnippets(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ heading, file, example string }{
		{"### Metrics", "prometheus_test.go", "Example_prometheus"},
		{"### Traces", "tracing_test.go", "Example_tracing"},
	} {
		_, section, ok := strings.Cut(string(readme), "\n"+c.heading+"\n")
		if !ok {
			t.Errorf("README.md has no %q section", c.heading)
			continue
		}
		section, _, _ = strings.Cut(section, "\n### ")
		_, block, ok := strings.Cut(section, "```go\n")
		if !ok {
			t.Errorf("README.md: %q has no Go code block", c.heading)
			continue
		}
		block, _, _ = strings.Cut(block, "\n```")

		src, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		_, body, ok := strings.Cut(string(src), "\nfunc "+c.example+"() {\n")
		if !ok {
			t.Fatalf("%s has no %s", c.file, c.example)
		}
		body, _, _ = strings.Cut(body, "\n}\n")

		snippet := lines(block)
		i := 0
		for _, want := range lines(body) {
			for i < len(snippet) && snippet[i] != want {
				i++
			}
			if i == len(snippet) {
				t.Errorf("README.md's %q snippet lacks, in order, this line of %s:\n%s", c.heading, c.example, want)
				break
			}
			i++
		}
	}
}

// lines returns the trimmed, non-blank lines of s.
func lines(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}
