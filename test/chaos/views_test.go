//go:build unix

package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	appconfig "github.com/etcdkit/etcdkit/config"
	"github.com/etcdkit/etcdkit/discovery"
)

// The discovery and config workload: a registrar registers and deregisters instances of
// one service and sets and deletes configuration values, and viewers in other processes
// follow both (a discovery Watch, a config Manager's cache) and log their view whenever it
// changes. Once the faults end the registrar is told to stop changing anything (SIGUSR1),
// and every viewer's view must come to equal etcd's content.
const (
	servicesPrefix = "/services"
	serviceName    = "svc"
	configPrefix   = "/config/chaos"
	instances      = 6 // instance IDs i0..i5
	configKeys     = 6 // configuration keys k0..k5
	churnGap       = 80 * time.Millisecond
	viewGap        = 100 * time.Millisecond
	viewDiscovery  = "discovery"
	viewConfig     = "config"
)

// runRegistrar churns until SIGUSR1 (then keeps its instances registered) and leaves at
// SIGTERM, deregistering them (Registry.Close).
func runRegistrar() int {
	env, hist, cli, fail, closeAll, err := startProc("registrar")
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	log := newLogger(env.id)
	reg, err := discovery.NewRegistry(cli, servicesPrefix, discovery.Options{TTL: ttl, Logger: log.WithName("discovery")})
	if err != nil {
		return fail(err)
	}
	cfg, err := appconfig.NewManager(cli, configPrefix, appconfig.Options{Logger: log.WithName("config")})
	if err != nil {
		_ = reg.Close()
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	quiet, qstop := signal.NotifyContext(ctx, syscall.SIGUSR1)
	defer qstop()
	hist.write(record{Op: "ready", Proc: env.id}) // SIGUSR1 is handled from now on
	tick := time.NewTicker(churnGap)
	defer tick.Stop()
	registered := map[int]bool{}
	for seq := 1; quiet.Err() == nil; seq++ {
		select {
		case <-quiet.Done():
			continue
		case <-tick.C:
		}
		octx, cancel := context.WithTimeout(quiet, 5*time.Second)
		i := env.rng.IntN(instances)
		op, err := "register", error(nil)
		switch {
		case registered[i] && env.rng.IntN(2) == 0:
			op, err = "deregister", reg.Deregister(octx, serviceName, "i"+strconv.Itoa(i))
			registered[i] = err != nil // unknown: try again later
		default:
			err = reg.Register(octx, discovery.ServiceInfo{Name: serviceName, ID: "i" + strconv.Itoa(i), Address: "127.0.0.1", Port: seq})
			registered[i] = true
		}
		hist.write(churnRecord(env.id, op, i, seq, err))
		k := env.rng.IntN(configKeys)
		if env.rng.IntN(4) == 0 {
			op, err = "delete", cfg.Delete(octx, "k"+strconv.Itoa(k))
		} else {
			op, err = "set", cfg.Set(octx, "k"+strconv.Itoa(k), "v"+strconv.Itoa(seq))
		}
		hist.write(churnRecord(env.id, op, k, seq, err))
		cancel()
	}
	if ctx.Err() == nil {
		hist.write(record{Op: "quiet", Proc: env.id})
		<-ctx.Done()
	}
	cfg.Close()
	if err := reg.Close(); err != nil {
		return fail(fmt.Errorf("closing the registry: %w", err))
	}
	return 0
}

func churnRecord(id, op string, n, seq int, err error) record {
	r := record{Op: op, Proc: id, Key: strconv.Itoa(n), Value: strconv.Itoa(seq), Result: "done"}
	if err != nil {
		r.Result, r.Err = "error", err.Error()
	}
	return r
}

// runViewer follows the service with Registry.Watch and the configuration with a config
// Manager's cache (GetAll), logging each view when it changes and both at SIGTERM. The
// negative control's variant (unsafe) takes both once, at its start, and never follows.
func runViewer() int {
	env, hist, cli, fail, closeAll, err := startProc("viewer")
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	log := newLogger(env.id)
	reg, err := discovery.NewRegistry(cli, servicesPrefix, discovery.Options{TTL: ttl, Logger: log.WithName("discovery")})
	if err != nil {
		return fail(err)
	}
	defer reg.Close()
	cfg, err := appconfig.NewManager(cli, configPrefix, appconfig.Options{Logger: log.WithName("config")})
	if err != nil {
		return fail(err)
	}
	defer cfg.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var mu sync.Mutex
	seen := map[string]discovery.ServiceInfo{}
	follow := func(ev discovery.ServiceEvent) {
		mu.Lock()
		defer mu.Unlock()
		if ev.Type == discovery.ServiceRemoved {
			delete(seen, ev.Service.ID)
		} else {
			seen[ev.Service.ID] = ev.Service
		}
	}
	if env.unsafe {
		wctx, cancel := context.WithCancel(ctx)
		err = reg.Watch(wctx, serviceName, follow) // the first list only
		cancel()
	} else {
		err = reg.Watch(ctx, serviceName, follow) // ends with ctx or Close
	}
	if err != nil && ctx.Err() == nil {
		return fail(fmt.Errorf("watching %s: %w", serviceName, err))
	}
	if err := cfg.WaitForSync(ctx); err != nil && ctx.Err() == nil {
		return fail(err)
	}
	var frozen map[string]any // the unsafe variant's only read
	views := map[string]string{}
	logView := func(final bool) {
		mu.Lock()
		d := discoveryView(slices.Collect(maps.Values(seen)))
		mu.Unlock()
		all := frozen
		if all == nil {
			var err error
			if all, err = cfg.GetAll(ctx, ""); err != nil && !final {
				fmt.Fprintf(os.Stderr, "%s config view: %v\n", env.id, err)
				return
			}
			if env.unsafe {
				frozen = all
			}
		}
		c := configView(all)
		for what, v := range map[string]string{viewDiscovery: d, viewConfig: c} {
			if final || views[what] != v {
				views[what] = v
				r := record{Op: "view", Proc: env.id, Key: what, Value: v}
				if final {
					r.Result = "final"
				}
				hist.write(r)
			}
		}
	}
	tick := time.NewTicker(viewGap)
	defer tick.Stop()
	for ctx.Err() == nil {
		logView(false)
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	logView(true)
	return 0
}

// discoveryView is the canonical text of a set of instances: "id:port" in ID order.
func discoveryView(is []discovery.ServiceInfo) string {
	var parts []string
	for _, i := range is {
		parts = append(parts, i.ID+":"+strconv.Itoa(i.Port))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// configView is the canonical text of configuration values: "key=value" in key order.
func configView(all map[string]any) string {
	var parts []string
	for k, v := range all {
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// etcdViews reads both views as etcd has them, in one transaction.
func etcdViews(ctx context.Context, cli *clientv3.Client) (map[string]string, int64, error) {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(servicesPrefix+"/"+serviceName+"/", clientv3.WithPrefix()),
		clientv3.OpGet(configPrefix+"/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, err
	}
	var is []discovery.ServiceInfo
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var i discovery.ServiceInfo
		if err := json.Unmarshal(kv.Value, &i); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", kv.Key, err)
		}
		is = append(is, i)
	}
	all := map[string]any{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var v any
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", kv.Key, err)
		}
		all[strings.TrimPrefix(string(kv.Key), configPrefix+"/")] = v
	}
	return map[string]string{viewDiscovery: discoveryView(is), viewConfig: configView(all)}, resp.Header.Revision, nil
}

// viewsConverged holds when the last view every running viewer logged is etcd's.
func viewsConverged(ctx context.Context, cli *clientv3.Client, w *workloads) error {
	want, rev, err := etcdViews(ctx, cli)
	if err != nil {
		return err
	}
	var behind []string
	for _, p := range w.procs() {
		if p.role != roleViewer || p.exited() {
			continue
		}
		rs, err := readHistory(p.history)
		if err != nil {
			return err
		}
		last := map[string]string{}
		for _, r := range rs {
			if r.Op == "view" {
				last[r.Key] = r.Value
			}
		}
		for _, what := range []string{viewDiscovery, viewConfig} {
			if last[what] != want[what] {
				behind = append(behind, fmt.Sprintf("%s's %s view %q, etcd's %q", p.id, what, last[what], want[what]))
			}
		}
	}
	if len(behind) > 0 {
		return fmt.Errorf("at revision %d: %s", rev, strings.Join(behind, "; "))
	}
	return nil
}

// quiesce tells the running registrars to stop changing anything, each once it handles
// SIGUSR1 (it logs "ready").
func (w *workloads) quiesce(ctx context.Context) error {
	var errs []error
	for _, p := range w.procs() {
		if p.role != roleRegistrar || p.exited() {
			continue
		}
		err := waitFor(ctx, 30*time.Second, func(context.Context) error {
			rs, err := readHistory(p.history)
			if err != nil || slices.ContainsFunc(rs, func(r record) bool { return r.Op == "ready" }) {
				return err
			}
			return fmt.Errorf("%s is not ready", p.id)
		})
		if err == nil {
			err = p.signal(syscall.SIGUSR1)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
