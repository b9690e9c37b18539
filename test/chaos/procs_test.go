//go:build unix

package chaos_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

// proc is one incarnation of a workload process.
type proc struct {
	role         string // roleMember, roleLocker, roleLeader, roleRegistrar or roleViewer
	slot         int
	id           string // member ID, holder, candidate or viewer name: new at every incarnation
	history      string
	log          string
	cmd          *exec.Cmd
	done         chan struct{}
	exit         error // read after done
	stopped      bool  // SIGTERM sent at the end of the run
	started, end time.Time
}

// workloads are the running workload processes, by slot: a killed process is started
// again in its slot as a new incarnation. Each slot reaches etcd through proxies of its
// own, one per etcd member, made when the slot's first process starts and kept for its
// later incarnations: the network faults silence them.
type workloads struct {
	dir       string
	env       []string
	endpoints []string // etcd's, by member
	unsafe    bool
	seed      uint64

	mu      sync.Mutex
	cur     map[string]*proc // by slot name
	all     []*proc
	count   map[string]int                     // incarnations by slot name
	proxies map[string][]*etcdtest.SilentProxy // by slot name, one per etcd member
}

func slotName(role string, slot int) string {
	switch role {
	case roleMember:
		return "ctl" + strconv.Itoa(slot+1)
	case roleLeader:
		return "cand" + strconv.Itoa(slot+1)
	case roleRegistrar:
		return "reg" + strconv.Itoa(slot+1)
	case roleViewer:
		return "viewer" + strconv.Itoa(slot+1)
	}
	return "holder" + strconv.Itoa(slot+1)
}

func newWorkloads(dir string, endpoints []string, seed uint64, unsafe, ranges bool) *workloads {
	env := append(os.Environ(), seedEnv+"="+strconv.FormatUint(seed, 10))
	if unsafe {
		env = append(env, unsafeEnv+"=1")
	}
	if ranges {
		env = append(env, rangesEnv+"=1")
	}
	return &workloads{dir: dir, env: env, endpoints: endpoints, unsafe: unsafe, seed: seed,
		cur: map[string]*proc{}, count: map[string]int{}, proxies: map[string][]*etcdtest.SilentProxy{}}
}

// slotProxies returns a slot's proxies, one per etcd member, made at the first call. w.mu
// is held.
func (w *workloads) slotProxies(name string) ([]*etcdtest.SilentProxy, error) {
	if ps := w.proxies[name]; ps != nil {
		return ps, nil
	}
	var ps []*etcdtest.SilentProxy
	for _, ep := range w.endpoints {
		p, err := etcdtest.NewSilentProxy(ep)
		if err != nil {
			for _, p := range ps {
				p.Close()
			}
			return nil, fmt.Errorf("a proxy for %s: %w", name, err)
		}
		ps = append(ps, p)
	}
	w.proxies[name] = ps
	return ps, nil
}

// proxiesOf returns the proxies of a slot (nil before its first process).
func (w *workloads) proxiesOf(role string, slot int) []*etcdtest.SilentProxy {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.proxies[slotName(role, slot)]
}

// closeProxies closes every slot's proxies, once the processes have stopped.
func (w *workloads) closeProxies() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, ps := range w.proxies {
		for _, p := range ps {
			p.Close()
		}
		delete(w.proxies, name)
	}
}

// start starts a new incarnation of a slot.
func (w *workloads) start(role string, slot int) (*proc, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	name := slotName(role, slot)
	ps, err := w.slotProxies(name)
	if err != nil {
		return nil, err
	}
	var eps []string
	for _, p := range ps {
		eps = append(eps, p.Endpoint())
	}
	w.count[name]++
	id := name
	if n := w.count[name]; n > 1 {
		id = fmt.Sprintf("%s-%d", name, n)
	}
	p := &proc{role: role, slot: slot, id: id, done: make(chan struct{}),
		history: filepath.Join(w.dir, id+".jsonl"), log: filepath.Join(w.dir, id+".log")}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(slices.Clip(w.env), endpointsEnv+"="+strings.Join(eps, ","),
		roleEnv+"="+role, idEnv+"="+id, historyEnv+"="+p.history)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	p.started = time.Now()
	go func() { // ends when the process exits
		p.exit = p.cmd.Wait()
		p.end = time.Now()
		_ = logf.Close()
		close(p.done)
	}()
	w.cur[name] = p
	w.all = append(w.all, p)
	return p, nil
}

// current returns the running incarnation of a slot.
func (w *workloads) current(role string, slot int) *proc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur[slotName(role, slot)]
}

func (w *workloads) procs() []*proc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*proc(nil), w.all...)
}

func (p *proc) signal(sig syscall.Signal) error {
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s has exited: %v", p.id, p.exit)
	}
	return err
}

// kill ends p with SIGKILL and waits for it to be gone.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stopAll asks every running process to stop (SIGCONT first, for one still paused, then
// SIGTERM) and waits up to timeout for them; those still running then are killed. It
// returns the processes that did not end by themselves with status 0.
func (w *workloads) stopAll(timeout time.Duration) []string {
	var problems []string
	ps := w.procs()
	for _, p := range ps {
		if !p.exited() {
			p.stopped = true
			_ = p.signal(syscall.SIGCONT)
			_ = p.signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(timeout)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
		}
		if !p.exited() {
			problems = append(problems, fmt.Sprintf("%s did not stop within %s of SIGTERM", p.id, timeout))
			_ = p.kill()
		} else if p.stopped && p.exit != nil {
			problems = append(problems, fmt.Sprintf("%s ended with %v (see %s)", p.id, p.exit, p.log))
		}
	}
	return problems
}

// raceReports finds the race detector's reports in the processes' outputs (they run the
// test binary, built with -race when the package is).
func (w *workloads) raceReports() []string {
	var out []string
	for _, p := range w.procs() {
		b, err := os.ReadFile(p.log)
		if err == nil && strings.Contains(string(b), "WARNING: DATA RACE") {
			out = append(out, fmt.Sprintf("%s: the race detector reported a data race (see %s)", p.id, p.log))
		}
	}
	return out
}

// histories reads every incarnation's history.
func (w *workloads) histories() (map[string][]record, error) {
	out := map[string][]record{}
	for _, p := range w.procs() {
		rs, err := readHistory(p.history)
		if err != nil {
			return nil, err
		}
		out[p.id] = rs
	}
	return out, nil
}
