package workqueue

import (
	"testing"
	"time"
)

func TestExponentialDoublesFromBaseAndIsCapped(t *testing.T) {
	l := Exponential[string](5*time.Millisecond, 40*time.Millisecond)
	for n, want := range []time.Duration{5, 10, 20, 40, 40, 40} {
		if got := l.When("k"); got != want*time.Millisecond {
			t.Errorf("delay after %d failures: want %s, got %s", n, want*time.Millisecond, got)
		}
	}
	if got := l.When("other"); got != 5*time.Millisecond {
		t.Errorf("keys back off separately: want 5ms, got %s", got)
	}
	if got := l.NumRequeues("k"); got != 6 {
		t.Fatalf("want 6 requeues, got %d", got)
	}
	l.Forget("k")
	if got, d := l.NumRequeues("k"), l.When("k"); got != 0 || d != 5*time.Millisecond {
		t.Fatalf("Forget must start again at the base: requeues %d, delay %s", got, d)
	}
	if got := backoff(DefaultBaseDelay, DefaultMaxDelay, 1000); got != DefaultMaxDelay {
		t.Fatalf("an overflowing backoff must be capped, got %s", got)
	}
}

// clock is a test's time, moved by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBucketAllowsABurstThenQPS(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := Bucket[string](10, 3).(*bucket[string])
	l.now = c.now
	for i, want := range []time.Duration{0, 0, 0, 100, 200, 300} {
		if got := l.When("any"); got != want*time.Millisecond {
			t.Errorf("retry %d: want %s, got %s", i, want*time.Millisecond, got)
		}
	}
	c.t = c.t.Add(300 * time.Millisecond) // the three reserved tokens are paid back, none more
	if got := l.When("k"); got != 100*time.Millisecond {
		t.Errorf("after the reservations: want 100ms, got %s", got)
	}
	c.t = c.t.Add(time.Hour) // refills up to the burst, not beyond
	for i := range 3 {
		if got := l.When("k"); got != 0 {
			t.Errorf("refilled retry %d: want 0, got %s", i, got)
		}
	}
	if got := l.When("k"); got != 100*time.Millisecond {
		t.Errorf("beyond the burst: want 100ms, got %s", got)
	}
	if l.NumRequeues("k") != 0 {
		t.Error("a bucket tracks no key")
	}
	if got := Bucket[string](0, 0).When("k"); got != 0 {
		t.Errorf("a zero bucket never delays, got %s", got)
	}
}

func TestMaxOfTakesTheLongestDelay(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	b := Bucket[string](10, 2).(*bucket[string])
	b.now = c.now
	l := MaxOf(Exponential[string](time.Millisecond, time.Second), RateLimiter[string](b))
	for i, want := range []time.Duration{1, 2, 100, 200} { // exponential, then the empty bucket
		if got := l.When("k"); got != want*time.Millisecond {
			t.Errorf("retry %d: want %s, got %s", i, want*time.Millisecond, got)
		}
	}
	if got := l.NumRequeues("k"); got != 4 {
		t.Fatalf("want 4 requeues, got %d", got)
	}
	l.Forget("k")
	if got := l.NumRequeues("k"); got != 0 {
		t.Fatalf("Forget must reach every limiter, got %d", got)
	}
}

func TestDefaultRateLimiterIsClientGos(t *testing.T) {
	l := DefaultRateLimiter[string]().(maxOf[string])
	e, b := l[0].(*exponential[string]), l[1].(*bucket[string])
	if e.base != 5*time.Millisecond || e.max != 1000*time.Second || b.qps != 10 || b.burst != 100 {
		t.Fatalf("want 5ms doubling to 1000s and 10 qps with bursts of 100, got %s, %s, %v, %v", e.base, e.max, b.qps, b.burst)
	}
}

// countingLimiter delays by a fixed d and counts its calls.
type countingLimiter struct {
	d              time.Duration
	whens, forgets int
}

func (c *countingLimiter) When(string) time.Duration { c.whens++; return c.d }
func (c *countingLimiter) Forget(string)             { c.forgets++ }
func (c *countingLimiter) NumRequeues(string) int    { return c.whens }

func TestQueueUsesItsRateLimiter(t *testing.T) {
	l := &countingLimiter{d: time.Millisecond}
	q := New(Options[string]{RateLimiter: l}, nil)
	defer q.ShutDown()
	q.AddRateLimited("k")
	if k, _ := q.Get(); k != "k" {
		t.Fatalf("want k, got %s", k)
	}
	q.Done("k")
	if q.NumRequeues("k") != 1 {
		t.Fatalf("want 1 requeue, got %d", q.NumRequeues("k"))
	}
	q.Forget("k")
	if l.whens != 1 || l.forgets != 1 {
		t.Fatalf("want one When and one Forget, got %d and %d", l.whens, l.forgets)
	}
}
