package workqueue

import (
	"math/rand"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAddsCollapseAndParkWhileProcessing(t *testing.T) {
	q := New[string](Options[string]{}, nil)
	defer q.ShutDown()
	q.Add("a")
	q.Add("a")
	q.Add("b")
	if got := q.Len(); got != 2 {
		t.Fatalf("three adds of two keys: want 2 queued, got %d", got)
	}
	k, _ := q.Get()
	if k != "a" {
		t.Fatalf("want a first (FIFO), got %q", k)
	}
	q.Add("a") // parked: a is in process
	if got := q.Len(); got != 1 {
		t.Fatalf("an add of a key in process must not queue it: want 1 queued, got %d", got)
	}
	q.Add("a")
	q.Done("a")
	if got := q.Len(); got != 2 {
		t.Fatalf("Done of a parked key queues it once: want 2 queued, got %d", got)
	}
	k1, _ := q.Get()
	k2, _ := q.Get()
	if k1 != "b" || k2 != "a" {
		t.Fatalf("want b then a, got %q then %q", k1, k2)
	}
}

// TestNeverOnTwoWorkers hammers the queue from adders, at both priorities, and workers,
// and checks, with an instrumented set, that no key is ever processed twice at once and
// that every key is processed after its last Add.
func TestNeverOnTwoWorkers(t *testing.T) {
	q := New[int](Options[int]{}, nil)
	const keys, adds, workers = 20, 20000, 8
	var (
		mu        sync.Mutex
		inProcess = map[int]bool{}
		lastAdd   = map[int]int{} // key -> sequence number of its last Add
		seenAt    = map[int]int{} // key -> last Add sequence number seen when processing began
		overlap   int
	)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() { // a worker: ends when the queue shuts down
			defer wg.Done()
			for {
				k, shutdown := q.Get()
				if shutdown {
					return
				}
				mu.Lock()
				if inProcess[k] {
					overlap++
				}
				inProcess[k] = true
				seenAt[k] = lastAdd[k]
				mu.Unlock()
				if rand.Intn(4) == 0 {
					time.Sleep(time.Microsecond) // widen the window for a second worker
				}
				mu.Lock()
				inProcess[k] = false
				mu.Unlock()
				q.Done(k)
			}
		}()
	}
	for i := 1; i <= adds; i++ {
		k := rand.Intn(keys)
		mu.Lock()
		lastAdd[k] = i
		mu.Unlock()
		q.AddWithPriority(k, Priority(rand.Intn(2))) // Live and Backlog adds, promotions among them
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		caughtUp := true
		for k, seq := range lastAdd {
			if seenAt[k] != seq {
				caughtUp = false
			}
		}
		mu.Unlock()
		if caughtUp && q.Len() == 0 && q.Processing() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every key was processed after its last add")
		}
		time.Sleep(time.Millisecond)
	}
	q.ShutDown()
	wg.Wait()
	if overlap != 0 {
		t.Fatalf("a key was processed by two workers at once %d times", overlap)
	}
}

func TestAddAfterWaitsAndEarliestWins(t *testing.T) {
	q := New[string](Options[string]{}, nil)
	defer q.ShutDown()
	start := time.Now()
	q.AddAfter("k", 50*time.Millisecond)
	if q.Len() != 0 {
		t.Fatal("a delayed key must not be ready at once")
	}
	k, _ := q.Get()
	if k != "k" || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("got %q after %s, want k after at least 50ms", k, time.Since(start))
	}
	q.Done(k)

	q.AddAfter("e", time.Hour)
	q.AddAfter("e", time.Millisecond) // the earlier of the two wins
	got := make(chan string, 1)
	go func() { k, _ := q.Get(); got <- k }()
	select {
	case k := <-got:
		if k != "e" {
			t.Fatalf("want e, got %q", k)
		}
		q.Done(k)
	case <-time.After(5 * time.Second):
		t.Fatal("the earlier delay did not replace the later one")
	}
	q.AddAfter("late", time.Millisecond)
	q.AddAfter("late", time.Hour) // a later delay does not postpone an earlier one
	k, _ = q.Get()
	if k != "late" {
		t.Fatalf("want late, got %q", k)
	}
}

func TestShutDownReleasesBlockedGets(t *testing.T) {
	q := New[string](Options[string]{}, nil)
	q.AddAfter("never", time.Hour)
	done := make(chan bool)
	go func() { _, shutdown := q.Get(); done <- shutdown }()
	q.ShutDown()
	if !<-done {
		t.Fatal("a blocked Get must return shutdown")
	}
	q.Add("x")
	if q.Len() != 0 {
		t.Fatal("adds after shutdown must be ignored")
	}
	q.ShutDown() // a second call is harmless
}
