package httpcache

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// getListing serves <hash>.ls: the store path's file listing, as Nix
// writes it beside a NAR when write-nar-listing is on and as `nix store ls
// --json` prints it:
//
//	{"version":1,"root":NODE}
//	NODE = {"type":"directory","entries":{"<name>":NODE,...}}
//	     | {"type":"regular","size":N[,"executable":true],"narOffset":N}
//	     | {"type":"symlink","target":"..."}
//
// narOffset is the offset of the file's contents in the NAR, for range
// requests. The listing is computed from the directories alone.
func (h *handler) getListing(w http.ResponseWriter, r *http.Request, hash string) {
	p, ok := h.pathInfo(w, r, hash)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	lw := &lazyWriter{w: w, status: http.StatusOK}
	err := writeListing(r.Context(), lw, h.o.CAS, p.Root)
	h.finish(lw, r, err)
}

// writeListing writes the JSON file listing (version 1, see the package
// documentation) of the tree at root to w, streaming, reading directories
// only. Names and targets are written as Nix writes them: '"', '\' and
// control characters escaped, other bytes (invalid UTF-8 included) as they
// are.
func writeListing(ctx context.Context, w io.Writer, s castore.DirectoryReader, root castore.Entry) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(`{"version":1,"root":`)
	var open []bool // per open directory: whether an entry was written
	_, err := narrender.Walk(ctx, s, root, func(n narrender.Node) error {
		depth := n.Depth
		for len(open) > depth {
			bw.WriteString("}}")
			open = open[:len(open)-1]
		}
		if depth > 0 {
			if open[depth-1] {
				bw.WriteByte(',')
			}
			open[depth-1] = true
			writeJSONString(bw, n.Entry.Name)
			bw.WriteByte(':')
		}
		e := n.Entry
		switch e.Kind {
		case castore.KindDirectory:
			bw.WriteString(`{"type":"directory","entries":{`)
			open = append(open, false)
		case castore.KindFile:
			bw.WriteString(`{"type":"regular","size":`)
			bw.WriteString(strconv.FormatUint(e.Size, 10))
			if e.Executable {
				bw.WriteString(`,"executable":true`)
			}
			bw.WriteString(`,"narOffset":`)
			bw.WriteString(strconv.FormatUint(n.Contents, 10))
			bw.WriteByte('}')
		case castore.KindSymlink:
			bw.WriteString(`{"type":"symlink","target":`)
			writeJSONString(bw, e.Target)
			bw.WriteByte('}')
		}
		return nil
	})
	if err != nil {
		return err
	}
	for range open {
		bw.WriteString("}}")
	}
	bw.WriteString("}\n")
	return bw.Flush()
}

// writeJSONString writes s as a JSON string the way Nix does.
func writeJSONString(w *bufio.Writer, s string) {
	const hex = "0123456789abcdef"
	w.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			w.WriteByte('\\')
			w.WriteByte(c)
		case c == '\n':
			w.WriteString(`\n`)
		case c == '\r':
			w.WriteString(`\r`)
		case c == '\t':
			w.WriteString(`\t`)
		case c < 0x20:
			w.WriteString(`\u00`)
			w.WriteByte(hex[c>>4])
			w.WriteByte(hex[c&0xf])
		default:
			w.WriteByte(c)
		}
	}
	w.WriteByte('"')
}
