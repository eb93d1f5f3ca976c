package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// dedupVersions returns two versions of a small package: the second has
// one file edited in the middle, one file added, one file removed, and
// the rest as before.
func dedupVersions() (v1, v2 *testtree.Node) {
	bin := testtree.Mixed(11, 700_000)
	lib := testtree.Random(12, 300_000)
	doc := testtree.Mixed(14, 90_000)
	v1 = testtree.Dir(testtree.Entries{
		"bin": testtree.Dir(testtree.Entries{
			"tool":  testtree.Exec(bin),
			"alias": testtree.Link("tool"),
		}),
		"lib":   testtree.Dir(testtree.Entries{"libx.so": testtree.Exec(lib), "libx.a": testtree.File(testtree.Random(13, 200_000))}),
		"share": testtree.Dir(testtree.Entries{"README": testtree.File(doc), "README.copy": testtree.File(doc)}),
	})
	v2 = testtree.Dir(testtree.Entries{
		"bin": testtree.Dir(testtree.Entries{
			"tool":  testtree.Exec(testtree.Insert(bin, 350_001, []byte("version 2"))),
			"alias": testtree.Link("tool"),
		}),
		"lib":   testtree.Dir(testtree.Entries{"libx.so": testtree.Exec(lib)}),
		"share": testtree.Dir(testtree.Entries{"README": testtree.File(doc), "NEWS": testtree.File(testtree.Text("version 2\n"))}),
	})
	return v1, v2
}

