package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore/pebblestore"
)

// registerObjectStore registers the metrics of the object store holding
// the frames and of each wrapper around it (an S3 store counts its
// requests, a local cache its hits and misses): those that are
// prometheus.Collectors, found through Unwrap.
func registerObjectStore(reg prometheus.Registerer, o pebblestore.ObjectStore) error {
	for o != nil {
		if c, ok := o.(prometheus.Collector); ok {
			if err := reg.Register(c); err != nil {
				return err
			}
		}
		u, ok := o.(interface {
			Unwrap() pebblestore.ObjectStore
		})
		if !ok {
			return nil
		}
		o = u.Unwrap()
	}
	return nil
}
