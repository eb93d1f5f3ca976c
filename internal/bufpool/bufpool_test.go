package bufpool

import "testing"

// TestPoolFits: buffers of mixed sizes, 64 KiB to 4 MiB, through a
// Pool: each gets the smallest free buffer that fits, never one of more
// than twice its size plus Round, so the capacity in use stays
// within that of the frames' lengths.
func TestPoolFits(t *testing.T) {
	sizes := []int{4 << 20, 64 << 10, 1 << 20, 3 << 20, 100 << 10, 64 << 10, 2 << 20, 500 << 10}
	var p Pool
	var inUse [][]byte
	for round := range 20 {
		// Put back the buffers of the last round, then take one per
		// frame of this round, its sizes turned by one.
		for _, b := range inUse {
			p.Put(b)
		}
		inUse = inUse[:0]
		var length, capacity int
		for i := range sizes {
			n := sizes[(i+round)%len(sizes)]
			free := append([][]byte(nil), p.free...)
			b := p.Get(n)
			if cap(b) < n || cap(b) > MaxCap(n) {
				t.Fatalf("round %d: a buffer of %d bytes for %d, want %d to %d", round, cap(b), n, n, MaxCap(n))
			}
			for _, f := range free {
				if c := cap(f); c >= n && c <= MaxCap(n) && c < cap(b) {
					t.Fatalf("round %d: a buffer of %d bytes for %d while one of %d was free", round, cap(b), n, c)
				}
			}
			inUse = append(inUse, b[:n])
			length += n
			capacity += cap(b)
		}
		if limit := 2*length + len(sizes)*Round; capacity > limit {
			t.Fatalf("round %d: %d bytes of capacity for frames of %d bytes, want at most %d", round, capacity, length, limit)
		}
	}
}

// TestPoolKeepsAtMostMaxFree: a Pool keeps buffers up to MaxFree bytes of
// capacity, and drops the rest.
func TestPoolKeepsAtMostMaxFree(t *testing.T) {
	var p Pool
	for range 2 * MaxFree / (1 << 20) {
		p.Put(make([]byte, 1<<20))
	}
	if got := len(p.Buffers()); got != MaxFree/(1<<20) {
		t.Fatalf("%d buffers of 1 MiB kept, want %d", got, MaxFree/(1<<20))
	}
	var s Shared
	s.Put(make([]byte, 10, 1<<20))
	if b := s.Get(600 << 10); len(b) != 0 || cap(b) != 1<<20 {
		t.Fatalf("Shared.Get gave a buffer of length %d and capacity %d, want the one put back, empty", len(b), cap(b))
	}
}
