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
