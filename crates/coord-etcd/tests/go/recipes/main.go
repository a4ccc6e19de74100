// recipes: etcd's Go contrib/recipes (Queue, PriorityQueue, Barrier, DoubleBarrier) driven from
// coord's interop tests (crates/coord-etcd/tests/go_interop.rs), so Go and Rust processes meet
// on one etcd. Prints one line per event on stdout; exits non-zero on an error.
//
// Build (Debian's packaged etcd 3.4 sources, no modules):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o OUT main.go
//
// Commands (after -endpoints E -name N):
//
//	enqueue V...          Queue.Enqueue each V, in order
//	dequeue K             Queue.Dequeue K times, printing each element
//	penqueue V:P...       PriorityQueue.Enqueue(V, P) each, in order
//	pdequeue K            PriorityQueue.Dequeue K times, printing each element
//	barrier               Barrier.Hold, prints "held", Barrier.Wait, prints "released"
//	dbarrier K            DoubleBarrier(K).Enter, prints "entered", Leave, prints "left"
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	recipe "go.etcd.io/etcd/contrib/recipes"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	name := flag.String("name", "", "the recipe's name (key prefix)")
	flag.Parse()
	args := flag.Args()
	if *name == "" || len(args) == 0 {
		log.Fatal("usage: recipes -endpoints E -name N COMMAND ARGS...")
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	say := func(s string) { fmt.Println(s); os.Stdout.Sync() }
	count := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			log.Fatal(err)
		}
		return n
	}

	switch args[0] {
	case "enqueue":
		q := recipe.NewQueue(client, *name)
		for _, v := range args[1:] {
			if err := q.Enqueue(v); err != nil {
				log.Fatal(err)
			}
		}
		say("enqueued")
	case "dequeue":
		q := recipe.NewQueue(client, *name)
		for i := 0; i < count(args[1]); i++ {
			v, err := q.Dequeue()
			if err != nil {
				log.Fatal(err)
			}
			say(v)
		}
	case "penqueue":
		q := recipe.NewPriorityQueue(client, *name)
		for _, vp := range args[1:] {
			parts := strings.SplitN(vp, ":", 2)
			p, err := strconv.ParseUint(parts[1], 10, 16)
			if err != nil {
				log.Fatal(err)
			}
			if err := q.Enqueue(parts[0], uint16(p)); err != nil {
				log.Fatal(err)
			}
		}
		say("enqueued")
	case "pdequeue":
		q := recipe.NewPriorityQueue(client, *name)
		for i := 0; i < count(args[1]); i++ {
			v, err := q.Dequeue()
			if err != nil {
				log.Fatal(err)
			}
			say(v)
		}
	case "barrier":
		b := recipe.NewBarrier(client, *name)
		if err := b.Hold(); err != nil {
			log.Fatal(err)
		}
		say("held")
		if err := b.Wait(); err != nil {
			log.Fatal(err)
		}
		say("released")
	case "dbarrier":
		s, err := concurrency.NewSession(client, concurrency.WithTTL(10))
		if err != nil {
			log.Fatal(err)
		}
		defer s.Close()
		b := recipe.NewDoubleBarrier(s, *name, count(args[1]))
		if err := b.Enter(); err != nil {
			log.Fatal(err)
		}
		say("entered")
		if err := b.Leave(); err != nil {
			log.Fatal(err)
		}
		say("left")
	default:
		log.Fatalf("unknown command %q", args[0])
	}
}
