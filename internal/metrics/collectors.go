package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusals is etcdkit_permanent_error: for each component of a manager, 1 while etcd
// refuses it with a permanent error (a denied permission, a failed authentication, a
// refused certificate) and 0 otherwise. It reads the components' state at every scrape.
type Refusals struct {
	desc *prometheus.Desc

	mu    sync.Mutex
	check func() map[string]error // component -> its permanent error, nil while none
}

func newRefusals() *Refusals {
	return &Refusals{desc: prometheus.NewDesc("etcdkit_permanent_error",
		"1 while etcd refuses the component with an error that only an operator can mend (permission denied, authentication failed)",
		[]string{"component"}, nil)}
}

// Watch sets the function that reports each component's permanent error.
func (r *Refusals) Watch(check func() map[string]error) {
	r.mu.Lock()
	r.check = check
	r.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (r *Refusals) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

// Collect implements prometheus.Collector.
func (r *Refusals) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	check := r.check
	r.mu.Unlock()
	if check == nil {
		return
	}
	for component, err := range check() {
		v := 0.0
		if err != nil {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.GaugeValue, v, component)
	}
}

// Relists is etcdkit_source_relists_total: per watched prefix, how often its sources listed
// it again because etcd had compacted the history their watch needed. It reads the sources'
// counts at every scrape.
type Relists struct {
	desc *prometheus.Desc

	mu    sync.Mutex
	count func() map[string]int // prefix -> relists so far
}

func newRelists() *Relists {
	return &Relists{desc: prometheus.NewDesc("etcdkit_source_relists_total",
		"Relists of a watched prefix after etcd compacted the history its watch needed",
		[]string{"prefix"}, nil)}
}

// Watch sets the function that counts each prefix's relists.
func (r *Relists) Watch(count func() map[string]int) {
	r.mu.Lock()
	r.count = count
	r.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (r *Relists) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

// Collect implements prometheus.Collector.
func (r *Relists) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	count := r.count
	r.mu.Unlock()
	if count == nil {
		return
	}
	for prefix, n := range count() {
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(n), prefix)
	}
}
