package server

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/server/auth"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// newBinaryCache returns the Nix binary-cache handler served at "/". It
// signs nothing itself: the index signs with o.SignKeys.
func newBinaryCache(o Options, a auth.Policy, cas castore.Store, index *store.Index, reg prometheus.Registerer) (http.Handler, error) {
	narInfoCacheSize := cacheSize(o.NarInfoCacheSize, DefaultNarInfoCacheSize)
	treeCacheSize := cacheSize(o.TreeCacheSize, DefaultTreeCacheSize)
	var narInfoTTL time.Duration
	if o.Meta != "" {
		narInfoTTL = SharedNarInfoTTL
	}
	return httpcache.New(httpcache.Options{
		CAS:                   cas,
		Index:                 index,
		Compression:           o.Compression,
		PushToken:             a.PushToken,
		ReadToken:             a.ReadToken,
		RefuseAnonymousWrites: a.RefuseAnonymousWrites,
		Registerer:            reg,
		Priority:              o.Priority,
		MaxUploads:            o.Limits.MaxUploads,
		MaxRenders:            o.Limits.MaxRenders,
		Tree:                  o.Limits.Tree,
		RenderTimeout:         o.Limits.RenderTimeout,
		NarInfoCacheSize:      narInfoCacheSize,
		NarInfoCacheTTL:       narInfoTTL,
		TreeCacheSize:         treeCacheSize,
	})
}

// cacheSize is an Options cache size as the handler takes it: 0 is the
// default, negative none.
func cacheSize(size, def int64) int64 {
	switch {
	case size == 0:
		return def
	case size < 0:
		return 0
	}
	return size
}
