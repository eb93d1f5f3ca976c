package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/store"
)

// metaKindBase is the key kind, in the client's cache, of the last tree
// moved of each family of store paths (see Family): family → baseRecord
// as JSON.
const metaKindBase byte = 'B'

// baseRecord is the tree last pushed or pulled of a family.
type baseRecord struct {
	// Path is the store path's base name (hash-name).
	Path string        `json:"path"`
	Root castore.Entry `json:"root"`
}

// Family returns the name of the family a store path's name belongs to:
// the name without its version, so that successive versions of a package
// share it. The name is cut at each dash; components that start with a
// digit are the version and are dropped ("go-1.22.0" and "go-1.22.1" are
// "go", "go-1.22.0-doc" is "go-doc", "python3.11-numpy-1.26.4" is
// "python3.11-numpy"). A name that is all version is its own family.
func Family(name string) string {
	var kept []string
	for part := range strings.SplitSeq(name, "-") {
		if part != "" && (part[0] < '0' || part[0] > '9') {
			kept = append(kept, part)
		}
	}
	if len(kept) == 0 {
		return name
	}
	return strings.Join(kept, "-")
}

// autoBase returns the base of a transfer of the store path named
// baseName (hash-name) when Options.AutoBase is set and Options.Base is
// not: the tree last moved of the same family, as the cache remembers it,
// unless that is the same path. It returns nil when there is none.
func (c *Client) autoBase(ctx context.Context, baseName string) (*castore.Entry, string) {
	if c.opts.Base != nil || !c.opts.AutoBase {
		return c.opts.Base, ""
	}
	meta, ok := castore.As[store.MetaStore](c.cache)
	if !ok {
		return nil, ""
	}
	v, err := meta.GetMeta(ctx, metaKindBase, []byte(Family(store.PathName(baseName))))
	if err != nil {
		// Not found, or a cache that cannot say: no base, which costs
		// bytes on the wire, never correctness.
		return nil, ""
	}
	var r baseRecord
	if json.Unmarshal(v, &r) != nil || r.Path == baseName {
		return nil, ""
	}
	return &r.Root, r.Path
}

// rememberBase records root as the tree last moved of baseName's family,
// when Options.AutoBase is set.
func (c *Client) rememberBase(ctx context.Context, baseName string, root castore.Entry) error {
	if !c.opts.AutoBase {
		return nil
	}
	meta, ok := castore.As[store.MetaStore](c.cache)
	if !ok {
		return nil
	}
	root.Name = ""
	v, err := json.Marshal(baseRecord{Path: baseName, Root: root})
	if err != nil {
		return err
	}
	err = meta.SetMeta(ctx, castore.MetaRecord{Kind: metaKindBase, Key: []byte(Family(store.PathName(baseName))), Value: v})
	if err != nil {
		return fmt.Errorf("client: remembering %s as the base of its family: %w", baseName, err)
	}
	return nil
}

// PullPath writes the tree of the store path info describes to dst, as
// Pull does. With Options.AutoBase (and no Options.Base), the tree last
// moved of the path's family is the base, and once the pull is done the
// path is remembered as its family's latest. It returns the base name of
// the store path used as the base, or "".
func (c *Client) PullPath(ctx context.Context, info *store.PathInfo, dst string) (PullStats, string, error) {
	base, baseName := c.autoBase(ctx, info.Path)
	st, err := c.PullFrom(ctx, info.Root, base, dst)
	if err != nil {
		return st, baseName, err
	}
	return st, baseName, c.rememberBase(ctx, info.Path, info.Root)
}
