package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// Signer signs PathInfos with a set of Nix secret keys (the format
// `nix-store --generate-binary-cache-key` writes, loaded with
// signature.LoadSecretKey). ed25519 signatures are deterministic and a
// fingerprint names the content, so signatures are cached by fingerprint
// (at most maxSigned; the cache is dropped whole when full). A nil *Signer
// signs nothing. Safe for concurrent use.
type Signer struct {
	keys  []signature.SecretKey
	names []string // of keys, in order
	mu    sync.RWMutex
	done  map[string][]Signature
}

const maxSigned = 1 << 16

// NewSigner returns a Signer of keys, checking that each can sign; with no
// keys it returns nil, which signs nothing.
func NewSigner(keys ...signature.SecretKey) (*Signer, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	for i, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, fmt.Errorf("%w: signing key %d: %v", ErrInvalid, i, err)
		}
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.ToPublicKey().Name
	}
	return &Signer{keys: keys, names: names, done: make(map[string][]Signature)}, nil
}

// checkKey makes sure k can sign: a SecretKey not made by
// signature.LoadSecretKey (the zero value) makes ed25519 panic.
func checkKey(k signature.SecretKey) (err error) {
	defer func() {
		if recover() != nil {
			err = errors.New("not a loaded ed25519 key")
		}
	}()
	_, err = k.Sign(nil, "")
	return err
}

// Signatures returns one signature per key over fingerprint. The caller
// must not modify the result.
func (s *Signer) Signatures(fingerprint string) []Signature {
	if s == nil {
		return nil
	}
	s.mu.RLock()
	sigs, ok := s.done[fingerprint]
	s.mu.RUnlock()
	if ok {
		return sigs
	}
	sigs = make([]Signature, 0, len(s.keys))
	for _, k := range s.keys {
		sig, err := k.Sign(nil, fingerprint)
		if err != nil {
			// ed25519 signing fails only for a malformed key, which
			// NewSigner refuses.
			continue
		}
		sigs = append(sigs, sig)
	}
	s.mu.Lock()
	if len(s.done) >= maxSigned {
		clear(s.done)
	}
	s.done[fingerprint] = sigs
	s.mu.Unlock()
	return sigs
}

// Sign returns p with the signature of each key added after its own
// signatures, replacing any other signature under that key's name (a
// forgery, or a signature of an earlier key of the same name): what a
// path is recorded with. p itself is not modified: when anything changes,
// the result is a copy with a new Signatures slice.
func (s *Signer) Sign(p *PathInfo) *PathInfo {
	if s == nil {
		return p
	}
	want := s.Signatures(p.Fingerprint())
	keep := make([]Signature, 0, len(p.Signatures)+len(want))
	for _, o := range p.Signatures {
		if !s.ownName(o.Name) || HasSignature(want, o) {
			keep = append(keep, o)
		}
	}
	changed := len(keep) != len(p.Signatures)
	for _, sig := range want {
		if !HasSignature(keep, sig) {
			keep = append(keep, sig)
			changed = true
		}
	}
	if !changed {
		return p
	}
	c := *p
	c.Signatures = keep
	return &c
}

// SignMissing returns p with a signature added for each key under whose
// name p has none; a signature under a key's name is taken as that key's
// without checking it. It is for records read back, which Index.Put
// signed with Sign: checking (or making) an ed25519 signature on every
// read would cost more than the rest of serving a narinfo, and a cache of
// signatures stops helping once a store has more paths than it holds.
// p itself is not modified.
func (s *Signer) SignMissing(p *PathInfo) *PathInfo {
	if s == nil {
		return p
	}
	missing := false
	for _, name := range s.names {
		if !hasName(p.Signatures, name) {
			missing = true
			break
		}
	}
	if !missing {
		return p
	}
	c := *p
	c.Signatures = append(make([]Signature, 0, len(p.Signatures)+len(s.keys)), p.Signatures...)
	for _, sig := range s.Signatures(p.Fingerprint()) {
		if !hasName(p.Signatures, sig.Name) {
			c.Signatures = append(c.Signatures, sig)
		}
	}
	return &c
}

// ownName reports whether one of s's keys is called name.
func (s *Signer) ownName(name string) bool {
	return slices.Contains(s.names, name)
}

// hasName reports whether sigs holds a signature under name.
func hasName(sigs []Signature, name string) bool {
	for _, o := range sigs {
		if o.Name == name {
			return true
		}
	}
	return false
}

// HasSignature reports whether sigs holds s (same key name, same bytes).
func HasSignature(sigs []Signature, s Signature) bool {
	for _, o := range sigs {
		if o.Name == s.Name && string(o.Data) == string(s.Data) {
			return true
		}
	}
	return false
}

// IndexOption configures an Index.
type IndexOption func(*Index)

// WithSigner makes the index sign every PathInfo it records with s's keys
// (the signatures are stored with it), and add the signatures of those
// keys that a PathInfo recorded earlier lacks when it is read.
func WithSigner(s *Signer) IndexOption {
	return func(x *Index) { x.signer = s }
}
