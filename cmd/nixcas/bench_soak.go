package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
)

// soakOptions configure bench soak.
type soakOptions struct {
	duration    time.Duration
	concurrency int
	interval    time.Duration
	work        string
}

func newBenchSoakCommand() *cobra.Command {
	var o soakOptions
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "Mixed HTTP uploads and downloads, pushes and pulls against a nixcas serve child, checking every byte",
		Long: `Start "nixcas serve" (this binary) as a child process on loopback and run,
for --duration, --concurrency workers that each take turns at four
operations on eight overlapping generated trees (about 1.6 MiB of NAR
each): an HTTP upload (PUT of the NAR and then of its narinfo, under a new
store path each time, as nix copy --to does), an HTTP download (narinfo
and NAR of a path uploaded before, NAR hash checked), a push (nixcas push
of the tree's directory, NAR hash checked) and a pull (nixcas pull of a
pushed root into a new directory, which is dumped again and its NAR hash
checked). push and pull run as child processes; each worker has its own
chunk caches, which stay warm.

Every --interval a line reports the operations done, throughput, and the
server's resident memory and open file descriptors; at the end a Markdown
table gives per operation the count, failures, NAR MB moved, MB/s and
p50/p99/max latency. Any failed or mismatching operation makes the command
fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.concurrency < 1 || o.duration <= 0 || o.interval <= 0 {
				return errors.New("--concurrency, --duration and --interval must be positive")
			}
			cleanup, err := scratchDir(&o.work, "nixcas-soak-")
			if err != nil {
				return err
			}
			defer cleanup()
			return runSoak(cmd.Context(), o, os.Stdout)
		},
	}
	cmd.Flags().DurationVar(&o.duration, "duration", 10*time.Minute, "how long to run")
	cmd.Flags().IntVar(&o.concurrency, "concurrency", 8, "operations at once")
	cmd.Flags().DurationVar(&o.interval, "interval", 10*time.Second, "time between two progress lines")
	cmd.Flags().StringVar(&o.work, "work", "", "scratch directory (default: a temporary one, removed at the end)")
	return cmd
}

// soakTree is one of the trees the soak moves.
type soakTree struct {
	dir     string
	nar     []byte
	narHash string // sha256:nixbase32

	mu   sync.Mutex
	root json.RawMessage // once pushed
}

// soakOp names the operations.
var soakOps = []string{"upload", "download", "push", "pull"}

// soakRun is the state of one soak.
type soakRun struct {
	o        soakOptions
	exe      string
	grpc     string
	httpBase string
	trees    []*soakTree

	mu        sync.Mutex
	uploaded  []soakUpload
	latencies map[string][]time.Duration
	bytes     map[string]int64
	failures  map[string]int
	errs      []error
}

// soakUpload is a store path uploaded over HTTP.
type soakUpload struct {
	hash string // the store path's hash part
	tree *soakTree
}

func runSoak(ctx context.Context, o soakOptions, out io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r := &soakRun{o: o, exe: exe, latencies: map[string][]time.Duration{}, bytes: map[string]int64{}, failures: map[string]int{}}
	if err := r.makeTrees(); err != nil {
		return err
	}
	srv, err := startSoakServer(ctx, exe, filepath.Join(o.work, "server"))
	if err != nil {
		return err
	}
	defer srv.stop()
	r.grpc, r.httpBase = srv.grpcAddr, "http://"+srv.httpAddr
	fmt.Fprintf(out, "nixcas serve (pid %d): gRPC %s, HTTP %s; %d workers for %s\n", srv.cmd.Process.Pid, r.grpc, r.httpBase, o.concurrency, o.duration)

	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for w := range o.concurrency {
		wg.Go(func() { r.worker(runCtx, w) })
	}
	start := time.Now()
	var samples []soakSample
	tick := time.NewTicker(o.interval)
	sample := func() {
		s := sampleProcess(srv.cmd.Process.Pid, time.Since(start))
		samples = append(samples, s)
		r.mu.Lock()
		var ops int
		var moved int64
		for _, k := range soakOps {
			ops += len(r.latencies[k])
			moved += r.bytes[k]
		}
		failed := len(r.errs)
		r.mu.Unlock()
		fmt.Fprintf(out, "%6.0fs  %6d ops  %8.1f MB  %6.1f MB/s  %3d failed  server RSS %6.1f MiB  fds %d\n",
			s.at.Seconds(), ops, float64(moved)/1e6, float64(moved)/1e6/s.at.Seconds(), failed, float64(s.rss)/(1<<20), s.fds)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-tick.C:
			sample()
		case <-done:
			break loop
		}
	}
	tick.Stop()
	elapsed := time.Since(start)
	sample()
	if err := ctx.Err(); err != nil {
		return err
	}
	r.report(out, elapsed, samples)
	if err := srv.stop(); err != nil {
		return fmt.Errorf("nixcas serve: %w", err)
	}
	if len(r.errs) > 0 {
		for _, err := range r.errs[:min(len(r.errs), 10)] {
			fmt.Fprintln(os.Stderr, "soak:", err)
		}
		return fmt.Errorf("%d operations failed", len(r.errs))
	}
	return nil
}

// makeTrees writes eight overlapping trees and their NARs.
func (r *soakRun) makeTrees() error {
	shared := testtree.Dir(testtree.Entries{
		"bin": testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Mixed(1, 1<<20))}),
		"lib": testtree.Dir(testtree.Entries{"data": testtree.File(testtree.Random(2, 200<<10)), "link": testtree.Link("data")}),
		"doc": testtree.File(testtree.Text("shared\n")),
	})
	if err := os.MkdirAll(filepath.Join(r.o.work, "trees"), 0o755); err != nil {
		return err
	}
	for i := range 8 {
		n := testtree.Dir(testtree.Entries{
			"shared": shared,
			"pair":   testtree.File(testtree.Random(uint64(100+i/2), 200<<10)),
			"own":    testtree.Exec(testtree.Mixed(uint64(1000+i), 150<<10)),
			"name":   testtree.File(testtree.Text(fmt.Sprintf("tree %d\n", i))),
		})
		t := &soakTree{dir: filepath.Join(r.o.work, "trees", strconv.Itoa(i))}
		if err := testtree.Write(t.dir, n); err != nil {
			return err
		}
		var nar bytes.Buffer
		if err := testtree.WriteNAR(&nar, n); err != nil {
			return err
		}
		sum := sha256.Sum256(nar.Bytes())
		t.nar, t.narHash = nar.Bytes(), "sha256:"+nixbase32.EncodeToString(sum[:])
		r.trees = append(r.trees, t)
	}
	return nil
}

// worker runs operations in turn until ctx ends.
func (r *soakRun) worker(ctx context.Context, w int) {
	rng := rand.New(rand.NewPCG(uint64(w), 1))
	for i := 0; ctx.Err() == nil; i++ {
		op := soakOps[(w+i)%len(soakOps)]
		t := r.trees[rng.IntN(len(r.trees))]
		var err error
		start := time.Now()
		var moved int64
		switch op {
		case "upload":
			moved, err = r.upload(ctx, t, fmt.Sprintf("%d-%d", w, i))
		case "download":
			r.mu.Lock()
			n := len(r.uploaded)
			var u soakUpload
			if n > 0 {
				u = r.uploaded[rng.IntN(n)]
			}
			r.mu.Unlock()
			if n == 0 {
				continue
			}
			moved, err = r.download(ctx, u)
		case "push":
			moved, err = r.push(ctx, t, w)
		case "pull":
			t.mu.Lock()
			root := t.root
			t.mu.Unlock()
			if root == nil {
				continue
			}
			moved, err = r.pull(ctx, t, root, w, i)
		}
		took := time.Since(start)
		if ctx.Err() != nil && err != nil {
			return // cut short by the end of the run
		}
		r.mu.Lock()
		r.latencies[op] = append(r.latencies[op], took)
		r.bytes[op] += moved
		if err != nil {
			r.failures[op]++
			r.errs = append(r.errs, fmt.Errorf("%s (worker %d): %w", op, w, err))
		}
		r.mu.Unlock()
	}
}

// upload PUTs t's NAR and a narinfo naming it, under a new store path.
func (r *soakRun) upload(ctx context.Context, t *soakTree, id string) (int64, error) {
	sum := sha256.Sum256([]byte("soak " + id))
	hash := nixbase32.EncodeToString(sum[:20])
	url := "nar/soak-" + id + ".nar"
	if err := r.put(ctx, url, "application/x-nix-nar", t.nar); err != nil {
		return 0, err
	}
	ni := fmt.Sprintf("StorePath: /nix/store/%s-soak-%s\nURL: %s\nCompression: none\nNarHash: %s\nNarSize: %d\nReferences: \n",
		hash, id, url, t.narHash, len(t.nar))
	if err := r.put(ctx, hash+".narinfo", "text/x-nix-narinfo", []byte(ni)); err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.uploaded = append(r.uploaded, soakUpload{hash: hash, tree: t})
	r.mu.Unlock()
	return int64(len(t.nar)), nil
}

func (r *soakRun) put(ctx context.Context, name, contentType string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, r.httpBase+"/"+name, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("PUT %s: %s: %s", name, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// download GETs an uploaded path's narinfo and NAR and checks the NAR.
func (r *soakRun) download(ctx context.Context, u soakUpload) (int64, error) {
	body, err := r.get(ctx, u.hash+".narinfo", io.Discard)
	if err != nil {
		return 0, err
	}
	var url, narHash string
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "URL: "); ok {
			url = v
		}
		if v, ok := strings.CutPrefix(line, "NarHash: "); ok {
			narHash = v
		}
	}
	if narHash != u.tree.narHash || url == "" {
		return 0, fmt.Errorf("narinfo %s: URL %q, NarHash %q, want NarHash %s", u.hash, url, narHash, u.tree.narHash)
	}
	h := sha256.New()
	if _, err := r.get(ctx, url, h); err != nil {
		return 0, err
	}
	if got := "sha256:" + nixbase32.EncodeToString(h.Sum(nil)); got != u.tree.narHash {
		return 0, fmt.Errorf("GET %s: NAR hashes to %s, want %s", url, got, u.tree.narHash)
	}
	return int64(len(u.tree.nar)), nil
}

// get fetches name: a narinfo is returned, anything else streamed to w.
func (r *soakRun) get(ctx context.Context, name string, w io.Writer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.httpBase+"/"+name, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", name, resp.Status)
	}
	if strings.HasSuffix(name, ".narinfo") {
		return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	_, err = io.Copy(w, resp.Body)
	return nil, err
}

// push runs nixcas push of t's directory.
func (r *soakRun) push(ctx context.Context, t *soakTree, w int) (int64, error) {
	out, err := r.run(ctx, "push", "--json", "--server", r.grpc, "--cache", filepath.Join(r.o.work, "push-cache-"+strconv.Itoa(w)), t.dir)
	if err != nil {
		return 0, err
	}
	var res struct {
		Root    json.RawMessage `json:"root"`
		NARHash string          `json:"narHash"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("push output %q: %w", out, err)
	}
	if res.NARHash != t.narHash {
		return 0, fmt.Errorf("push of %s: NAR hash %s, want %s", t.dir, res.NARHash, t.narHash)
	}
	t.mu.Lock()
	t.root = res.Root
	t.mu.Unlock()
	return int64(len(t.nar)), nil
}

