package castore

// bufferList keeps chunk buffers for reuse. Unlike sync.Pool it keeps them
// across garbage collections: the pipelines that use it cycle a few dozen
// buffers of up to a chunk each, and a sync.Pool emptied by every GC made
// them allocate (and zero) fresh ones over and over, which cost a third of
// render throughput.
type bufferList struct {
	free chan *[]byte
	size int // length of new buffers
}

// newBufferList keeps up to n buffers, making new ones of length size.
func newBufferList(n, size int) *bufferList {
	return &bufferList{free: make(chan *[]byte, n), size: size}
}

// get returns a kept buffer or a new one.
func (l *bufferList) get() *[]byte {
	select {
	case b := <-l.free:
		return b
	default:
		b := make([]byte, l.size)
		return &b
	}
}

// put keeps b for reuse, or drops it when enough are kept.
func (l *bufferList) put(b *[]byte) {
	select {
	case l.free <- b:
	default:
	}
}
