// queues: the Go anchor for coord's recipe benchmarks: etcd's Go contrib/recipes Queue and
// Barrier, in the scenarios coord-bench runs as queue_throughput and barrier_release
// (crates/coord-bench/src/recipes_queue.rs). Prints one JSON line per scenario, with the
// fields of the other anchors.
//
// Build (Debian's packaged etcd 3.4 sources, no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o OUT main.go
//
// Run: OUT -endpoints 127.0.0.1:2379 -scenario queue -elements 400 -producers 4 -consumers 4
//      OUT -endpoints 127.0.0.1:2379 -scenario barrier -rounds 40 -waiters 8
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

var (
	endpoints = flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	which     = flag.String("scenario", "queue", "queue|barrier")
	elements  = flag.Int("elements", 400, "queue: elements in all")
	producers = flag.Int("producers", 4, "queue: producers")
	consumers = flag.Int("consumers", 4, "queue: consumers")
	rounds    = flag.Int("rounds", 40, "barrier: hold/release rounds")
	waiters   = flag.Int("waiters", 8, "barrier: waiters")
	settle    = flag.Duration("settle", 50*time.Millisecond, "barrier: time the waiters get to start waiting")
	prefix    = flag.String("prefix", fmt.Sprintf("/go-recipes/%d", time.Now().UnixNano()), "key prefix")
)

type line struct {
	Scenario string  `json:"scenario"`
	Ops      int     `json:"ops"`
	Seconds  float64 `json:"seconds"`
	OpsPerS  float64 `json:"ops_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return ms(sorted[int(float64(len(sorted)-1)*p)])
}

func emit(name string, ops int, seconds float64, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	perS := 0.0
	if seconds > 0 {
		perS = float64(ops) / seconds
	}
	b, _ := json.Marshal(line{name, ops, seconds, perS, pct(lat, 0.5), pct(lat, 0.99)})
	fmt.Println(string(b))
}

// client: one connection per participant, as coord-bench gives each its own.
func client() *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// queue: producers enqueue, consumers dequeue, all at once; elements/s over the whole run;
// latency = one Dequeue call.
func queue() {
	name := *prefix + "/queue"
	var pcs, ccs []*clientv3.Client
	for i := 0; i < *producers; i++ {
		pcs = append(pcs, client())
	}
	for i := 0; i < *consumers; i++ {
		ccs = append(ccs, client())
	}
	per := *elements / *consumers
	total := per * *consumers
	var wg sync.WaitGroup
	var mu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	for p := 0; p < *producers; p++ {
		n := total / *producers
		if p < total%*producers {
			n++
		}
		wg.Add(1)
		go func(p, n int) {
			defer wg.Done()
			q := recipe.NewQueue(pcs[p], name)
			for i := 0; i < n; i++ {
				if err := q.Enqueue(fmt.Sprintf("%d:%d", p, i)); err != nil {
					log.Fatal(err)
				}
			}
		}(p, n)
	}
	for c := 0; c < *consumers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			q := recipe.NewQueue(ccs[c], name)
			mine := make([]time.Duration, 0, per)
			for i := 0; i < per; i++ {
				t := time.Now()
				if _, err := q.Dequeue(); err != nil {
					log.Fatal(err)
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	emit(fmt.Sprintf("queue_throughput_p%dc%d", *producers, *consumers), total, time.Since(start).Seconds(), lat)
}

// barrier: each round, hold, let the waiters start waiting, release; latency = release until
// the last waiter is through.
func barrier() {
	holder := client()
	var wcs []*clientv3.Client
	for i := 0; i < *waiters; i++ {
		wcs = append(wcs, client())
	}
	var lat []time.Duration
	start := time.Now()
	for r := 0; r < *rounds; r++ {
		name := fmt.Sprintf("%s/barrier/r%06d", *prefix, r)
		if err := recipe.NewBarrier(holder, name).Hold(); err != nil {
			log.Fatal(err)
		}
		through := make(chan time.Time, *waiters)
		for w := 0; w < *waiters; w++ {
			go func(w int) {
				if err := recipe.NewBarrier(wcs[w], name).Wait(); err != nil {
					log.Fatal(err)
				}
				through <- time.Now()
			}(w)
		}
		time.Sleep(*settle)
		released := time.Now()
		if err := recipe.NewBarrier(holder, name).Release(); err != nil {
			log.Fatal(err)
		}
		var last time.Time
		for w := 0; w < *waiters; w++ {
			t := <-through
			if t.After(last) {
				last = t
			}
		}
		lat = append(lat, last.Sub(released))
	}
	emit(fmt.Sprintf("barrier_release_w%d", *waiters), *rounds, time.Since(start).Seconds(), lat)
}

func main() {
	flag.Parse()
	switch *which {
	case "queue":
		queue()
	case "barrier":
		barrier()
	default:
		log.Fatalf("unknown scenario %q", *which)
	}
}
