package dlock_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/gormdlock/dlock"
)

// Print who holds "nightly-report" and who waits for it.
func ExampleHolders() {
	hs, err := dlock.Holders(ctx, db, "nightly-report")
	if err != nil {
		log.Fatal(err)
	}
	for i := range hs {
		h := &hs[i]
		state := "waiting"
		if h.Granted {
			state = "holds"
		}
		fmt.Printf("session %d %s since %v: %s@%s (%s)\n",
			h.SessionID, state, h.Since, h.User, h.ClientAddr, h.Application)
	}
}

// List every lock, holders and waiters. MariaDB needs its
// metadata_lock_info plugin; MySQL and MariaDB need the PROCESS privilege.
func ExampleLocks() {
	hs, err := dlock.Locks(ctx, db, "")
	if errors.Is(err, dlock.ErrUnsupported) {
		log.Print(err) // names what this server lacks: a plugin, a privilege
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	for i := range hs {
		fmt.Println(hs[i].DBKey, hs[i].SessionID, hs[i].Granted)
	}
}

// The PostgreSQL key and the MySQL name of a key, for SQL written by hand.
func ExampleDBKey() {
	pg, _ := dlock.DBKey("postgres", "my-lock", "")
	my, _ := dlock.DBKey("mysql", "my-lock", "")
	fmt.Println(pg, my)
	// Output: -8841863937742578886 my-lock
}
