package store

import (
	"bytes"
	"context"
	_ "crypto/md5" // content addresses may use any hash Nix knows
	_ "crypto/sha1"
	"crypto/sha256"
	_ "crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// caMethod is how a content address hashes the path's contents.
type caMethod int

const (
	// caText: "text:sha256:…", the sha256 of a single regular file
	// (builtins.toFile, .drv files); the store path has type "text".
	caText caMethod = iota
	// caFlat: "fixed:<algo>:…", the hash of a single regular file.
	caFlat
	// caNAR: "fixed:r:<algo>:…", the hash of the path's NAR.
	caNAR
)

// contentAddress is a parsed content address.
type contentAddress struct {
	method caMethod
	algo   nixhash.Algorithm
	digest []byte
}

func parseContentAddress(ca string) (contentAddress, error) {
	for _, k := range caKinds {
		if rest, ok := strings.CutPrefix(ca, k.prefix); ok {
			algo := k.algo
			h, err := nixhash.ParseAny(rest, &algo)
			if err != nil {
				return contentAddress{}, fmt.Errorf("%w: content address %q: %v", ErrInvalid, ca, err)
			}
			return contentAddress{method: k.method, algo: k.algo, digest: h.Digest()}, nil
		}
	}
	return contentAddress{}, fmt.Errorf("%w: content address %q of unknown kind", ErrInvalid, ca)
}

// MakeStorePath returns the base name of the store path Nix computes for
// an inner hash of a given type (makeStorePath in Nix): the first 20
// bytes, XOR-folded, of sha256("<type>:sha256:<hex inner>:/nix/store:<name>"),
// in nixbase32, then "-<name>".
func MakeStorePath(typ string, inner [sha256.Size]byte, name string) string {
	s := typ + ":sha256:" + hex.EncodeToString(inner[:]) + ":" + StoreDir + ":" + name
	h := sha256.Sum256([]byte(s))
	return nixbase32.EncodeToString(nixhash.CompressHash(h[:], len(PathDigest{}))) + "-" + name
}

// storePathType is Nix's makeType: typ, then ":<reference path>" per
// reference, then ":self" when the path refers to itself.
func storePathType(typ string, refs []string, self bool) string {
	var b strings.Builder
	b.WriteString(typ)
	for _, r := range refs {
		b.WriteString(":" + StoreDir + "/" + r)
	}
	if self {
		b.WriteString(":self")
	}
	return b.String()
}

// ContentAddressedPath returns the base name of the store path that a
// content address, a name and references give, by Nix's rules
// (makeTextPath, makeFixedOutputPath): "text" paths hash the references
// with the contents' sha256; "fixed:r:sha256" paths are "source" paths,
// which may have references and refer to themselves; any other fixed
// output has no references and hashes "fixed:out:[r:]<algo>:<hex>:".
// references are base names, sorted, and may include self, the path's own
// base name.
func ContentAddressedPath(ca, name string, references []string, self string) (string, error) {
	c, err := parseContentAddress(ca)
	if err != nil {
		return "", err
	}
	var refs []string
	hasSelf := false
	for _, r := range references {
		if r == self {
			hasSelf = true
			continue
		}
		refs = append(refs, r)
	}
	switch {
	case c.method == caText:
		if hasSelf {
			return "", fmt.Errorf("%w: content address %s: a text path cannot refer to itself", ErrInvalid, ca)
		}
		var d [sha256.Size]byte
		copy(d[:], c.digest)
		return MakeStorePath(storePathType("text", refs, false), d, name), nil
	case c.method == caNAR && c.algo == nixhash.SHA256:
		var d [sha256.Size]byte
		copy(d[:], c.digest)
		return MakeStorePath(storePathType("source", refs, hasSelf), d, name), nil
	default:
		if len(refs) > 0 || hasSelf {
			return "", fmt.Errorf("%w: content address %s: a fixed output other than fixed:r:sha256 cannot have references", ErrInvalid, ca)
		}
		prefix := ""
		if c.method == caNAR {
			prefix = "r:"
		}
		inner := sha256.Sum256([]byte("fixed:out:" + prefix + c.algo.String() + ":" + hex.EncodeToString(c.digest) + ":"))
		return MakeStorePath("output:out", inner, name), nil
	}
}

// CheckContentAddress checks that p's content address, when it has one,
// agrees with its store path (the path Nix would compute from the address,
// the name and the references) and with its contents, read from s: a
// "text" or flat "fixed" address must be the hash of the single regular,
// non-executable file the path is; a "fixed:r" address the hash of the
// NAR. A mismatch is an error wrapping ErrInvalid that names both values.
//
// A "fixed:r:sha256" path that refers to itself (a content-addressed
// derivation's output, or what `nix store make-content-addressable`
// makes) is hashed as Nix hashes it "modulo" its own hash part: the NAR
// with every occurrence of the path's 32-character hash replaced by zero
// bytes, followed by "|<offset>" for each occurrence.
func CheckContentAddress(ctx context.Context, s castore.ReadStore, p *PathInfo) error {
	if p.CA == "" {
		return nil
	}
	c, err := parseContentAddress(p.CA)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Path, err)
	}
	want, err := ContentAddressedPath(p.CA, p.name(), p.References, p.Path)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Path, err)
	}
	if want != p.Path {
		return fmt.Errorf("%w: %s: content address %s with references %v gives store path %s/%s", ErrInvalid, p.Path, p.CA, p.References, StoreDir, want)
	}
	var got []byte
	switch c.method {
	case caText, caFlat:
		if p.Root.Kind != castore.KindFile || p.Root.Executable {
			return fmt.Errorf("%w: %s: content address %s needs a single non-executable regular file, the path is a %s", ErrInvalid, p.Path, p.CA, describeRoot(p.Root))
		}
		if got, err = hashBlob(ctx, s, p.Root, c.algo); err != nil {
			return fmt.Errorf("%s: hashing for content address: %w", p.Path, err)
		}
	case caNAR:
		if c.algo == nixhash.SHA256 && !p.refersToItself() {
			got = p.NARSha256[:]
			break
		}
		var w io.Writer = c.algo.Func().New()
		var mw *moduloWriter
		if p.refersToItself() {
			mw = newModuloWriter(w.(hash.Hash), p.Path[:nixbase32.EncodedLen(len(PathDigest{}))])
			w = mw
		}
		if err := narrender.Render(ctx, w, s, p.Root); err != nil {
			return fmt.Errorf("%s: hashing for content address: %w", p.Path, err)
		}
		if mw != nil {
			got = mw.Sum()
		} else {
			got = w.(hash.Hash).Sum(nil)
		}
	}
	if string(got) != string(c.digest) {
		return fmt.Errorf("%w: %s: content address %s, but the contents hash to %s:%s", ErrInvalid, p.Path, p.CA, c.algo, nixbase32.EncodeToString(got))
	}
	return nil
}

