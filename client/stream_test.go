package client_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// olderServer makes the server behave, on the wire, as one from before
// chunk streams: it never says it reads them, and it does not see the
// fields that ask for them or carry them (as a server whose messages lack
// those fields skips them as unknown).
func olderServer() []grpc.ServerOption {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if m, ok := resp.(*nixcaspb.MissingResponse); ok {
			m.ChunkStream = false
		}
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, olderStream{ss})
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

type olderStream struct{ grpc.ServerStream }

func (s olderStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	switch m := m.(type) {
	case *nixcaspb.ReadChunksRequest:
		m.Stream = nil
	case *nixcaspb.PutChunksRequest:
		m.Segment = nil
	}
	return err
}

// versions returns two versions of a tree: a large random file changed
// every 32 KiB (so that every chunk of it changes, each close to the
// old one), a small text file changed and a file that stays.
func versions() (v1, v2 *testtree.Node) {
	const size = 1 << 20
	old := make([]byte, size)
	if _, err := io.ReadFull(testtree.Random(7, size).Open(), old); err != nil {
		panic(err)
	}
	changed := append([]byte(nil), old...)
	for i := 1000; i < size; i += 32 << 10 {
		changed[i] ^= 0x5a
	}
	tree := func(tool []byte, text string) *testtree.Node {
		return testtree.Dir(testtree.Entries{
			"bin":    testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Bytes(tool))}),
			"README": testtree.File(testtree.Text(text)),
			"same":   testtree.File(testtree.Random(8, 200<<10)),
		})
	}
	return tree(old, "version 1"), tree(changed, "version 2")
}

// TestChunkStreamCompatibility pushes and pulls two versions of a tree
// in every compression mode, with and without the first as base, against
// a server that reads chunk streams and one that does not. Every tree
// pulled is compared with the original, and the base must make the
// second version's chunk stream far smaller.
func TestChunkStreamCompatibility(t *testing.T) {
	ctx := context.Background()
	v1, v2 := versions()
	type result struct{ pushed, pulled uint64 }
	results := map[string]result{}
	for _, older := range []bool{false, true} {
		for _, mode := range []string{client.CompressionStream, client.CompressionMessages, client.CompressionNone} {
			for _, withBase := range []bool{false, true} {
				name := fmt.Sprintf("older server %v, %s, base %v", older, mode, withBase)
				t.Run(name, func(t *testing.T) {
					var extra []grpc.ServerOption
					if older {
						extra = olderServer()
					}
					ts := startServer(t, extra...)
					pushCache, pullCache := new(castore.MemoryStore), new(castore.MemoryStore)
					r1, r2 := ingestNode(t, pushCache, v1), ingestNode(t, pushCache, v2)
					var base *castore.Entry
					if withBase {
						base = &r1.Root
					}
					pusher, err := client.Dial(ts.addr, client.Options{Cache: pushCache, Compression: mode})
					if err != nil {
						t.Fatal(err)
					}
					defer pusher.Close()
					if _, err := pusher.PushTree(ctx, r1.Root); err != nil {
						t.Fatal(err)
					}
					pst, err := pusher.PushTreeFrom(ctx, r2.Root, base)
					if err != nil {
						t.Fatal(err)
					}
					puller, err := client.Dial(ts.addr, client.Options{Cache: pullCache, Compression: mode})
					if err != nil {
						t.Fatal(err)
					}
					defer puller.Close()
					dst := t.TempDir()
					if _, err := puller.Pull(ctx, r1.Root, filepath.Join(dst, "v1")); err != nil {
						t.Fatal(err)
					}
					lst, err := puller.PullFrom(ctx, r2.Root, base, filepath.Join(dst, "v2"))
					if err != nil {
						t.Fatal(err)
					}
					if sum, size := narSum(t, filepath.Join(dst, "v1")); sum != r1.NARSha256 || size != r1.NARSize {
						t.Fatal("pulled v1 differs")
					}
					if sum, size := narSum(t, filepath.Join(dst, "v2")); sum != r2.NARSha256 || size != r2.NARSize {
						t.Fatal("pulled v2 differs")
					}
					if pst.ChunksSent == 0 || lst.ChunksFetched != pst.ChunksSent {
						t.Errorf("pushed %+v, pulled %+v", pst, lst)
					}
					results[name] = result{pst.BytesSent, lst.BytesReceived}
					t.Logf("second version: %d bytes pushed, %d pulled", pst.BytesSent, lst.BytesReceived)
				})
			}
		}
	}
	plain, dict := results["older server false, zstd, base false"], results["older server false, zstd, base true"]
	if dict.pushed*4 > plain.pushed || dict.pulled*4 > plain.pulled {
		t.Errorf("with a base: %+v bytes; without: %+v; want at most a quarter", dict, plain)
	}
	// An older server gets no chunk stream, so a base changes nothing.
	old, oldBase := results["older server true, zstd, base false"], results["older server true, zstd, base true"]
	if oldBase.pushed*2 < old.pushed || oldBase.pulled*2 < old.pulled {
		t.Errorf("older server: with a base %+v bytes, without %+v; a base should not matter", oldBase, old)
	}
}
