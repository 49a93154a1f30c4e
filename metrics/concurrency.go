package metrics

import "github.com/prometheus/client_golang/prometheus"

// NewConcurrencyLimit builds and registers on reg the gauge of the adaptive
// concurrency limit (package concurrency): how many jobs the worker lets
// itself keep in flight now, at most WORKER_IN_FLIGHT.
func NewConcurrencyLimit(reg prometheus.Registerer) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "concurrency_limit",
		Help: "Jobs the adaptive limit lets this worker keep in flight now (at most WORKER_IN_FLIGHT).",
	})
	reg.MustRegister(g)
	return g
}
