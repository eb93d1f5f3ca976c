package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// newBinaryCache returns the Nix binary-cache handler served at "/".
func newBinaryCache(o Options, cas castore.Store, index *store.Index, reg prometheus.Registerer) (http.Handler, error) {
	return httpcache.New(httpcache.Options{
		CAS:         cas,
		Index:       index,
		SignKeys:    o.SignKeys,
		Compression: o.Compression,
		PushToken:   o.PushToken,
		ReadToken:   o.ReadToken,
		Registerer:  reg,
		Priority:    o.Priority,
		MaxUploads:  o.Limits.MaxUploads,
		MaxRenders:  o.Limits.MaxRenders,
	})
}
