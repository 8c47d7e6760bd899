package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gormdlock/dlock"
)

// TestPrintHoldersQuotes: names from the server (keys on MySQL, users,
// application names) cannot forge a line or a column of the table.
func TestPrintHoldersQuotes(t *testing.T) {
	hs := []dlock.Holder{{
		DBKey: "a\nFAKE: line", SessionID: 1, Granted: true,
		User: "u\r\nroot", Application: "app\tx", ClientAddr: " 10.0.0.1",
	}}
	var out bytes.Buffer
	printHolders(&out, hs, true)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("printHolders printed %q, want a header and one line", out.String())
	}
	for _, want := range []string{`"a\nFAKE: line"`, `"u\r\nroot"`, `"app\tx"`, `" 10.0.0.1"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("printHolders line %q does not hold %s", lines[1], want)
		}
	}
}

func TestQuoteOneLine(t *testing.T) {
	for _, tt := range []struct{ in, quote, oneLine string }{
		{"plain-key", "plain-key", "plain-key"},
		{"with space", "with space", "with space"},
		{"", `""`, ""},
		{"a\nb", `"a\nb"`, "a; b"},
		{"failed to connect:\n\thost1: refused\n\thost2: refused\n", `"failed to connect:\n\thost1: refused\n\thost2: refused\n"`, "failed to connect:; host1: refused; host2: refused"},
		{"bell\a", `"bell\a"`, `bell\a`},
		{"bad\xffutf8", `"bad\xffutf8"`, `bad\xffutf8`},
		{"rtl\u202eevil", `"rtl\u202eevil"`, `rtl\u202eevil`},
	} {
		if got := quote(tt.in); got != tt.quote {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.quote)
		}
		if got := oneLine(tt.in); got != tt.oneLine {
			t.Errorf("oneLine(%q) = %s, want %s", tt.in, got, tt.oneLine)
		}
	}
}
