package testtree

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// WriteNAR serialises n in Nix Archive format, producing the same bytes as
// `nix-store --dump` of a directory created by [Build]. Content is streamed,
// so arbitrarily large trees need only constant memory.
func WriteNAR(w io.Writer, n *Node) error {
	if err := n.Validate(); err != nil {
		return err
	}
	e := narWriter{w: bufio.NewWriterSize(w, 256<<10)}
	e.str("nix-archive-1")
	e.node(n)
	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}

type narWriter struct {
	w   *bufio.Writer
	err error
}

var zeroPad [8]byte

func (e *narWriter) u64(v uint64) {
	if e.err != nil {
		return
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	_, e.err = e.w.Write(b[:])
}

func (e *narWriter) pad(n uint64) {
	if e.err == nil && n%8 != 0 {
		_, e.err = e.w.Write(zeroPad[:8-n%8])
	}
}

func (e *narWriter) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		_, e.err = e.w.WriteString(s)
	}
	e.pad(uint64(len(s)))
}

func (e *narWriter) node(n *Node) {
	e.str("(")
	e.str("type")
	switch n.Type {
	case Regular:
		e.str("regular")
		if n.Executable {
			e.str("executable")
			e.str("")
		}
		e.str("contents")
		size := n.Content.Size()
		e.u64(uint64(size))
		if e.err != nil {
			return
		}
		var written int64
		written, e.err = io.Copy(e.w, n.Content.Open())
		if e.err == nil && written != size {
			e.err = fmt.Errorf("content produced %d bytes, declared size %d", written, size)
		}
		e.pad(uint64(size))
	case Symlink:
		e.str("symlink")
		e.str("target")
		e.str(n.Target)
	case Directory:
		e.str("directory")
		for _, name := range n.Names() {
			e.str("entry")
			e.str("(")
			e.str("name")
			e.str(name)
			e.str("node")
			e.node(n.Entries[name])
			e.str(")")
		}
	}
	e.str(")")
}
