package main

// End-to-end tests: they build the nixcas binary once and drive it as a
// subprocess, checking `nar ingest`, `nar render` and `store stats` against
// reference NARs (the tvix test vectors and `nix-store --dump` of generated
// trees).
//
// Identifiers are prefixed with e2e to stay clear of the command's own.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/internal/testminio"
	"github.com/nixcas/nixcas/internal/testtree"
)

// e2eBinary is the nixcas binary built by TestMain; e2eXDGDataHome and
// e2eXDGCacheHome are empty directories used as $XDG_DATA_HOME and
// $XDG_CACHE_HOME of every nixcas process, so that a command run without
// --data cannot touch the user's default store, nor one run without
// --cache the user's chunk cache (the test process keeps its own
// $XDG_CACHE_HOME, where testminio finds the MinIO binary).
var e2eBinary, e2eXDGDataHome, e2eXDGCacheHome string

func TestMain(m *testing.M) {
	os.Exit(e2eMain(m))
}

func e2eMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "nixcas-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	e2eBinary = filepath.Join(dir, "nixcas")
	e2eXDGDataHome = filepath.Join(dir, "xdg-data")
	e2eXDGCacheHome = filepath.Join(dir, "xdg-cache")
	for _, d := range []string{e2eXDGDataHome, e2eXDGCacheHome} {
		if err := os.Mkdir(d, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	build := exec.Command("go", "build", "-o", e2eBinary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building nixcas: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// e2eEnv is the environment of every nixcas process a test starts: the
// test's own, $XDG_DATA_HOME and $XDG_CACHE_HOME set to e2eXDGDataHome and
// e2eXDGCacheHome, and the credentials testminio gives all its servers
// (the same fixed pair for each), so that a test using MinIO need not
// change the process environment and can run in parallel with others.
func e2eEnv() []string {
	return append(os.Environ(), "XDG_DATA_HOME="+e2eXDGDataHome, "XDG_CACHE_HOME="+e2eXDGCacheHome,
		"AWS_ACCESS_KEY_ID="+testminio.AccessKey, "AWS_SECRET_ACCESS_KEY="+testminio.SecretKey)
}

// e2eMaxRSS is the peak resident set size any nixcas process may reach,
// whatever the size of its input: a store's fixed budgets (memtables,
// block cache, hot frames being packed, a zstd encoder per core with a
// window of a hot frame) and no more. With 1 MiB hot frames, ingesting a
// 4 GiB file peaked at 236 to 261 MiB on a loaded 2-core machine; with
// 4 MiB hot frames a 1 GiB file peaks at 379 to 436 MiB, and at 756 MiB
// with the writers' wait for the packer taken out. The bound, storage
// v2's memory target, leaves room for load and still fails any process
// that holds a file's bytes or outruns its packer.
const e2eMaxRSS = 512 << 20

// ---------------------------------------------------------------------------
// Running the binary.

// e2eInvocation describes one run of the nixcas binary.
type e2eInvocation struct {
	Args   []string
	Stdin  io.Reader // nil: empty input
	Stdout io.Writer // nil: captured into e2eResult.Stdout
	// CloseAfterStart is closed once the process has started; used for the
	// parent's copy of a pipe end handed to the child.
	CloseAfterStart io.Closer
	Timeout         time.Duration // 0: five minutes
}

type e2eResult struct {
	Stdout  []byte
	Stderr  string
	Err     error // nil if the process exited with status 0
	MaxRSS  int64 // peak resident set size in bytes
	Elapsed time.Duration
}

func (inv e2eInvocation) run(t testing.TB) e2eResult {
	t.Helper()
	timeout := inv.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2eBinary, inv.Args...)
	// On timeout the child is sent SIGQUIT, which makes a Go program
	// print every goroutine's stack: the failure then says where it hung.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Stdin = inv.Stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	if inv.Stdout != nil {
		cmd.Stdout = inv.Stdout
	}
	cmd.Stderr = &stderr
	cmd.Env = e2eEnv()

	start := time.Now()
	err := cmd.Start()
	if inv.CloseAfterStart != nil {
		inv.CloseAfterStart.Close()
	}
	if err != nil {
		t.Fatalf("starting nixcas: %v", err)
	}
	err = cmd.Wait()
	res := e2eResult{Stdout: stdout.Bytes(), Stderr: stderr.String(), Err: err, Elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("nixcas %s: did not finish within %v (stderr: %s)", e2eArgs(inv.Args), timeout, res.Stderr)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.MaxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	if e2eCrashRE.MatchString(res.Stderr) {
		t.Fatalf("nixcas %s crashed:\n%s", e2eArgs(inv.Args), res.Stderr)
	}
	return res
}

// e2eErrorMessage returns stderr without the timestamped lines of the
// standard log package (storage engine chatter), leaving the error message.
func e2eErrorMessage(stderr string) string {
	var msg []string
	for line := range strings.Lines(stderr) {
		if !e2eLogLineRE.MatchString(line) && strings.TrimSpace(line) != "" {
			msg = append(msg, strings.TrimRight(line, "\n"))
		}
	}
	return strings.Join(msg, "\n")
}

var (
	e2eLogLineRE = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d`)
	e2eOffsetRE  = regexp.MustCompile(`offset\D{0,16}\d`)
)

// e2eCrashRE matches the output of a Go panic or fatal runtime error.
var e2eCrashRE = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[)`)

// mustSucceed fails the test unless the invocation exited with status 0.
func (inv e2eInvocation) mustSucceed(t testing.TB) e2eResult {
	t.Helper()
	res := inv.run(t)
	if res.Err != nil {
		t.Fatalf("nixcas %s: %v\nstderr:\n%s", e2eArgs(inv.Args), res.Err, res.Stderr)
	}
	return res
}

// e2eArgs abbreviates long arguments (such as --root JSON) for messages.
func e2eArgs(args []string) string {
	short := make([]string, len(args))
	for i, a := range args {
		if len(a) > 120 {
			a = a[:120] + "..."
		}
		short[i] = a
	}
	return strings.Join(short, " ")
}

// ---------------------------------------------------------------------------
// Store commands.

// e2eStore is a nixcas data directory.
type e2eStore struct{ dir string }

func newE2EStore(t testing.TB) *e2eStore {
	return &e2eStore{dir: t.TempDir()}
}

// e2eIngest is the output of `nar ingest`.
type e2eIngest struct {
	NarHash string          `json:"narHash"`
	NarSize int64           `json:"narSize"`
	Root    json.RawMessage `json:"root"`
}

// e2eRoot is the decoded root entry; exactly one field is set.
type e2eRoot struct {
	Directory *struct {
		Digest string `json:"digest"`
		Size   uint64 `json:"size"`
	} `json:"directory"`
	File *struct {
		Digest     string `json:"digest"`
		Size       uint64 `json:"size"`
		Executable bool   `json:"executable"`
	} `json:"file"`
	Symlink *struct {
		Target string `json:"target"`
	} `json:"symlink"`
}

// ingest ingests the NAR at path, passing it as a file argument.
func (s *e2eStore) ingest(t testing.TB, path string) e2eIngest {
	t.Helper()
	res := e2eInvocation{Args: []string{"nar", "ingest", "--data", s.dir, path}}.mustSucceed(t)
	return e2eParseIngest(t, res.Stdout)
}

// ingestStdin ingests a NAR read from r through standard input.
func (s *e2eStore) ingestStdin(t testing.TB, r io.Reader) e2eIngest {
	t.Helper()
	res := e2eInvocation{Args: []string{"nar", "ingest", "--data", s.dir, "-"}, Stdin: r}.mustSucceed(t)
	return e2eParseIngest(t, res.Stdout)
}

func e2eParseIngest(t testing.TB, out []byte) e2eIngest {
	t.Helper()
	var got e2eIngest
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("ingest output %q: %v", out, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("ingest output %q: more than one JSON value", out)
	}
	e2eDecodeRoot(t, got.Root)
	return got
}

var e2eDigestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func e2eDecodeRoot(t testing.TB, raw json.RawMessage) e2eRoot {
	t.Helper()
	var r e2eRoot
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("root %s: %v", raw, err)
	}
	set := 0
	if r.Directory != nil {
		set++
		if !e2eDigestRE.MatchString(r.Directory.Digest) {
			t.Errorf("root %s: directory digest is not 64 lowercase hex digits", raw)
		}
	}
	if r.File != nil {
		set++
		if !e2eDigestRE.MatchString(r.File.Digest) {
			t.Errorf("root %s: file digest is not 64 lowercase hex digits", raw)
		}
	}
	if r.Symlink != nil {
		set++
	}
	if set != 1 {
		t.Fatalf("root %s: want exactly one of directory, file, symlink", raw)
	}
	return r
}

// renderTo renders root into a new file at path.
func (s *e2eStore) renderTo(t testing.TB, root json.RawMessage, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e2eInvocation{
		Args:   []string{"nar", "render", "--data", s.dir, "--root", string(root)},
		Stdout: f,
	}.mustSucceed(t)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// e2eStats is the output of `store stats --json`.
type e2eStats struct {
	LogicalBytes     int64 `json:"logicalBytes"`
	UniqueChunkBytes int64 `json:"uniqueChunkBytes"`
	StoredBytes      int64 `json:"storedBytes"`
	DiskBytes        int64 `json:"diskBytes"`
	Chunks           int64 `json:"chunks"`
	Blobs            int64 `json:"blobs"`
	Directories      int64 `json:"directories"`
}

func (s *e2eStore) stats(t testing.TB) e2eStats {
	t.Helper()
	res := e2eInvocation{Args: []string{"store", "stats", "--data", s.dir, "--json"}}.mustSucceed(t)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(res.Stdout, &fields); err != nil {
		t.Fatalf("store stats output %q: %v", res.Stdout, err)
	}
	for _, k := range []string{"logicalBytes", "uniqueChunkBytes", "storedBytes", "diskBytes", "chunks", "blobs", "directories"} {
		if _, ok := fields[k]; !ok {
			t.Fatalf("store stats output %s lacks %q", res.Stdout, k)
		}
	}
	var st e2eStats
	if err := json.Unmarshal(res.Stdout, &st); err != nil {
		t.Fatalf("store stats output %q: %v", res.Stdout, err)
	}
	return st
}

// ---------------------------------------------------------------------------
// Reference NARs and comparisons.

// e2eNARHash formats a SHA-256 digest the way ingest prints narHash.
func e2eNARHash(sum [32]byte) string {
	return "sha256:" + nixbase32.EncodeToString(sum[:])
}

// e2eHashFile returns the SHA-256 and size of the file at path.
func e2eHashFile(t testing.TB, path string) ([32]byte, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil)), n
}

