package httpcache

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/store"
)

// Header values of every narinfo response, shared: net/http only reads
// them, and a length equal to the capacity makes any append copy.
var narInfoContentType = []string{"text/x-nix-narinfo"}

func (h *handler) getNarInfo(w http.ResponseWriter, r *http.Request, hash string) {
	d, err := store.ParsePathDigest(hash)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	var epoch uint64
	if h.narInfos != nil {
		var text []byte
		if text, epoch = h.narInfos.get(d); text != nil {
			h.recordAccessOf(d)
			writeNarInfo(w, text)
			return
		}
	}
	p, ok := h.lookupPathInfo(w, r, d)
	if !ok {
		return
	}
	h.recordAccessOf(d)
	text := h.narInfoText(p)
	if h.narInfos != nil {
		h.narInfos.add(d, text, epoch)
	}
	writeNarInfo(w, text)
}

// writeNarInfo answers with text, a narinfo, which it does not modify.
func writeNarInfo(w http.ResponseWriter, text []byte) {
	hd := w.Header()
	hd["Content-Type"] = narInfoContentType
	hd["Content-Length"] = []string{strconv.Itoa(len(text))}
	w.Write(text)
}

// recordAccessOf notes that the store path whose hash is d was read, when
// the index keeps access times.
func (h *handler) recordAccessOf(d store.PathDigest) {
	if h.access != nil {
		h.access.RecordAccess(d)
	}
}

// narInfoText renders p's narinfo as the handler serves it: its own
// signatures, then one per Options.SignKeys under whose name it has none
// (store.Signer.SignMissing). With an Index that has the power
// PathNARIndex, the NAR URL also names the store path (?hash=).
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
	if _, ok := h.o.Index.(PathNARIndex); ok {
		if hash, _, ok := strings.Cut(p.Path, "-"); ok {
			ni.URL += "?" + narPathQuery + "=" + hash
		}
	}
	return []byte(ni.String())
}

// narPathQuery is the query parameter of a NAR URL that names the store
// path (its hash part) whose NAR it is.
const narPathQuery = "hash"