func narOf(t *testing.T, n *testtree.Node) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := testtree.WriteNAR(&b, n); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestDedup runs the benchmark on two small versions, the first as a tree
// and the second as a NAR file, and checks its figures against stores
// filled independently with the same NARs.
func TestDedup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v1, v2 := dedupVersions()
	tree := filepath.Join(dir, "v1")
	testtree.Build(t, tree, v1)
	nar1 := narOf(t, v1)
	nar2 := narOf(t, v2)
	if dumped, err := exec.Command("nix-store", "--dump", tree).Output(); err != nil || !bytes.Equal(dumped, nar1) {
		t.Fatalf("nix-store --dump of the tree differs from its NAR (%v)", err)
	}
	narFile := filepath.Join(dir, "v2.nar")
	if err := os.WriteFile(narFile, nar2, 0o644); err != nil {
		t.Fatal(err)
	}

	res, err := Dedup(ctx, DedupOptions{
		Inputs:  []DedupInput{{Name: "v1", Path: tree}, {Name: "v2", Path: narFile}},
		WorkDir: filepath.Join(dir, "work"),
		Compact: pebblestore.CompactOptions{FanOut: 2}, // the second compaction merges all
	})
	if err != nil {
		t.Fatal(err)
	}

	var names []string
	for _, s := range res.Strategies {
		names = append(names, s.Name)
	}
	want := []string{"raw", "xz", "zstd-19", "file-dedup", "nar-cdc-64k-zstd", "nar-cdc-64k-lz4",
		"nixcas-16k-lz4", "nixcas-64k-lz4", "nixcas-256k-lz4", "nixcas-64k-zstd", "nixcas-frames", "nixcas-compact",
		"nixcas-disk", "limit-zstd-long"}
	if !slices.Equal(names, want) {
		t.Fatalf("strategies %q, want %q", names, want)
	}
	narSizes := []int64{int64(len(nar1)), int64(len(nar2))}
	for i, in := range res.Inputs {
		if in.NARBytes != narSizes[i] {
			t.Errorf("input %s: %d NAR bytes, want %d", in.Name, in.NARBytes, narSizes[i])
		}
	}
	raw := res.Strategy(StrategyRaw)
	if raw.StoredBytes != narSizes[0]+narSizes[1] || !slices.Equal(raw.AddedBytes, narSizes) {
		t.Errorf("raw: stored %d, added %v; NAR sizes %v", raw.StoredBytes, raw.AddedBytes, narSizes)
	}
	for _, s := range res.Strategies {
		var sum int64
		for _, a := range s.AddedBytes {
			sum += a
		}
		if sum != s.StoredBytes || s.StoredBytes <= 0 {
			t.Errorf("%s: stored %d, added %v", s.Name, s.StoredBytes, s.AddedBytes)
		}
		if s.Name != StrategyRaw && s.StoredBytes >= raw.StoredBytes {
			t.Errorf("%s stores %d bytes, raw %d", s.Name, s.StoredBytes, raw.StoredBytes)
		}
	}

	checkCastoreStrategies(t, res, filepath.Join(dir, "work"), [][]byte{nar1, nar2})

	// Without the compressors and with smaller frames, the castore
	// strategies that do not depend on frames store the same, and the
	// frame options reach both framed stores.
	knobs, err := Dedup(ctx, DedupOptions{
		Inputs:        []DedupInput{{Name: "v1", Path: tree}, {Name: "v2", Path: narFile}},
		WorkDir:       filepath.Join(dir, "knobs"),
		Frames:        pebblestore.FrameOptions{Size: 64 << 10},
		Compact:       pebblestore.CompactOptions{FrameSize: 128 << 10, FanOut: 2},
		NoCompressors: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var knobNames []string
	for _, s := range knobs.Strategies {
		knobNames = append(knobNames, s.Name)
	}
	if w := slices.DeleteFunc(slices.Clone(want), isCompressorStrategy); !slices.Equal(knobNames, w) {
		t.Errorf("without compressors: strategies %q, want %q", knobNames, w)
	}
	for _, name := range []string{StrategyRaw, StrategyFileDedup, StrategyNARCDCLZ4, StrategyNixcas16kLZ4, StrategyNixcas64kLZ4, StrategyNixcas256kLZ4, StrategyNixcas64kZstd} {
		if a, b := res.Strategy(name), knobs.Strategy(name); !slices.Equal(a.AddedBytes, b.AddedBytes) {
			t.Errorf("%s: added %v, without compressors %v", name, a.AddedBytes, b.AddedBytes)
		}
	}
	checkCastoreStrategies(t, knobs, filepath.Join(dir, "knobs"), [][]byte{nar1, nar2})
	if knobs.Frames.Size != 64<<10 || knobs.Compact.FrameSize != 128<<10 || res.Frames.Size != pebblestore.DefaultFrameOptions.Size {
		t.Errorf("frame options reported: %+v %+v; defaults %+v", knobs.Frames, knobs.Compact, res.Frames)
	}
	for _, d := range []string{"nixcas-frames", "nixcas-compact"} {
		def := frameCount(t, filepath.Join(dir, "work", d))
		small := frameCount(t, filepath.Join(dir, "knobs", d))
		if small <= def {
			t.Errorf("%s: %d frames with small frames, %d with the default ones", d, small, def)
		}
	}
	badWork := filepath.Join(dir, "bad")
	for _, bad := range []struct {
		what string
		o    DedupOptions
	}{
		{"hot frames of 1000 bytes", DedupOptions{WorkDir: badWork, Frames: pebblestore.FrameOptions{Size: 1000}}},
		{"zstd level 99", DedupOptions{WorkDir: badWork, Frames: pebblestore.FrameOptions{Level: 99}}},
		{"cold frames of 1000 bytes", DedupOptions{WorkDir: badWork, Compact: pebblestore.CompactOptions{FrameSize: 1000}}},
		{"cold frames of the largest frame size", DedupOptions{WorkDir: badWork, Compact: pebblestore.CompactOptions{FrameSize: pebblestore.MaxFrameSize}}},
		{"negative rebuilds", DedupOptions{WorkDir: badWork, RebuildSim: -1}},
		{"no work directory", DedupOptions{}},
		{"stores left in the work directory", DedupOptions{WorkDir: filepath.Join(dir, "work")}},
	} {
		bad.o.Inputs = []DedupInput{{Name: "v1", Path: tree}}
		if _, err := Dedup(ctx, bad.o); err == nil {
			t.Errorf("Dedup with %s succeeded", bad.what)
		}
	}

	// file-dedup: the distinct contents of both versions.
	seen := map[[32]byte]bool{}
	var distinct int64
	for _, n := range []*testtree.Node{v1, v2} {
		n.Walk(func(_ string, n *testtree.Node) error {
			if n.Type == testtree.Regular {
				sum, err := testtree.Sum(n.Content)
				if err != nil {
					t.Fatal(err)
				}
				if !seen[sum] {
					seen[sum] = true
					distinct += n.Content.Size()
				}
			}
			return nil
		})
	}
	if got := res.Strategy(StrategyFileDedup).StoredBytes; got != distinct {
		t.Errorf("file-dedup %d bytes, want %d", got, distinct)
	}

	// Every compressor's figure is what the same command line gives.
	for _, c := range []struct {
		name string
		args []string
		nars [][]byte
	}{
		{StrategyXZ, xzArgs, [][]byte{nar1}},
		{StrategyZstd19, zstd19Args, [][]byte{nar2}},
		{StrategyLimitZstdLong, limitZstdArgs, [][]byte{nar1, nar2}},
	} {
		cmd := exec.Command(c.args[0], c.args[1:]...)
		cmd.Stdin = bytes.NewReader(bytes.Join(c.nars, nil))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		s := res.Strategy(c.name)
		if got := s.StoredBytes; c.name == StrategyLimitZstdLong && got != int64(len(out)) {
			t.Errorf("%s stored %d bytes, the command gives %d", c.name, got, len(out))
		}
		if got := s.AddedBytes[0]; c.name == StrategyXZ && got != int64(len(out)) {
			t.Errorf("%s of v1 %d bytes, the command gives %d", c.name, got, len(out))
		}
		if got := s.AddedBytes[1]; c.name == StrategyZstd19 && got != int64(len(out)) {
			t.Errorf("%s of v2 %d bytes, the command gives %d", c.name, got, len(out))
		}
	}

	// The edit to v2 costs far less than v2 in the chunk stores.
	for _, name := range []string{StrategyNixcas16kLZ4, StrategyNixcas64kLZ4, StrategyNARCDCLZ4} {
		s := res.Strategy(name)
		if s.AddedBytes[1]*2 > s.AddedBytes[0] {
			t.Errorf("%s: v2 added %d bytes after v1's %d", name, s.AddedBytes[1], s.AddedBytes[0])
		}
	}

	// The JSON report has exactly the documented shape.
	jsonPath := filepath.Join(dir, "out.json")
	if err := res.WriteJSON(jsonPath); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string][]map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]json.RawMessage) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		slices.Sort(k)
		return k
	}
	if len(doc) != 2 || len(doc["inputs"]) != 2 || len(doc["strategies"]) != len(want) {
		t.Fatalf("JSON: %s", b)
	}
	for _, in := range doc["inputs"] {
		if k := keys(in); !slices.Equal(k, []string{"name", "narBytes"}) {
			t.Errorf("JSON input keys %q", k)
		}
	}
	for _, s := range doc["strategies"] {
		if k := keys(s); !slices.Equal(k, []string{"addedBytes", "name", "storedBytes"}) {
			t.Errorf("JSON strategy keys %q", k)
		}
	}

	var md bytes.Buffer
	res.WriteMarkdown(&md)
	for _, name := range want {
		if !strings.Contains(md.String(), "| "+name+" | ") {
			t.Errorf("Markdown has no row for %s:\n%s", name, md.String())
		}
	}
	path := filepath.Join(dir, "chart.svg")
	if err := res.WriteChart(path); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		XMLName xml.Name
		Texts   []string `xml:"text"`
	}
	if err := xml.Unmarshal(svg, &parsed); err != nil || parsed.XMLName.Local != "svg" {
		t.Fatalf("%s is not an SVG document (%v): %q", path, err, svg[:min(len(svg), 80)])
	}
	// Every strategy is named twice (bar and legend), every input once.
	for _, s := range res.Strategies {
		if n := strings.Count(string(svg), ">"+s.Name+"</text>"); n != 2 {
			t.Errorf("chart names %s %d times, want 2", s.Name, n)
		}
	}
	for _, in := range res.Inputs {
		if !strings.Contains(string(svg), ">"+in.Name+"</text>") {
			t.Errorf("chart does not name input %s", in.Name)
		}
	}
	if err := res.WriteChart(filepath.Join(dir, "chart.png")); err == nil {
		t.Error("WriteChart to a .png file succeeded")
	}
}