// pull runs nixcas pull of t's root into a new directory and checks the
// NAR of what it wrote.
func (r *soakRun) pull(ctx context.Context, t *soakTree, root json.RawMessage, w, i int) (int64, error) {
	to := filepath.Join(r.o.work, fmt.Sprintf("pull-%d-%d", w, i))
	defer os.RemoveAll(to)
	if _, err := r.run(ctx, "pull", "--json", "--server", r.grpc, "--cache", filepath.Join(r.o.work, "pull-cache-"+strconv.Itoa(w)), "--root", string(root), "--to", to); err != nil {
		return 0, err
	}
	dump := client.DumpReader(to)
	defer dump.Close()
	h := sha256.New()
	if _, err := io.Copy(h, dump); err != nil {
		return 0, fmt.Errorf("dumping %s: %w", to, err)
	}
	if got := "sha256:" + nixbase32.EncodeToString(h.Sum(nil)); got != t.narHash {
		return 0, fmt.Errorf("pulled %s: NAR hashes to %s, want %s", to, got, t.narHash)
	}
	return int64(len(t.nar)), nil
}

// run runs this binary with args, returning its stdout.
func (r *soakRun) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.exe, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("nixcas %s: %w: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// report prints the per-operation table and the server's resources.
func (r *soakRun) report(out io.Writer, elapsed time.Duration, samples []soakSample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(out, "\n%d workers for %s\n\n", r.o.concurrency, elapsed.Round(time.Second))
	fmt.Fprintln(out, "| operation | count | failed | NAR MB | MB/s | p50 ms | p99 ms | max ms |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, op := range soakOps {
		l := slices.Clone(r.latencies[op])
		slices.Sort(l)
		q := func(p float64) string {
			if len(l) == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", float64(l[min(len(l)-1, int(p*float64(len(l))))].Microseconds())/1000)
		}
		fmt.Fprintf(out, "| %s | %d | %d | %.1f | %.1f | %s | %s | %s |\n", op, len(l), r.failures[op],
			float64(r.bytes[op])/1e6, float64(r.bytes[op])/1e6/elapsed.Seconds(), q(0.5), q(0.99), q(1))
	}
	if len(samples) == 0 {
		return
	}
	first, last := samples[0], samples[len(samples)-1]
	maxRSS, maxFDs := first.rss, first.fds
	for _, s := range samples {
		maxRSS, maxFDs = max(maxRSS, s.rss), max(maxFDs, s.fds)
	}
	fmt.Fprintf(out, "\nserver RSS: first sample %.1f MiB, max %.1f MiB, last %.1f MiB; open fds: first %d, max %d, last %d\n",
		float64(first.rss)/(1<<20), float64(maxRSS)/(1<<20), float64(last.rss)/(1<<20), first.fds, maxFDs, last.fds)
}

// soakSample is the server's resources at one time.
type soakSample struct {
	at  time.Duration
	rss int64 // bytes; -1 when unknown
	fds int   // -1 when unknown
}

// sampleProcess reads a process's resident memory and open file
// descriptors from /proc.
func sampleProcess(pid int, at time.Duration) soakSample {
	s := soakSample{at: at, rss: -1, fds: -1}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64); err == nil {
					s.rss = kb << 10
				}
			}
		}
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.fds = len(fds)
	}
	return s
}

