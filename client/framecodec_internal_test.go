package client

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// split cuts b into a BufferSlice of pieces of at most n bytes, as gRPC
// hands a message received in several reads to its codec.
func split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:k])))
		b = b[k:]
	}
	return s
}

// TestFramesCodec: a ReadFramesResponse decodes as the protobuf codec
// decodes it, its data appended to the Data it held, into that array when
// it has room, whatever the pieces the message came in and the fields it
// does not know; Unmarshal refuses a malformed message with ErrCorrupt
// (which gRPC hands the caller as INTERNAL, and receiveFrame turns back
// into ErrCorrupt: TestPullCorruptFrame); other messages decode as
// protobuf.
func TestFramesCodec(t *testing.T) {
	data := bytes.Repeat([]byte("frame bytes "), 1000)
	meta := &nixcaspb.FrameMeta{Name: bytes.Repeat([]byte{7}, 32), StoredSize: 123456}
	withMeta, err := proto.Marshal(&nixcaspb.ReadFramesResponse{Frame: meta, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	dataOnly, err := proto.Marshal(&nixcaspb.ReadFramesResponse{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	// Fields a later server may add, of every wire type, around the data.
	unknown := protowire.AppendTag(nil, 9, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 300)
	unknown = protowire.AppendTag(unknown, 10, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 1)
	unknown = protowire.AppendTag(unknown, 11, protowire.Fixed64Type)
	unknown = protowire.AppendFixed64(unknown, 1)
	unknown = protowire.AppendTag(unknown, 12, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("later"))
	withUnknown := append(append(bytes.Clone(unknown), withMeta...), unknown...)
	// Fields out of order: a sender may write the data before the frame.
	metaWire, err := proto.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	dataFirst := protowire.AppendTag(nil, nixcaspb.ReadFramesResponseDataField, protowire.BytesType)
	dataFirst = protowire.AppendBytes(dataFirst, data)
	dataFirst = protowire.AppendTag(dataFirst, nixcaspb.ReadFramesResponseFrameField, protowire.BytesType)
	dataFirst = protowire.AppendBytes(dataFirst, metaWire)

	for _, tc := range []struct {
		name  string
		wire  []byte
		meta  bool
		piece int
	}{
		{"frame and data, one piece", withMeta, true, 1 << 20},
		{"frame and data, small pieces", withMeta, true, 7},
		{"data only", dataOnly, false, 1000},
		{"unknown fields", withUnknown, true, 13},
		{"data before frame", dataFirst, true, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, 0, 100+len(data))
			buf = append(buf, "before"...)
			msg := &nixcaspb.ReadFramesResponse{Data: buf[len(buf):]}
			if err := (framesCodec{}).Unmarshal(split(tc.wire, tc.piece), msg); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(msg.Data, data) {
				t.Fatalf("data of %d bytes, want the %d sent", len(msg.Data), len(data))
			}
			if &msg.Data[0] != &buf[:len(buf)+1][len(buf)] {
				t.Error("data not received into the buffer given, after its bytes")
			}
			if got := appendReceived(buf, msg.Data); string(got[:6]) != "before" || !bytes.Equal(got[6:], data) {
				t.Error("appendReceived does not give the buffer's bytes then the data")
			}
			if tc.meta != (msg.Frame != nil) || tc.meta && !proto.Equal(msg.Frame, meta) {
				t.Errorf("frame %v, want %v", msg.Frame, meta)
			}
			// No room: a slice of its own.
			small := &nixcaspb.ReadFramesResponse{Data: []byte("x")}
			if err := (framesCodec{}).Unmarshal(split(tc.wire, tc.piece), small); err != nil {
				t.Fatal(err)
			}
			if string(small.Data[:1]) != "x" || !bytes.Equal(small.Data[1:], data) {
				t.Error("data not appended to the Data held")
			}
		})
	}

	twoData := append(bytes.Clone(dataOnly), dataOnly...)
	truncatedFixed := protowire.AppendFixed64(protowire.AppendTag(nil, 11, protowire.Fixed64Type), 1)[:5]
	for _, tc := range []struct {
		name string
		wire []byte
	}{
		{"truncated data", withMeta[:len(withMeta)-1]},
		{"truncated tag", append(bytes.Clone(withMeta), 0x80)},
		{"truncated fixed64", truncatedFixed},
		{"two data fields", twoData},
		{"field number 0", append(bytes.Clone(withMeta), 0x02, 0x00)},
		{"group", append(bytes.Clone(withMeta), byte(13<<3|protowire.StartGroupType))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (framesCodec{}).Unmarshal(split(tc.wire, 5), &nixcaspb.ReadFramesResponse{})
			if !errors.Is(err, castore.ErrCorrupt) {
				t.Fatalf("Unmarshal = %v, want ErrCorrupt", err)
			}
		})
	}

	// Other messages: the protobuf codec's way.
	req := &nixcaspb.ReadFramesRequest{Names: [][]byte{bytes.Repeat([]byte{1}, 32)}}
	wire, err := (framesCodec{}).Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var got nixcaspb.ReadFramesRequest
	if err := (framesCodec{}).Unmarshal(wire, &got); err != nil || !proto.Equal(&got, req) {
		t.Errorf("request round trip: %v, %v", &got, err)
	}
	if (framesCodec{}).Name() != "proto" {
		t.Errorf("codec name %q, want proto (the wire's content subtype)", (framesCodec{}).Name())
	}
}
