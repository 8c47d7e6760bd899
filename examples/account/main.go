// Command account shows per-account serialization inside a net/http
// handler: dlock.WithLock around a nested tx.Transaction.
//
// POST /accounts/{id}/withdraw?amount=N reads the balance, calls a slow
// payment provider, and writes the new balance. Two such requests for the
// same account at once would both read the old balance and one withdrawal
// would be lost. The handler therefore takes the lock "account:{id}" with
// WithLock and does the work in tx.Transaction on the locked session:
//
//	lock → BEGIN → read, pay, write → COMMIT → unlock
//
// The lock outlives the commit of the work it protects, so the next
// request for the account reads the committed balance. The handler proves
// it: right after COMMIT it tries the same lock from another session,
// which finds it still held. (A session lock released before COMMIT would
// let the next request read the old balance. A PostgreSQL dlock.Xact lock,
// taken inside the transaction, ends with the COMMIT itself, which is also
// safe; see examples/pgxact.)
//
// The program serves on an httptest server (127.0.0.1, a free port),
// sends five concurrent withdrawals of 30 from account 1 (balance 100) and
// one from account 2, prints the responses and exits. Exactly three of
// the five succeed, whatever their order; account 2's request has its own
// lock and does not queue behind account 1's.
//
// Run it with `make examples`, or `go run ./account` in examples/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gormdlock/dlock"
	"github.com/gormdlock/dlock/examples/internal/exampledb"
	"gorm.io/gorm"
)

// account is a row of dlock_example_accounts.
type account struct {
	ID      int64 `gorm:"primaryKey;autoIncrement:false"`
	Balance int64
}

func (account) TableName() string { return "dlock_example_accounts" }

var errInsufficient = errors.New("insufficient funds")

// paymentTakes stands for a call to a payment provider.
const paymentTakes = 50 * time.Millisecond

func main() { exampledb.Main(run) }

// server holds what the handler needs.
type server struct {
	db    *gorm.DB // the service's pool
	probe *gorm.DB // another pool, for the proof that the lock outlives COMMIT
	out   *exampledb.Server
}

// withdraw handles POST /accounts/{id}/withdraw?amount=N.
func (s *server) withdraw(w http.ResponseWriter, r *http.Request) {
	id, err1 := strconv.ParseInt(r.PathValue("id"), 10, 64)
	amount, err2 := strconv.ParseInt(r.URL.Query().Get("amount"), 10, 64)
	if err1 != nil || err2 != nil || amount <= 0 {
		http.Error(w, "bad account or amount", http.StatusBadRequest)
		return
	}
	key := fmt.Sprintf("account:%d", id)
	var balance int64
	err := dlock.WithLock(r.Context(), s.db, key, func(tx *gorm.DB) error {
		s.out.Printf("  %s: locked", key)
		// tx is the session that holds the lock; the transaction runs on it.
		err := tx.Transaction(func(tx *gorm.DB) error {
			var a account
			if err := tx.First(&a, id).Error; err != nil {
				return err
			}
			if a.Balance < amount {
				return errInsufficient
			}
			time.Sleep(paymentTakes)
			balance = a.Balance - amount
			return tx.Model(&a).Update("balance", balance).Error
		})
		if err != nil {
			return err // rolled back; WithLock still releases the lock
		}
		// Committed, and the lock is still held: another session cannot
		// take it until WithLock returns.
		if free, err := s.lockFree(r.Context(), key); err != nil || free {
			return fmt.Errorf("after COMMIT the lock should still be held: free=%v, err=%w", free, err)
		}
		s.out.Printf("  %s: committed balance %d; the lock is still held (another session's NoWait: busy)", key, balance)
		return nil
	}, dlock.Timeout(5*time.Second))
	switch {
	case errors.Is(err, errInsufficient):
		http.Error(w, err.Error(), http.StatusConflict)
	case errors.Is(err, dlock.ErrNotAcquired):
		http.Error(w, "account busy, try again", http.StatusServiceUnavailable)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		fmt.Fprintf(w, "balance %d\n", balance)
	}
}

// lockFree tries key once from another session and reports whether it was
// free (and releases it at once if so).
func (s *server) lockFree(ctx context.Context, key string) (bool, error) {
	err := dlock.WithLock(ctx, s.probe, key, func(*gorm.DB) error { return nil }, dlock.NoWait())
	if errors.Is(err, dlock.ErrNotAcquired) {
		return false, nil
	}
	return err == nil, err
}

func run(ctx context.Context, out *exampledb.Server) (err error) {
	db, err := out.Open(ctx)
	if err != nil {
		return err
	}
	// A request that waits for a lock holds a session: leave room for the
	// concurrent requests plus dlock's control connection.
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	sqlDB.SetMaxOpenConns(16)
	probe, err := out.Open(ctx)
	if err != nil {
		return err
	}

	m := db.Migrator()
	if err := m.DropTable(&account{}); err != nil {
		return err
	}
	if err := m.AutoMigrate(&account{}); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, m.DropTable(&account{})) }()
	if err := db.Create([]account{{ID: 1, Balance: 100}, {ID: 2, Balance: 50}}).Error; err != nil {
		return err
	}

	s := &server{db: db, probe: probe, out: out}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /accounts/{id}/withdraw", s.withdraw)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	out.Printf("serving on %s; account 1 has 100, account 2 has 50", srv.URL)

	requests := []string{
		"/accounts/1/withdraw?amount=30",
		"/accounts/1/withdraw?amount=30",
		"/accounts/1/withdraw?amount=30",
		"/accounts/1/withdraw?amount=30",
		"/accounts/1/withdraw?amount=30",
		"/accounts/2/withdraw?amount=20",
	}
	var wg sync.WaitGroup
	ok := make([]bool, len(requests))
	errs := make([]error, len(requests))
	for i, path := range requests {
		wg.Go(func() {
			ok[i], errs[i] = post(ctx, srv.Client(), srv.URL+path, out)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	var accounts []account
	if err := db.Order("id").Find(&accounts).Error; err != nil {
		return err
	}
	succeeded := 0
	for _, o := range ok[:5] {
		if o {
			succeeded++
		}
	}
	out.Printf("final balances: account 1 has %d, account 2 has %d; %d of 5 withdrawals from account 1 succeeded",
		accounts[0].Balance, accounts[1].Balance, succeeded)
	if succeeded != 3 || accounts[0].Balance != 10 || accounts[1].Balance != 30 {
		return errors.New("a withdrawal was lost or doubled")
	}
	return nil
}

// post sends one request and prints the response.
func post(ctx context.Context, c *http.Client, url string, out *exampledb.Server) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, http.NoBody)
	if err != nil {
		return false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	path := strings.TrimPrefix(url, "http://"+req.Host)
	out.Printf("POST %s → %d %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusConflict:
		return false, nil
	}
	return false, fmt.Errorf("POST %s: %s", path, resp.Status)
}
