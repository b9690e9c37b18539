// Package metrics defines the Prometheus series of a manager: controller-runtime's names and
// labels, so that its dashboards work as they are, plus etcdkit's own. A Registry belongs to
// one manager and registers into the prometheus.Registerer it is given: there is no global
// registry.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Registry holds every series of one manager.
type Registry struct {
	ReconcileTotal          *prometheus.CounterVec
	ReconcileErrors         *prometheus.CounterVec
	TerminalReconcileErrors *prometheus.CounterVec
	ReconcilePanics         *prometheus.CounterVec
	ReconcileTime           *prometheus.HistogramVec
	MaxConcurrentReconciles *prometheus.GaugeVec
	ActiveWorkers           *prometheus.GaugeVec

	QueueDepth    *prometheus.GaugeVec
	QueueAdds     *prometheus.CounterVec
	QueueLatency  *prometheus.HistogramVec
	QueueWorkTime *prometheus.HistogramVec
	QueueRetries  *prometheus.CounterVec

	Leader        prometheus.Gauge
	Shards        prometheus.Gauge
	ShardsOwned   prometheus.Gauge
	ShardHandoffs prometheus.Counter
	FencedWrites  *prometheus.CounterVec
	Relists       *Relists
	Refusals      *Refusals
}

// New creates the series and registers them with reg (a fresh prometheus.NewRegistry() when
// reg is nil).
func New(reg prometheus.Registerer) (*Registry, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	buckets := []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	ctrl := []string{"controller"}
	queue := []string{"name", "controller"}
	r := &Registry{
		ReconcileTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_runtime_reconcile_total",
			Help: "Total number of reconciliations per controller",
		}, []string{"controller", "result"}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_runtime_reconcile_errors_total",
			Help: "Total number of reconciliation errors per controller",
		}, ctrl),
		TerminalReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_runtime_terminal_reconcile_errors_total",
			Help: "Total number of terminal reconciliation errors per controller",
		}, ctrl),
		ReconcilePanics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controller_runtime_reconcile_panics_total",
			Help: "Total number of reconciliation panics per controller",
		}, ctrl),
		ReconcileTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "controller_runtime_reconcile_time_seconds",
			Help:    "Length of time per reconciliation per controller",
			Buckets: buckets,
		}, ctrl),
		MaxConcurrentReconciles: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "controller_runtime_max_concurrent_reconciles",
			Help: "Maximum number of concurrent reconciles per controller",
		}, ctrl),
		ActiveWorkers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "controller_runtime_active_workers",
			Help: "Number of currently used workers per controller",
		}, ctrl),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workqueue_depth",
			Help: "Current depth of workqueue",
		}, queue),
		QueueAdds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workqueue_adds_total",
			Help: "Total number of adds handled by workqueue",
		}, queue),
		QueueLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "workqueue_queue_duration_seconds",
			Help:    "How long in seconds an item stays in workqueue before being requested",
			Buckets: buckets,
		}, queue),
		QueueWorkTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "workqueue_work_duration_seconds",
			Help:    "How long in seconds processing an item from workqueue takes",
			Buckets: buckets,
		}, queue),
		QueueRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workqueue_retries_total",
			Help: "Total number of retries handled by workqueue",
		}, queue),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcdkit_leader",
			Help: "1 while this manager is the elected leader, else 0",
		}),
		Shards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcdkit_shards",
			Help: "Number of shards a sharded manager's keys are spread over, or of slices in the range mode (0 without sharding)",
		}),
		ShardsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "etcdkit_shards_owned",
			Help: "Number of shards this manager owns",
		}),
		ShardHandoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdkit_shard_handoffs_total",
			Help: "Shards this manager released to another member",
		}),
		FencedWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdkit_fenced_writes_total",
			Help: "Writes refused because the writer's fence no longer held",
		}, ctrl),
		Relists:  newRelists(),
		Refusals: newRefusals(),
	}
	for _, c := range []prometheus.Collector{
		r.ReconcileTotal, r.ReconcileErrors, r.TerminalReconcileErrors, r.ReconcilePanics, r.ReconcileTime,
		r.MaxConcurrentReconciles, r.ActiveWorkers, r.QueueDepth, r.QueueAdds, r.QueueLatency, r.QueueWorkTime,
		r.QueueRetries, r.Leader, r.Shards, r.ShardsOwned, r.ShardHandoffs, r.FencedWrites, r.Relists,
		r.Refusals,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Controller creates every series of a controller, at zero, so that each exists before
// its first event (an increase() over a counter that appears at 1 misses that event).
func (r *Registry) Controller(name string, workers int) {
	for _, result := range []string{"success", "error", "requeue", "requeue_after"} {
		r.ReconcileTotal.WithLabelValues(name, result)
	}
	r.ReconcileErrors.WithLabelValues(name)
	r.TerminalReconcileErrors.WithLabelValues(name)
	r.ReconcilePanics.WithLabelValues(name)
	r.ReconcileTime.WithLabelValues(name)
	r.ActiveWorkers.WithLabelValues(name)
	r.FencedWrites.WithLabelValues(name)
	r.MaxConcurrentReconciles.WithLabelValues(name).Set(float64(workers))
}

// Queue returns the work queue metrics of one controller's queue.
func (r *Registry) Queue(controller string) *QueueMetrics {
	return &QueueMetrics{
		depth:   r.QueueDepth.WithLabelValues(controller, controller),
		adds:    r.QueueAdds.WithLabelValues(controller, controller),
		latency: r.QueueLatency.WithLabelValues(controller, controller),
		work:    r.QueueWorkTime.WithLabelValues(controller, controller),
		retries: r.QueueRetries.WithLabelValues(controller, controller),
	}
}

// QueueMetrics implements workqueue.Metrics for one queue.
type QueueMetrics struct {
	depth   prometheus.Gauge
	adds    prometheus.Counter
	latency prometheus.Observer
	work    prometheus.Observer
	retries prometheus.Counter
}

// Depth sets the queue depth.
func (q *QueueMetrics) Depth(n int) { q.depth.Set(float64(n)) }

// Adds counts an add.
func (q *QueueMetrics) Adds() { q.adds.Inc() }

// Retries counts a rate-limited add.
func (q *QueueMetrics) Retries() { q.retries.Inc() }

// QueueLatency observes how long a key waited.
func (q *QueueMetrics) QueueLatency(d time.Duration) { q.latency.Observe(d.Seconds()) }

// WorkDuration observes how long a key was in process.
func (q *QueueMetrics) WorkDuration(d time.Duration) { q.work.Observe(d.Seconds()) }
