package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// funcVec is a series with one label whose values a function reports at every scrape: the
// state of components the registry does not own (sources, an election).
type funcVec struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType

	mu   sync.Mutex
	read func() map[string]float64 // label value -> value
}

func newFuncVec(name, help, label string, typ prometheus.ValueType) *funcVec {
	return &funcVec{desc: prometheus.NewDesc(name, help, []string{label}, nil), typ: typ}
}

func (f *funcVec) watch(read func() map[string]float64) {
	f.mu.Lock()
	f.read = read
	f.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (f *funcVec) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect implements prometheus.Collector.
func (f *funcVec) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	read := f.read
	f.mu.Unlock()
	if read == nil {
		return
	}
	for label, v := range read() {
		ch <- prometheus.MustNewConstMetric(f.desc, f.typ, v, label)
	}
}

// Refusals is etcdkit_permanent_error: for each component of a manager, 1 while etcd
// refuses it with a permanent error (a denied permission, a failed authentication, a
// refused certificate) and 0 otherwise. It reads the components' state at every scrape.
type Refusals struct{ *funcVec }

func newRefusals() *Refusals {
	return &Refusals{newFuncVec("etcdkit_permanent_error",
		"1 while etcd refuses the component with an error that only an operator can mend (permission denied, authentication failed)",
		"component", prometheus.GaugeValue)}
}

// Watch sets the function that reports each component's permanent error (nil while none).
func (r *Refusals) Watch(check func() map[string]error) {
	r.watch(func() map[string]float64 {
		out := map[string]float64{}
		for component, err := range check() {
			out[component] = 0
			if err != nil {
				out[component] = 1
			}
		}
		return out
	})
}

// Relists is etcdkit_source_relists_total: per watched prefix, how often its sources listed
// it again because etcd had compacted the history their watch needed. It reads the sources'
// counts at every scrape.
type Relists struct{ *funcVec }

func newRelists() *Relists {
	return &Relists{newFuncVec("etcdkit_source_relists_total",
		"Relists of a watched prefix after etcd compacted the history its watch needed",
		"prefix", prometheus.CounterValue)}
}

// Watch sets the function that counts each prefix's relists.
func (r *Relists) Watch(count func() map[string]int) {
	r.watch(func() map[string]float64 {
		out := map[string]float64{}
		for prefix, n := range count() {
			out[prefix] = float64(n)
		}
		return out
	})
}
