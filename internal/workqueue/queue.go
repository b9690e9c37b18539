package workqueue

import (
	"container/heap"
	"sync"
	"time"
)

// Priority tells a live change from resync backlog. Every Live key is handed out before
// any Backlog key, except that a Backlog key waiting behind LiveBurst Live keys in a row
// goes next: the backlog drains even under a steady stream of live changes.
type Priority int8

const (
	// Backlog is the priority of a resync: an initial list, a relist, a pass over a cache.
	Backlog Priority = iota
	// Live is the priority of a change seen as it happened, and of a delayed key (a retry,
	// a RequeueAfter) when it is due.
	Live
)

// DefaultLiveBurst is the default of Options.LiveBurst.
const DefaultLiveBurst = 10

// Options configure a Queue. The zero value is valid.
type Options[T comparable] struct {
	// RateLimiter decides the delay of AddRateLimited. Default DefaultRateLimiter.
	RateLimiter RateLimiter[T]
	// LiveBurst is the most Live keys handed out in a row while a Backlog key waits: of
	// any LiveBurst+1 Gets in a row while Backlog keys wait, at least one hands one out.
	// Default DefaultLiveBurst.
	LiveBurst int
}

// Queue is a deduplicating work queue with two priorities, delays and rate-limited
// retries. It is safe for concurrent use. Its background goroutine, started by the first
// delayed add, moves delayed keys in when they are due and ends at ShutDown; a queue that
// never delayed a key has no goroutine.
type Queue[T comparable] struct {
	limiter   RateLimiter[T]
	liveBurst int

	mu   sync.Mutex
	cond *sync.Cond
	// ready holds the keys ready to hand out, a FIFO per priority. Invariant: a key is
	// ready exactly when it is in dirty and not in processing; then dirty[key] names its
	// one entry, by priority and seq. Other entries of the key (left behind in the Backlog
	// FIFO when an Add promoted it to Live) are stale: Get drops them unread. n counts the
	// entries that are not stale.
	ready [2][]entry[T]
	n     [2]int
	seq   uint64
	// streak counts the Live keys handed out in a row while a Backlog key was ready.
	streak int
	// dirty holds every key that needs processing, with the highest priority it was added
	// at: ready (seq names its entry), or parked while in process (seq 0: Done queues it).
	dirty map[T]mark
	// processing holds the keys handed out by Get and not yet Done, with the time Get
	// handed each out.
	processing map[T]time.Time
	// added records when each dirty key was first added, for the queue-duration metric.
	added map[T]time.Time
	// waiting holds delayed keys by due time; at most one entry per key, the earliest.
	waiting  delayHeap[T]
	index    map[T]*delayed[T]
	shutdown bool
	looping  bool          // the delay loop was started
	wake     chan struct{} // nudges the delay loop when an earlier deadline arrives
	done     chan struct{} // closed when the delay loop has ended

	metrics Metrics
}

// entry is a key in a ready FIFO; seq tells it from a stale entry of the same key.
type entry[T comparable] struct {
	key T
	seq uint64
}

