package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/etcdkit/etcdkit/manager"
)

// memberDebug is what a member's /debug/shards says that etcd does not hold.
type memberDebug struct {
	// Reachable is false when the member published no address or did not answer; Error
	// says which.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// Leader is the leader as the member sees it.
	Leader string `json:"leader"`
	// QueueDepth counts the requests queued in the member's sharded controllers.
	QueueDepth int `json:"queueDepth"`
	// InFlight counts the reconciles running on the member's shards.
	InFlight int `json:"inFlight"`
	// Draining are the shards the member is handing over.
	Draining []int                `json:"draining"`
	Owned    []manager.OwnedShard `json:"owned"`
}

// addDebug asks every member for its /debug/shards, all at once, each within timeout, and
// adds the answers to out: to the members, and to the shards they own.
func addDebug(ctx context.Context, out *statusOutput, timeout time.Duration) {
	// A transport of its own, closed at the end, and no proxy: member addresses are
	// internal, and nothing of this command outlives it.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: timeout}
	status := make([]*manager.ShardStatus, len(out.Members))
	var wg sync.WaitGroup
	for i := range out.Members {
		m := &out.Members[i]
		if m.Address == "" {
			m.Debug = &memberDebug{Error: "publishes no address (its manager serves no HealthProbeAddr)"}
			continue
		}
		wg.Add(1)
		go func() { // one member's request; addDebug waits for it
			defer wg.Done()
			st, err := fetchShardStatus(ctx, client, m.ID, m.Address)
			if err != nil {
				m.Debug = &memberDebug{Error: "unreachable: " + err.Error()}
				return
			}
			status[i] = st
			m.Debug = debugOf(st)
		}()
	}
	wg.Wait()
	if out.Sharding == nil {
		return
	}
	byID := map[string]*manager.ShardStatus{}
	for i, m := range out.Members {
		if status[i] != nil {
			byID[m.ID] = status[i]
		}
	}
	for i := range out.Sharding.ShardMap {
		r := &out.Sharding.ShardMap[i]
		st := byID[r.Owner]
		if st == nil {
			continue
		}
		depth, draining := st.QueueDepth[r.Shard], false
		for _, o := range st.Owned {
			if o.Shard == r.Shard {
				draining = o.Draining
			}
		}
		r.QueueDepth, r.Draining = &depth, &draining
	}
}

// fetchShardStatus reads http://<addr>/debug/shards and checks that the member that
// answers is id (an address can be reused by another process).
func fetchShardStatus(ctx context.Context, client *http.Client, id, addr string) (*manager.ShardStatus, error) {
	url := "http://" + addr + "/debug/shards"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	var st manager.ShardStatus
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if st.Member != id {
		return nil, fmt.Errorf("%s answers as member %q", url, st.Member)
	}
	return &st, nil
}

func debugOf(st *manager.ShardStatus) *memberDebug {
	d := &memberDebug{Reachable: true, Leader: st.Leader, Draining: []int{}, Owned: st.Owned}
	if d.Owned == nil {
		d.Owned = []manager.OwnedShard{}
	}
	for _, n := range st.QueueDepth {
		d.QueueDepth += n
	}
	for _, o := range st.Owned {
		d.InFlight += o.InFlight
		if o.Draining {
			d.Draining = append(d.Draining, o.Shard)
		}
	}
	return d
}
