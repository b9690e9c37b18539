package workqueue

import (
	"math"
	"sync"
	"time"
)

// Defaults of DefaultRateLimiter, client-go's DefaultControllerRateLimiter: per-key
// exponential backoff from 5 ms to 1000 s, and 10 retries a second overall with bursts of
// 100.
const (
	DefaultBaseDelay = 5 * time.Millisecond
	DefaultMaxDelay  = 1000 * time.Second
	DefaultQPS       = 10
	DefaultBurst     = 100
)

// RateLimiter decides how long a key waits before a retry. Implementations must be safe
// for concurrent use.
type RateLimiter[T comparable] interface {
	// When returns how long key waits before its next retry, and counts the retry.
	When(key T) time.Duration
	// Forget ends the tracking of key: its retries are over (it succeeded, or gave up).
	Forget(key T)
	// NumRequeues is the number of retries of key counted since its last Forget.
	NumRequeues(key T) int
}

// DefaultRateLimiter returns the limiter a Queue uses when its Options name none:
// MaxOf(Exponential(DefaultBaseDelay, DefaultMaxDelay), Bucket(DefaultQPS, DefaultBurst)).
func DefaultRateLimiter[T comparable]() RateLimiter[T] {
	return MaxOf(Exponential[T](DefaultBaseDelay, DefaultMaxDelay), Bucket[T](DefaultQPS, DefaultBurst))
}

// Exponential returns a per-key backoff: base after a key's first failure, doubled for
// every further one since its last Forget, capped at max.
func Exponential[T comparable](base, max time.Duration) RateLimiter[T] {
	return &exponential[T]{base: base, max: max, failures: map[T]int{}}
}

type exponential[T comparable] struct {
	base, max time.Duration
	mu        sync.Mutex
	failures  map[T]int
}

func (e *exponential[T]) When(key T) time.Duration {
	e.mu.Lock()
	n := e.failures[key]
	e.failures[key] = n + 1
	e.mu.Unlock()
	return backoff(e.base, e.max, n)
}

// backoff is base doubled n times, capped at max (and at max on overflow).
func backoff(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 0; i < n; i++ {
		d *= 2
		if d >= max || d <= 0 {
			return max
		}
	}
	return min(d, max)
}

func (e *exponential[T]) Forget(key T) {
	e.mu.Lock()
	delete(e.failures, key)
	e.mu.Unlock()
}

func (e *exponential[T]) NumRequeues(key T) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failures[key]
}

// Bucket returns an overall token bucket, for every key together: it holds up to burst
// tokens (full at the start) and gains qps a second; each When takes one, and waits for it
// when the bucket is empty, as a reservation of golang.org/x/time/rate does. It does not
// track keys: Forget does nothing and NumRequeues is 0. A qps of zero or less, or a burst
// below 1, never delays.
func Bucket[T comparable](qps float64, burst int) RateLimiter[T] {
	return &bucket[T]{qps: qps, burst: float64(burst), tokens: float64(burst), now: time.Now}
}

type bucket[T comparable] struct {
	qps, burst float64
	now        func() time.Time // time.Now; a test's clock

	mu     sync.Mutex
	tokens float64 // negative: reserved ahead of time by earlier Whens
	last   time.Time
}

func (b *bucket[T]) When(T) time.Duration {
	if b.qps <= 0 || b.burst < 1 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if !b.last.IsZero() && now.After(b.last) {
		b.tokens = math.Min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.qps)
	}
	b.last = now
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.qps * float64(time.Second))
}

func (b *bucket[T]) Forget(T) {}

func (b *bucket[T]) NumRequeues(T) int { return 0 }

// MaxOf returns a limiter whose delay is the longest of limiters' delays (each counts
// every retry), and whose NumRequeues is the largest of theirs.
func MaxOf[T comparable](limiters ...RateLimiter[T]) RateLimiter[T] {
	return maxOf[T](limiters)
}

type maxOf[T comparable] []RateLimiter[T]

func (m maxOf[T]) When(key T) time.Duration {
	var d time.Duration
	for _, l := range m {
		d = max(d, l.When(key))
	}
	return d
}

func (m maxOf[T]) Forget(key T) {
	for _, l := range m {
		l.Forget(key)
	}
}

func (m maxOf[T]) NumRequeues(key T) int {
	n := 0
	for _, l := range m {
		n = max(n, l.NumRequeues(key))
	}
	return n
}