// e2eSameFile fails the test unless the files at want and got are
// identical, reporting the first differing byte offset. It streams both, so
// it is fine for large files.
func e2eSameFile(t testing.TB, want, got string) {
	t.Helper()
	fw, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	fg, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer fg.Close()
	rw, rg := bufio.NewReaderSize(fw, 1<<20), bufio.NewReaderSize(fg, 1<<20)
	bw, bg := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		nw, errw := io.ReadFull(rw, bw)
		ng, errg := io.ReadFull(rg, bg)
		if i := e2eFirstDiff(bw[:nw], bg[:ng]); i >= 0 {
			t.Fatalf("rendered NAR differs from the ingested one at byte offset %d", off+int64(i))
		}
		off += int64(nw)
		endw := errw == io.EOF || errw == io.ErrUnexpectedEOF
		endg := errg == io.EOF || errg == io.ErrUnexpectedEOF
		if errw != nil && !endw {
			t.Fatal(errw)
		}
		if errg != nil && !endg {
			t.Fatal(errg)
		}
		if endw || endg {
			return
		}
	}
}

// e2eFirstDiff returns the first index at which a and b differ (including
// one ending before the other), or -1 if they are equal. bytes.Equal
// answers the common case: the loop below is instrumented byte by byte
// under the race detector.
func e2eFirstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestE2EFirstDiff checks the comparison every render check rests on.
func TestE2EFirstDiff(t *testing.T) {
	t.Parallel()
	a := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	changed := func(i int) []byte {
		b := bytes.Clone(a)
		b[i] ^= 1
		return b
	}
	for _, tc := range []struct {
		name string
		a, b []byte
		want int
	}{
		{"equal", a, bytes.Clone(a), -1},
		{"both empty", nil, []byte{}, -1},
		{"first byte", a, changed(0), 0},
		{"middle byte", a, changed(30001), 30001},
		{"last byte", a, changed(len(a) - 1), len(a) - 1},
		{"shorter", a[:100], a, 100},
		{"longer", a, a[:100], 100},
		{"empty against data", nil, a, 0},
	} {
		if got := e2eFirstDiff(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: e2eFirstDiff = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func e2eRequireNix(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"nix-store", "nix-hash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testing.Short() {
				t.Skipf("%s not installed", tool)
			}
			t.Fatalf("%s not found in PATH; run scripts/test-deps.sh", tool)
		}
	}
}

