//go:build benchhttp

package httpcache_test

// BenchmarkNixCopyUploaded measures, for each compression Nix uploads
// with, what the uploading machine's next `nix copy --from` costs: its Nix
// remembers the narinfos it wrote and fetches each NAR at the URL it
// uploaded it to (nar/<filehash>.nar.xz, ...), which nixcas serves framed
// in that format without compressing (bzip2: compressed on the fly). It
// compares with a machine without that memory, which fetches nixcas's own
// nar/<narhash>.nar. Same payload and set-up as BenchmarkNixCopy:
//
//	go test -tags benchhttp -run '^$' -bench BenchmarkNixCopyUploaded -benchtime 1x -timeout 60m ./server/httpcache/
//
// NIXCAS_BENCH_COMPRESSIONS (comma-separated, default all) picks the
// compressions. Nix uploads with compression-level=1 where it takes one,
// to keep the upload (not measured here) short; the level does not change
// what is served.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixcas/nixcas/bench"
)

func BenchmarkNixCopyUploaded(b *testing.B) {
	const rounds = 3
	ctx := b.Context()
	work := os.Getenv("NIXCAS_BENCH_DIR")
	if work == "" {
		work = filepath.Join(os.TempDir(), "nixcas-bench-http")
	}
	tree, err := bench.GoToolchain(ctx, "go1.22.0", filepath.Join(work, "corpus"))
	if err != nil {
		b.Fatal(err)
	}
	run := filepath.Join(work, "run-uploaded")
	removeStore(run)
	b.Cleanup(func() { removeStore(run) })
	n := newNix(b)

	src := filepath.Join(run, "src")
	entries, err := os.ReadDir(tree)
	if err != nil {
		b.Fatal(err)
	}
	args := []string{"--store", src, "--add"}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			args = append(args, filepath.Join(tree, e.Name()))
		}
	}
	paths := strings.Fields(n.run("nix-store", args...))
	var narBytes uint64
	for _, info := range n.pathInfos(src, paths...) {
		narBytes += info.NarSize
	}
	mib := float64(narBytes) / (1 << 20)

	dstDir := run
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dstDir = filepath.Join("/dev/shm", "nixcas-bench-uploaded")
		defer removeStore(dstDir)
	}
	compressions := []string{"none", "xz", "zstd", "br", "gzip", "lz4", "bzip2"}
	if s := os.Getenv("NIXCAS_BENCH_COMPRESSIONS"); s != "" {
		compressions = strings.Split(s, ",")
	}

	fmt.Printf("\npayload: Go toolchain go1.22.0, %d store paths, %.1f MiB of NAR; %d rounds, median MiB/s of NAR and server CPU per GiB of NAR\n",
		len(paths), mib, rounds)
	fmt.Printf("\n| uploaded with | upload, s | via uploaded URL, MiB/s | server CPU, s/GiB | via nar/<narhash>.nar, MiB/s | server CPU, s/GiB |\n|---|---:|---:|---:|---:|---:|\n")
	for _, c := range compressions {
		url, pid := startNixcas(b, "nixcas", filepath.Join(run, "data-"+c))
		uploader := newNix(b)
		to := url + "?compression=" + c
		if c != "br" && c != "none" {
			to += "&compression-level=1"
		}
		start := time.Now()
		uploader.run("nix", append([]string{"copy", "--from", src, "--to", to}, paths...)...)
		upload := time.Since(start)

		secs := map[string][]float64{}
		cpu := map[string]time.Duration{}
		for r := range rounds {
			for _, via := range []string{"uploaded", "own"} {
				client := uploader // remembers the narinfos it wrote
				if via == "own" {
					client = newNix(b)
				}
				dst := filepath.Join(dstDir, fmt.Sprintf("dst-%s-%s-%d", c, via, r))
				exec.Command("sync").Run()
				cpu0 := procCPU(pid)
				start := time.Now()
				client.run("nix", append([]string{"copy", "--no-check-sigs", "--from", url, "--to", dst}, paths...)...)
				secs[via] = append(secs[via], time.Since(start).Seconds())
				cpu[via] += procCPU(pid) - cpu0
				removeStore(dst)
			}
		}
		median := func(s []float64) float64 { return mib / slices.Sorted(slices.Values(s))[len(s)/2] }
		perGiB := func(d time.Duration) float64 { return d.Seconds() * 1024 / mib / rounds }
		fmt.Printf("| %s | %.1f | %.0f | %.2f | %.0f | %.2f |\n", c, upload.Seconds(),
			median(secs["uploaded"]), perGiB(cpu["uploaded"]), median(secs["own"]), perGiB(cpu["own"]))
		b.ReportMetric(median(secs["uploaded"]), c+"-uploaded-MiB/s")
	}
}