// TestDedupRebuildSim checks the rebuild simulation end to end: a tree
// without references is stored with references injected, then rebuilt
// twice; every NAR has the original size, and a rebuild adds far less to
// the chunk stores than the first NAR.
func TestDedupRebuildSim(t *testing.T) {
	dir := t.TempDir()
	v1, _ := dedupVersions()
	tree := filepath.Join(dir, "v1")
	testtree.Build(t, tree, v1)
	size := int64(len(narOf(t, v1)))
	res, err := Dedup(context.Background(), DedupOptions{
		Inputs:     []DedupInput{{Name: "v1", Path: tree}},
		RebuildSim: 2,
		WorkDir:    filepath.Join(dir, "work"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range res.Inputs {
		names = append(names, in.Name)
		if in.NARBytes != size {
			t.Errorf("%s: %d bytes, want %d", in.Name, in.NARBytes, size)
		}
	}
	if want := []string{"v1+refs", "v1+rebuild1", "v1+rebuild2"}; !slices.Equal(names, want) {
		t.Errorf("inputs %q, want %q", names, want)
	}
	if len(res.Notes) == 0 || !strings.Contains(res.Notes[0], "injected") {
		t.Errorf("notes %q", res.Notes)
	}
	fd := res.Strategy(StrategyFileDedup)
	if fd.AddedBytes[1] == 0 || fd.AddedBytes[1] != fd.AddedBytes[2] {
		t.Errorf("file-dedup added %v: every rebuild should change the same files", fd.AddedBytes)
	}
	for _, name := range []string{StrategyNixcas16kLZ4, StrategyNixcas64kLZ4, StrategyNARCDCLZ4, StrategyNixcasFrames, StrategyNixcasCompact} {
		s := res.Strategy(name)
		if s.AddedBytes[1]*2 > s.AddedBytes[0] || s.AddedBytes[1] == 0 {
			t.Errorf("%s: added %v", name, s.AddedBytes)
		}
	}
	// Compaction puts each rebuilt chunk beside the chunk it replaces,
	// where it compresses against it.
	frames, compact := res.Strategy(StrategyNixcasFrames), res.Strategy(StrategyNixcasCompact)
	for k := 1; k < len(res.Inputs); k++ {
		if compact.AddedBytes[k] >= frames.AddedBytes[k] {
			t.Errorf("%s: nixcas-compact added %d bytes, nixcas-frames %d", res.Inputs[k].Name, compact.AddedBytes[k], frames.AddedBytes[k])
		}
	}
	// Every NAR is a store path named after its input.
	ps, err := pebblestore.OpenReadOnly(filepath.Join(dir, "work", "nixcas-compact"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	var names2 []string
	err = store.NewIndex(ps, ps).List(context.Background(), func(p *store.PathInfo) error {
		names2 = append(names2, p.Path[33:])
		return nil
	})
	if err != nil || !slices.Equal(names2, []string{"v1", "v1", "v1"}) {
		t.Errorf("store paths named %q (%v), want three named v1", names2, err)
	}
}

// TestBenchPathInfo: the PathInfo of a NAR is valid whatever the input's
// name, and named after it where Nix allows.
func TestBenchPathInfo(t *testing.T) {
	root := castore.Entry{Kind: castore.KindFile, Digest: castore.Hash([]byte("x")), Size: 1}
	for _, c := range []struct{ pkg, name string }{
		{"go1.22.0", "go1.22.0"},
		{"hello-2.12.1", "hello-2.12.1"},
		{"my file.nar", "my-file.nar"},
		{".hidden", "input-.hidden"},
		{"", "input-"},
		{"ünï", "--n--"},
		{strings.Repeat("a", 300), strings.Repeat("a", 200)},
	} {
		p := benchPathInfo(c.pkg, narrender.Result{Root: root, NARSize: 120, NARSha256: [32]byte{1}})
		if err := p.Validate(); err != nil {
			t.Errorf("%q: %v", c.pkg, err)
		}
		if got := p.Path[33:]; got != c.name {
			t.Errorf("%q: named %q, want %q", c.pkg, got, c.name)
		}
		if q := benchPathInfo(c.pkg, narrender.Result{Root: root, NARSize: 120, NARSha256: [32]byte{2}}); q.Path == p.Path {
			t.Errorf("%q: two NARs share store path %s", c.pkg, p.Path)
		}
	}
}

// checkCastoreStrategies checks the castore strategies of a run over nars
// against the stores it left in work, read back as `nixcas store stats`
// reads them, and against stores filled independently by narrender.Ingest
// (as `nixcas nar ingest` does).
func checkCastoreStrategies(t *testing.T, res *DedupResult, work string, nars [][]byte) {
	t.Helper()
	ctx := context.Background()
	var paths []string // of the last store stats read
	stats := func(dir string) castore.Stats {
		t.Helper()
		ps, err := pebblestore.OpenReadOnly(dir, pebblestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer ps.Close()
		st, err := ps.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		paths = nil
		err = store.NewIndex(ps, ps).List(ctx, func(p *store.PathInfo) error {
			paths = append(paths, p.Path)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// Every store the run left agrees with the JSON figure of its strategy.
	for _, c := range nixcasStores {
		st := stats(filepath.Join(work, c.dir))
		got := res.Strategy(c.name).StoredBytes
		if got != int64(st.StoredBytes) && !slices.ContainsFunc(res.Notes, func(n string) bool {
			return strings.HasPrefix(n, c.name+" after "+res.Inputs[len(res.Inputs)-1].Name+": Stats.StoredBytes "+fmt.Sprint(st.StoredBytes))
		}) || got <= 0 {
			t.Errorf("%s stored %d bytes, the store stats of %s say %d (notes %q)", c.name, got, c.dir, st.StoredBytes, res.Notes)
		}
		if c.framed && (st.Frames == 0 || len(paths) != len(nars)) || !c.framed && (st.Frames != 0 || len(paths) != 0) {
			t.Errorf("%s: %d frames and store paths %q after %d NARs", c.dir, st.Frames, paths, len(nars))
		}
	}

	// The chunk layouts, filled independently: stores with frames off at
	// each chunk size (nixcas-64k-lz4 counts as one would), and one with
	// frames on whose frames are then packed and compacted.
	offStats := map[string]castore.Stats{}
	for i, c := range []struct {
		name string
		avg  int
	}{{StrategyNixcas16kLZ4, 16 << 10}, {StrategyNixcas64kLZ4, 64 << 10}, {StrategyNixcas256kLZ4, 256 << 10}} {
		dir := filepath.Join(t.TempDir(), fmt.Sprint(i))
		ps, err := pebblestore.Open(dir, pebblestore.Options{Frames: pebblestore.FrameOptions{Off: true}})
		if err != nil {
			t.Fatal(err)
		}
		for _, nar := range nars {
			opts := castore.WriterOptions{Chunker: castore.ChunkerOptions{AvgSize: c.avg}}
			if _, err := narrender.Ingest(ctx, bytes.NewReader(nar), ps, opts); err != nil {
				t.Fatal(err)
			}
		}
		if err := ps.Close(); err != nil {
			t.Fatal(err)
		}
		st := stats(dir)
		offStats[c.name] = st
		if got := res.Strategy(c.name).StoredBytes; got != int64(st.StoredBytes) || st.Frames != 0 {
			t.Errorf("%s stored %d bytes, a store with frames off %d (in %d frames)", c.name, got, st.StoredBytes, st.Frames)
		}
	}

	// nixcas-frames: after Flush every chunk is in a frame, so the stored
	// bytes are the frame files' sizes; the store holds the same chunks as
	// the one with frames off.
	framesDir := filepath.Join(work, "nixcas-frames")
	frames := res.Strategy(StrategyNixcasFrames).StoredBytes
	frameFiles, err := frameFileBytes(framesDir)
	if err != nil {
		t.Fatal(err)
	}
	st := stats(framesDir)
	if off := offStats[StrategyNixcas64kLZ4]; frameFiles != frames || st.Chunks != off.Chunks || st.UniqueChunkBytes != off.UniqueChunkBytes {
		t.Errorf("nixcas-frames %d bytes in frame files of %d; %d chunks of %d bytes, frames off %d chunks of %d",
			frames, frameFiles, st.Chunks, st.UniqueChunkBytes, off.Chunks, off.UniqueChunkBytes)
	}
	disk, all, err := pebbleDiskBytes(framesDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Strategy(StrategyNixcasDisk).StoredBytes; got != disk || disk < frames || all != res.DiskAllBytes {
		t.Errorf("nixcas-disk %d bytes; the directory holds %d in data files, %d in all (reported %d); frames %d",
			got, disk, all, res.DiskAllBytes, frames)
	}

	// nixcas-compact: what compacting the nixcas-frames store as
	// `nixcas store compact` does (its PathInfos give the order) stores.
	ps, err := pebblestore.Open(framesDir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Both runs over two inputs compact with a fan-out of 2: the second
	// compaction merges everything into one run, as one compaction of
	// the hot store does.
	_, err = ps.Compact(ctx, pebblestore.CompactOptions{Order: store.NewIndex(ps, ps).CompactionOrder,
		FanOut: res.Compact.FanOut, FrameSize: res.Compact.FrameSize, Level: res.Compact.Level})
	if err == nil {
		st, err = ps.Stats(ctx)
	}
	ps.Close()
	if err != nil {
		t.Fatal(err)
	}
	compact := res.Strategy(StrategyNixcasCompact)
	compactFiles, err := frameFileBytes(filepath.Join(work, "nixcas-compact"))
	if err != nil {
		t.Fatal(err)
	}
	if compact.StoredBytes != int64(st.StoredBytes) || compact.StoredBytes != compactFiles {
		t.Errorf("nixcas-compact stored %d bytes in frame files of %d; compacting the nixcas-frames store gives %d",
			compact.StoredBytes, compactFiles, st.StoredBytes)
	}
	if compact.StoredBytes > frames {
		t.Errorf("nixcas-compact stores %d bytes, more than nixcas-frames' %d", compact.StoredBytes, frames)
	}
}

// frameCount returns the number of frames of the store in dir.
func frameCount(t *testing.T, dir string) uint64 {
	t.Helper()
	ps, err := pebblestore.OpenReadOnly(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	st, err := ps.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Frames
}
