// semaphore: the Go anchor of coord's semaphore benchmark. etcd's Go client has no
// semaphore, so this is the one a Go user writes on etcd 3.4's clientv3 + concurrency, as
// Curator's InterProcessSemaphoreV2 does on ZooKeeper: each acquire puts a key of its own on
// the session's lease under the semaphore's prefix; it holds a permit when its key is among
// the N oldest (by create revision: a read of N keys, keys only); otherwise it watches the
// prefix for deletes from the read's revision and reads again after each.
//
// Build (Debian's packaged etcd 3.4 sources, no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o OUT main.go
//
// Run: OUT -endpoints 127.0.0.1:2379 -iters 400 -workers 8 -permits 3
// Prints one JSON line as the other anchors: scenario semaphore_w{W}_p{N}, ops (acquire +
// release pairs), seconds, ops_per_s, p50_ms and p99_ms of the acquire wait, and the number
// of times more than N workers held at once (must be 0).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/mvcc/mvccpb"
)

var (
	endpoints = flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	iters     = flag.Int("iters", 400, "acquire + release pairs in all")
	workers   = flag.Int("workers", 8, "sessions")
	permits   = flag.Int("permits", 3, "the semaphore's permits")
	prefix    = flag.String("prefix", fmt.Sprintf("/go-semaphore/%d", time.Now().UnixNano()), "key prefix")
)

type line struct {
	Scenario string  `json:"scenario"`
	Ops      int     `json:"ops"`
	Seconds  float64 `json:"seconds"`
	OpsPerS  float64 `json:"ops_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Extra    string  `json:"extra,omitempty"`
}

// Semaphore is a counting semaphore of n permits named by its key prefix.
type Semaphore struct {
	s      *concurrency.Session
	prefix string
	n      int64
	next   int64
}

// Acquire puts this acquire's key and waits until fewer than n older keys are left; returns
// the key, to delete on release.
func (m *Semaphore) Acquire(ctx context.Context) (string, error) {
	c := m.s.Client()
	m.next++
	key := fmt.Sprintf("%s%x-%d", m.prefix, m.s.Lease(), m.next)
	if _, err := c.Put(ctx, key, "", clientv3.WithLease(m.s.Lease())); err != nil {
		return "", err
	}
	for {
		// The n oldest keys hold the permits. (A count-only read with a max create
		// revision would be cheaper, but etcd 3.4 counts before it filters.)
		ahead, err := c.Get(ctx, m.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend),
			clientv3.WithLimit(m.n))
		if err != nil {
			c.Delete(context.Background(), key)
			return "", err
		}
		for _, kv := range ahead.Kvs {
			if string(kv.Key) == key {
				return key, nil
			}
		}
		// Wait for a delete under the prefix after that read, then count again.
		wctx, cancel := context.WithCancel(ctx)
		wch := c.Watch(wctx, m.prefix, clientv3.WithPrefix(), clientv3.WithFilterPut(),
			clientv3.WithRev(ahead.Header.Revision+1))
		deleted := false
		for !deleted {
			resp, ok := <-wch
			if !ok {
				break
			}
			if err := resp.Err(); err != nil {
				break
			}
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE {
					deleted = true
				}
			}
		}
		cancel()
		if err := ctx.Err(); err != nil {
			c.Delete(context.Background(), key)
			return "", err
		}
	}
}

// Release deletes the acquire's key.
func (m *Semaphore) Release(ctx context.Context, key string) error {
	_, err := m.s.Client().Delete(ctx, key)
	return err
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func main() {
	flag.Parse()
	per := *iters / *workers
	var mu sync.Mutex
	var lat []time.Duration
	var inside, violations int64
	var wg sync.WaitGroup
	ready := make(chan struct{})
	var joined sync.WaitGroup
	var start time.Time
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		joined.Add(1)
		go func() {
			defer wg.Done()
			c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
			if err != nil {
				log.Fatal(err)
			}
			defer c.Close()
			s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
			if err != nil {
				log.Fatal(err)
			}
			defer s.Close()
			sem := &Semaphore{s: s, prefix: *prefix + "/semaphore/", n: int64(*permits)}
			joined.Done()
			<-ready
			mine := make([]time.Duration, 0, per)
			for i := 0; i < per; i++ {
				t := time.Now()
				key, err := sem.Acquire(context.Background())
				if err != nil {
					log.Fatal(err)
				}
				mine = append(mine, time.Since(t))
				if atomic.AddInt64(&inside, 1) > int64(*permits) {
					atomic.AddInt64(&violations, 1)
				}
				atomic.AddInt64(&inside, -1)
				if err := sem.Release(context.Background(), key); err != nil {
					log.Fatal(err)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	joined.Wait()
	start = time.Now()
	close(ready)
	wg.Wait()
	seconds := time.Since(start).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return ms(lat[int(float64(len(lat)-1)*p)])
	}
	r := line{
		Scenario: fmt.Sprintf("semaphore_w%d_p%d", *workers, *permits),
		Ops:      len(lat), Seconds: seconds, P50ms: pct(.5), P99ms: pct(.99),
		Extra: fmt.Sprintf("violations=%d", violations),
	}
	if seconds > 0 {
		r.OpsPerS = float64(len(lat)) / seconds
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}
