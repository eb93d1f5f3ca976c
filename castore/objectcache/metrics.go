package objectcache

import "github.com/prometheus/client_golang/prometheus"

// metrics count what a Cache does.
type metrics struct {
	hits, misses, shared, evictions, fillErrors prometheus.Counter
	used, objects                               prometheus.GaugeFunc
}

func newMetrics(c *Cache) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_object_cache_" + name, Help: help})
	}
	return &metrics{
		hits:       counter("hits_total", "Object reads served from the local object cache."),
		misses:     counter("misses_total", "Objects fetched from the remote object store into the local object cache."),
		shared:     counter("shared_misses_total", "Object reads that missed while the object was being fetched for another, and waited for that fetch."),
		evictions:  counter("evictions_total", "Objects removed from the local object cache to stay within its size limit."),
		fillErrors: counter("fill_errors_total", "Fetches from the remote object store that failed (unreachable, missing, or bytes not matching the name)."),
		used: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nixcas_object_cache_bytes", Help: "Bytes of objects in the local object cache.",
		}, func() float64 { return float64(c.Used()) }),
		objects: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nixcas_object_cache_objects", Help: "Objects in the local object cache.",
		}, func() float64 { return float64(c.files.Len()) }),
	}
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.hits, m.misses, m.shared, m.evictions, m.fillErrors, m.used, m.objects}
}

// Describe implements prometheus.Collector.
func (c *Cache) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c.m.all() {
		x.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *Cache) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c.m.all() {
		x.Collect(ch)
	}
}

var _ prometheus.Collector = (*Cache)(nil)
