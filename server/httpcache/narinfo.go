package httpcache

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/store"
)

func (h *handler) getNarInfo(w http.ResponseWriter, r *http.Request, hash string) {
	p, ok := h.pathInfo(w, r, hash)
	if !ok {
		return
	}
	text := h.narInfoText(p)
	w.Header().Set("Content-Type", "text/x-nix-narinfo")
	w.Header().Set("Content-Length", strconv.Itoa(len(text)))
	w.Write(text)
}

// narInfoText renders p's narinfo as the handler serves it.
func (h *handler) narInfoText(p *store.PathInfo) []byte {
	ni := p.NarInfo()
	narHash := nixbase32.EncodeToString(p.NARSha256[:])
	switch h.o.Compression {
	case "zstd":
		ni.URL, ni.Compression = "nar/"+narHash+".nar.zst", "zstd"
	default:
		ni.URL, ni.Compression = "nar/"+narHash+".nar", "none"
		ni.FileHash, ni.FileSize = ni.NarHash, ni.NarSize
	}
	for _, s := range h.sigs.sign(p.Fingerprint()) {
		if !hasSignature(ni.Signatures, s) {
			ni.Signatures = append(ni.Signatures, s)
		}
	}
	return []byte(ni.String())
}

func hasSignature(sigs []signature.Signature, s signature.Signature) bool {
	for _, o := range sigs {
		if o.Name == s.Name && string(o.Data) == string(s.Data) {
			return true
		}
	}
	return false
}

// signer signs fingerprints with every configured key. ed25519 signatures
// are deterministic and a fingerprint names the content, so signatures are
// cached by fingerprint (at most maxSigned; the cache is dropped whole when
// full).
type signer struct {
	keys []signature.SecretKey
	mu   sync.RWMutex
	done map[string][]signature.Signature
}

const maxSigned = 1 << 16

func newSigner(keys []signature.SecretKey) *signer {
	return &signer{keys: keys, done: make(map[string][]signature.Signature)}
}

// sign returns one signature per key over fingerprint. The caller must not
// modify the result.
func (s *signer) sign(fingerprint string) []signature.Signature {
	if len(s.keys) == 0 {
		return nil
	}
	s.mu.RLock()
	sigs, ok := s.done[fingerprint]
	s.mu.RUnlock()
	if ok {
		return sigs
	}
	sigs = make([]signature.Signature, 0, len(s.keys))
	for _, k := range s.keys {
		sig, err := k.Sign(nil, fingerprint)
		if err != nil {
			// ed25519 signing fails only for a malformed key, which
			// LoadSecretKey does not produce.
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
