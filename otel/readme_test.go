package dlockotel_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmePrometheus keeps the Prometheus snippet of this module's README (under
// "### Metrics, traces and logs") and the compiled Example_prometheus in
// step: every line of the example's body appears, in order, in the
// snippet.
func TestReadmePrometheus(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Metrics, traces and logs\n")
	if !ok {
		t.Fatal(`README.md has no "### Metrics, traces and logs" section`)
	}
	_, block, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal("README.md: the metrics section has no Go code block")
	}
	block, _, _ = strings.Cut(block, "\n```")

	src, err := os.ReadFile("prometheus_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := strings.Cut(string(src), "\nfunc Example_prometheus() {\n")
	if !ok {
		t.Fatal("prometheus_test.go has no Example_prometheus")
	}
	body, _, _ = strings.Cut(body, "\n}\n")

	snippet := lines(block)
	i := 0
	for _, want := range lines(body) {
		for i < len(snippet) && snippet[i] != want {
			i++
		}
		if i == len(snippet) {
			t.Fatalf("README.md's Prometheus snippet lacks, in order, the line of Example_prometheus:\n%s", want)
		}
		i++
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
