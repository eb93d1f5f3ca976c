package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// corpus is the distinct chunks of a series of NARs, in ingest order.
type corpus struct {
	arena    []byte     // every distinct chunk's bytes, one after the other
	chunks   []chunkRef // the distinct chunks, in ingest order
	files    []fileRef  // the regular files that brought a new chunk
	nars     []narRef
	narBytes int64 // all the NARs' bytes
	refs     int   // chunk references (every chunk of every file)
}

type chunkRef struct {
	off     int   // in arena
	size    int   // bytes
	file    int32 // in files
	fileOff int64 // the chunk's offset in its file
}

func (c *corpus) data(ch chunkRef) []byte { return c.arena[ch.off : ch.off+ch.size] }

type fileRef struct {
	name string // path inside its NAR
	head []byte // its first sniffLen bytes (fewer for a shorter file)
}

type narRef struct {
	name  string
	bytes int64
	end   int // chunks[:end] are the chunks new up to and with this NAR
}

// readCorpus reads the NARs at paths in order and keeps each distinct
// chunk once, where ingest would first store it.
func readCorpus(paths []string) (*corpus, error) {
	var total int64
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		total += fi.Size()
	}
	c := &corpus{arena: make([]byte, 0, total)}
	seen := make(map[castore.Digest]struct{})
	ch := castore.NewChunker(castore.DefaultChunkerOptions)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		r := narrender.NewReader(f)
		err = c.readNAR(r, ch, seen)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		c.nars = append(c.nars, narRef{name: p, bytes: int64(r.Offset()), end: len(c.chunks)})
		c.narBytes += int64(r.Offset())
	}
	return c, nil
}

func (c *corpus) readNAR(r *narrender.Reader, ch *castore.Chunker, seen map[castore.Digest]struct{}) error {
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Type != narrender.TypeRegular {
			continue
		}
		file := int32(-1)
		var head []byte
		var at int64 // offset in the file
		ch.Reset(r)
		for {
			data, err := ch.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if head == nil {
				head = append([]byte(nil), data[:min(len(data), sniffLen)]...)
			}
			c.refs++
			off := at
			at += int64(len(data))
			d := castore.Hash(data)
			if _, ok := seen[d]; ok {
				continue
			}
			seen[d] = struct{}{}
			if file < 0 {
				// head is the file's first bytes even when its first
				// chunk was stored before.
				file = int32(len(c.files))
				c.files = append(c.files, fileRef{name: h.Path(), head: head})
			}
			c.chunks = append(c.chunks, chunkRef{off: len(c.arena), size: len(data), file: file, fileOff: off})
			c.arena = append(c.arena, data...)
		}
	}
}
