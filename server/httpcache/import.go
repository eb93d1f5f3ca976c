package httpcache

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// A Source is a binary cache to import from.
type Source interface {
	// Open opens the file at name, a slash-separated path relative to
	// the cache's root ("nix-cache-info", "<hash>.narinfo",
	// "nar/<file>"). A missing file is an error wrapping fs.ErrNotExist.
	// The caller closes the result.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// List calls fn with the hash of every narinfo the cache holds, in no
	// particular order, stopping at fn's first error.
	List(ctx context.Context, fn func(hash string) error) error
}

// OpenSource returns the binary cache at loc: an http:// or https:// URL
// (user and password in the URL are sent as basic authentication), or a
// directory (a path or a file:// URL) as `nix copy --to file://...`
// writes it.
func OpenSource(loc string) (Source, error) {
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		u, err := url.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("%w: source %q: %v", ErrInvalid, loc, err)
		}
		u.RawQuery, u.Fragment = "", ""
		u.Path = strings.TrimSuffix(u.Path, "/") + "/"
		return &httpSource{base: u, client: http.DefaultClient}, nil
	}
	dir := loc
	if rest, ok := strings.CutPrefix(loc, "file://"); ok {
		dir, _, _ = strings.Cut(rest, "?")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", loc, err)
	}
	return &dirSource{root: root}, nil
}

// dirSource is a binary cache in a local directory.
type dirSource struct{ root *os.Root }

func (d *dirSource) Open(_ context.Context, name string) (io.ReadCloser, error) {
	return d.root.Open(name)
}

