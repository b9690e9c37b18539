package workqueue

import (
	"container/heap"
	"sync"
	"time"
)

// Backoff defaults: the first retry of a failing key waits BaseDelay, each further failure
// doubles it, up to MaxDelay.
const (
	DefaultBaseDelay = 5 * time.Millisecond
	DefaultMaxDelay  = 1000 * time.Second
)

// Options configure a Queue. The zero value is valid.
type Options struct {
	// BaseDelay is the backoff after the first failure. Default DefaultBaseDelay.
	BaseDelay time.Duration
	// MaxDelay caps the backoff. Default DefaultMaxDelay.
	MaxDelay time.Duration
}

// Queue is a deduplicating work queue with delays and per-key exponential backoff. It is
// safe for concurrent use. Its background goroutine, started by the first delayed add,
// moves delayed keys in when they are due and ends at ShutDown; a queue that never delayed
// a key has no goroutine.
type Queue[T comparable] struct {
	base, max time.Duration

	mu   sync.Mutex
	cond *sync.Cond
	// queue holds the keys ready to hand out, in order. Invariant: a key is in queue exactly
	// when it is in dirty and not in processing.
	queue []T
	// dirty holds every key that needs processing: queued, or parked while in process.
	dirty map[T]struct{}
	// processing holds the keys handed out by Get and not yet Done, with the time Get
	// handed each out.
	processing map[T]time.Time
	// added records when each dirty key was first added, for the queue-duration metric.
	added map[T]time.Time
	// waiting holds delayed keys by due time; at most one entry per key, the earliest.
	waiting  delayHeap[T]
	index    map[T]*delayed[T]
	failures map[T]int
	shutdown bool
	looping  bool          // the delay loop was started
	wake     chan struct{} // nudges the delay loop when an earlier deadline arrives
	done     chan struct{} // closed when the delay loop has ended

	metrics Metrics
}

// Metrics receives the queue's measurements. Implementations must be cheap and safe for
// concurrent use; NopMetrics discards them.
type Metrics interface {
	// Depth is the number of keys waiting to be handed out.
	Depth(n int)
	// Adds counts Add calls that queued or parked a key.
	Adds()
	// Retries counts AddRateLimited calls.
	Retries()
	// QueueLatency is how long a key waited between its Add and the Get that handed it out.
	QueueLatency(d time.Duration)
	// WorkDuration is how long a key was in process, from Get to Done.
	WorkDuration(d time.Duration)
}

// NopMetrics discards every measurement.
type NopMetrics struct{}

func (NopMetrics) Depth(int)                  {}
func (NopMetrics) Adds()                      {}
func (NopMetrics) Retries()                   {}
func (NopMetrics) QueueLatency(time.Duration) {}

// WorkDuration discards d.
func (NopMetrics) WorkDuration(time.Duration) {}

