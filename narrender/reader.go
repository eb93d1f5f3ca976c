package narrender

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/nixcas/nixcas/castore"
)

// ErrFormat is wrapped by every error about a malformed NAR.
var ErrFormat = errors.New("narrender: malformed NAR")

// Type is the type of a NAR node.
type Type uint8

// The three node types.
const (
	TypeRegular Type = iota + 1
	TypeDirectory
	TypeSymlink
)

// Header describes one node of a NAR.
type Header struct {
	// Name is the node's name in its directory ("" for the root).
	Name string
	// Depth is the number of directories the node is in: 0 for the root,
	// 1 for an entry of the root directory.
	Depth      int
	Type       Type
	Size       uint64 // regular files: content length
	Executable bool   // regular files
	Target     string // symlinks
	// Offset is the byte offset of the file's contents in the NAR.
	Offset uint64

	parent *dirPath // the directory holding the node; nil for the root
}

// Path returns the node's path inside the archive: "" for the root, "a/b"
// for entry b of directory a. It costs time and memory in proportion to
// the depth; the reader itself never builds paths except for errors.
func (h *Header) Path() string { return h.parent.join(h.Name) }

// dirPath is an open directory's place in the tree: its name and the
// directory holding it, so that entering a directory costs one small
// allocation whatever its depth, and a path is only built when asked for.
// dirPaths are never changed once made, so a Header or Node may keep one.
type dirPath struct {
	parent *dirPath // nil for the root directory
	name   string
	depth  int // 1 for the root directory
}

// join returns the path of the entry name of directory p (p nil: the
// root entry, whose path is "").
func (p *dirPath) join(name string) string {
	if p == nil {
		return ""
	}
	n := len(name)
	for q := p; q.parent != nil; q = q.parent {
		n += len(q.name) + 1
	}
	b := make([]byte, n)
	i := n - len(name)
	copy(b[i:], name)
	for q := p; q.parent != nil; q = q.parent {
		i--
		b[i] = '/'
		i -= len(q.name)
		copy(b[i:], q.name)
	}
	return string(b)
}

// path returns the directory's own path.
func (p *dirPath) path() string {
	if p == nil || p.parent == nil {
		return ""
	}
	return p.parent.join(p.name)
}

// Limits on strings of the NAR grammar itself.
const (
	maxToken = 16 // the longest keyword is "nix-archive-1"
	magic    = "nix-archive-1"
)

// maxErrorPath is the most of a path an error quotes (its end).
const maxErrorPath = 1024

// MaxDepth is how deeply a NAR may nest directories (the root directory
// being at depth 1): castore.MaxDepth, far above any real store path. A
// deeper NAR is refused with an error naming the byte offset and depth.
const MaxDepth = castore.MaxDepth

// Reader reads a NAR node by node, as archive/tar does: Next returns each
// node's Header in NAR order (a directory before its entries), and Read
// returns the contents of the current regular file.
type Reader struct {
	r      *bufio.Reader
	off    uint64
	err    error // sticky
	frames []frame
	done   bool   // the root node is complete
	size   uint64 // the current file's length
	remain uint64 // unread content bytes of the current file
	inFile bool
	// The current node, for errors: the entry leaf of the innermost
	// open directory when hasLeaf, else that directory itself.
	leaf    string
	hasLeaf bool
	buf     []byte
}

// frame is an open directory.
type frame struct {
	dir  *dirPath
	last string // name of the previous entry
	n    int    // entries so far
}

// NewReader returns a Reader of the NAR in r. It buffers r, so it may
// read beyond the end of the NAR (which is an error).
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), buf: make([]byte, 0, castore.MaxNameLen+8)}
}

// Offset returns the number of bytes read so far: the NAR's size once Next
// has returned io.EOF.
func (r *Reader) Offset() uint64 { return r.off }

// errorf makes a format error at the current offset and path and makes it
// sticky.
func (r *Reader) errorf(format string, args ...any) error {
	where := "the root"
	if p := r.path(); p != "" {
		if len(p) > maxErrorPath {
			// Deep paths would make errors of up to a MiB: keep the end.
			p = "…" + p[len(p)-maxErrorPath:]
		}
		where = fmt.Sprintf("%q", p)
	}
	r.err = fmt.Errorf("%w: at byte offset %d, in %s: %s", ErrFormat, r.off, where, fmt.Sprintf(format, args...))
	return r.err
}

// path returns the current node's path, for errors.
func (r *Reader) path() string {
	if len(r.frames) == 0 {
		return ""
	}
	dir := r.frames[len(r.frames)-1].dir
	if r.hasLeaf {
		return dir.join(r.leaf)
	}
	return dir.path()
}

