package narrender

import (
	"crypto/sha256"
	"hash"
	"io"
)

// hashingReader reads its source on a goroutine of its own, a block ahead,
// hashing each block with SHA-256 there, so the NAR hash costs the parser
// nothing. Close stops the goroutine; Sum is valid once Read has returned
// io.EOF.
type hashingReader struct {
	full  chan block
	free  chan []byte
	stop  chan struct{}
	cur   block
	hash  hash.Hash
	done  bool
	close func()
}

type block struct {
	buf []byte // the whole buffer, to recycle
	b   []byte // unread part
	err error
}

const (
	hashBlockSize = 256 << 10
	hashBlocks    = 4
)

func newHashingReader(src io.Reader) *hashingReader {
	r := &hashingReader{
		full: make(chan block, hashBlocks),
		free: make(chan []byte, hashBlocks),
		stop: make(chan struct{}),
		hash: sha256.New(),
	}
	for range hashBlocks {
		r.free <- make([]byte, hashBlockSize)
	}
	r.close = func() { close(r.stop) }
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-r.free:
			case <-r.stop:
				return
			}
			n, err := io.ReadFull(src, buf)
			r.hash.Write(buf[:n])
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case r.full <- block{buf: buf, b: buf[:n], err: err}:
			case <-r.stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// Read implements io.Reader.
func (r *hashingReader) Read(p []byte) (int, error) {
	for len(r.cur.b) == 0 {
		if r.cur.err != nil {
			r.done = r.cur.err == io.EOF
			return 0, r.cur.err
		}
		if r.cur.buf != nil {
			r.free <- r.cur.buf
		}
		r.cur = <-r.full
	}
	n := copy(p, r.cur.b)
	r.cur.b = r.cur.b[n:]
	return n, nil
}

// Sum returns the SHA-256 of everything read from the source; call it only
// after Read returned io.EOF.
func (r *hashingReader) Sum(b []byte) []byte {
	if !r.done {
		panic("narrender: hashingReader.Sum before the end of the input")
	}
	return r.hash.Sum(b)
}

// Close tells the read-ahead goroutine to stop; it does not wait for a
// read of the source in progress. Call it once.
func (r *hashingReader) Close() { r.close() }
