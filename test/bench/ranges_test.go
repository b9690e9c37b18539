package bench_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdkit/etcdkit/manager"
	"github.com/etcdkit/etcdkit/reconcile"
	"github.com/etcdkit/etcdkit/source"
)

// rangeKeys is the number of keys of the range mode's cache benchmark.
const rangeKeys = 20000

// rangeMember is one in-process replica with a client of its own, and the keys its
// controller reconciled.
type rangeMember struct {
	mgr    *manager.Manager
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan error

	mu   sync.Mutex
	seen map[string]bool
}

func (m *rangeMember) reconciled(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen[key]
}

// startRangeMember starts member id of manager name over items: the range mode when
// ranges, else the hash mode with 16 shards.
func startRangeMember(b *testing.B, name, id, items string, ranges bool) *rangeMember {
	b.Helper()
	cli, err := cluster.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	sharding := &manager.ShardingOptions{Shards: 16, DrainTimeout: 5 * time.Second}
	if ranges {
		sharding = &manager.ShardingOptions{Mode: manager.RangeShards, ReportInterval: 200 * time.Millisecond, DrainTimeout: 5 * time.Second}
	}
	mgr, err := manager.New(manager.Options{Client: cli, Name: name, ID: id, LeaseTTL: shardTTL, GracefulShutdownTimeout: 10 * time.Second, Sharding: sharding})
	if err != nil {
		b.Fatal(err)
	}
	m := &rangeMember{mgr: mgr, cli: cli, done: make(chan error, 1), seen: map[string]bool{}}
	err = manager.NewControllerManagedBy(mgr).Named("items").For(source.Prefix(items)).
		WithOptions(reconcile.Options{MaxConcurrentReconciles: 4}).
		Complete(reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
			m.mu.Lock()
			m.seen[req.Key] = true
			m.mu.Unlock()
			return reconcile.Result{}, nil
		}))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- mgr.Start(ctx) }() // the replica; ends when stopRangeMembers cancels ctx
	return m
}

func stopRangeMembers(b *testing.B, ms []*rangeMember) {
	b.Helper()
	for _, m := range ms {
		m.cancel()
	}
	for _, m := range ms {
		if err := <-m.done; err != nil {
			b.Errorf("Start: %v", err)
		}
		_ = m.cli.Close()
	}
}

// putKeys writes names under items, 100 a transaction, with 100-byte values.
func putKeys(b *testing.B, items string, names []string) {
	b.Helper()
	val := strings.Repeat("v", 100)
	for i := 0; i < len(names); i += 100 {
		var ops []clientv3.Op
		for _, n := range names[i:min(i+100, len(names))] {
			ops = append(ops, clientv3.OpPut(items+n, val))
		}
		if _, err := cluster.Client().Txn(context.Background()).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// waitUntil polls cond every 20 ms for up to a minute.
func waitUntil(b *testing.B, what string, cond func() (bool, string)) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: not within a minute: %s", what, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cachedKeys returns the keys a member caches for its controller: its own sources in the
// range mode, the shared cache's in the hash mode.
func cachedKeys(m *rangeMember, ranges bool) int {
	if ranges {
		st, _ := m.mgr.ShardStatus(context.Background())
		return st.CachedKeys
	}
	n := 0
	for _, src := range m.mgr.GetCache().Sources() {
		n += src.Len()
	}
	return n
}

// BenchmarkRangeShards measures the range mode against the hash mode on the same etcd,
// with in-process members (each with a client of its own):
//   - cached/members=N: the most keys one member caches of 20,000, as a fraction of them
//     (max-cached-fraction), and against the hash mode's, whose every member caches all
//     (x-hash), once the slices have settled over N members;
//   - split: with 3 members settled over 2,000 keys, 2,000 keys of a hot range are
//     written into one slice: the time from the last write to the hot range being split,
//     owned by every member, and every hot key reconciled (ms-to-split).
func BenchmarkRangeShards(b *testing.B) {
	names := func(format string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(format, i)
		}
		return out
	}
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("cached/members=%d", n), func(b *testing.B) {
			for range b.N {
				maxOf := map[bool]int{}
				for _, ranges := range []bool{false, true} {
					sc := newShardScenario(fmt.Sprintf("cached-%v", ranges), 16)
					putKeys(b, sc.items, names("k%05d", rangeKeys))
					var ms []*rangeMember
					for i := range n {
						ms = append(ms, startRangeMember(b, sc.name, fmt.Sprintf("m%d", i), sc.items, ranges))
					}
					// At rest: the same figures over a second of polls (five report intervals),
					// so that a plan between two moves is not taken for the result.
					var last string
					stable := 0
					waitUntil(b, "every key cached once per member's part, at rest", func() (bool, string) {
						total, most := 0, 0
						for _, m := range ms {
							c := cachedKeys(m, ranges)
							total += c
							most = max(most, c)
						}
						want := rangeKeys
						if !ranges {
							want = n * rangeKeys
						}
						if ranges {
							// Settled over every member: each owns slices.
							st, _ := ms[0].mgr.ShardStatus(context.Background())
							owners := map[string]bool{}
							for _, s := range st.Slices {
								owners[s.Owner] = true
							}
							if !st.Settled() || len(owners) != n {
								return false, fmt.Sprintf("slices not settled over the %d members (%d own some)", n, len(owners))
							}
						}
						maxOf[ranges] = most
						if total != want {
							stable = 0
							return false, fmt.Sprintf("%d of %d keys cached", total, want)
						}
						var seen []string
						for _, m := range ms {
							seen = append(seen, fmt.Sprint(cachedKeys(m, ranges)))
						}
						if now := strings.Join(seen, ","); now != last {
							last, stable = now, 0
						}
						stable++
						return stable >= 50, "not at rest yet: " + last
					})
					stopRangeMembers(b, ms)
				}
				b.ReportMetric(float64(maxOf[true])/rangeKeys, "max-cached-fraction")
				b.ReportMetric(float64(maxOf[true])/float64(maxOf[false]), "x-hash")
			}
		})
	}
	b.Run("split", func(b *testing.B) {
		for range b.N {
			sc := newShardScenario("split", 16)
			putKeys(b, sc.items, names("c%05d", 2000))
			var ms []*rangeMember
			for i := range 3 {
				ms = append(ms, startRangeMember(b, sc.name, fmt.Sprintf("m%d", i), sc.items, true))
			}
			waitUntil(b, "the slices to settle", func() (bool, string) {
				st, _ := ms[0].mgr.ShardStatus(context.Background())
				return st.Settled() && len(st.Slices) >= 3, fmt.Sprintf("%d slices", len(st.Slices))
			})
			hot := names("h%05d", 2000)
			putKeys(b, sc.items, hot)
			start := time.Now()
			waitUntil(b, "the hot range to be split, spread and reconciled", func() (bool, string) {
				st, _ := ms[0].mgr.ShardStatus(context.Background())
				owners := map[string]bool{}
				for _, s := range st.Slices {
					// A slice that holds part of the hot range.
					if !s.Retired && s.Keys > 0 && (s.Hi == "" || s.Hi > hot[0]) && s.Lo <= hot[len(hot)-1] {
						owners[s.Owner] = true
					}
				}
				if len(owners) < 3 {
					return false, fmt.Sprintf("the hot range owned by %d members", len(owners))
				}
				for _, k := range hot {
					done := false
					for _, m := range ms {
						done = done || m.reconciled(sc.items+k)
					}
					if !done {
						return false, k + " not reconciled"
					}
				}
				return true, ""
			})
			b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-to-split")
			stopRangeMembers(b, ms)
		}
	})
}
