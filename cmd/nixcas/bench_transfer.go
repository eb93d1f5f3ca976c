package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/bench"
	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

func newBenchTransferCommand() *cobra.Command {
	var (
		from, to string
		work     string
	)
	cmd := &cobra.Command{
		Use:   "transfer",
		Short: "Bytes a push and a pull of a new release move when the old one is there, as a Markdown table",
		Long: `Run a server (the gRPC services on loopback) and push the Go toolchain
--from, then --to, reporting the bytes the second push sends against the
NAR size; then pull --from into an empty client cache and --to into the
same cache, reporting the bytes the second pull receives against the NAR
size and the NAR compressed with xz -6 -T0 (what a binary cache serves).
Each wire compression is measured on a fresh server: none (chunks in
their stored form, lz4 where it helps), zstd-messages (each message
compressed on its own), zstd (chunk streams), and zstd with --from as the
base whose files are dictionaries for the second push and pull, at the
default level and at zstd level 19.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cleanup, err := scratchDir(&work, "nixcas-bench-transfer-")
			if err != nil {
				return err
			}
			defer cleanup()
			return benchTransfer(cmd.Context(), from, to, work)
		},
	}
	cmd.Flags().StringVar(&from, "from", "go1.22.0", "Go release on the server and in the client cache first")
	cmd.Flags().StringVar(&to, "to", "go1.22.1", "Go release transferred second")
	cmd.Flags().StringVar(&work, "work", "", "scratch directory (default: a temporary one, removed after)")
	return cmd
}

// transferRow is one line of the report.
type transferRow struct {
	what          string
	bytes         uint64
	of            uint64 // NAR size of what was moved
	moved, stayed uint64 // chunks
	took          time.Duration
	cpu           time.Duration // of the process: client and server
}

func benchTransfer(ctx context.Context, from, to, work string) error {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench transfer: "+format+"\n", args...) }
	versions := []string{from, to}
	trees := map[string]string{}
	for _, v := range versions {
		logf("fetching %s", v)
		dir, err := bench.GoToolchain(ctx, v, filepath.Join(work, "corpus"))
		if err != nil {
			return err
		}
		trees[v] = dir
	}

	// Both trees into the pushing client's cache, once.
	pushCache, err := pebblestore.Open(filepath.Join(work, "push-cache"), pebblestore.Options{})
	if err != nil {
		return err
	}
	defer pushCache.Close()
	results := map[string]narrender.Result{}
	for _, v := range versions {
		r := client.DumpReader(trees[v])
		res, err := narrender.Ingest(ctx, r, pushCache, castore.WriterOptions{})
		r.Close()
		if err != nil {
			return err
		}
		results[v] = res
	}

	var rows []transferRow
	for _, mode := range []transferMode{
		{"none", client.CompressionNone, false, 0},
		{"zstd-messages", client.CompressionMessages, false, 0},
		{"zstd stream", client.CompressionStream, false, 0},
		{"zstd stream, base " + from, client.CompressionStream, true, 0},
		{"zstd stream level 19, base " + from, client.CompressionStream, true, 19},
	} {
		r, err := benchTransferMode(ctx, filepath.Join(work, fmt.Sprint(len(rows))), mode, versions, pushCache, results, logf)
		if err != nil {
			return err
		}
		rows = append(rows, r...)
	}

	logf("compressing the NAR of %s with xz -6 -T0", to)
	start := time.Now()
	xzSize, err := xzNARSize(ctx, trees[to])
	if err != nil {
		return err
	}
	xzTook := time.Since(start)

	pct := func(n, of uint64) string { return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of)) }
	fmt.Printf("Transfers of the Go toolchain %s (NAR %d bytes) with %s already on the other side; "+
		"bytes are those of the messages carrying chunks on the wire. For comparison, the NAR of %s compressed with xz -6 -T0 has %d bytes (%s of the NAR; %v to compress).\n\n",
		to, results[to].NARSize, from, to, xzSize, pct(xzSize, results[to].NARSize), xzTook.Round(100*time.Millisecond))
	fmt.Println("| transfer | wire bytes | of its NAR | of NAR.xz | chunks moved | chunks already there | time | NAR MB/s | CPU s (client and server) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		ofXZ := ""
		if r.of == results[to].NARSize {
			ofXZ = pct(r.bytes, xzSize)
		}
		fmt.Printf("| %s | %d | %s | %s | %d | %d | %v | %.0f | %.1f |\n", r.what, r.bytes, pct(r.bytes, r.of), ofXZ, r.moved, r.stayed, r.took.Round(time.Millisecond), float64(r.of)/r.took.Seconds()/1e6, r.cpu.Seconds())
	}
	return nil
}

// transferMode is a way of moving chunks the benchmark measures.
type transferMode struct {
	name        string
	compression string // client.Options.Compression
	base        bool   // the first version is the base of the second
	level       int    // client.Options.WireLevel
}

// benchTransferMode runs the pushes and pulls in one mode, against a
// fresh server in dir.
func benchTransferMode(ctx context.Context, dir string, m transferMode, versions []string, pushCache castore.Store, results map[string]narrender.Result, logf func(string, ...any)) ([]transferRow, error) {
	mode := m.name
	var base *castore.Entry
	if m.base {
		root := results[versions[0]].Root
		base = &root
	}
	srvStore, err := pebblestore.Open(filepath.Join(dir, "server"), pebblestore.Options{})
	if err != nil {
		return nil, err
	}
	defer srvStore.Close()
	srv, err := grpcapi.NewServer(grpcapi.Options{CAS: srvStore, Index: store.NewIndex(srvStore, srvStore)})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go srv.Serve(ln)
	defer srv.Stop()

	var rows []transferRow
	pusher, err := client.Dial(ln.Addr().String(), client.Options{Cache: pushCache, Compression: m.compression, WireLevel: m.level})
	if err != nil {
		return nil, err
	}
	defer pusher.Close()
	for i, v := range versions {
		var from *castore.Entry
		if i > 0 {
			from = base
		}
		start, cpu := time.Now(), bench.ProcessCPU()
		st, err := pusher.PushTreeFrom(ctx, results[v].Root, from)
		if err != nil {
			return nil, err
		}
		took, cpu := time.Since(start), bench.ProcessCPU()-cpu
		logf("compression %s: pushed %s in %v: %+v", mode, v, took.Round(time.Millisecond), st)
		what := fmt.Sprintf("push %s, compression %s", v, mode)
		if i == 0 {
			what += ", to an empty server"
		}
		rows = append(rows, transferRow{what, st.BytesSent, results[v].NARSize, st.ChunksSent, st.ChunksSkipped, took, cpu})
	}

	pullCache, err := pebblestore.Open(filepath.Join(dir, "pull-cache"), pebblestore.Options{})
	if err != nil {
		return nil, err
	}
	defer pullCache.Close()
	puller, err := client.Dial(ln.Addr().String(), client.Options{Cache: pullCache, Compression: m.compression, WireLevel: m.level})
	if err != nil {
		return nil, err
	}
	defer puller.Close()
	for i, v := range versions {
		dst := filepath.Join(dir, "pulled-"+v)
		var from *castore.Entry
		if i > 0 {
			from = base
		}
		start, cpu := time.Now(), bench.ProcessCPU()
		st, err := puller.PullFrom(ctx, results[v].Root, from, dst)
		if err != nil {
			return nil, err
		}
		took, cpu := time.Since(start), bench.ProcessCPU()-cpu
		logf("compression %s: pulled %s in %v: %+v", mode, v, took.Round(time.Millisecond), st)
		if sum, err := narSHA256(dst); err != nil || sum != results[v].NARSha256 {
			return nil, fmt.Errorf("pulled %s differs from the original (%v)", v, err)
		}
		what := fmt.Sprintf("pull %s, compression %s", v, mode)
		if i == 0 {
			what += ", into an empty cache"
		}
		rows = append(rows, transferRow{what, st.BytesReceived, results[v].NARSize, st.ChunksFetched, st.ChunksFromCache, took, cpu})
	}
	return rows, nil
}

// narSHA256 returns the SHA-256 of the NAR of the tree at path.
func narSHA256(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	r := client.DumpReader(path)
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

// xzNARSize returns the size of the NAR of the tree at path compressed
// with xz -6 -T0.
func xzNARSize(ctx context.Context, path string) (uint64, error) {
	r := client.DumpReader(path)
	defer r.Close()
	cmd := exec.CommandContext(ctx, "xz", "-6", "-T0", "-c")
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("xz: %w", err)
	}
	n, err := io.Copy(io.Discard, out)
	if werr := cmd.Wait(); err == nil {
		err = werr
	}
	return uint64(n), err
}