// readFull reads exactly len(p) bytes, reporting truncation as a format
// error.
func (r *Reader) readFull(p []byte, what string) error {
	n, err := io.ReadFull(r.r, p)
	r.off += uint64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return r.errorf("truncated: input ends inside %s", what)
	}
	if err != nil {
		r.err = fmt.Errorf("narrender: reading NAR at byte offset %d: %w", r.off, err)
		return r.err
	}
	return nil
}

func (r *Reader) readUint64(what string) (uint64, error) {
	var b [8]byte
	if err := r.readFull(b[:], what); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// readPadding consumes the zero bytes after a string of n bytes.
func (r *Reader) readPadding(n uint64) error {
	pad := (8 - n%8) % 8
	if pad == 0 {
		return nil
	}
	var b [8]byte
	if err := r.readFull(b[:pad], "padding"); err != nil {
		return err
	}
	for _, c := range b[:pad] {
		if c != 0 {
			r.off -= pad
			return r.errorf("non-zero padding")
		}
	}
	return nil
}

// readString reads a string of at most max bytes; the result is valid until
// the next read.
func (r *Reader) readString(max int, what string) ([]byte, error) {
	start := r.off
	n, err := r.readUint64(what)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		r.off = start
		return nil, r.errorf("%s of %d bytes, limit %d", what, n, max)
	}
	if uint64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if err := r.readFull(r.buf, what); err != nil {
		return nil, err
	}
	if err := r.readPadding(n); err != nil {
		return nil, err
	}
	return r.buf, nil
}

// expect reads one keyword and checks it.
func (r *Reader) expect(want string) error {
	start := r.off
	got, err := r.readString(maxToken, fmt.Sprintf("%q", want))
	if err != nil {
		return err
	}
	if string(got) != want {
		r.off = start
		return r.errorf("expected %q, found %q", want, got)
	}
	return nil
}

// Next advances to the next node, skipping any unread file contents, and
// returns its header. At the end of the NAR it checks that no data follows
// and returns io.EOF.
func (r *Reader) Next() (*Header, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.inFile {
		if err := r.finishFile(); err != nil {
			return nil, err
		}
	}
	for {
		if r.done {
			return nil, r.checkEnd()
		}
		if len(r.frames) == 0 {
			if r.off != 0 {
				panic("narrender: Reader lost its place")
			}
			if err := r.expectMagic(); err != nil {
				return nil, err
			}
			return r.node(&Header{})
		}
		top := &r.frames[len(r.frames)-1]
		r.hasLeaf = false
		start := r.off
		tok, err := r.readString(maxToken, `"entry" or ")"`)
		if err != nil {
			return nil, err
		}
		switch string(tok) {
		case ")":
			r.frames = r.frames[:len(r.frames)-1]
			if err := r.endNode(); err != nil {
				return nil, err
			}
		case "entry":
			return r.entry(top)
		default:
			r.off = start
			return nil, r.errorf(`expected "entry" or ")", found %q`, tok)
		}
	}
}

func (r *Reader) expectMagic() error {
	n, err := r.readUint64("the NAR header")
	if err == nil && n != uint64(len(magic)) {
		r.off = 0
		return r.errorf("not a NAR: bad magic")
	}
	if err != nil {
		if r.off == 0 {
			r.err = fmt.Errorf("%w: at byte offset 0: empty input", ErrFormat)
			return r.err
		}
		return err
	}
	r.buf = r.buf[:n]
	if err := r.readFull(r.buf, "the NAR header"); err != nil {
		return err
	}
	if string(r.buf) != magic {
		r.off = 0
		return r.errorf("not a NAR: bad magic %q", r.buf)
	}
	return r.readPadding(n)
}

// entry parses `"(" "name" <name> "node"` and the node that follows.
func (r *Reader) entry(top *frame) (*Header, error) {
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("name"); err != nil {
		return nil, err
	}
	start := r.off
	b, err := r.readString(castore.MaxNameLen, "entry name")
	if err != nil {
		return nil, err
	}
	name := string(b)
	if msg := checkEntryName(top, name); msg != "" {
		r.off = start
		return nil, r.errorf("%s", msg)
	}
	top.last = name
	top.n++
	r.leaf, r.hasLeaf = name, true
	if err := r.expect("node"); err != nil {
		return nil, err
	}
	return r.node(&Header{Name: name, Depth: len(r.frames), parent: top.dir})
}

// checkEntryName returns what is wrong with the next entry name of a
// directory, or "".
func checkEntryName(top *frame, name string) string {
	if err := castore.ValidateName(name); err != nil {
		return "entry name: " + unwrapInvalid(err)
	}
	switch {
	case top.n == 0:
	case name == top.last:
		return fmt.Sprintf("duplicate entry name %q", name)
	case name < top.last:
		return fmt.Sprintf("entry %q does not sort after %q", name, top.last)
	}
	return ""
}