// New returns a queue; ShutDown stops it.
func New[T comparable](opts Options, m Metrics) *Queue[T] {
	if opts.BaseDelay <= 0 {
		opts.BaseDelay = DefaultBaseDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if m == nil {
		m = NopMetrics{}
	}
	q := &Queue[T]{
		base:       opts.BaseDelay,
		max:        opts.MaxDelay,
		dirty:      map[T]struct{}{},
		processing: map[T]time.Time{},
		added:      map[T]time.Time{},
		index:      map[T]*delayed[T]{},
		failures:   map[T]int{},
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		metrics:    m,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add marks key as needing processing. A key already queued stays queued once; a key in
// process is handed out again after its Done.
func (q *Queue[T]) Add(key T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue[T]) addLocked(key T) {
	if q.shutdown {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	q.metrics.Adds()
	q.dirty[key] = struct{}{}
	q.added[key] = time.Now()
	if _, ok := q.processing[key]; ok {
		return // parked: Done queues it
	}
	q.queue = append(q.queue, key)
	q.metrics.Depth(len(q.queue))
	q.cond.Signal()
}

// AddAfter adds key once d has passed. Of several pending delays for one key the earliest
// wins. A d of zero or less adds at once.
func (q *Queue[T]) AddAfter(key T, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	if !q.looping {
		q.looping = true
		go q.delayLoop()
	}
	at := time.Now().Add(d)
	if w, ok := q.index[key]; ok {
		if !at.Before(w.at) {
			return
		}
		w.at = at
		heap.Fix(&q.waiting, w.pos)
	} else {
		w := &delayed[T]{key: key, at: at}
		q.index[key] = w
		heap.Push(&q.waiting, w)
	}
	if q.waiting[0].key == key {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// AddRateLimited adds key after its backoff: BaseDelay doubled for every failure since its
// last Forget, capped at MaxDelay.
func (q *Queue[T]) AddRateLimited(key T) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	q.metrics.Retries()
	q.AddAfter(key, q.backoff(n))
}

// backoff is the delay after n earlier failures.
func (q *Queue[T]) backoff(n int) time.Duration {
	d := q.base
	for i := 0; i < n; i++ {
		d *= 2
		if d >= q.max || d <= 0 {
			return q.max
		}
	}
	return d
}

// Forget clears key's failure count: its next failure starts again at BaseDelay.
func (q *Queue[T]) Forget(key T) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// NumRequeues is the number of failures of key since its last Forget.
func (q *Queue[T]) NumRequeues(key T) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Get blocks until a key is ready and hands it out; the caller must call Done with it.
// shutdown is true once the queue is shut down and empty.
func (q *Queue[T]) Get() (key T, shutdown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if len(q.queue) == 0 {
		return key, true
	}
	key = q.queue[0]
	var zero T
	q.queue[0] = zero
	q.queue = q.queue[1:]
	q.metrics.Depth(len(q.queue))
	q.metrics.QueueLatency(time.Since(q.added[key]))
	delete(q.added, key)
	q.processing[key] = time.Now()
	delete(q.dirty, key)
	return key, false
}

// Done ends the processing of key; if it was added meanwhile it is queued again.
func (q *Queue[T]) Done(key T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if started, ok := q.processing[key]; ok {
		q.metrics.WorkDuration(time.Since(started))
	}
	delete(q.processing, key)
	if _, ok := q.dirty[key]; ok && !q.shutdown {
		q.queue = append(q.queue, key)
		q.metrics.Depth(len(q.queue))
		q.cond.Signal()
	}
}

// Keys returns a snapshot of the keys that need processing and are not in process:
// queued, or waiting for their delay.
func (q *Queue[T]) Keys() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]T, 0, len(q.queue)+len(q.index))
	out = append(out, q.queue...)
	for k := range q.index {
		if _, dirty := q.dirty[k]; !dirty {
			out = append(out, k)
		}
	}
	return out
}

// Len is the number of keys ready to hand out.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// Processing is the number of keys handed out and not yet Done.
func (q *Queue[T]) Processing() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.processing)
}

// ShutDown stops handing out keys: blocked and later Gets return shutdown, queued and delayed
// keys are dropped, Adds are ignored. Keys in process may still call Done. It waits for the
// delay loop to end.
func (q *Queue[T]) ShutDown() {
	q.mu.Lock()
	looping := q.looping
	if !q.shutdown {
		q.shutdown = true
		q.queue = nil
		q.dirty = map[T]struct{}{}
		q.waiting = nil
		q.index = map[T]*delayed[T]{}
		q.metrics.Depth(0)
		q.cond.Broadcast()
		close(q.wake)
	}
	q.mu.Unlock()
	if looping {
		<-q.done
	}
}

// ShuttingDown reports whether ShutDown was called.
func (q *Queue[T]) ShuttingDown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shutdown
}

// delayLoop moves due keys from waiting to the queue. It ends when ShutDown closes wake.
func (q *Queue[T]) delayLoop() {
	defer close(q.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		now := time.Now()
		for len(q.waiting) > 0 && !q.waiting[0].at.After(now) {
			w := heap.Pop(&q.waiting).(*delayed[T])
			delete(q.index, w.key)
			q.addLocked(w.key)
		}
		next := time.Hour
		if len(q.waiting) > 0 {
			next = q.waiting[0].at.Sub(now)
		}
		q.mu.Unlock()
		timer.Reset(next)
		select {
		case _, ok := <-q.wake:
			if !ok {
				return
			}
		case <-timer.C:
		}
	}
}

// delayed is a key waiting for its time.
type delayed[T comparable] struct {
	key T
	at  time.Time
	pos int
}

// delayHeap orders delayed keys by due time.
type delayHeap[T comparable] []*delayed[T]

func (h delayHeap[T]) Len() int           { return len(h) }
func (h delayHeap[T]) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h delayHeap[T]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}
func (h *delayHeap[T]) Push(x any) {
	w := x.(*delayed[T])
	w.pos = len(*h)
	*h = append(*h, w)
}
func (h *delayHeap[T]) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return w
}
