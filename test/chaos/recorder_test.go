//go:build unix

package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// event is one event of etcd's history as the recorder received it.
type event struct {
	rev                 int64
	put                 bool // a put; a delete otherwise
	key, value          string
	create, lease       int64
	prevValue           string // a delete's last value (WithPrevKV)
	prevCreate, prevLea int64
	at                  time.Time // when the recorder received it
}

func (e event) String() string {
	if e.put {
		return fmt.Sprintf("rev %d %s put %s = %q (create %d, lease %x)", e.rev, e.at.Format("15:04:05.000"), e.key, e.value, e.create, e.lease)
	}
	return fmt.Sprintf("rev %d %s delete %s (was %q, create %d, lease %x)", e.rev, e.at.Format("15:04:05.000"), e.key, e.prevValue, e.prevCreate, e.prevLea)
}

// recorder watches the whole keyspace from revision 1 on a client of its own and keeps
// every event. confirmed is the highest revision up to which it has every event: the
// campaign compacts only below it.
type recorder struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	events    []event
	confirmed int64
	restarts  int   // watches made again after a break
	fatal     error // a break it cannot resume from (compacted)
}

func startRecorder(cfg clientv3.Config) (*recorder, error) {
	cfg.DialKeepAliveTime, cfg.DialKeepAliveTimeout = time.Second, 2*time.Second
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{cli: cli, cancel: cancel, done: make(chan struct{})}
	go r.run(ctx) // ends when stop cancels ctx
	return r, nil
}

func (r *recorder) run(ctx context.Context) {
	defer close(r.done)
	for ctx.Err() == nil {
		r.mu.Lock()
		from := r.confirmed + 1
		r.mu.Unlock()
		wctx, cancel := context.WithCancel(ctx)
		wch := r.cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					r.mu.Lock()
					r.fatal = fmt.Errorf("the recorder's watch from revision %d: %w", from, err)
					r.mu.Unlock()
					cancel()
					return
				}
				break
			}
			r.add(wr)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.restarts++
		r.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *recorder) add(wr clientv3.WatchResponse) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range wr.Events {
		if ev.Kv.ModRevision <= r.confirmed {
			continue // sent again after a break
		}
		e := event{rev: ev.Kv.ModRevision, put: ev.Type == mvccpb.PUT, key: string(ev.Kv.Key), at: now}
		if e.put {
			e.value, e.create, e.lease = string(ev.Kv.Value), ev.Kv.CreateRevision, ev.Kv.Lease
		}
		if ev.PrevKv != nil {
			e.prevValue, e.prevCreate, e.prevLea = string(ev.PrevKv.Value), ev.PrevKv.CreateRevision, ev.PrevKv.Lease
		}
		r.events = append(r.events, e)
	}
	if n := len(wr.Events); n > 0 {
		r.confirmed = max(r.confirmed, wr.Events[n-1].Kv.ModRevision)
	} else if wr.IsProgressNotify() {
		r.confirmed = max(r.confirmed, wr.Header.Revision)
	}
}

// Confirmed returns the revision up to which the recorder has every event.
func (r *recorder) Confirmed() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.confirmed
}

// catchUp waits until the recorder has every event up to rev, asking etcd for progress
// notifications meanwhile.
func (r *recorder) catchUp(ctx context.Context, rev int64) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		r.mu.Lock()
		confirmed, fatal := r.confirmed, r.fatal
		r.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if confirmed >= rev {
			return nil
		}
		_ = r.cli.RequestProgress(ctx)
		select {
		case <-ctx.Done():
			return fmt.Errorf("the recorder has revision %d, not %d: %w", confirmed, rev, ctx.Err())
		case <-tick.C:
		}
	}
}

// history returns the events received so far, in revision order.
func (r *recorder) history() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]event(nil), r.events...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].rev < out[j].rev })
	return out
}

func (r *recorder) stop() {
	r.cancel()
	<-r.done
	_ = r.cli.Close()
}

// kv is a key's state in a replay.
type kv struct {
	value         string
	create, lease int64
}

// replay is the keyspace rebuilt from the history, one revision at a time.
type replay struct {
	state map[string]kv
}

func newReplay() *replay { return &replay{state: map[string]kv{}} }

func (p *replay) apply(e event) {
	if e.put {
		p.state[e.key] = kv{value: e.value, create: e.create, lease: e.lease}
	} else {
		delete(p.state, e.key)
	}
}

// byRevision calls fn with the events of each revision in turn, before they are applied
// to p: p is then the keyspace as it was at the revision before.
func (p *replay) byRevision(evs []event, fn func(rev int64, evs []event)) {
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].rev == evs[i].rev {
			j++
		}
		fn(evs[i].rev, evs[i:j])
		for _, e := range evs[i:j] {
			p.apply(e)
		}
		i = j
	}
}
