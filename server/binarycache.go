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
	narInfoCacheSize := o.NarInfoCacheSize
	switch {
	case narInfoCacheSize == 0:
		narInfoCacheSize = DefaultNarInfoCacheSize
	case narInfoCacheSize < 0:
		narInfoCacheSize = 0
	}
	treeCacheSize := o.TreeCacheSize
	switch {
	case treeCacheSize == 0:
		treeCacheSize = DefaultTreeCacheSize
	case treeCacheSize < 0:
		treeCacheSize = 0
	}
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
