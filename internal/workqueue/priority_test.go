package workqueue

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// drain hands out every ready key, in order, and marks each Done.
func drain(t *testing.T, q *Queue[string]) []string {
	t.Helper()
	var out []string
	for q.Len() > 0 {
		k, shutdown := q.Get()
		if shutdown {
			t.Fatal("the queue shut down")
		}
		q.Done(k)
		out = append(out, k)
	}
	return out
}

func TestLiveKeysGoBeforeBacklogInArrivalOrder(t *testing.T) {
	q := New(Options[string]{}, nil)
	defer q.ShutDown()
	for _, k := range []string{"b1", "b2", "b3"} {
		q.AddWithPriority(k, Backlog)
	}
	q.Add("l1")
	q.AddWithPriority("b4", Backlog)
	q.Add("l2")
	q.AddWithPriority("l3", Live)
	if got := q.Len(); got != 7 {
		t.Fatalf("want 7 ready, got %d", got)
	}
	if got, want := q.Keys(), []string{"l1", "l2", "l3", "b1", "b2", "b3", "b4"}; !slices.Equal(got, want) {
		t.Fatalf("Keys: want %v, got %v", want, got)
	}
	if got, want := drain(t, q), []string{"l1", "l2", "l3", "b1", "b2", "b3", "b4"}; !slices.Equal(got, want) {
		t.Fatalf("want the live keys in arrival order, then the backlog in order: want %v, got %v", want, got)
	}
}

func TestAddsAtBothPrioritiesQueueOnceAtTheHigher(t *testing.T) {
	q := New(Options[string]{}, nil)
	defer q.ShutDown()
	q.AddWithPriority("a", Backlog)
	q.AddWithPriority("x", Backlog)
	q.AddWithPriority("b", Backlog)
	q.Add("l")
	q.Add("x") // promoted: to the end of the live FIFO, out of the backlog
	q.AddWithPriority("x", Backlog)
	q.Add("x")
	q.Add("l")
	q.AddWithPriority("l", Backlog) // a live key stays live
	if got := q.Len(); got != 4 {
		t.Fatalf("want 4 ready keys (a, x, b, l), got %d", got)
	}
	if got, want := q.Keys(), []string{"l", "x", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("Keys: want %v, got %v", want, got)
	}
	if got, want := drain(t, q), []string{"l", "x", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("want %v, got %v", want, got)
	}
	if q.n != [2]int{} || len(q.dirty) != 0 {
		t.Fatalf("counts must be back to zero: n %v, dirty %v", q.n, q.dirty)
	}
}

func TestAParkedKeyIsQueuedAtTheHighestPriorityItWasAddedAt(t *testing.T) {
	q := New(Options[string]{}, nil)
	defer q.ShutDown()
	q.AddWithPriority("x", Backlog)
	q.AddWithPriority("y", Backlog)
	x, _ := q.Get()
	y, _ := q.Get()
	q.AddWithPriority("x", Backlog) // parked as backlog
	q.AddWithPriority("y", Backlog)
	q.Add("y") // parked, promoted
	if q.Len() != 0 {
		t.Fatalf("keys in process must not be ready, got %d", q.Len())
	}
	q.AddWithPriority("b", Backlog)
	q.Add("l")
	q.Done(x)
	q.Done(y)
	if got, want := drain(t, q), []string{"l", "y", "b", "x"}; !slices.Equal(got, want) {
		t.Fatalf("want %v, got %v", want, got)
	}
}

// TestBacklogDrainsUnderASteadyLiveStream keeps the live FIFO from ever running empty (a
// new live key before every Get) and checks the rule: while a backlog key is ready, at
// most LiveBurst live keys go out in a row, so the backlog drains at a known pace.
func TestBacklogDrainsUnderASteadyLiveStream(t *testing.T) {
	for _, burst := range []int{1, 3, DefaultLiveBurst} {
		t.Run(fmt.Sprint("LiveBurst=", burst), func(t *testing.T) {
			q := New(Options[string]{LiveBurst: burst}, nil)
			defer q.ShutDown()
			const backlog = 50
			for i := range backlog {
				q.AddWithPriority(fmt.Sprint("b", i), Backlog)
			}
			q.Add("l0")
			var got []string
			live, run := 1, 0
			for gets := 0; ; gets++ {
				if gets > backlog*(burst+1) {
					t.Fatalf("the backlog did not drain in %d gets: %d keys left", gets, backlog-countPrefix(got, 'b'))
				}
				q.Add(fmt.Sprint("l", live)) // the stream never lets the live FIFO empty
				live++
				k, _ := q.Get()
				q.Done(k)
				got = append(got, k)
				if k[0] == 'l' {
					run++
					if run > burst {
						t.Fatalf("%d live keys in a row while the backlog waited (LiveBurst %d): %v", run, burst, got)
					}
					continue
				}
				run = 0
				if want := fmt.Sprint("b", countPrefix(got, 'b')-1); k != want {
					t.Fatalf("backlog out of order: want %s, got %s", want, k)
				}
				if countPrefix(got, 'b') == backlog {
					break
				}
			}
			if want := backlog * (burst + 1); len(got) != want {
				t.Fatalf("want the backlog drained in exactly %d gets (one in every %d), took %d", want, burst+1, len(got))
			}
			for i, l := 0, 0; i < len(got); i++ { // live keys in arrival order
				if got[i][0] == 'l' {
					if want := fmt.Sprint("l", l); got[i] != want {
						t.Fatalf("live out of order at %d: want %s, got %s", i, want, got[i])
					}
					l++
				}
			}
		})
	}
}

func countPrefix(keys []string, c byte) int {
	n := 0
	for _, k := range keys {
		if k[0] == c {
			n++
		}
	}
	return n
}

func TestALiveKeyArrivingDuringABacklogGoesNext(t *testing.T) {
	q := New(Options[string]{}, nil)
	defer q.ShutDown()
	for i := range 1000 {
		q.AddWithPriority(fmt.Sprint("b", i), Backlog)
	}
	for range 100 { // the backlog is draining
		k, _ := q.Get()
		q.Done(k)
	}
	q.Add("live")
	if k, _ := q.Get(); k != "live" {
		t.Fatalf("a live key behind a draining backlog must go next, got %s", k)
	}
}

func TestDelayedKeysAreQueuedLive(t *testing.T) {
	q := New(Options[string]{}, nil)
	defer q.ShutDown()
	q.AddWithPriority("b", Backlog)
	q.AddAfter("x", time.Millisecond)
	q.AddRateLimited("y")
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the delayed keys did not arrive: %v", q.Keys())
		}
		time.Sleep(time.Millisecond)
	}
	got := drain(t, q)
	if !slices.Equal(got[2:], []string{"b"}) {
		t.Fatalf("a retry or a RequeueAfter must go before the backlog: got %v", got)
	}
}
