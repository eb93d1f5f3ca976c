package bufpool

import "sync"

const (
	// Round rounds the capacity of a new buffer up, so that buffers of
	// about the same size fit each other's uses.
	Round = 64 << 10
	// MaxFree bounds the capacity of the buffers a Pool keeps.
	MaxFree = 16 << 20
)

// Pool keeps buffers for reuse, up to MaxFree bytes of capacity. Its zero
// value is empty; it is not safe for concurrent use (see Shared).
type Pool struct {
	free  [][]byte
	bytes int64
}

// Get returns an empty buffer of at least n bytes of capacity: the
// smallest free one that fits, unless its capacity is over MaxCap(n),
// else a new one. A caller that counts its memory by the length of its
// buffers would not see a buffer much larger than its use.
func (p *Pool) Get(n int) []byte {
	best := -1
	for i, b := range p.free {
		if c := cap(b); c >= n && c <= MaxCap(n) && (best < 0 || c < cap(p.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return make([]byte, 0, (n+Round-1)/Round*Round)
	}
	b := p.free[best]
	last := len(p.free) - 1
	p.free[best], p.free[last] = p.free[last], nil
	p.free = p.free[:last]
	p.bytes -= int64(cap(b))
	return b[:0]
}

// MaxCap is the largest capacity of a buffer Get gives for n bytes.
func MaxCap(n int) int { return 2*n + Round }

// Put keeps b for reuse, unless the pool is full. Nothing may use b
// afterwards.
func (p *Pool) Put(b []byte) {
	if p.bytes+int64(cap(b)) > MaxFree {
		return
	}
	p.free = append(p.free, b[:0])
	p.bytes += int64(cap(b))
}

// Buffers returns the free buffers the pool keeps, to look at: nothing
// may write into them.
func (p *Pool) Buffers() [][]byte { return p.free }

// Shared is a Pool safe for concurrent use.
type Shared struct {
	mu sync.Mutex
	p  Pool
}

// Get is Pool.Get.
func (s *Shared) Get(n int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p.Get(n)
}

// Put is Pool.Put.
func (s *Shared) Put(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p.Put(b)
}

// Buffers is Pool.Buffers, copied.
func (s *Shared) Buffers() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.p.Buffers()...)
}
