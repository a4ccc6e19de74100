// stm: the Go anchor of coord's STM benchmark — concurrent transfers between accounts with
// etcd's Go concurrency.NewSTM (default isolation, SerializableSnapshot), the same workload as
// `coord-bench --scenario stm_transfers`: WORKERS goroutines, each with its own client, make
// ITERS transfers in all; each moves 1 from a random account to another (reads both, writes
// both). Prints one JSON line like the other anchors' and checks the sum at the end.
//
// Build (Debian's packaged etcd 3.4 sources, no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o OUT main.go
//
// Run: OUT -endpoints 127.0.0.1:2379 -iters 400 -workers 8 -accounts 10
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

var (
	endpoints = flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	iters     = flag.Int("iters", 400, "transfers in all")
	workers   = flag.Int("workers", 8, "concurrent workers, each with its own client")
	accounts  = flag.Int("accounts", 10, "accounts")
	prefix    = flag.String("prefix", fmt.Sprintf("/go-stm/%d/", time.Now().UnixNano()), "key prefix")
)

const startBalance = 1000000

type line struct {
	Scenario string  `json:"scenario"`
	Ops      int     `json:"ops"`
	Seconds  float64 `json:"seconds"`
	OpsPerS  float64 `json:"ops_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Extra    string  `json:"extra,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return ms(sorted[int(float64(len(sorted)-1)*p)])
}

func account(i int) string { return fmt.Sprintf("%sacct/%d", *prefix, i) }

func newClient() *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

func main() {
	flag.Parse()
	admin := newClient()
	defer admin.Close()
	ctx := context.Background()
	for i := 0; i < *accounts; i++ {
		if _, err := admin.Put(ctx, account(i), strconv.Itoa(startBalance)); err != nil {
			log.Fatal(err)
		}
	}
	clients := make([]*clientv3.Client, *workers)
	for w := range clients {
		clients[w] = newClient()
	}
	var attempts int64
	lats := make([][]time.Duration, *workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *workers; w++ {
		n := *iters / *workers
		if w < *iters%*workers {
			n++
		}
		wg.Add(1)
		go func(w, n int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + time.Now().UnixNano()))
			for t := 0; t < n; t++ {
				from := rng.Intn(*accounts)
				to := (from + 1 + rng.Intn(*accounts-1)) % *accounts
				began := time.Now()
				_, err := concurrency.NewSTM(clients[w], func(s concurrency.STM) error {
					atomic.AddInt64(&attempts, 1)
					a, _ := strconv.Atoi(s.Get(account(from)))
					b, _ := strconv.Atoi(s.Get(account(to)))
					if a < 1 {
						return nil
					}
					s.Put(account(from), strconv.Itoa(a-1))
					s.Put(account(to), strconv.Itoa(b+1))
					return nil
				})
				if err != nil {
					log.Fatal(err)
				}
				lats[w] = append(lats[w], time.Since(began))
			}
		}(w, n)
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	sum := 0
	for i := 0; i < *accounts; i++ {
		r, err := admin.Get(ctx, account(i))
		if err != nil || len(r.Kvs) != 1 {
			log.Fatalf("reading account %d: %v", i, err)
		}
		v, _ := strconv.Atoi(string(r.Kvs[0].Value))
		sum += v
	}
	if _, err := admin.Delete(ctx, *prefix, clientv3.WithPrefix()); err != nil {
		log.Fatal(err)
	}
	for _, c := range clients {
		c.Close()
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	violations := 0
	if sum != startBalance**accounts {
		violations = 1
	}
	r := line{
		Scenario: fmt.Sprintf("stm_transfers_w%d", *workers),
		Ops:      len(all),
		Seconds:  seconds,
		P50ms:    pct(all, .5),
		P99ms:    pct(all, .99),
		Extra: fmt.Sprintf("attempts_per_transfer=%.3f sum_violations=%d accounts=%d",
			float64(attempts)/float64(len(all)), violations, *accounts),
	}
	if seconds > 0 {
		r.OpsPerS = float64(len(all)) / seconds
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	if violations > 0 {
		os.Exit(2)
	}
}
