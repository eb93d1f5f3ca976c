package grpcapi

import (
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protoapi "google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/internal/bufpool"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// serverCodec is the server's codec: gRPC's protobuf codec, except for
// the messages ReadFrames sends (*frameMessage), whose frame bytes go to
// the transport straight out of the buffer the frame was read into, where
// the protobuf codec would copy each message into one of gRPC's buffers.
// The buffer goes back to the server's pool of frame buffers once the
// transport has written the last message cut from it, so that the server
// reads its next frames into memory it has used before: fresh buffers for
// every frame read and every message encoded were more than a quarter of the server's
// CPU while it sent frames (the zeroing of new memory). The messages on
// the wire are the protobuf ReadFramesResponse.
type serverCodec struct{}

// protoCodec is gRPC's protobuf codec.
var protoCodec = encoding.GetCodecV2(proto.Name)

// serverCodecOption makes a server use serverCodec for every call (so
// that ReadFrames may send *frameMessage).
var serverCodecOption = grpc.ForceServerCodecV2(serverCodec{})

func (serverCodec) Name() string { return protoCodec.Name() }

func (serverCodec) Unmarshal(data mem.BufferSlice, v any) error { return protoCodec.Unmarshal(data, v) }

func (serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*frameMessage); ok {
		return m.marshal()
	}
	return protoCodec.Marshal(v)
}

// frameMessage is a nixcas.v1.ReadFramesResponse whose data is a piece
// of a frame's buffer (sentFrame). It is what a stream interceptor's
// SendMsg sees of a ReadFrames call's messages: Response gives the
// message it stands for.
type frameMessage struct {
	meta *nixcaspb.FrameMeta // the first message of a frame only
	data []byte              // within f.buf
	f    *sentFrame
}

// String describes m without its bytes, which are reused once m is
// written (gRPC's tracing formats messages later).
func (m *frameMessage) String() string {
	return fmt.Sprintf("ReadFramesResponse{%d bytes of a frame}", len(m.data))
}

// Response returns the ReadFramesResponse m encodes, with a copy of its
// data (the frame's buffer is reused once m is sent).
func (m *frameMessage) Response() *nixcaspb.ReadFramesResponse {
	return &nixcaspb.ReadFramesResponse{Frame: m.meta, Data: append([]byte(nil), m.data...)}
}

// marshal encodes m as the protobuf codec encodes a ReadFramesResponse:
// its frame field, then its data field, whose bytes stay in m.f's buffer
// and hold a reference to it until gRPC frees them. Data too small for
// gRPC to count references to (mem.IsBelowBufferPoolingThreshold) is
// copied.
func (m *frameMessage) marshal() (mem.BufferSlice, error) {
	var head []byte
	if m.meta != nil {
		meta, err := protoapi.Marshal(m.meta)
		if err != nil {
			return nil, err
		}
		head = protowire.AppendTag(head, nixcaspb.ReadFramesResponseFrameField, protowire.BytesType)
		head = protowire.AppendBytes(head, meta)
	}
	if len(m.data) == 0 {
		return mem.BufferSlice{mem.SliceBuffer(head)}, nil
	}
	head = protowire.AppendTag(head, nixcaspb.ReadFramesResponseDataField, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(m.data)))
	data := m.data[:len(m.data):len(m.data)]
	if mem.IsBelowBufferPoolingThreshold(len(data)) {
		return mem.BufferSlice{mem.SliceBuffer(append(head, data...))}, nil
	}
	m.f.refs.Add(1)
	return mem.BufferSlice{mem.SliceBuffer(head), mem.NewBuffer(&data, m.f)}, nil
}

// sentFrame is the buffer of a frame being sent: it goes back to pool,
// and done is called, once its sender (which holds the first reference)
// and every message data cut from it have released it. It is the
// mem.BufferPool of those data, which gRPC puts back once written.
type sentFrame struct {
	buf  []byte
	pool *bufpool.Shared
	done func()
	refs atomic.Int32
}

// newSentFrame returns buf as a frame being sent, held by its sender.
func newSentFrame(buf []byte, pool *bufpool.Shared, done func()) *sentFrame {
	f := &sentFrame{buf: buf, pool: pool, done: done}
	f.refs.Store(1)
	return f
}

// release drops one reference to f; the last gives its buffer back.
func (f *sentFrame) release() {
	if f.refs.Add(-1) == 0 {
		f.pool.Put(f.buf)
		f.done()
	}
}

// Get implements mem.BufferPool; gRPC takes no buffer from a data's
// pool, so it returns a new one.
func (f *sentFrame) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

// Put implements mem.BufferPool: the data of one message is written.
func (f *sentFrame) Put(*[]byte) { f.release() }
