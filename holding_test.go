package dlock

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestAppendJSONName: the document is ASCII, and decodes to the name.
func TestAppendJSONName(t *testing.T) {
	for _, name := range []string{"", "job-42", `q"b\s/`, "ctl\x00\x01\x1f\x7f", "é-ключ-漢字", "\uffff\u2028", "emoji 😀"} {
		got := appendJSONName(nil, name)
		for _, c := range got {
			if c < 0x20 || c >= 0x7f {
				t.Errorf("appendJSONName(%q) = %s: byte %#x is not printable ASCII", name, got, c)
			}
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != name {
			t.Errorf("appendJSONName(%q) = %s, decodes to %q, %v", name, got, back, err)
		}
	}
}

// TestMySQLHoldsDoc: holds grouped by session, each group with the
// position of its first hold; a document past mysqlCheckChunk bytes ends,
// mid-group if need be, and the next starts where it ended.
func TestMySQLHoldsDoc(t *testing.T) {
	holds := []watchedHold{
		{sessionID: 7, dbKey: "a"}, {sessionID: 9, dbKey: "b"}, {sessionID: 7, dbKey: "é"},
	}
	order := bySession(holds)
	if !slices.Equal(order, []int{0, 2, 1}) {
		t.Fatalf("bySession = %v, want [0 2 1]", order)
	}
	doc, next := mysqlHoldsDoc(nil, holds, order, 0)
	if want := `[[7,0,["a","\u00e9"]],[9,2,["b"]]]`; string(doc) != want || next != 3 {
		t.Fatalf("mysqlHoldsDoc = %s, %d; want %s, 3", doc, next, want)
	}

	long := strings.Repeat("x", 64)
	many := make([]watchedHold, 2*mysqlCheckChunk/len(long))
	for i := range many {
		many[i] = watchedHold{sessionID: int64(1 + i%2), dbKey: long}
	}
	order = bySession(many)
	seen := make([]bool, len(many))
	docs := 0
	for from := 0; from < len(order); docs++ {
		doc, next := mysqlHoldsDoc(nil, many, order, from)
		if len(doc) > mysqlCheckChunk+200 {
			t.Fatalf("document of %d bytes, want about %d at most", len(doc), mysqlCheckChunk)
		}
		var groups [][3]json.RawMessage
		if err := json.Unmarshal(doc, &groups); err != nil {
			t.Fatalf("document %d: %v", docs, err)
		}
		for _, g := range groups {
			var s, b int
			var names []string
			_ = json.Unmarshal(g[0], &s)
			_ = json.Unmarshal(g[1], &b)
			_ = json.Unmarshal(g[2], &names)
			for i := range names {
				h := order[b+i]
				if seen[h] || many[h].sessionID != int64(s) {
					t.Fatalf("document %d: position %d (hold %d) seen twice or under session %d", docs, b+i, h, s)
				}
				seen[h] = true
			}
		}
		from = next
	}
	if docs < 2 || slices.Contains(seen, false) {
		t.Fatalf("%d documents, every hold once: %v; want at least 2 and true", docs, !slices.Contains(seen, false))
	}
}