// soakServer is the nixcas serve child.
type soakServer struct {
	cmd                *exec.Cmd
	grpcAddr, httpAddr string
	stderr             *bytes.Buffer
	mu                 *sync.Mutex
	done               chan error
	stopOnce           sync.Once
	stopErr            error
}

var soakServeAddrRE = regexp.MustCompile(`gRPC on (\S+), HTTP on (\S+)`)

func startSoakServer(ctx context.Context, exe, data string) (*soakServer, error) {
	s := &soakServer{stderr: new(bytes.Buffer), mu: new(sync.Mutex), done: make(chan error, 1)}
	s.cmd = exec.Command(exe, "serve", "--data", data, "--listen-grpc", "127.0.0.1:0", "--listen-http", "127.0.0.1:0")
	pipe, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	first := make(chan string, 1)
	go func() {
		br := bufio.NewReader(pipe)
		line, _ := br.ReadString('\n')
		first <- line
		// Keep the last stderr for errors; drain the rest.
		for {
			l, err := br.ReadString('\n')
			s.mu.Lock()
			if s.stderr.Len() > 64<<10 {
				s.stderr.Reset()
			}
			s.stderr.WriteString(l)
			s.mu.Unlock()
			if err != nil {
				break
			}
		}
		s.done <- s.cmd.Wait()
	}()
	select {
	case line := <-first:
		m := soakServeAddrRE.FindStringSubmatch(line)
		if m == nil {
			s.cmd.Process.Kill()
			return nil, fmt.Errorf("nixcas serve: %s", strings.TrimSpace(line))
		}
		s.grpcAddr, s.httpAddr = m[1], m[2]
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		return nil, errors.New("nixcas serve did not listen within a minute")
	case <-ctx.Done():
		s.cmd.Process.Kill()
		return nil, ctx.Err()
	}
	return s, nil
}

// stop ends the server with SIGTERM and returns how it exited; it is safe
// to call twice.
func (s *soakServer) stop() error {
	s.stopOnce.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-s.done:
			if err != nil {
				s.mu.Lock()
				s.stopErr = fmt.Errorf("%w: %s", err, s.stderr.String())
				s.mu.Unlock()
			}
		case <-time.After(time.Minute):
			s.cmd.Process.Kill()
			s.stopErr = errors.New("did not stop within a minute of SIGTERM")
		}
	})
	return s.stopErr
}
