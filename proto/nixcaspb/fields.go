package nixcaspb

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers of ReadFramesResponse, for the codecs that encode and
// decode its messages by hand (the server's, which sends frame bytes
// without copying them, and the pull's, which receives them into the
// frame's buffer). TestFieldNumbers checks them against the descriptor.
const (
	ReadFramesResponseFrameField protowire.Number = 1
	ReadFramesResponseDataField  protowire.Number = 2
)

// Frame formats of ChunkPlacesRequest.frame_format: what a client
// decodes.
const (
	// FrameFormatPlain: zstd frames only (a client that sets nothing).
	FrameFormatPlain uint32 = 0
	// FrameFormatCallFilter: also frames filtered by the x86 call filter.
	FrameFormatCallFilter uint32 = 1
)