// e2eReferenceNAR is a tree on disk together with its NAR as produced by Nix.
type e2eReferenceNAR struct {
	Path string // the NAR file
	Sum  [32]byte
	Size int64
}

// e2eDumpTree builds tree under a new temporary directory and writes its
// NAR with `nix-store --dump`, checking the hash against `nix-hash`. Trees
// with paths beyond PATH_MAX cannot be read by Nix; their NAR comes from
// testtree.WriteNAR, which is checked against Nix in its own tests.
func e2eDumpTree(t testing.TB, tree testtree.Tree) e2eReferenceNAR {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "t")
	testtree.Build(t, root, tree.Root)
	ref := e2eReferenceNAR{Path: filepath.Join(dir, "t.nar")}
	out, err := os.Create(ref.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	if !tree.Root.FitsPathMax(root) {
		if err := testtree.WriteNAR(out, tree.Root); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
		ref.Sum, ref.Size = e2eHashFile(t, ref.Path)
		return ref
	}

	dump := exec.Command("nix-store", "--dump", root)
	dump.Stdout = out
	var stderr bytes.Buffer
	dump.Stderr = &stderr
	if err := dump.Run(); err != nil {
		t.Fatalf("nix-store --dump: %v\n%s", err, stderr.Bytes())
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	ref.Sum, ref.Size = e2eHashFile(t, ref.Path)

	nixHash, err := exec.Command("nix-hash", "--type", "sha256", "--base32", root).Output()
	if err != nil {
		t.Fatalf("nix-hash: %v", err)
	}
	if got, want := "sha256:"+strings.TrimSpace(string(nixHash)), e2eNARHash(ref.Sum); got != want {
		t.Fatalf("nix-hash says %s but the dumped NAR hashes to %s", got, want)
	}
	return ref
}

// e2eCheckRoot compares an ingested root entry with the node it came from.
func e2eCheckRoot(t testing.TB, raw json.RawMessage, want *testtree.Node) {
	t.Helper()
	got := e2eDecodeRoot(t, raw)
	switch want.Type {
	case testtree.Directory:
		if got.Directory == nil {
			t.Fatalf("root %s: want a directory", raw)
		}
		if n := uint64(want.Descendants()); got.Directory.Size != n {
			t.Errorf("root %s: directory size %d, want %d (nodes below the root)", raw, got.Directory.Size, n)
		}
	case testtree.Regular:
		if got.File == nil {
			t.Fatalf("root %s: want a file", raw)
		}
		if n := uint64(want.Content.Size()); got.File.Size != n || got.File.Executable != want.Executable {
			t.Errorf("root %s: want size %d, executable %v", raw, n, want.Executable)
		}
	case testtree.Symlink:
		if got.Symlink == nil || got.Symlink.Target != want.Target {
			t.Errorf("root %s: want symlink to %q", raw, want.Target)
		}
	}
}

// e2eRoundTrip ingests ref into s, checks the result against the reference
// NAR and the tree, then renders it back and compares bytes.
func e2eRoundTrip(t testing.TB, s *e2eStore, ref e2eReferenceNAR, tree testtree.Tree) e2eIngest {
	t.Helper()
	got := s.ingest(t, ref.Path)
	if want := e2eNARHash(ref.Sum); got.NarHash != want {
		t.Errorf("narHash = %s, want %s", got.NarHash, want)
	}
	if got.NarSize != ref.Size {
		t.Errorf("narSize = %d, want %d", got.NarSize, ref.Size)
	}
	e2eCheckRoot(t, got.Root, tree.Root)
	e2eCheckRender(t, s, got.Root, ref.Path)
	return got
}

// e2eCheckRender renders root and compares it with the NAR file at want.
func e2eCheckRender(t testing.TB, s *e2eStore, root json.RawMessage, want string) {
	t.Helper()
	rendered := filepath.Join(t.TempDir(), "rendered.nar")
	s.renderTo(t, root, rendered)
	e2eSameFile(t, want, rendered)
}

// e2eWriteNARFile writes the NAR of n to a new temporary file.
func e2eWriteNARFile(t testing.TB, n *testtree.Node) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.nar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testtree.WriteNAR(f, n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------
// Tests.

// e2eTvixRef is one line of testdata/tvix/refs.jsonl: a NAR from the tvix
// test suite with the root entry and NAR hash tvix computes for it.
type e2eTvixRef struct {
	NAR        string `json:"nar"`
	NARSha256  string `json:"narSha256"` // hex
	NARSize    int64  `json:"narSize"`
	Type       string `json:"type"`
	Digest     string `json:"digest"`
	Size       uint64 `json:"size"`
	Executable bool   `json:"executable"`
	Target     string `json:"target"`
}

func TestTvixVectors(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("testdata", "tvix", "refs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var refs []e2eTvixRef
	for line := range strings.Lines(string(data)) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var ref e2eTvixRef
		if err := json.Unmarshal([]byte(line), &ref); err != nil {
			t.Fatalf("refs.jsonl: %v", err)
		}
		refs = append(refs, ref)
	}
	if len(refs) != 6 {
		t.Fatalf("refs.jsonl has %d vectors, want 6", len(refs))
	}

	s := newE2EStore(t)
	for _, ref := range refs {
		t.Run(strings.TrimSuffix(ref.NAR, ".nar"), func(t *testing.T) {
			path := filepath.Join("testdata", "tvix", ref.NAR)
			sum, err := hex.DecodeString(ref.NARSha256)
			if err != nil || len(sum) != 32 {
				t.Fatalf("bad narSha256 %q", ref.NARSha256)
			}

			got := s.ingest(t, path)
			if want := e2eNARHash([32]byte(sum)); got.NarHash != want {
				t.Errorf("narHash = %s, want %s", got.NarHash, want)
			}
			if got.NarSize != ref.NARSize {
				t.Errorf("narSize = %d, want %d", got.NarSize, ref.NARSize)
			}
			root := e2eDecodeRoot(t, got.Root)
			switch ref.Type {
			case "directory":
				if root.Directory == nil || root.Directory.Digest != ref.Digest || root.Directory.Size != ref.Size {
					t.Errorf("root = %s, want directory %s size %d", got.Root, ref.Digest, ref.Size)
				}
			case "file":
				if root.File == nil || root.File.Digest != ref.Digest || root.File.Size != ref.Size || root.File.Executable != ref.Executable {
					t.Errorf("root = %s, want file %s size %d executable %v", got.Root, ref.Digest, ref.Size, ref.Executable)
				}
			case "symlink":
				if root.Symlink == nil || root.Symlink.Target != ref.Target {
					t.Errorf("root = %s, want symlink to %q", got.Root, ref.Target)
				}
			default:
				t.Fatalf("unknown type %q in refs.jsonl", ref.Type)
			}

			// Standard input must give the same answer as a file argument.
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if again := s.ingestStdin(t, f); !bytes.Equal(again.Root, got.Root) || again.NarHash != got.NarHash || again.NarSize != got.NarSize {
				t.Errorf("ingest from stdin gave %+v, from file %+v", again, got)
			}

			e2eCheckRender(t, s, got.Root, path)
		})
	}
}

func TestEdgeCaseTrees(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	for _, tree := range testtree.EdgeCases() {
		t.Run(tree.Name, func(t *testing.T) {
			t.Parallel()
			ref := e2eDumpTree(t, tree)
			e2eRoundTrip(t, newE2EStore(t), ref, tree)
		})
	}
}

// TestEdgeCaseTreesSharedStore ingests every edge-case tree into one store
// and only then renders them all, so trees sharing content and later
// ingests cannot disturb earlier ones.
func TestEdgeCaseTreesSharedStore(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	s := newE2EStore(t)
	trees := testtree.EdgeCases()
	refs := make([]e2eReferenceNAR, len(trees))
	roots := make([]json.RawMessage, len(trees))
	for i, tree := range trees {
		refs[i] = e2eDumpTree(t, tree)
		got := s.ingest(t, refs[i].Path)
		if want := e2eNARHash(refs[i].Sum); got.NarHash != want {
			t.Errorf("%s: narHash = %s, want %s", tree.Name, got.NarHash, want)
		}
		roots[i] = got.Root
	}
	for i, tree := range trees {
		t.Run(tree.Name, func(t *testing.T) {
			e2eCheckRoot(t, roots[i], tree.Root)
			e2eCheckRender(t, s, roots[i], refs[i].Path)
		})
	}
}

func TestBigTree(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("writes and ingests a 300 MiB file")
	}
	e2eRequireNix(t)
	tree := testtree.Big()
	s := newE2EStore(t)
	ref := e2eDumpTree(t, tree)
	e2eRoundTrip(t, s, ref, tree)

	st := s.stats(t)
	if st.LogicalBytes != tree.Root.FileBytes() {
		t.Errorf("logicalBytes = %d, want %d", st.LogicalBytes, tree.Root.FileBytes())
	}
	// Roughly half the content is text, so compression must show.
	if float64(st.StoredBytes) > 0.9*float64(st.LogicalBytes) {
		t.Errorf("storedBytes = %d for %d logical bytes of partly compressible data", st.StoredBytes, st.LogicalBytes)
	}
}

func TestDedupRepeatedFiles(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	tree := testtree.Dedup()
	total := tree.Root.FileBytes()
	distinct, err := tree.Root.DistinctFileBytes()
	if err != nil {
		t.Fatal(err)
	}
	repeated := total - distinct

	s := newE2EStore(t)
	ref := e2eDumpTree(t, tree)
	first := e2eRoundTrip(t, s, ref, tree)
	once := s.stats(t)
	if once.LogicalBytes != total {
		t.Errorf("logicalBytes = %d, want %d (all file bytes, repeats included)", once.LogicalBytes, total)
	}
	if once.UniqueChunkBytes > distinct {
		t.Errorf("uniqueChunkBytes = %d, more than the %d bytes of distinct file content", once.UniqueChunkBytes, distinct)
	}
	if saved := once.LogicalBytes - once.UniqueChunkBytes; saved < repeated {
		t.Errorf("logicalBytes - uniqueChunkBytes = %d, want at least the %d repeated bytes", saved, repeated)
	}

	second := s.ingest(t, ref.Path)
	if !bytes.Equal(second.Root, first.Root) || second.NarHash != first.NarHash {
		t.Errorf("second ingest gave root %s, first %s", second.Root, first.Root)
	}
	twice := s.stats(t)
	if twice.LogicalBytes != 2*once.LogicalBytes {
		t.Errorf("logicalBytes after ingesting twice = %d, want %d", twice.LogicalBytes, 2*once.LogicalBytes)
	}
	for _, c := range []struct {
		name          string
		before, after int64
	}{
		{"chunks", once.Chunks, twice.Chunks},
		{"uniqueChunkBytes", once.UniqueChunkBytes, twice.UniqueChunkBytes},
		{"storedBytes", once.StoredBytes, twice.StoredBytes},
		{"blobs", once.Blobs, twice.Blobs},
		{"directories", once.Directories, twice.Directories},
	} {
		if c.before != c.after {
			t.Errorf("%s changed from %d to %d when ingesting the same NAR again", c.name, c.before, c.after)
		}
	}
}

// TestDedupInsertedBytes checks content-defined chunking: inserting a few
// bytes into the middle of a large file must only create chunks around the
// edit.
func TestDedupInsertedBytes(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	base := testtree.Random(77, size)
	edited := testtree.Insert(base, size/2+13, bytes.Repeat([]byte("+"), 100))

	s := newE2EStore(t)
	basePath := e2eWriteNARFile(t, testtree.File(base))
	editedPath := e2eWriteNARFile(t, testtree.File(edited))

	baseRoot := s.ingest(t, basePath).Root
	before := s.stats(t)
	editedRoot := s.ingest(t, editedPath).Root
	after := s.stats(t)

	if before.Chunks < 8 {
		t.Fatalf("a %d-byte file was stored as %d chunks; want content-defined chunks of at most a few hundred KiB", size, before.Chunks)
	}
	newChunks := after.Chunks - before.Chunks
	if newChunks < 1 || newChunks > 4 {
		t.Errorf("inserting 100 bytes added %d chunks to the %d of the original; want 1 to 4", newChunks, before.Chunks)
	}
	if newBytes := after.UniqueChunkBytes - before.UniqueChunkBytes; newBytes > size/4 {
		t.Errorf("inserting 100 bytes added %d unique chunk bytes", newBytes)
	}
	if after.LogicalBytes != before.LogicalBytes+edited.Size() {
		t.Errorf("logicalBytes = %d, want %d", after.LogicalBytes, before.LogicalBytes+edited.Size())
	}
	e2eCheckRender(t, s, baseRoot, basePath)
	e2eCheckRender(t, s, editedRoot, editedPath)
}

// ---------------------------------------------------------------------------
// Malformed input.

// e2eNAREncode encodes NAR tokens. In a NAR every token, and the contents of
// a regular file, is a string: a little-endian uint64 length, the bytes, and
// zero padding to a multiple of 8. It also returns the offset of each token.
func e2eNAREncode(tokens ...string) (nar []byte, offsets []int) {
	for _, tok := range tokens {
		offsets = append(offsets, len(nar))
		nar = binary.LittleEndian.AppendUint64(nar, uint64(len(tok)))
		nar = append(nar, tok...)
		nar = append(nar, make([]byte, (8-len(tok)%8)%8)...)
	}
	return nar, offsets
}

// e2eNAROf encodes a complete archive whose root node has the given tokens.
func e2eNAROf(node []string) []byte {
	nar, _ := e2eNAREncode(append([]string{"nix-archive-1"}, node...)...)
	return nar
}

func e2eTokFile(contents string) []string {
	return []string{"(", "type", "regular", "contents", contents, ")"}
}

func e2eTokExec(contents string) []string {
	return []string{"(", "type", "regular", "executable", "", "contents", contents, ")"}
}

func e2eTokLink(target string) []string {
	return []string{"(", "type", "symlink", "target", target, ")"}
}

func e2eTokEntry(name string, node []string) []string {
	return slices.Concat([]string{"entry", "(", "name", name, "node"}, node, []string{")"})
}

func e2eTokDir(entries ...[]string) []string {
	return slices.Concat([]string{"(", "type", "directory"}, slices.Concat(entries...), []string{")"})
}

// e2eSampleTokens is a small valid archive with every node type.
func e2eSampleTokens() []string {
	return slices.Concat([]string{"nix-archive-1"}, e2eTokDir(
		e2eTokEntry("a.txt", e2eTokFile("hello\n")),
		e2eTokEntry("bin", e2eTokDir(e2eTokEntry("tool", e2eTokExec("#!/bin/sh\n")))),
		e2eTokEntry("link", e2eTokLink("a.txt")),
	))
}

// e2eSampleTree is the tree e2eSampleTokens encodes.
func e2eSampleTree() *testtree.Node {
	return testtree.Dir(testtree.Entries{
		"a.txt": testtree.File(testtree.Text("hello\n")),
		"bin":   testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Text("#!/bin/sh\n"))}),
		"link":  testtree.Link("a.txt"),
	})
}

