package main

// End-to-end tests of the gRPC limits of `nixcas serve`: the real binary
// as a subprocess, real grpc-go clients on loopback.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
)

// grpcConn returns a client connection to addr, closed when the test ends.
func grpcConn(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// directoryChain returns n directories each naming the next (d, then
// the one below), leaves first, as DirectoryService.Put takes them.
func directoryChain(n int) []*castorepb.Directory {
	out := make([]*castorepb.Directory, 0, n)
	c := &castore.Directory{}
	for range n {
		out = append(out, castore.DirectoryToProto(c))
		c = &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "d", Digest: c.Digest(), Size: c.Size()}}}
	}
	return out
}

// putDirectories sends dirs in one DirectoryService.Put stream.
func putDirectories(ctx context.Context, conn *grpc.ClientConn, dirs []*castorepb.Directory) error {
	stream, err := castorepb.NewDirectoryServiceClient(conn).Put(ctx)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if err := stream.Send(d); err != nil {
			break // the server answered early; CloseAndRecv has it
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// TestServeDirectoryPutLimits: the memory bounds of DirectoryService.Put
// and the depth limit are set by flags and by config-file keys, and a
// stream over one is refused naming the limit.
func TestServeDirectoryPutLimits(t *testing.T) {
	t.Parallel()
	config := filepath.Join(t.TempDir(), "nixcas.toml")
	if err := os.WriteFile(config, []byte("max-put-directory-bytes-total = 32768\nmax-tree-depth = 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		dirs int // chain length
		code codes.Code
		msg  string
	}{
		{"default limits, chain of 1000", nil, 1000, codes.OK, ""},
		{"--max-put-directory-bytes 65536, chain of 100", []string{"--max-put-directory-bytes", "65536"}, 100, codes.OK, ""},
		{"--max-put-directory-bytes 65536, chain of 1000", []string{"--max-put-directory-bytes", "65536"}, 1000, codes.ResourceExhausted,
			"would hold more than 65536 bytes in memory (the DirectoryService.Put stream limit)"},
		{"config max-put-directory-bytes-total 32768, chain of 10", []string{"--config", config}, 10, codes.OK, ""},
		{"config max-put-directory-bytes-total 32768, chain of 1000", []string{"--config", config, "--max-tree-depth", "2000"}, 1000, codes.ResourceExhausted,
			"limit 32768; try again later"},
		{"config max-tree-depth 10, chain of 11", []string{"--config", config}, 11, codes.InvalidArgument, "11 deep, limit 10"},
		{"--max-tree-depth 11 over the config's 10, chain of 11", []string{"--config", config, "--max-tree-depth", "11"}, 11, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startGRPCServe(t, filepath.Join(t.TempDir(), "data"), tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := putDirectories(ctx, grpcConn(t, srv.grpcAddr), directoryChain(tc.dirs))
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("Put of %d directories: %v; want %v saying %q", tc.dirs, err, tc.code, tc.msg)
			}
		})
	}
}

// TestServeNARUploadDepth: --max-tree-depth bounds uploaded NARs too.
func TestServeNARUploadDepth(t *testing.T) {
	t.Parallel()
	nested := func(depth int) []byte {
		node := e2eTokDir()
		for range depth - 1 {
			node = e2eTokDir(e2eTokEntry("d", node))
		}
		return e2eNAROf(node)
	}
	srv := startGRPCServe(t, filepath.Join(t.TempDir(), "data"), "--max-tree-depth", "10")
	for _, tc := range []struct {
		depth int
		code  int
		msg   string
	}{
		{10, http.StatusCreated, ""},
		{11, http.StatusBadRequest, "the tree nests directories more than 10 deep"},
	} {
		nar := nested(tc.depth)
		resp, _ := request(t, srv.httpAddr, "PUT", fmt.Sprintf("/nar/deep%d.nar", tc.depth), map[string]string{"Content-Length": strconv.Itoa(len(nar))}, nar)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.msg) {
			t.Errorf("PUT of a NAR %d deep: %s %q; want %d saying %q", tc.depth, resp.Status, body, tc.code, tc.msg)
		}
	}
}
