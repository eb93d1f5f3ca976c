package nixcaspb

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestFieldNumbers: the hand-written field numbers are the descriptor's.
func TestFieldNumbers(t *testing.T) {
	fields := (&ReadFramesResponse{}).ProtoReflect().Descriptor().Fields()
	for name, want := range map[protoreflect.Name]protoreflect.FieldNumber{
		"frame": ReadFramesResponseFrameField,
		"data":  ReadFramesResponseDataField,
	} {
		if f := fields.ByName(name); f == nil || f.Number() != want {
			t.Errorf("ReadFramesResponse field %s: %v, want number %d", name, f, want)
		}
	}
}
