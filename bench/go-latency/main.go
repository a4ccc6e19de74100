// go-latency: raw acquire-wait latencies of etcd's Go concurrency.Mutex, for the latency
// plots of BENCHMARKS.md. The anchor (shared/anchors/go-etcd-bench) prints only p50/p99; this
// program runs the same two scenarios and writes every sample (milliseconds, one per line) to
// DIR/<scenario>.txt, plus one JSON line per scenario like the anchor's.
//
// Build (Debian's packaged etcd 3.4 sources, no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o OUT main.go
//
// Run: OUT -endpoints 127.0.0.1:2379 -iters 400 -workers 8 -dump DIR
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

var (
	endpoints = flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	iters     = flag.Int("iters", 400, "acquisitions (contended) or iters/10+1 handoffs")
	workers   = flag.Int("workers", 8, "contending sessions")
	dump      = flag.String("dump", "", "directory for the raw latencies")
	prefix    = flag.String("prefix", fmt.Sprintf("/go-latency/%d", time.Now().UnixNano()), "key prefix")
	which     = flag.String("scenario", "all", "contended|handoff|all")
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

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return ms(sorted[int(float64(len(sorted)-1)*p)])
}

func report(name string, lat []time.Duration, seconds float64, extra string) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if *dump != "" {
		if err := os.MkdirAll(*dump, 0o755); err != nil {
			log.Fatal(err)
		}
		var b strings.Builder
		for _, d := range lat {
			fmt.Fprintf(&b, "%.4f\n", ms(d))
		}
		if err := os.WriteFile(filepath.Join(*dump, name+".txt"), []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	r := line{Scenario: name, Ops: len(lat), Seconds: seconds, P50ms: pct(lat, .5), P99ms: pct(lat, .99), Extra: extra}
	if seconds > 0 {
		r.OpsPerS = float64(len(lat)) / seconds
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}

func newSession() (*clientv3.Client, *concurrency.Session) {
	c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	s, err := concurrency.NewSession(c, concurrency.WithTTL(10))
	if err != nil {
		log.Fatal(err)
	}
	return c, s
}

// contended: W sessions; each Lock is timed (the acquire wait), then Unlock.
func contended() {
	per := *iters / *workers
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	inside := 0
	violations := 0
	start := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, s := newSession()
			defer c.Close()
			defer s.Close()
			m := concurrency.NewMutex(s, *prefix+"/contended")
			for i := 0; i < per; i++ {
				t := time.Now()
				if err := m.Lock(context.Background()); err != nil {
					log.Fatal(err)
				}
				d := time.Since(t)
				mu.Lock()
				inside++
				if inside > 1 {
					violations++
				}
				lat = append(lat, d)
				inside--
				mu.Unlock()
				if err := m.Unlock(context.Background()); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	wg.Wait()
	report(fmt.Sprintf("mutex_contended_w%d", *workers), lat, time.Since(start).Seconds(), fmt.Sprintf("violations=%d", violations))
}

// handoff: A holds, B waits (50 ms), A unlocks: time from the unlock call until B holds.
func handoff() {
	c1, s1 := newSession()
	c2, s2 := newSession()
	defer c1.Close()
	defer c2.Close()
	defer s1.Close()
	defer s2.Close()
	var lat []time.Duration
	for i := 0; i < *iters/10+1; i++ {
		m1 := concurrency.NewMutex(s1, *prefix+"/handoff")
		m2 := concurrency.NewMutex(s2, *prefix+"/handoff")
		if err := m1.Lock(context.Background()); err != nil {
			log.Fatal(err)
		}
		got := make(chan time.Time, 1)
		go func() {
			if err := m2.Lock(context.Background()); err != nil {
				log.Fatal(err)
			}
			got <- time.Now()
		}()
		time.Sleep(50 * time.Millisecond)
		t := time.Now()
		if err := m1.Unlock(context.Background()); err != nil {
			log.Fatal(err)
		}
		lat = append(lat, (<-got).Sub(t))
		if err := m2.Unlock(context.Background()); err != nil {
			log.Fatal(err)
		}
	}
	report("mutex_handoff", lat, 0, "")
}

func main() {
	flag.Parse()
	log.SetOutput(os.Stderr)
	switch *which {
	case "contended":
		contended()
	case "handoff":
		handoff()
	default:
		contended()
		handoff()
	}
}