// node parses a node's opening up to its contents: a regular file's
// header (contents follow), a whole symlink, or a directory's opening. h
// has the node's name and place.
func (r *Reader) node(h *Header) (*Header, error) {
	if err := r.expect("("); err != nil {
		return nil, err
	}
	if err := r.expect("type"); err != nil {
		return nil, err
	}
	start := r.off
	typ, err := r.readString(maxToken, "node type")
	if err != nil {
		return nil, err
	}
	switch string(typ) {
	case "regular":
		h.Type = TypeRegular
		return r.regular(h)
	case "symlink":
		h.Type = TypeSymlink
		if err := r.expect("target"); err != nil {
			return nil, err
		}
		start := r.off
		t, err := r.readString(castore.MaxTargetLen, "symlink target")
		if err != nil {
			return nil, err
		}
		h.Target = string(t)
		if err := castore.ValidateTarget(h.Target); err != nil {
			r.off = start
			return nil, r.errorf("%v", unwrapInvalid(err))
		}
		if err := r.expect(")"); err != nil {
			return nil, err
		}
		return h, r.endNode()
	case "directory":
		h.Type = TypeDirectory
		if len(r.frames) >= MaxDepth {
			r.off = start
			return nil, r.errorf("directory nested %d deep, limit %d", len(r.frames)+1, MaxDepth)
		}
		r.frames = append(r.frames, frame{dir: &dirPath{parent: h.parent, name: h.Name, depth: len(r.frames) + 1}})
		r.hasLeaf = false
		return h, nil
	}
	r.off = start
	return nil, r.errorf("unknown node type %q", typ)
}

func (r *Reader) regular(h *Header) (*Header, error) {
	start := r.off
	tok, err := r.readString(maxToken, `"contents" or "executable"`)
	if err != nil {
		return nil, err
	}
	if string(tok) == "executable" {
		h.Executable = true
		if err := r.expect(""); err != nil {
			return nil, err
		}
		start = r.off
		if tok, err = r.readString(maxToken, `"contents"`); err != nil {
			return nil, err
		}
	}
	if string(tok) != "contents" {
		r.off = start
		return nil, r.errorf(`expected "contents", found %q`, tok)
	}
	if h.Size, err = r.readUint64("the file size"); err != nil {
		return nil, err
	}
	h.Offset = r.off
	r.size, r.remain, r.inFile = h.Size, h.Size, true
	return h, nil
}

// Read reads the contents of the current regular file; it returns io.EOF
// at their end, and 0, io.EOF for other nodes.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if !r.inFile || r.remain == 0 {
		return 0, io.EOF
	}
	if uint64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.r.Read(p)
	r.off += uint64(n)
	r.remain -= uint64(n)
	if err == io.EOF && r.remain > 0 {
		return n, r.errorf("truncated: input ends %d bytes before the end of the file's contents", r.remain)
	}
	if err != nil && err != io.EOF {
		r.err = fmt.Errorf("narrender: reading NAR at byte offset %d: %w", r.off, err)
		return n, r.err
	}
	return n, nil
}

// finishFile skips unread contents, checks the padding and closes the node.
func (r *Reader) finishFile() error {
	if r.remain > 0 {
		n, err := io.CopyN(io.Discard, r.r, int64(r.remain))
		r.off += uint64(n)
		r.remain -= uint64(n)
		if err != nil {
			return r.errorf("truncated: input ends %d bytes before the end of the file's contents", r.remain)
		}
	}
	r.inFile = false
	if err := r.readPadding(r.size); err != nil {
		return err
	}
	if err := r.expect(")"); err != nil {
		return err
	}
	return r.endNode()
}

// endNode is called when a node's closing ")" has been read: inside a
// directory the entry's ")" follows; at the top the archive is complete.
func (r *Reader) endNode() error {
	if len(r.frames) == 0 {
		r.done = true
		return nil
	}
	r.hasLeaf = false
	return r.expect(")")
}

// checkEnd makes sure nothing follows the root node.
func (r *Reader) checkEnd() error {
	if _, err := r.r.ReadByte(); err == nil {
		r.hasLeaf = false
		return r.errorf("data after the end of the archive")
	} else if err != io.EOF {
		r.err = fmt.Errorf("narrender: reading NAR at byte offset %d: %w", r.off, err)
		return r.err
	}
	r.err = io.EOF
	return io.EOF
}

// unwrapInvalid drops castore's sentinel prefix from a validation error,
// which the NAR error wraps in its own words.
func unwrapInvalid(err error) string {
	s := err.Error()
	p := castore.ErrInvalid.Error() + ": "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
