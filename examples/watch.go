package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// runWatch shows the guide's section 7: a watch on one key, on a prefix, on a range, from a
// past revision (replaying history), with previous values, and progress notifications.
func runWatch(ctx context.Context, e *env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	steps := []func(context.Context, *env) error{watchKey, watchPrefix, watchRange, watchHistory, watchPrevKV, watchProgress}
	for _, step := range steps {
		if err := step(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// describe renders an event as "PUT key=value" with the key relative to the example prefix.
func describe(e *env, ev *clientv3.Event) string {
	key := e.rel(string(ev.Kv.Key))
	if ev.Type == clientv3.EventTypeDelete {
		return "DELETE " + key
	}
	return fmt.Sprintf("PUT %s=%s", key, ev.Kv.Value)
}

// collect reads n events from a watch channel, failing on a watch error or a timeout.
func collect(ctx context.Context, e *env, wc clientv3.WatchChan, n int) ([]*clientv3.Event, error) {
	var evs []*clientv3.Event
	timeout := time.After(10 * time.Second)
	for len(evs) < n {
		select {
		case wr, ok := <-wc:
			if !ok {
				return evs, expect(false, "%d events before the watch closed, got %d", n, len(evs))
			}
			if err := wr.Err(); err != nil {
				return evs, err
			}
			evs = append(evs, wr.Events...)
		case <-timeout:
			return evs, expect(false, "%d events within 10s, got %d", n, len(evs))
		case <-ctx.Done():
			return evs, ctx.Err()
		}
	}
	return evs, nil
}

// expectEvents checks events against their descriptions and tells the story.
func expectEvents(e *env, what string, evs []*clientv3.Event, want ...string) error {
	var got []string
	for _, ev := range evs {
		got = append(got, describe(e, ev))
	}
	e.say("%s: %s", what, strings.Join(got, ", "))
	return expect(strings.Join(got, "|") == strings.Join(want, "|"), "%s to see %q, got %q", what, want, got)
}

// openWatch starts a watch and waits until etcd has registered it, so that no write made
// right after is missed (a watch without a revision starts from "now" on the server).
func openWatch(ctx context.Context, e *env, key string, opts ...clientv3.OpOption) (clientv3.WatchChan, error) {
	wc := e.client.Watch(clientv3.WithRequireLeader(ctx), key, append(opts, clientv3.WithCreatedNotify())...)
	select {
	case wr := <-wc:
		if err := wr.Err(); err != nil {
			return nil, err
		}
		if !wr.Created {
			return nil, expect(false, "the first answer of a watch to be its creation")
		}
		return wc, nil
	case <-time.After(10 * time.Second):
		return nil, expect(false, "the watch on %s to be created within 10s", key)
	}
}

func watchKey(ctx context.Context, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := e.key("config/setting")
	wc, err := openWatch(ctx, e, k)
	if err != nil {
		return err
	}
	for _, op := range []clientv3.Op{clientv3.OpPut(k, "v1"), clientv3.OpPut(e.key("config/other"), "x"), clientv3.OpPut(k, "v2"), clientv3.OpDelete(k)} {
		if _, err := e.client.Do(ctx, op); err != nil {
			return err
		}
	}
	evs, err := collect(ctx, e, wc, 3)
	if err != nil {
		return err
	}
	return expectEvents(e, "watch on one key", evs, "PUT config/setting=v1", "PUT config/setting=v2", "DELETE config/setting")
}

func watchPrefix(ctx context.Context, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wc, err := openWatch(ctx, e, e.key("app/"), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, k := range []string{"app/a", "other/x", "app/b", "apps"} {
		if _, err := e.client.Put(ctx, e.key(k), "1"); err != nil {
			return err
		}
	}
	evs, err := collect(ctx, e, wc, 2)
	if err != nil {
		return err
	}
	return expectEvents(e, "watch on prefix app/ (other/x and apps are outside it)", evs, "PUT app/a=1", "PUT app/b=1")
}

func watchRange(ctx context.Context, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// [range/b, range/d): the end key is excluded.
	wc, err := openWatch(ctx, e, e.key("range/b"), clientv3.WithRange(e.key("range/d")))
	if err != nil {
		return err
	}
	for _, k := range []string{"range/a", "range/b", "range/c", "range/d"} {
		if _, err := e.client.Put(ctx, e.key(k), "1"); err != nil {
			return err
		}
	}
	evs, err := collect(ctx, e, wc, 2)
	if err != nil {
		return err
	}
	return expectEvents(e, "watch on the range [range/b, range/d)", evs, "PUT range/b=1", "PUT range/c=1")
}

func watchHistory(ctx context.Context, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := e.key("history/counter")
	var first int64
	for i := 1; i <= 3; i++ {
		resp, err := e.client.Put(ctx, k, fmt.Sprint(i))
		if err != nil {
			return err
		}
		if i == 1 {
			first = resp.Header.Revision
		}
	}
	e.say("wrote history/counter three times, first at revision %d; now watching from that revision", first)
	wc := e.client.Watch(ctx, k, clientv3.WithRev(first))
	evs, err := collect(ctx, e, wc, 3)
	if err != nil {
		return err
	}
	return expectEvents(e, "replayed history", evs, "PUT history/counter=1", "PUT history/counter=2", "PUT history/counter=3")
}

func watchPrevKV(ctx context.Context, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := e.key("prev/setting")
	if _, err := e.client.Put(ctx, k, "old"); err != nil {
		return err
	}
	wc, err := openWatch(ctx, e, k, clientv3.WithPrevKV())
	if err != nil {
		return err
	}
	if _, err := e.client.Put(ctx, k, "new"); err != nil {
		return err
	}
	if _, err := e.client.Delete(ctx, k); err != nil {
		return err
	}
	evs, err := collect(ctx, e, wc, 2)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if ev.PrevKv == nil {
			return expect(false, "a previous value on every event of a WithPrevKV watch")
		}
	}
	e.say("with prev-KV: changed from %q to %q, then deleted (it held %q)", evs[0].PrevKv.Value, evs[0].Kv.Value, evs[1].PrevKv.Value)
	return expect(string(evs[0].PrevKv.Value) == "old" && string(evs[0].Kv.Value) == "new" && string(evs[1].PrevKv.Value) == "new",
		"previous values old then new")
}

// watchProgress asks etcd for a progress notification: an event-less answer whose header
// revision tells a watcher that it has seen everything up to there, so it can resume from
// that revision after a break instead of from the last event it saw.
func watchProgress(ctx context.Context, e *env) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wc, err := openWatch(ctx, e, e.key("quiet/"), clientv3.WithPrefix(), clientv3.WithProgressNotify())
	if err != nil {
		return err
	}
	// Writes elsewhere move the revision without events for this watch.
	put, err := e.client.Put(ctx, e.key("busy"), "1")
	if err != nil {
		return err
	}
	// The request goes to the watch stream of this context's metadata: the same one as the watch.
	if err := e.client.RequestProgress(clientv3.WithRequireLeader(ctx)); err != nil {
		return err
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case wr := <-wc:
			if err := wr.Err(); err != nil {
				return err
			}
			if !wr.IsProgressNotify() {
				continue
			}
			e.say("progress notification: no events, watcher is current up to revision %d (last write elsewhere at %d)", wr.Header.Revision, put.Header.Revision)
			return expect(wr.Header.Revision >= put.Header.Revision, "a progress revision of at least %d, got %d", put.Header.Revision, wr.Header.Revision)
		case <-timeout:
			return expect(false, "a progress notification within 10s of asking for one")
		}
	}
}
