package client

import (
	"slices"
	"testing"
)

// TestSplitBatches: batches of at most most items, as many as ways when
// each then has at least least, in order, nothing lost.
func TestSplitBatches(t *testing.T) {
	for _, tc := range []struct {
		n, most, least, ways int
		want                 []int // batch sizes
	}{
		{0, 8, 2, 4, nil},
		{1, 8, 2, 4, []int{1}},
		{5, 8, 2, 4, []int{2, 2, 1}},
		{8, 8, 2, 4, []int{2, 2, 2, 2}},
		{9, 8, 2, 4, []int{3, 3, 3}},
		{40, 8, 2, 4, []int{8, 8, 8, 8, 8}},
		{41, 8, 2, 4, []int{8, 8, 8, 8, 8, 1}},
		{100, 1000, 30, 4, []int{30, 30, 30, 10}},
		{9537, 1 << 13, 1 << 12, 4, []int{4096, 4096, 1345}},
		{4000, 1 << 13, 1 << 12, 4, []int{4000}},
	} {
		items := make([]int, tc.n)
		for i := range items {
			items[i] = i
		}
		var sizes, joined []int
		for _, b := range splitBatches(items, tc.most, tc.least, tc.ways) {
			sizes = append(sizes, len(b))
			joined = append(joined, b...)
		}
		if !slices.Equal(sizes, tc.want) || !slices.Equal(joined, items) {
			t.Errorf("splitBatches(%d items, most %d, least %d, ways %d): sizes %v; want %v, every item once in order", tc.n, tc.most, tc.least, tc.ways, sizes, tc.want)
		}
	}
}
