package httpcache

import (
	"net/http"
	"strconv"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/store"
)

func (h *handler) getNarInfo(w http.ResponseWriter, r *http.Request, hash string) {
	p, ok := h.pathInfo(w, r, hash)
	if !ok {
		return
	}
	h.recordAccess(p)
	text := h.narInfoText(p)
	w.Header().Set("Content-Type", "text/x-nix-narinfo")
	w.Header().Set("Content-Length", strconv.Itoa(len(text)))
	w.Write(text)
}

// narInfoText renders p's narinfo as the handler serves it: its own
// signatures, then one per Options.SignKeys under whose name it has none
// (store.Signer.SignMissing).
func (h *handler) narInfoText(p *store.PathInfo) []byte {
	ni := h.sigs.SignMissing(p).NarInfo()
	narHash := nixbase32.EncodeToString(p.NARSha256[:])
	switch h.o.Compression {
	case "zstd":
		ni.URL, ni.Compression = "nar/"+narHash+".nar.zst", "zstd"
	default:
		ni.URL, ni.Compression = "nar/"+narHash+".nar", "none"
		ni.FileHash, ni.FileSize = ni.NarHash, ni.NarSize
	}
	return []byte(ni.String())
}