// e2eWithPadding returns the encoding of tokens with a non-zero byte in
// the padding of the first token equal to tok.
func e2eWithPadding(tokens []string, tok string) []byte {
	nar, offsets := e2eNAREncode(tokens...)
	i := slices.Index(tokens, tok)
	if i < 0 || len(tok)%8 == 0 {
		panic("token " + tok + " missing or unpadded")
	}
	nar[offsets[i]+8+len(tok)] = 0x01
	return nar
}

func e2eConcat(parts ...[]byte) []byte { return slices.Concat(parts...) }

func e2eU64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func e2ePrefix(tokens ...string) []byte {
	nar, _ := e2eNAREncode(tokens...)
	return nar
}

// e2eMalformed is a NAR that ingest must reject.
type e2eMalformed struct {
	name string
	nar  []byte
}

// Not parallel: it bounds each ingest's memory and time (its subtests run
// two at a time).
func TestMalformedNARs(t *testing.T) {
	sample := e2eSampleTokens()
	valid, offsets := e2eNAREncode(sample...)
	var treeNAR bytes.Buffer
	if err := testtree.WriteNAR(&treeNAR, e2eSampleTree()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(valid, treeNAR.Bytes()) {
		t.Fatal("test encoder disagrees with testtree.WriteNAR on the sample archive")
	}
	file := e2eTokFile("x")
	dirWith := func(names ...string) []byte {
		var entries [][]string
		for _, n := range names {
			entries = append(entries, e2eTokEntry(n, file))
		}
		return e2eNAROf(e2eTokDir(entries...))
	}

	cases := []e2eMalformed{
		{"empty input", nil},
		{"text", []byte("this is not a NAR archive\n")},
		{"bad magic", e2ePrefix(slices.Concat([]string{"nix-archive-2"}, sample[1:])...)},
		{"magic only", e2ePrefix("nix-archive-1")},
		{"data after end", e2eConcat(valid, make([]byte, 8))},
		{"second archive after end", e2eConcat(valid, valid)},
		{"entries out of order", dirWith("b", "a")},
		{"entries out of order by bytes", dirWith("a", "B")},
		{"duplicate names", dirWith("a", "a")},
		{"duplicate name file and directory", e2eNAROf(e2eTokDir(e2eTokEntry("a", file), e2eTokEntry("a", e2eTokDir())))},
		{"name dot", dirWith(".")},
		{"name dotdot", dirWith("..")},
		{"empty name", dirWith("")},
		{"name with slash", dirWith("a/b")},
		{"name with NUL", dirWith("a\x00b")},
		{"name of 256 bytes", dirWith(strings.Repeat("n", 256))},
		{"non-zero padding in magic", e2eWithPadding(sample, "nix-archive-1")},
		{"non-zero padding in type", e2eWithPadding(sample, "regular")},
		{"non-zero padding in name", e2eWithPadding(sample, "a.txt")},
		{"non-zero padding after contents", e2eWithPadding(sample, "hello\n")},
		{"non-zero padding in symlink target", e2eWithPadding(slices.Concat([]string{"nix-archive-1"}, e2eTokLink("dest")), "dest")},
		{"unknown node type", e2eNAROf([]string{"(", "type", "fifo", ")"})},
		{"missing type", e2eNAROf([]string{"(", "regular", "contents", "x", ")"})},
		{"unknown token in regular", e2eNAROf([]string{"(", "type", "regular", "size", "x", ")"})},
		{"upper-case token", e2eNAROf([]string{"(", "TYPE", "regular", "contents", "x", ")"})},
		{"executable with a value", e2eNAROf([]string{"(", "type", "regular", "executable", "1", "contents", "x", ")"})},
		{"executable after contents", e2eNAROf([]string{"(", "type", "regular", "contents", "x", "executable", "", ")"})},
		{"empty symlink target", e2eNAROf(e2eTokLink(""))},
		{"symlink with two targets", e2eNAROf([]string{"(", "type", "symlink", "target", "a", "target", "b", ")"})},
		{"entry without name", e2eNAROf(e2eTokDir([]string{"entry", "(", "node", "(", "type", "regular", "contents", "", ")", ")"}))},
		{"entry without node", e2eNAROf(e2eTokDir([]string{"entry", "(", "name", "a", ")"}))},
		{"unknown token in directory", e2eNAROf([]string{"(", "type", "directory", "file", ")"})},
		{"file length far beyond input", e2eConcat(
			e2ePrefix("nix-archive-1", "(", "type", "regular", "contents"), e2eU64(1<<60), []byte("abc"))},
		{"file length at the limit", e2eConcat(
			e2ePrefix("nix-archive-1", "(", "type", "regular", "contents"), e2eU64(1<<64-1), []byte("abc"))},
		{"name length far beyond input", e2eConcat(
			e2ePrefix("nix-archive-1", "(", "type", "directory", "entry", "(", "name"), e2eU64(1<<62), []byte("abc"))},
		{"token length far beyond input", e2eConcat(e2ePrefix("nix-archive-1"), e2eU64(1<<60), []byte("("))},
		{"symlink target longer than any path", e2eConcat(
			e2ePrefix("nix-archive-1", "(", "type", "symlink", "target"), e2eU64(1<<40))},
	}

	// Truncations: at every token boundary, inside length fields and inside
	// token data.
	cuts := map[int]bool{len(valid) - 1: true}
	for i, off := range offsets {
		cuts[off] = true
		cuts[off+3] = true
		if len(sample[i]) > 1 {
			cuts[off+8+1] = true
		}
		if len(sample[i])%8 != 0 {
			cuts[off+8+len(sample[i])] = true // before the padding
		}
	}
	for _, cut := range slices.Sorted(maps.Keys(cuts)) {
		if cut > 0 && cut < len(valid) {
			cases = append(cases, e2eMalformed{fmt.Sprintf("truncated to %d bytes", cut), valid[:cut]})
		}
	}

	// Two stores take the cases in turn, one ingest in each at a time, so
	// that two run at once; each store must still be usable after its
	// share of the failures.
	const stores = 2
	for k := range stores {
		t.Run(fmt.Sprintf("store%d", k), func(t *testing.T) {
			t.Parallel()
			s := newE2EStore(t)
			for i := k; i < len(cases); i += stores {
				tc := cases[i]
				t.Run(tc.name, func(t *testing.T) {
					res := e2eInvocation{
						Args:    []string{"nar", "ingest", "--data", s.dir, "-"},
						Stdin:   bytes.NewReader(tc.nar),
						Timeout: time.Minute,
					}.run(t)
					if res.Err == nil {
						t.Fatalf("ingest succeeded with output %s", res.Stdout)
					}
					var exitErr *exec.ExitError
					if !errors.As(res.Err, &exitErr) {
						t.Fatalf("ingest: %v", res.Err)
					}
					if msg := e2eErrorMessage(res.Stderr); msg == "" {
						t.Errorf("no error message on stderr")
					} else if !e2eOffsetRE.MatchString(msg) {
						t.Errorf("error message does not mention the byte offset: %s", msg)
					}
					if len(bytes.TrimSpace(res.Stdout)) != 0 {
						t.Errorf("failed ingest printed %q on stdout", res.Stdout)
					}
					if res.MaxRSS > e2eMaxRSS {
						t.Errorf("rejecting %d bytes of input took %d MiB of memory", len(tc.nar), res.MaxRSS>>20)
					}
					if res.Elapsed > 20*time.Second {
						t.Errorf("rejecting %d bytes of input took %v", len(tc.nar), res.Elapsed)
					}
				})
			}

			// The store must still be usable after all those failures.
			got := s.ingestStdin(t, bytes.NewReader(valid))
			e2eCheckRoot(t, got.Root, e2eSampleTree())
			narPath := filepath.Join(t.TempDir(), "sample.nar")
			if err := os.WriteFile(narPath, valid, 0o644); err != nil {
				t.Fatal(err)
			}
			e2eCheckRender(t, s, got.Root, narPath)
			s.stats(t)
		})
	}
}

func TestCLIErrors(t *testing.T) {
	t.Parallel()
	s := newE2EStore(t)
	missingDir := `{"directory":{"digest":"` + strings.Repeat("ab", 32) + `","size":1}}`
	missingFile := `{"file":{"digest":"` + strings.Repeat("cd", 32) + `","size":10,"executable":false}}`
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"ingest missing file", []string{"nar", "ingest", "--data", s.dir, filepath.Join(s.dir, "no-such.nar")}},
		{"render unknown directory", []string{"nar", "render", "--data", s.dir, "--root", missingDir}},
		{"render unknown file", []string{"nar", "render", "--data", s.dir, "--root", missingFile}},
		{"render invalid root JSON", []string{"nar", "render", "--data", s.dir, "--root", `{"directory":`}},
		{"render root with bad digest", []string{"nar", "render", "--data", s.dir, "--root", `{"directory":{"digest":"xyz","size":0}}`}},
		{"render without root", []string{"nar", "render", "--data", s.dir}},
		{"unknown command", []string{"frobnicate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e2eInvocation{Args: tc.args, Timeout: time.Minute}.run(t)
			if res.Err == nil {
				t.Fatalf("succeeded; stdout %q", res.Stdout)
			}
			if e2eErrorMessage(res.Stderr) == "" {
				t.Errorf("no error message on stderr")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Resource bounds.

// TestIngestMemoryBound streams a NAR holding a single 1 GiB file into
// `nar ingest` through a pipe and checks that the process's peak memory
// stays far below the file size. 1 GiB is twice
// e2eMaxRSS: a process holding the file's bytes fails, and so does one
// whose writers do not wait for the packer (with that wait taken out, a
// run peaked at 756 MiB).
//
// Not parallel, like every test with a memory bound: a child's peak RSS
// as getrusage reports it includes the test process's own at the fork.
func TestIngestMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 1 GiB")
	}
	const size = 1 << 30
	file := testtree.File(testtree.Random(4242, size))

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var written int64
	genDone := make(chan error, 1)
	go func() {
		w := io.MultiWriter(pw, h, e2eCounter{&written})
		err := testtree.WriteNAR(w, file)
		pw.Close()
		genDone <- err
	}()

	s := newE2EStore(t)
	res := e2eInvocation{
		Args:            []string{"nar", "ingest", "--data", s.dir, "-"},
		Stdin:           pr,
		CloseAfterStart: pr,
		Timeout:         20 * time.Minute,
	}.run(t)
	// If nixcas died early the generator fails with EPIPE; wait for it
	// either way.
	genErr := <-genDone
	if res.Err != nil {
		t.Fatalf("ingest: %v\nstderr:\n%s", res.Err, res.Stderr)
	}
	if genErr != nil {
		t.Fatalf("generating the NAR: %v", genErr)
	}
	got := e2eParseIngest(t, res.Stdout)
	if want := e2eNARHash([32]byte(h.Sum(nil))); got.NarHash != want {
		t.Errorf("narHash = %s, want %s", got.NarHash, want)
	}
	if got.NarSize != written {
		t.Errorf("narSize = %d, want %d", got.NarSize, written)
	}
	e2eCheckRoot(t, got.Root, file)
	if res.MaxRSS > e2eMaxRSS {
		t.Errorf("peak RSS while ingesting a %d GiB file was %d MiB, want at most %d MiB",
			size>>30, res.MaxRSS>>20, e2eMaxRSS>>20)
	}
	t.Logf("ingested %d GiB in %v, peak RSS %d MiB", size>>30, res.Elapsed.Round(time.Second), res.MaxRSS>>20)
}

type e2eCounter struct{ n *int64 }

func (c e2eCounter) Write(p []byte) (int, error) {
	*c.n += int64(len(p))
	return len(p), nil
}