func (d *dirSource) List(ctx context.Context, fn func(hash string) error) error {
	f, err := d.root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, n := range names {
			if h, ok := narInfoHash(n); ok {
				if err := fn(h); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// narInfoHash returns the hash of a "<hash>.narinfo" file name.
func narInfoHash(name string) (string, bool) {
	h, ok := strings.CutSuffix(name, ".narinfo")
	if !ok || len(h) != 32 {
		return "", false
	}
	if _, err := store.ParsePathDigest(h); err != nil {
		return "", false
	}
	return h, true
}

// httpSource is a binary cache served over HTTP(S).
type httpSource struct {
	base   *url.URL // ends in "/"
	client *http.Client
}

func (s *httpSource) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	u := s.base.JoinPath(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return resp.Body, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden && s.base.User == nil:
		// S3-style caches answer 403 for missing files.
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s: %w", u.Redacted(), resp.Status, fs.ErrNotExist)
	}
	resp.Body.Close()
	return nil, fmt.Errorf("%s: %s", u.Redacted(), resp.Status)
}

// hrefNarInfo finds links to narinfos in a directory index page.
var hrefNarInfo = regexp.MustCompile(`href="(?:\./)?([0-9a-z]{32})\.narinfo"`)

// List reads the cache's root page as a directory index (such as nginx's
// autoindex or Go's http.FileServer write) for links to narinfos; a cache
// without one cannot be listed.
func (s *httpSource) List(ctx context.Context, fn func(hash string) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base.String(), nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("listing %s: %s (name the store paths to import instead)", s.base.Redacted(), resp.Status)
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for _, m := range hrefNarInfo.FindAllSubmatch(sc.Bytes(), -1) {
			if h, ok := narInfoHash(string(m[1]) + ".narinfo"); ok {
				found++
				if err := fn(h); err != nil {
					return err
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if found == 0 {
		return fmt.Errorf("listing %s: no links to narinfos in its index page (name the store paths to import instead)", s.base.Redacted())
	}
	return nil
}

// ImportOptions configure [Import].
type ImportOptions struct {
	// CAS and Index are the store to import into.
	CAS   castore.Store
	Index *store.Index
	// Source is the binary cache to import from.
	Source Source
	// Paths are the store paths (absolute, base names or hashes) to import,
	// each with its closure; none means every path Source lists.
	Paths []string
	// Jobs is how many paths are imported at once (default 4).
	Jobs int
	// Events, when set, is told what happens, from one goroutine at a
	// time.
	Events func(ImportEvent)
	// NAR, when set, receives the NAR bytes as they are ingested (to count
	// them), from several goroutines at once.
	NAR io.Writer
}

// ImportEventKind says what an [ImportEvent] reports.
type ImportEventKind uint8

// What happens during an import.
const (
	// ImportPlanned: the narinfos are read; Paths paths with NARSize NAR
	// bytes in all are to be imported (those already present excluded).
	ImportPlanned ImportEventKind = iota + 1
	// ImportSkipped: Path is already in the store.
	ImportSkipped
	// ImportDone: Path was imported.
	ImportDone
	// ImportFailed: Path was not imported, for Err.
	ImportFailed
)

// ImportEvent reports progress of [Import].
type ImportEvent struct {
	Kind    ImportEventKind
	Path    string // the store path, absolute (its hash when its narinfo could not be read); "" for ImportPlanned
	NARSize uint64
	Paths   int // ImportPlanned
	Err     error
}

// ImportStats sums up an import.
type ImportStats struct {
	Imported, Skipped, Failed int
	NARBytes                  uint64 // of the paths imported
}

// Import copies store paths from a binary cache into the store, each one
// committed on its own: the NAR is fetched, decompressed (any compression
// Nix writes), ingested and checked against the narinfo's NarHash and
// NarSize (and FileHash and FileSize when given) before its PathInfo, with
// the narinfo's signatures, is put in the index. Paths already in the index
// with the same NAR hash are skipped, so an interrupted import resumes
// where it stopped. A path is imported only after the paths it refers to
// that are part of the import, so the paths in the store stay closed under
// references; a path whose reference fails is not imported. Import returns
// an error for the import as a whole (the source cannot be listed, or ctx
// ends); failures of single paths are counted in ImportStats and reported
// as events.
func Import(ctx context.Context, o ImportOptions) (ImportStats, error) {
	if o.Jobs <= 0 {
		o.Jobs = 4
	}
	im := importer{o: o}
	if err := im.checkCacheInfo(ctx); err != nil {
		return ImportStats{}, err
	}
	if err := im.plan(ctx); err != nil {
		return ImportStats{}, err
	}
	return im.run(ctx)
}

// importer is the state of one Import.
type importer struct {
	o     ImportOptions
	paths map[string]*importPath // by hash
}

type importPath struct {
	hash    string
	ni      *narinfo.NarInfo
	err     error    // reading the narinfo failed
	refs    []string // hashes of references in the import, self excluded
	waiting int      // references not yet imported
	users   []*importPath
	present bool
}

// checkCacheInfo refuses a cache for another store directory.
func (im *importer) checkCacheInfo(ctx context.Context) error {
	f, err := im.o.Source.Open(ctx, "nix-cache-info")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		if dir, ok := strings.CutPrefix(sc.Text(), "StoreDir: "); ok && dir != store.StoreDir {
			return fmt.Errorf("%w: source is a cache for store %s, not %s", ErrInvalid, dir, store.StoreDir)
		}
	}
	return sc.Err()
}

// plan reads the narinfos of the paths to import (with their closures when
// paths are named) and links each path to the paths it refers to.
func (im *importer) plan(ctx context.Context) error {
	im.paths = map[string]*importPath{}
	var todo []string
	add := func(hash string) {
		if _, ok := im.paths[hash]; !ok {
			im.paths[hash] = &importPath{hash: hash}
			todo = append(todo, hash)
		}
	}
	if len(im.o.Paths) == 0 {
		if err := im.o.Source.List(ctx, func(h string) error { add(h); return nil }); err != nil {
			return err
		}
	}
	for _, p := range im.o.Paths {
		base := path.Base(p)
		if len(base) < 32 {
			return fmt.Errorf("%w: %q is not a store path", ErrInvalid, p)
		}
		if _, err := store.ParsePathDigest(base[:32]); err != nil {
			return fmt.Errorf("%w: %q is not a store path", ErrInvalid, p)
		}
		add(base[:32])
	}
	closure := len(im.o.Paths) > 0
	for len(todo) > 0 {
		batch := todo
		todo = nil
		im.readNarInfos(ctx, batch)
		if err := ctx.Err(); err != nil {
			return err
		}
		if closure {
			for _, h := range batch {
				if ni := im.paths[h].ni; ni != nil {
					for _, r := range ni.References {
						if len(r) >= 32 {
							add(r[:32])
						}
					}
				}
			}
		}
	}
	for _, p := range im.paths {
		if p.ni == nil {
			continue
		}
		for _, r := range p.ni.References {
			if len(r) < 32 || r[:32] == p.hash {
				continue
			}
			if q, ok := im.paths[r[:32]]; ok && !slices.Contains(p.refs, q.hash) {
				p.refs = append(p.refs, q.hash)
				q.users = append(q.users, p)
			}
		}
	}
	return nil
}

// readNarInfos reads the narinfos of hashes, o.Jobs at a time.
func (im *importer) readNarInfos(ctx context.Context, hashes []string) {
	sem := make(chan struct{}, im.o.Jobs)
	done := make(chan struct{})
	for _, h := range hashes {
		p := im.paths[h]
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; done <- struct{}{} }()
			p.ni, p.err = im.readNarInfo(ctx, p.hash)
			if p.err == nil {
				p.present = im.present(ctx, p.ni)
			}
		}()
	}
	for range hashes {
		<-done
	}
}

func (im *importer) readNarInfo(ctx context.Context, hash string) (*narinfo.NarInfo, error) {
	f, err := im.o.Source.Open(ctx, hash+".narinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxNarInfo+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxNarInfo {
		return nil, fmt.Errorf("%w: %s.narinfo is over %d bytes", ErrInvalid, hash, maxNarInfo)
	}
	ni, err := narinfo.Parse(bytes.NewReader(b))
	if err == nil {
		err = ni.Check()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s.narinfo: %v", ErrInvalid, hash, err)
	}
	if !strings.HasPrefix(ni.StorePath, store.StoreDir+"/"+hash+"-") {
		return nil, fmt.Errorf("%w: %s.narinfo describes %s", ErrInvalid, hash, ni.StorePath)
	}
	if _, err := sha256Of(ni.NarHash, "NarHash"); err != nil {
		return nil, fmt.Errorf("%s.narinfo: %w", hash, err)
	}
	return ni, nil
}

// present reports whether the store has the path with the narinfo's NAR.
func (im *importer) present(ctx context.Context, ni *narinfo.NarInfo) bool {
	sp, err := storepath.FromAbsolutePath(ni.StorePath)
	if err != nil {
		return false
	}
	d, err := store.ParsePathDigest(sp.String()[:32])
	if err != nil {
		return false
	}
	p, err := im.o.Index.Get(ctx, d)
	if err != nil {
		return false
	}
	sum, _ := sha256Of(ni.NarHash, "NarHash")
	return p.NARSha256 == sum
}

func (im *importer) event(e ImportEvent) {
	if im.o.Events != nil {
		im.o.Events(e)
	}
}

// run imports the planned paths, references first, o.Jobs at a time.
func (im *importer) run(ctx context.Context) (ImportStats, error) {
	var (
		st      ImportStats
		ready   []*importPath
		planned ImportEvent
	)
	hashes := slices.Sorted(func(yield func(string) bool) {
		for h := range im.paths {
			if !yield(h) {
				return
			}
		}
	})
	for _, h := range hashes {
		if p := im.paths[h]; p.ni != nil && !p.present {
			planned.Paths++
			planned.NARSize += p.ni.NarSize
		}
	}
	planned.Kind = ImportPlanned
	im.event(planned)

	// finish records a path's outcome and releases the paths waiting on it.
	finish := func(p *importPath, kind ImportEventKind, err error) {
		e := ImportEvent{Kind: kind, Err: err}
		if p.ni != nil {
			e.Path, e.NARSize = p.ni.StorePath, p.ni.NarSize
		} else {
			e.Path = p.hash
		}
		switch kind {
		case ImportDone:
			st.Imported++
			st.NARBytes += e.NARSize
		case ImportSkipped:
			st.Skipped++
		case ImportFailed:
			st.Failed++
		}
		im.event(e)
		if kind == ImportFailed {
			return // its users stay waiting, and fail at the end
		}
		for _, u := range p.users {
			if u.waiting--; u.waiting == 0 {
				ready = append(ready, u)
			}
		}
	}
	for _, h := range hashes {
		if p := im.paths[h]; !p.present {
			p.waiting = len(p.refs)
		}
	}
	for _, h := range hashes {
		p := im.paths[h]
		switch {
		case p.err != nil:
			finish(p, ImportFailed, p.err)
		case p.waiting == 0:
			ready = append(ready, p)
		}
	}

	type result struct {
		p   *importPath
		err error
	}
	results := make(chan result)
	running := 0
	for len(ready) > 0 || running > 0 {
		for running < im.o.Jobs && len(ready) > 0 && ctx.Err() == nil {
			p := ready[0]
			ready = ready[1:]
			if p.present {
				finish(p, ImportSkipped, nil)
				continue
			}
			running++
			go func() { results <- result{p, im.importPath(ctx, p.ni, nil)} }()
		}
		if running == 0 {
			if ctx.Err() != nil {
				break
			}
			continue
		}
		res := <-results
		running--
		if res.err != nil {
			finish(res.p, ImportFailed, res.err)
		} else {
			finish(res.p, ImportDone, nil)
		}
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}
	// Paths still waiting refer to a path that failed.
	for _, h := range hashes {
		if p := im.paths[h]; p.err == nil && p.waiting > 0 {
			finish(p, ImportFailed, errors.New("a path it refers to was not imported"))
		}
	}
	return st, nil
}

// importPath fetches, checks, ingests and records one path; tee, when not
// nil, also receives the NAR as it is decompressed.
func (im *importer) importPath(ctx context.Context, ni *narinfo.NarInfo, tee io.Writer) error {
	f, err := im.o.Source.Open(ctx, ni.URL)
	if err != nil {
		return err
	}
	defer f.Close()
	fh := sha256.New()
	file := &countingReader{r: io.TeeReader(f, fh)}
	nar, err := decompress(file, ni.Compression)
	if err != nil {
		return fmt.Errorf("%s: %w", ni.URL, err)
	}
	defer nar.Close()
	var in io.Reader = nar
	if im.o.NAR != nil {
		in = io.TeeReader(in, im.o.NAR)
	}
	if tee != nil {
		in = io.TeeReader(in, tee)
	}
	res, err := narrender.Ingest(ctx, in, im.o.CAS, castore.WriterOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", ni.URL, err)
	}
	if _, err := io.Copy(io.Discard, file); err != nil {
		return fmt.Errorf("%s: %w", ni.URL, err)
	}
	up := &upload{url: ni.URL, nar: res, fileSize: file.n}
	fh.Sum(up.fileHash[:0])
	if err := checkFile(ni, up); err != nil {
		return err
	}
	p, err := newPathInfo(ni, res)
	if err != nil {
		return err
	}
	return im.o.Index.Put(ctx, p)
}
