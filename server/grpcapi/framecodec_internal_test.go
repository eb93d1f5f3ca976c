package grpcapi

import (
	"bytes"
	"testing"

	protoapi "google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/internal/bufpool"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// TestFrameMessageMarshal: a frameMessage encodes to the bytes the
// protobuf codec gives for the same ReadFramesResponse (with or without
// its frame, data large enough to be sent from the frame's buffer or
// small enough to be copied, or none), and its frame's buffer goes back
// to the pool only once the sender and every message's data have
// released it.
func TestFrameMessageMarshal(t *testing.T) {
	var pool bufpool.Shared
	buf := make([]byte, 3<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	done := 0
	f := newSentFrame(buf, &pool, func() { done++ })
	meta := &nixcaspb.FrameMeta{Name: bytes.Repeat([]byte{9}, 32), StoredSize: uint64(len(buf))}
	cases := []struct {
		name string
		meta *nixcaspb.FrameMeta
		data []byte
	}{
		{"first message", meta, buf[:1<<20]},
		{"small last message", nil, buf[2<<20 : 2<<20+100]},
		{"frame, no data", meta, nil},
		{"next message", nil, buf[1<<20 : 2<<20]},
	}
	var sent []func()
	for _, c := range cases {
		got, err := serverCodec{}.Marshal(&frameMessage{meta: c.meta, data: c.data, f: f})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want, err := protoapi.Marshal(&nixcaspb.ReadFramesResponse{Frame: c.meta, Data: c.data})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Errorf("%s: encoded to %d bytes unlike the protobuf codec's %d", c.name, got.Len(), len(want))
		}
		sent = append(sent, got.Free)
	}
	free := func() int { return len(pool.Buffers()) }
	f.release() // the sender is done
	if n := free(); n != 0 {
		t.Fatalf("the frame's buffer is free while two messages hold it (%d free)", n)
	}
	for _, s := range sent[:len(sent)-1] {
		s()
	}
	if n := free(); n != 0 || done != 0 {
		t.Fatalf("the frame's buffer is free (%d free, done called %d times) while a message holds it", n, done)
	}
	sent[len(sent)-1]()
	if n := free(); n != 1 || done != 1 {
		t.Fatalf("%d buffers free and done called %d times after every message was written, want the frame's and once", n, done)
	}
}
