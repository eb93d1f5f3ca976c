package store

import (
	"errors"
	"fmt"
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
	keys []signature.SecretKey
	mu   sync.RWMutex
	done map[string][]Signature
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
	return &Signer{keys: keys, done: make(map[string][]Signature)}, nil
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

// Sign returns p with the signature of each key that p lacks added after
// its own. p itself is not modified: when a signature is missing, the
// result is a copy with a new Signatures slice.
func (s *Signer) Sign(p *PathInfo) *PathInfo {
	if s == nil {
		return p
	}
	var q *PathInfo
	for _, sig := range s.Signatures(p.Fingerprint()) {
		if HasSignature(p.Signatures, sig) {
			continue
		}
		if q == nil {
			c := *p
			c.Signatures = append(make([]Signature, 0, len(p.Signatures)+len(s.keys)), p.Signatures...)
			q, p = &c, &c
		}
		q.Signatures = append(q.Signatures, sig)
	}
	return p
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
