package bench

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"strconv"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/narrender"
)

// Store references, as Nix finds them in build outputs: the store
// directory, the 32-character nixbase32 hash part of a store path, a dash.
const (
	storeDirPrefix = "/nix/store/"
	refHashLen     = 32
	refLen         = 11 + refHashLen + 1 // len(storeDirPrefix) + refHashLen + 1, untyped
)

// refHashChar marks the bytes of the nixbase32 alphabet.
var refHashChar = func() (t [256]bool) {
	for _, c := range []byte("0123456789abcdfghijklmnpqrsvwxyz") {
		t[c] = true
	}
	return t
}()

// isRef reports whether b starts with a complete reference.
func isRef(b []byte) bool {
	if len(b) < refLen || string(b[:len(storeDirPrefix)]) != storeDirPrefix || b[refLen-1] != '-' {
		return false
	}
	for _, c := range b[len(storeDirPrefix) : refLen-1] {
		if !refHashChar[c] {
			return false
		}
	}
	return true
}

// refInjectionSpacing: after the first injected reference (an eighth into
// a file), one more per this many bytes.
const refInjectionSpacing = 1 << 20

// injectedHashes are the hash parts of the references written into trees
// that have none: four made-up dependencies, used in turn.
var injectedHashes = func() (h [4]string) {
	for i := range h {
		sum := sha256.Sum256([]byte("nixcas bench injected reference " + strconv.Itoa(i)))
		h[i] = nixbase32.EncodeToString(sum[:20])
	}
	return h
}()

// rebuiltHash returns the hash part that reference hash old has in
// simulated rebuild number rebuild (>= 1): the same old hash always maps
// to the same new one, as a dependency bump changes every reference to the
// same dependency alike.
func rebuiltHash(old []byte, rebuild int) string {
	h := sha256.New()
	fmt.Fprintf(h, "nixcas bench rebuild %d\x00", rebuild)
	h.Write(old)
	return nixbase32.EncodeToString(h.Sum(nil)[:20])
}

// minInjectSize returns the size of the smallest file planRefs writes a
// reference into.
func minInjectSize() uint64 {
	s := uint64(refLen)
	for s/8+refLen > s {
		s++
	}
	return s
}

// refPlan says how the rebuild simulation treats one NAR.
type refPlan struct {
	Refs   int         // references the NAR holds
	Inject []injection // where to write references (none when Refs > 0), ascending
}

// injection is one reference to write: at NAR offset Offset, to made-up
// dependency Dep (an index into injectedHashes). Dep depends only on the
// position inside the file, so files with the same content still have
// the same content after injection.
type injection struct {
	Offset int64
	Dep    int
}

// planRefs reads a NAR, counting its references and listing where
// references would go if it has none: in every regular file with room for
// one (minInjectSize bytes or more), one an eighth into the file and one
// per further MiB, as long as the whole reference fits. The list has one
// entry per injected reference, not per byte, so memory stays small.
func planRefs(r io.Reader) (refPlan, error) {
	rw := newRefRewriter(r, nil, 0)
	nr := narrender.NewReader(rw)
	var plan refPlan
	for {
		h, err := nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return refPlan{}, err
		}
		if h.Type != narrender.TypeRegular {
			continue
		}
		dep := 0
		for o := h.Size / 8; o+refLen <= h.Size; o += refInjectionSpacing {
			plan.Inject = append(plan.Inject, injection{Offset: int64(h.Offset + o), Dep: dep})
			dep = (dep + 1) % len(injectedHashes)
		}
	}
	if plan.Refs = rw.Refs(); plan.Refs > 0 {
		plan.Inject = nil
	}
	return plan, nil
}

// refRewriter rewrites store references in a byte stream, keeping every
// length, so a NAR stays a valid NAR: it first overwrites the bytes at the
// injection offsets with references to made-up dependencies, then, for a
// rebuild number above zero, gives every reference in the stream (found
// or injected) a new hash. It holds back the last refLen-1 bytes it has
// read until more arrive, so references split across reads are found.
// Memory is one buffer of a fixed size.
type refRewriter struct {
	src     io.Reader
	inject  []injection // still to write
	rebuild int
	mapped  map[string]string // old hash part -> new, for this rebuild

	buf   []byte
	n     int   // bytes in buf
	ready int   // buf[:ready] is rewritten and may be returned
	pos   int   // buf[:pos] has been returned
	base  int64 // stream offset of buf[0]
	err   error // from src; returned once buf is drained
	refs  int
}

// newRefRewriter returns a rewriter of src; rebuild 0 only injects (and
// counts references).
func newRefRewriter(src io.Reader, inject []injection, rebuild int) *refRewriter {
	return &refRewriter{
		src:     src,
		inject:  inject,
		rebuild: rebuild,
		mapped:  make(map[string]string),
		buf:     make([]byte, 256<<10),
	}
}

// Refs returns the number of references passed so far (injected ones
// included).
func (r *refRewriter) Refs() int { return r.refs }

// Read implements io.Reader.
func (r *refRewriter) Read(p []byte) (int, error) {
	for r.pos == r.ready {
		if r.ready > 0 {
			r.n = copy(r.buf, r.buf[r.ready:r.n])
			r.base += int64(r.ready)
			r.ready, r.pos = 0, 0
		}
		if r.err != nil {
			if r.n > 0 {
				return 0, fmt.Errorf("bench: rewriting references: %d bytes left over", r.n)
			}
			return 0, r.err
		}
		m, err := r.src.Read(r.buf[r.n:])
		r.n += m
		if err != nil {
			r.err = err
			if err != io.EOF {
				return 0, err
			}
		}
		if err := r.process(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.buf[r.pos:r.ready])
	r.pos += n
	return n, nil
}

// process rewrites what can be rewritten of buf[:n] and sets ready.
func (r *refRewriter) process() error {
	eof := r.err != nil
	limit := r.n
	if !eof {
		limit = max(r.n-(refLen-1), 0)
	}
	for len(r.inject) > 0 {
		in := r.inject[0]
		o := in.Offset - r.base
		if o < 0 {
			return fmt.Errorf("bench: reference injection at offset %d out of order", in.Offset)
		}
		if o >= int64(limit) {
			break
		}
		if o+refLen > int64(r.n) {
			if eof {
				return fmt.Errorf("bench: reference injection at offset %d beyond the end of the stream", in.Offset)
			}
			limit = int(o)
			break
		}
		copy(r.buf[o:], storeDirPrefix+injectedHashes[in.Dep]+"-")
		r.inject = r.inject[1:]
	}
	for i := 0; i < limit; {
		j := bytes.Index(r.buf[i:r.n], []byte(storeDirPrefix))
		if j < 0 || i+j >= limit {
			break
		}
		i += j
		if !isRef(r.buf[i:r.n]) {
			i++
			continue
		}
		r.refs++
		if r.rebuild > 0 {
			h := r.buf[i+len(storeDirPrefix) : i+refLen-1]
			nh, ok := r.mapped[string(h)]
			if !ok {
				nh = rebuiltHash(h, r.rebuild)
				r.mapped[string(h)] = nh
			}
			copy(h, nh)
		}
		i += refLen
	}
	r.ready = limit
	return nil
}
