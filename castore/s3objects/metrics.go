package s3objects

import "github.com/prometheus/client_golang/prometheus"

// metrics count a Store's requests to the object storage.
type metrics struct {
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	errors   *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_object_store_requests_total",
			Help: "Requests to the S3 object storage holding the frames, by operation (put, get, stat, delete; list counts listings, each one request per thousand objects), retries not counted.",
		}, []string{"op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_object_store_bytes_total",
			Help: "Object bytes sent to (put) and received from (get) the S3 object storage.",
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_object_store_errors_total",
			Help: "Failed requests to the S3 object storage, by operation and kind (not_found, unavailable, canceled, invalid, other).",
		}, []string{"op", "kind"}),
	}
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	s.m.requests.Describe(ch)
	s.m.bytes.Describe(ch)
	s.m.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	s.m.requests.Collect(ch)
	s.m.bytes.Collect(ch)
	s.m.errors.Collect(ch)
}

var _ prometheus.Collector = (*Store)(nil)