// name returns the name part of p's store path.
func (p *PathInfo) name() string {
	return p.Path[nixbase32.EncodedLen(len(PathDigest{}))+1:]
}

func (p *PathInfo) refersToItself() bool {
	for _, r := range p.References {
		if r == p.Path {
			return true
		}
	}
	return false
}

func describeRoot(e castore.Entry) string {
	switch {
	case e.Kind == castore.KindFile && e.Executable:
		return "executable file"
	case e.Kind == castore.KindFile:
		return "file"
	case e.Kind == castore.KindDirectory:
		return "directory"
	case e.Kind == castore.KindSymlink:
		return "symlink"
	}
	return fmt.Sprint(e.Kind)
}

func hashBlob(ctx context.Context, s castore.ReadStore, e castore.Entry, algo nixhash.Algorithm) ([]byte, error) {
	f := algo.Func()
	if f == 0 || !f.Available() {
		return nil, fmt.Errorf("%w: hash %s", ErrInvalid, algo)
	}
	r, err := castore.OpenBlob(ctx, s, e.Digest, e.Size)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	h := f.New()
	if _, err := io.Copy(h, r); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// moduloWriter hashes what is written to it with every occurrence of
// from replaced by as many zero bytes, then, at Sum, "|<offset>" for each
// occurrence, as Nix's HashModuloSink does. Occurrences are found left to
// right without overlap; a replaced one cannot take part in another, as
// from (a nixbase32 hash) holds no zero byte.
type moduloWriter struct {
	h       hash.Hash
	from    []byte
	pending []byte // the last len(from)-1 bytes, which may begin a match
	pos     uint64 // offset of pending[0] in the stream
	matches []uint64
}

func newModuloWriter(h hash.Hash, from string) *moduloWriter {
	return &moduloWriter{h: h, from: []byte(from)}
}

func (m *moduloWriter) Write(p []byte) (int, error) {
	buf := append(m.pending, p...)
	for j := 0; ; {
		k := bytes.Index(buf[j:], m.from)
		if k < 0 {
			break
		}
		j += k
		m.matches = append(m.matches, m.pos+uint64(j))
		clear(buf[j : j+len(m.from)])
		j += len(m.from)
	}
	keep := min(len(buf), len(m.from)-1)
	done := len(buf) - keep
	m.h.Write(buf[:done])
	m.pos += uint64(done)
	m.pending = append(m.pending[:0], buf[done:]...)
	return len(p), nil
}

// Sum returns the hash of everything written, modulo from.
func (m *moduloWriter) Sum() []byte {
	m.h.Write(m.pending)
	m.pending = nil
	for _, at := range m.matches {
		m.h.Write([]byte("|" + strconv.FormatUint(at, 10)))
	}
	return m.h.Sum(nil)
}
