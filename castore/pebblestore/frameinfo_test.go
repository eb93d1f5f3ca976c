package pebblestore

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// TestFrameInfoRegistryValue: registry values as every version wrote
// them decode, new ones round-trip, and damaged ones are ErrCorrupt.
func TestFrameInfoRegistryValue(t *testing.T) {
	name := castore.Hash([]byte("a frame"))
	chunk := castore.Hash([]byte("a chunk"))
	// header builds tier ‖ created ‖ stored ‖ decoded ‖ extra… ‖ one chunk.
	header := func(tier byte, extra ...uint64) []byte {
		b := []byte{tier}
		for _, x := range append([]uint64{1700000000, 1000, 4000}, extra...) {
			b = binary.AppendUvarint(b, x)
		}
		b = append(b, chunk[:]...)
		return binary.AppendUvarint(b, 4000)
	}
	valid := []struct {
		name      string
		value     []byte
		tier      byte
		run       uint64
		level     int
		sameBytes bool // encode gives the value back
	}{
		{"hot frame, as before runs", header(FrameHot), FrameHot, 0, 0, true},
		{"cold frame, as before runs: the base run", header(FrameCold), FrameCold, 0, LevelBase, true},
		{"cold frame of run 7, level 0", header(FrameCold|frameHasRun, 7, 0), FrameCold, 7, 0, true},
		{"cold frame of run 300, level 3", header(FrameCold|frameHasRun, 300, 3), FrameCold, 300, 3, true},
	}
	for _, tt := range valid {
		f, err := decodeFrameInfo(name, tt.value)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if f.tier != tt.tier || f.run != tt.run || f.level != tt.level || f.stored != 1000 || f.decoded != 4000 ||
			!f.created.Equal(time.Unix(1700000000, 0)) || len(f.chunks) != 1 || f.chunks[0].digest != chunk {
			t.Errorf("%s: decoded %+v", tt.name, f)
		}
		if got := f.encode(); tt.sameBytes && string(got) != string(tt.value) {
			t.Errorf("%s: encodes to %x, was %x", tt.name, got, tt.value)
		}
	}
	invalid := []struct {
		name  string
		value []byte
	}{
		{"hot frame with a run", header(FrameHot|frameHasRun, 1, 0)},
		{"unknown tier", header(5)},
		{"run flag, level missing", []byte{FrameCold | frameHasRun, 1, 1, 1, 1}},
		{"run at the base level", header(FrameCold|frameHasRun, 1, LevelBase)},
		{"too short", []byte{FrameCold, 1}},
		{"chunk list cut", header(FrameCold)[:20]},
	}
	for _, tt := range invalid {
		if f, err := decodeFrameInfo(name, tt.value); !errors.Is(err, castore.ErrCorrupt) {
			t.Errorf("%s: decoded %+v, %v; want ErrCorrupt", tt.name, f, err)
		}
	}
}
