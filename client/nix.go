package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// Nix runs the nix command line to read store paths.
type Nix struct {
	// Store is passed to nix as --store when set (a local store at
	// another root, "/tmp/s" say, or a store URL); empty means the
	// default store.
	Store string
}

// command returns nix with the options every call needs (Nix 2.8 keeps
// path-info and store dump-path behind the nix-command feature).
func (n Nix) command(ctx context.Context, args ...string) *exec.Cmd {
	all := []string{"--extra-experimental-features", "nix-command"}
	if n.Store != "" {
		all = append(all, "--store", n.Store)
	}
	return exec.CommandContext(ctx, "nix", append(all, args...)...)
}

// NixPath is what `nix path-info --json` reports of a store path.
type NixPath struct {
	Path       string   `json:"path"`
	NARHash    string   `json:"narHash"`
	NARSize    uint64   `json:"narSize"`
	References []string `json:"references"`
	Deriver    string   `json:"deriver"`
	Signatures []string `json:"signatures"`
	CA         string   `json:"ca"`
}

// Closure returns the store paths paths refer to, directly or not, and
// the paths themselves, each after every path it refers to.
func (n Nix) Closure(ctx context.Context, paths ...string) ([]NixPath, error) {
	cmd := n.command(ctx, append([]string{"path-info", "--json", "--recursive"}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("client: nix path-info: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var infos []NixPath
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("client: nix path-info output: %w", err)
	}
	return referencesFirst(infos)
}

// referencesFirst orders infos so that each comes after the paths it
// refers to (other than itself); all of them must be in infos.
func referencesFirst(infos []NixPath) ([]NixPath, error) {
	byPath := make(map[string]*NixPath, len(infos))
	for i := range infos {
		byPath[infos[i].Path] = &infos[i]
	}
	out := make([]NixPath, 0, len(infos))
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(p *NixPath) error
	visit = func(p *NixPath) error {
		switch state[p.Path] {
		case 1:
			return fmt.Errorf("client: reference cycle through %s", p.Path)
		case 2:
			return nil
		}
		state[p.Path] = 1
		for _, r := range p.References {
			if r == p.Path {
				continue
			}
			q, ok := byPath[r]
			if !ok {
				return fmt.Errorf("client: %s refers to %s, which nix path-info did not list", p.Path, r)
			}
			if err := visit(q); err != nil {
				return err
			}
		}
		state[p.Path] = 2
		out = append(out, *p)
		return nil
	}
	// Sorted, so the order does not depend on nix's output order.
	slices.SortFunc(infos, func(a, b NixPath) int { return strings.Compare(a.Path, b.Path) })
	for i := range infos {
		if err := visit(byPath[infos[i].Path]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DumpReader returns a reader of the NAR of a store path, from `nix store
// dump-path`. Close it when done: Close waits for nix and reports its
// failure.
func (n Nix) DumpReader(ctx context.Context, storePath string) (io.ReadCloser, error) {
	cmd := n.command(ctx, "store", "dump-path", storePath)
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("client: nix store dump-path: %w", err)
	}
	return &cmdReader{ReadCloser: out, cmd: cmd, stderr: stderr}, nil
}

type cmdReader struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   bool
}

func (r *cmdReader) Close() error {
	if r.done {
		return nil
	}
	r.done = true
	r.ReadCloser.Close()
	if err := r.cmd.Wait(); err != nil {
		return fmt.Errorf("client: nix store dump-path: %w: %s", err, strings.TrimSpace(r.stderr.String()))
	}
	return nil
}

// PathInfo returns the PathInfo of p with the given root (its name set to
// the store path's base name), checking the NAR size and hash nix
// reported against those the ingest computed.
func (p NixPath) PathInfo(res narrender.Result) (*store.PathInfo, error) {
	algo := nixhash.SHA256
	h, err := nixhash.ParseAny(p.NARHash, &algo)
	if err != nil {
		return nil, fmt.Errorf("client: %s: NAR hash %q: %w", p.Path, p.NARHash, err)
	}
	if !bytes.Equal(h.Digest(), res.NARSha256[:]) || p.NARSize != res.NARSize {
		return nil, fmt.Errorf("%w: client: %s: nix reports a NAR of %d bytes, %s; its dump has %d bytes, sha256 %x",
			castore.ErrCorrupt, p.Path, p.NARSize, p.NARHash, res.NARSize, res.NARSha256)
	}
	info := &store.PathInfo{
		Path:      path.Base(p.Path),
		Root:      res.Root,
		NARSize:   res.NARSize,
		NARSha256: res.NARSha256,
		CA:        p.CA,
	}
	info.Root.Name = info.Path
	for _, r := range p.References {
		info.References = append(info.References, path.Base(r))
	}
	slices.Sort(info.References)
	if p.Deriver != "" {
		info.Deriver = path.Base(p.Deriver)
	}
	for _, s := range p.Signatures {
		sig, err := signature.ParseSignature(s)
		if err != nil {
			return nil, fmt.Errorf("client: %s: signature %q: %w", p.Path, s, err)
		}
		info.Signatures = append(info.Signatures, sig)
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return info, nil
}

// PushedPath is the outcome of pushing one store path.
type PushedPath struct {
	Info *store.PathInfo
	// Base is the base name (hash-name) of the store path whose tree
	// served as the base of the push (Options.AutoBase), or "".
	Base string
	PushStats
}

// PushClosure pushes the closure of the store paths paths, read through
// nix: each path is dumped, ingested into the cache and checked against
// the NAR hash nix reports, then its tree and its PathInfo are pushed,
// each path after the paths it refers to. done is called after each path.
// The server can serve every path of the closure when PushClosure returns.
func (c *Client) PushClosure(ctx context.Context, nix Nix, paths []string, done func(PushedPath) error) error {
	closure, err := nix.Closure(ctx, paths...)
	if err != nil {
		return err
	}
	for _, p := range closure {
		r, err := nix.DumpReader(ctx, p.Path)
		if err != nil {
			return err
		}
		bar := c.progress("ingesting "+path.Base(p.Path), int64(p.NARSize))
		in := io.TeeReader(r, progressWriter{bar})
		res, err := narrender.Ingest(ctx, in, c.cache, castore.WriterOptions{})
		if cerr := r.Close(); err == nil {
			err = cerr
		}
		bar.Finish()
		if err != nil {
			return fmt.Errorf("client: ingesting %s: %w", p.Path, err)
		}
		info, err := p.PathInfo(res)
		if err != nil {
			return err
		}
		base, baseName := c.autoBase(ctx, info.Path)
		st, err := c.PushTreeFrom(ctx, info.Root, base)
		if err != nil {
			return fmt.Errorf("client: pushing %s: %w", p.Path, err)
		}
		if info, err = c.PutPathInfo(ctx, info); err != nil {
			return err
		}
		if err := c.rememberBase(ctx, info.Path, info.Root); err != nil {
			return err
		}
		if err := done(PushedPath{Info: info, Base: baseName, PushStats: st}); err != nil {
			return err
		}
	}
	return nil
}

// progressWriter counts what is written to it as progress.
type progressWriter struct{ p Progress }

func (w progressWriter) Write(b []byte) (int, error) {
	w.p.Add(int64(len(b)))
	return len(b), nil
}
