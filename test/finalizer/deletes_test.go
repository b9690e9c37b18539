//go:build unix

package finalizer_test

import (
	"context"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// deleteLog records the revision of every delete under the parents' and children's
// prefixes, from a watch that starts before anything is written.
type deleteLog struct {
	mu  sync.Mutex
	rev map[string]int64
}

func watchDeletes(cli *clientv3.Client) *deleteLog {
	l := &deleteLog{rev: map[string]int64{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	DeferCleanup(func() { cancel(); <-done })
	// The watches start at revision 1: nothing before them is missed.
	wp := cli.Watch(ctx, parentsPrefix, clientv3.WithPrefix(), clientv3.WithRev(1))
	wc := cli.Watch(ctx, childrenPrefix, clientv3.WithPrefix(), clientv3.WithRev(1))
	go func() {
		defer close(done)
		for wp != nil || wc != nil {
			var resp clientv3.WatchResponse
			var ok bool
			select {
			case resp, ok = <-wp:
				if !ok {
					wp = nil
				}
			case resp, ok = <-wc:
				if !ok {
					wc = nil
				}
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					l.mu.Lock()
					l.rev[string(ev.Kv.Key)] = ev.Kv.ModRevision
					l.mu.Unlock()
				}
			}
		}
	}()
	return l
}

// at returns the revision of key's delete.
func (l *deleteLog) at(key string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.rev[key]
	return r, ok
}
