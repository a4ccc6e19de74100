// go-scale: what N idle concurrency.Sessions cost a Go process and etcd, for the
// `idle_sessions` comparison of BENCHMARKS.md (coord-bench --scenario idle_sessions measures
// ours the same way: one client, N sessions, warm-up 1 s, then an idle window).
//
// Build (Debian's packaged etcd 3.4 sources, no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o OUT main.go
//
// Run: OUT -endpoints 127.0.0.1:2379 -sessions 1000 -ttl 10 -idle 10s
// Prints one JSON line with the field names of coord-bench's idle_sessions.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
)

var (
	endpoints = flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	sessions  = flag.Int("sessions", 1000, "idle sessions")
	ttl       = flag.Int("ttl", 10, "session TTL, seconds")
	idle      = flag.Duration("idle", 10*time.Second, "measured idle window")
)

// etcdFigures are etcd's own /metrics counters, as coord-bench's etcd_metrics.rs reads them.
type etcdFigures struct {
	cpu, watchers, watchStreams, grpcStreams, keepAlives float64
}

func scrape(endpoint string) (etcdFigures, error) {
	var f etcdFigures
	ep := endpoint
	if !strings.HasPrefix(ep, "http") {
		ep = "http://" + ep
	}
	resp, err := http.Get(ep + "/metrics")
	if err != nil {
		return f, err
	}
	defer resp.Body.Close()
	var started, handled float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		metric := series
		if j := strings.IndexByte(series, '{'); j >= 0 {
			metric = series[:j]
		}
		bidi := strings.Contains(series, `grpc_type="bidi_stream"`)
		switch {
		case metric == "process_cpu_seconds_total":
			f.cpu = v
		case metric == "etcd_debugging_mvcc_watcher_total":
			f.watchers = v
		case metric == "etcd_debugging_mvcc_watch_stream_total":
			f.watchStreams = v
		case metric == "grpc_server_started_total" && bidi:
			started += v
		case metric == "grpc_server_handled_total" && bidi:
			handled += v
		case metric == "grpc_server_msg_received_total" && strings.Contains(series, `grpc_method="LeaseKeepAlive"`):
			f.keepAlives += v
		}
	}
	f.grpcStreams = started - handled
	return f, sc.Err()
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func heapBytes() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func main() {
	flag.Parse()
	eps := strings.Split(*endpoints, ",")
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	heapBefore := heapBytes()
	all := make([]*concurrency.Session, *sessions)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // as coord-bench: 64 created at once
	var firstErr error
	var mu sync.Mutex
	for i := range all {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := concurrency.NewSession(cli, concurrency.WithTTL(*ttl))
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			all[i] = s
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		log.Fatal(firstErr)
	}
	time.Sleep(time.Second)
	before, err := scrape(eps[0])
	if err != nil {
		log.Fatal(err)
	}
	cpu0 := cpuSeconds()
	t0 := time.Now()
	time.Sleep(*idle)
	secs := time.Since(t0).Seconds()
	cpu := cpuSeconds() - cpu0
	after, err := scrape(eps[0])
	if err != nil {
		log.Fatal(err)
	}
	heap := heapBytes() - heapBefore
	lost := 0
	for _, s := range all {
		select {
		case <-s.Done():
			lost++
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range all {
		_, _ = cli.Revoke(ctx, s.Lease())
		s.Orphan()
	}
	extra := map[string]interface{}{
		"sessions":               *sessions,
		"ttl_s":                  *ttl,
		"idle_s":                 secs,
		"cpu_s_per_s":            cpu / secs,
		"heap_bytes":             heap,
		"heap_bytes_per_session": float64(heap) / float64(*sessions),
		"sessions_lost":          lost,
		"etcd_cpu_s_per_s":       (after.cpu - before.cpu) / secs,
		"etcd_keep_alives_per_s": (after.keepAlives - before.keepAlives) / secs,
		"etcd_watchers":          after.watchers,
		"etcd_watch_streams":     after.watchStreams,
		"etcd_grpc_streams":      after.grpcStreams,
	}
	out, _ := json.Marshal(map[string]interface{}{
		"scenario":  fmt.Sprintf("idle_sessions_%d", *sessions),
		"ops":       *sessions,
		"seconds":   secs,
		"ops_per_s": 0,
		"p50_ms":    0,
		"p99_ms":    0,
		"extra":     extra,
	})
	fmt.Println(string(out))
}