// mark is what dirty holds for a key: its priority, and the seq of its ready entry (0
// while it is parked).
type mark struct {
	prio Priority
	seq  uint64
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
func New[T comparable](opts Options[T], m Metrics) *Queue[T] {
	if opts.RateLimiter == nil {
		opts.RateLimiter = DefaultRateLimiter[T]()
	}
	if opts.LiveBurst <= 0 {
		opts.LiveBurst = DefaultLiveBurst
	}
	if m == nil {
		m = NopMetrics{}
	}
	q := &Queue[T]{
		limiter:    opts.RateLimiter,
		liveBurst:  opts.LiveBurst,
		dirty:      map[T]mark{},
		processing: map[T]time.Time{},
		added:      map[T]time.Time{},
		index:      map[T]*delayed[T]{},
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		metrics:    m,
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add marks key as needing processing, at Live priority.
func (q *Queue[T]) Add(key T) { q.AddWithPriority(key, Live) }

// AddWithPriority marks key as needing processing at priority p. A key already queued
// stays queued once, at the higher of its priorities: a Live add of a key queued as
// Backlog moves it to the end of the Live FIFO. A key in process is handed out again after
// its Done, at the highest priority it was added at meanwhile.
func (q *Queue[T]) AddWithPriority(key T, p Priority) {
	if p != Live {
		p = Backlog
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key, p)
}

func (q *Queue[T]) addLocked(key T, p Priority) {
	if q.shutdown {
		return
	}
	if m, ok := q.dirty[key]; ok {
		if p <= m.prio {
			return
		}
		if m.seq == 0 { // parked: Done queues it at p
			q.dirty[key] = mark{prio: p}
			return
		}
		q.n[m.prio]-- // its entry there is stale from now on
		q.push(key, p)
		return
	}
	q.metrics.Adds()
	q.added[key] = time.Now()
	if _, ok := q.processing[key]; ok {
		q.dirty[key] = mark{prio: p} // parked: Done queues it
		return
	}
	q.push(key, p)
}

// push makes key ready at p. The caller holds mu and has checked that key is not in process.
func (q *Queue[T]) push(key T, p Priority) {
	q.seq++
	q.ready[p] = append(q.ready[p], entry[T]{key: key, seq: q.seq})
	q.dirty[key] = mark{prio: p, seq: q.seq}
	q.n[p]++
	q.metrics.Depth(q.n[Live] + q.n[Backlog])
	q.cond.Signal()
}

// AddAfter adds key at Live priority once d has passed: a retry or a RequeueAfter is due
// when it says, not after a resync's backlog. Of several pending delays for one key the
// earliest wins. A d of zero or less adds at once.
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

// AddRateLimited adds key after the delay its rate limiter gives (RateLimiter.When).
func (q *Queue[T]) AddRateLimited(key T) {
	q.metrics.Retries()
	q.AddAfter(key, q.limiter.When(key))
}

// Forget tells the rate limiter that key is done with retries (RateLimiter.Forget).
func (q *Queue[T]) Forget(key T) { q.limiter.Forget(key) }

// NumRequeues is the number of failures of key since its last Forget, as the rate limiter
// counts them (RateLimiter.NumRequeues).
func (q *Queue[T]) NumRequeues(key T) int { return q.limiter.NumRequeues(key) }

// Get blocks until a key is ready and hands it out; the caller must call Done with it.
// shutdown is true once the queue is shut down and empty. It hands out the oldest Live key,
// unless none is ready or LiveBurst Live keys went out in a row while a Backlog key was
// ready: then the oldest Backlog key.
func (q *Queue[T]) Get() (key T, shutdown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n[Live]+q.n[Backlog] == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if q.n[Live]+q.n[Backlog] == 0 {
		return key, true
	}
	p := Live
	switch {
	case q.n[Backlog] == 0:
		q.streak = 0
	case q.n[Live] == 0 || q.streak >= q.liveBurst:
		p = Backlog
		q.streak = 0
	default:
		q.streak++
	}
	key = q.pop(p)
	q.metrics.Depth(q.n[Live] + q.n[Backlog])
	q.metrics.QueueLatency(time.Since(q.added[key]))
	delete(q.added, key)
	q.processing[key] = time.Now()
	delete(q.dirty, key)
	return key, false
}

// pop takes the oldest entry of the FIFO of p that is not stale; the caller holds mu and
// has checked that n[p] > 0.
func (q *Queue[T]) pop(p Priority) T {
	var zero entry[T]
	for {
		e := q.ready[p][0]
		q.ready[p][0] = zero
		q.ready[p] = q.ready[p][1:]
		if m, ok := q.dirty[e.key]; ok && m.seq == e.seq {
			q.n[p]--
			return e.key
		}
	}
}

// Done ends the processing of key; if it was added meanwhile it is queued again, at the
// highest priority it was added at.
func (q *Queue[T]) Done(key T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if started, ok := q.processing[key]; ok {
		q.metrics.WorkDuration(time.Since(started))
	}
	delete(q.processing, key)
	if m, ok := q.dirty[key]; ok && !q.shutdown {
		q.push(key, m.prio)
	}
}

// Keys returns a snapshot of the keys that need processing and are not in process:
// ready (Live ones first, each priority in order), or waiting for their delay.
func (q *Queue[T]) Keys() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]T, 0, q.n[Live]+q.n[Backlog]+len(q.index))
	for _, p := range []Priority{Live, Backlog} {
		for _, e := range q.ready[p] {
			if m, ok := q.dirty[e.key]; ok && m.seq == e.seq {
				out = append(out, e.key)
			}
		}
	}
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
	return q.n[Live] + q.n[Backlog]
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
		q.ready = [2][]entry[T]{}
		q.n = [2]int{}
		q.dirty = map[T]mark{}
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
			q.addLocked(w.key, Live)
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
