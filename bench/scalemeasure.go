package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// The real NARs served at every step, by the name of their figure.
var scaleServed = []struct {
	name  string
	bytes func(largeMiB int) int
}{
	{"small", func(int) int { return 10 << 10 }},
	{"medium", func(int) int { return 5 << 20 }},
	{"large", func(l int) int { return l << 20 }},
}

// putServed ingests the trees of the NARs served at every step and
// returns the hash part of each one's store path, by name.
func (g *scaleGen) putServed(ctx context.Context, s *pebblestore.Store, x *store.Index, trees string, largeMiB int) (map[string]string, error) {
	out := map[string]string{}
	for k, sv := range scaleServed {
		tree := filepath.Join(trees, "served-"+sv.name)
		if err := scaleTree(tree, sv.bytes(largeMiB), uint64(k+1)); err != nil {
			return nil, err
		}
		fmt.Fprintf(g.log, "scale: storing the %s NAR\n", sv.name)
		p, err := ingestTree(ctx, s, x, tree, "served-"+sv.name)
		if err != nil {
			return nil, err
		}
		out[sv.name] = p.Path[:32]
	}
	return out, nil
}

// ingestTree ingests the NAR of tree and records it as a store path.
func ingestTree(ctx context.Context, s *pebblestore.Store, x *store.Index, tree, name string) (*store.PathInfo, error) {
	nar := client.DumpReader(tree)
	defer nar.Close()
	r, err := narrender.Ingest(ctx, nar, s, castore.WriterOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench: scale: ingest %s: %w", tree, err)
	}
	p := benchPathInfo(name, r)
	if err := x.Put(ctx, p); err != nil {
		return nil, fmt.Errorf("bench: scale: record %s: %w", tree, err)
	}
	return p, nil
}

// measureStore measures what runs in process on the open store: the
// ingest of a new large NAR and chunk lookups.
func (g *scaleGen) measureStore(ctx context.Context, s *pebblestore.Store, x *store.Index, trees string, step int, o ScaleOptions, sr *ScaleStepResult) error {
	largeMiB := o.LargeMiB
	tree := filepath.Join(trees, fmt.Sprintf("ingest-%d", step))
	if err := scaleTree(tree, largeMiB<<20, uint64(100+step)); err != nil {
		return err
	}
	// Read the tree once so that the timing does not include the disk.
	if _, err := io.Copy(io.Discard, client.DumpReader(tree)); err != nil {
		return err
	}
	fmt.Fprintf(g.log, "scale: ingesting a new %d MiB NAR\n", largeMiB)
	start := time.Now()
	nar := client.DumpReader(tree)
	r, err := narrender.Ingest(ctx, nar, s, castore.WriterOptions{})
	nar.Close()
	if err != nil {
		return err
	}
	if err := x.Put(ctx, benchPathInfo(fmt.Sprintf("ingest-%d", step), r)); err != nil {
		return err
	}
	sr.IngestMBps = mbps(int64(r.NARSize), time.Since(start))

	// Lookups are timed on the store at rest (packed, flushed, its
	// compactions done), as a server's are some seconds after an ingest,
	// after warm-up passes over other chunks that fill the index cache,
	// as a running server's is.
	if err := s.Flush(ctx); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(uint64(step), 1))
	// Chunk 0 of a random path: every path has it, and the chunk digests
	// are spread over the index as any other chunk's.
	pick := func() (hits, misses []castore.Digest) {
		hits = make([]castore.Digest, o.Lookups)
		misses = make([]castore.Digest, o.Lookups)
		for k := range hits {
			hits[k] = scaleChunk(rng.IntN(sr.Paths), 0)
			for b := 0; b < len(misses[k]); b += 8 {
				binary.LittleEndian.PutUint64(misses[k][b:], rng.Uint64())
			}
		}
		return hits, misses
	}
	timeLookups := func(ds []castore.Digest, want bool) (float64, error) {
		start := time.Now()
		for _, d := range ds {
			ok, err := s.HasChunk(ctx, d)
			if err != nil {
				return 0, err
			}
			if ok != want {
				return 0, fmt.Errorf("bench: scale: HasChunk(%s) = %v, want %v", d, ok, want)
			}
		}
		return float64(time.Since(start).Nanoseconds()) / float64(len(ds)), nil
	}
	// Warm-up passes over other chunks until the index cache is warm.
	err = warmIndexCache(g.log, "lookups", func() (pebblestore.IndexCacheStats, error) {
		st, ok := s.IndexCacheStats()
		if !ok {
			return st, errors.New("bench: scale: the store has no index cache to warm")
		}
		return st, nil
	}, func() error {
		warmHits, warmMisses := pick()
		if _, err := timeLookups(warmHits, true); err != nil {
			return err
		}
		_, err := timeLookups(warmMisses, false)
		return err
	})
	if err != nil {
		return err
	}
	hits, misses := pick()
	before, _ := s.IndexCacheStats()
	if sr.LookupHitNs, err = timeLookups(hits, true); err != nil {
		return err
	}
	if sr.LookupMissNs, err = timeLookups(misses, false); err != nil {
		return err
	}
	if after, ok := s.IndexCacheStats(); ok {
		if n := (after.Hits - before.Hits) + (after.Misses - before.Misses); n > 0 {
			sr.LookupCacheHitPct = 100 * float64(after.Hits-before.Hits) / float64(n)
		}
	}
	return nil
}

// measureServer starts a server on the store and measures it over HTTP.
func measureServer(ctx context.Context, o ScaleOptions, dir, keyFile string, st ScaleStep, served map[string]string, sr *ScaleStepResult) error {
	fmt.Fprintf(o.Log, "scale: starting the server\n")
	srv, err := o.Serve(ctx, dir, keyFile)
	if err != nil {
		return err
	}
	defer srv.Stop()
	sr.StartMs = float64(srv.Start.Microseconds()) / 1000
	tr := &http.Transport{MaxIdleConnsPerHost: 16, MaxConnsPerHost: 16, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	// The first window after the start, then a warm-up until the index
	// cache is full (or holds all the load reads), then the figures of a
	// running server.
	fmt.Fprintf(o.Log, "scale: narinfo at 16 connections, first window after start\n")
	if sr.NarInfoCold16, err = narInfoLoad(ctx, hc, srv.HTTP, st.Paths, 16, o.Window); err != nil {
		return err
	}
	start := time.Now()
	err = warmIndexCache(o.Log, "narinfo", func() (pebblestore.IndexCacheStats, error) {
		return indexCacheMetrics(ctx, hc, srv.HTTP)
	}, func() error {
		_, err := narInfoLoad(ctx, hc, srv.HTTP, st.Paths, 16, warmWindow)
		return err
	})
	if err != nil {
		return err
	}
	sr.WarmupSeconds = time.Since(start).Seconds()
	fmt.Fprintf(o.Log, "scale: narinfo at 1 and 16 connections\n")
	for _, c := range []struct {
		conns int
		out   *Latency
	}{{1, &sr.NarInfo1}, {16, &sr.NarInfo16}} {
		lat, err := narInfoLoad(ctx, hc, srv.HTTP, st.Paths, c.conns, o.Window)
		if err != nil {
			return err
		}
		*c.out = lat
	}
	for _, c := range []struct {
		name string
		mbps *float64
		p50  *float64
	}{{"small", &sr.NARSmallMBps, &sr.NARSmallP50us}, {"medium", &sr.NARMediumMBps, nil}, {"large", &sr.NARLargeMBps, nil}} {
		fmt.Fprintf(o.Log, "scale: %s NAR\n", c.name)
		rate, p50, err := narLoad(ctx, hc, srv.HTTP, served[c.name], o.Window)
		if err != nil {
			return err
		}
		*c.mbps = rate
		if c.p50 != nil {
			*c.p50 = p50
		}
	}
	sr.RSSKiB = procStatusKiB(srv.PID, "VmRSS")
	sr.PeakRSSKiB = procStatusKiB(srv.PID, "VmHWM")
	return srv.Stop()
}

// Warm-up of an index cache (warmIndexCache): passes of load until the
// cache holds warmFullShare of its capacity, or grows by less than
// warmGrowth of it in a pass (Pebble's cache may evict before it is
// full), or a pass's block reads hit it warmHitShare of the time (a store
// whose metadata read fits), for at most warmMost. A server's passes are
// windows of warmWindow.
const (
	warmWindow    = time.Second
	warmMost      = 60 * time.Second
	warmFullShare = 0.9
	warmHitShare  = 0.99
	warmGrowth    = 0.01 // of the capacity, a pass
)

// warmIndexCache runs pass again and again until the index cache that
// stats reads is warm (see above), logging each pass as what's. The cache
// of a freshly opened store is empty, and filling it costs each block
// read a new allocation (page faults, slow on some virtual machines) that
// a running server, whose full cache reuses the memory of the blocks it
// evicts, does not pay.
func warmIndexCache(log io.Writer, what string, stats func() (pebblestore.IndexCacheStats, error), pass func() error) error {
	before, err := stats()
	if err != nil {
		return err
	}
	for start := time.Now(); time.Since(start) < warmMost; {
		if err := pass(); err != nil {
			return err
		}
		after, err := stats()
		if err != nil {
			return err
		}
		hits, misses := after.Hits-before.Hits, after.Misses-before.Misses
		hitShare := 0.0
		if hits+misses > 0 {
			hitShare = float64(hits) / float64(hits+misses)
		}
		fmt.Fprintf(log, "scale: %s warm-up: index cache %d of %d MiB, %.1f%% of this pass's block reads from it\n",
			what, after.Used>>20, after.Capacity>>20, 100*hitShare)
		capacity := float64(after.Capacity)
		if float64(after.Used) >= warmFullShare*capacity || hitShare >= warmHitShare ||
			float64(after.Used-before.Used) < warmGrowth*capacity {
			return nil
		}
		before = after
	}
	fmt.Fprintf(log, "scale: %s warm-up: stopped after %s, the cache not full\n", what, warmMost)
	return nil
}

// indexCacheMetrics reads the index cache figures from the metrics of the
// server at base.
func indexCacheMetrics(ctx context.Context, hc *http.Client, base string) (pebblestore.IndexCacheStats, error) {
	var st pebblestore.IndexCacheStats
	var body bytes.Buffer
	if _, err := get(ctx, hc, base+"/metrics", &body); err != nil {
		return st, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(&body)
	if err != nil {
		return st, fmt.Errorf("bench: %s/metrics: %w", base, err)
	}
	for name, dst := range map[string]*int64{
		"nixcas_index_cache_bytes":          &st.Used,
		"nixcas_index_cache_capacity_bytes": &st.Capacity,
		"nixcas_index_cache_hits_total":     &st.Hits,
		"nixcas_index_cache_misses_total":   &st.Misses,
	} {
		mf := families[name]
		if mf == nil || len(mf.GetMetric()) != 1 {
			return st, fmt.Errorf("bench: %s/metrics: no %s", base, name)
		}
		m := mf.GetMetric()[0]
		*dst = int64(m.GetGauge().GetValue() + m.GetCounter().GetValue()) // one of the two is set
	}
	return st, nil
}

// narInfoLoad requests narinfos of random synthetic paths on conns
// connections for window and returns the latencies.
func narInfoLoad(ctx context.Context, hc *http.Client, base string, paths, conns int, window time.Duration) (Latency, error) {
	return LoadGETs(ctx, hc, conns, window, func(rng *rand.Rand) string {
		return base + "/" + scalePathName(rng.IntN(paths))[:32] + ".narinfo"
	}, func(url string, body []byte) error {
		if len(body) == 0 {
			return fmt.Errorf("bench: empty narinfo at %s", url)
		}
		return nil
	})
}

// LoadGETs sends GET requests through hc on conns connections at once for
// window, the URL of each from next (given the connection's own random
// source), every answer read whole and judged by check (nil: any 200),
// and returns their latencies and rate. Each connection sends at least
// one request, even when it starts after the window on a busy machine, and
// the rate is over the time they all took. It stops at the first failure.
func LoadGETs(ctx context.Context, hc *http.Client, conns int, window time.Duration, next func(*rand.Rand) string, check func(url string, body []byte) error) (Latency, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  []time.Duration
		ferr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(window)
	for c := range conns {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), uint64(conns)))
			var (
				lat  []time.Duration
				body bytes.Buffer
			)
			for first := true; first || time.Now().Before(deadline) && ctx.Err() == nil; first = false {
				url := next(rng)
				body.Reset()
				start := time.Now()
				_, err := get(ctx, hc, url, &body)
				if err == nil && check != nil {
					err = check(url, body.Bytes())
				}
				if err != nil {
					mu.Lock()
					if ferr == nil {
						ferr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				lat = append(lat, time.Since(start))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if ferr != nil {
		return Latency{}, ferr
	}
	return latencyOf(all, time.Since(start)), nil
}

func latencyOf(all []time.Duration, took time.Duration) Latency {
	if len(all) == 0 {
		return Latency{}
	}
	slices.Sort(all)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	return Latency{
		Requests: len(all),
		P50us:    us(all[len(all)/2]),
		P99us:    us(all[len(all)*99/100]),
		RPS:      float64(len(all)) / took.Seconds(),
	}
}

// narLoad downloads the NAR of the path whose hash part is hash, one
// connection, again and again for window (at least twice), and returns
// the throughput in MB/s and the median time of a download in µs.
func narLoad(ctx context.Context, hc *http.Client, base, hash string, window time.Duration) (float64, float64, error) {
	var info strings.Builder
	if _, err := get(ctx, hc, base+"/"+hash+".narinfo", &info); err != nil {
		return 0, 0, err
	}
	var url string
	sc := bufio.NewScanner(strings.NewReader(info.String()))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "URL: "); ok {
			url = v
		}
	}
	if url == "" {
		return 0, 0, fmt.Errorf("bench: scale: narinfo of %s has no URL", hash)
	}
	var (
		total int64
		times []time.Duration
	)
	start := time.Now()
	for len(times) < 2 || time.Since(start) < window {
		t := time.Now()
		n, err := get(ctx, hc, base+"/"+url, io.Discard)
		if err != nil {
			return 0, 0, err
		}
		times = append(times, time.Since(t))
		total += n
	}
	var sum time.Duration
	for _, t := range times {
		sum += t
	}
	slices.Sort(times)
	return mbps(total, sum), float64(times[len(times)/2].Nanoseconds()) / 1000, nil
}

// get fetches url into w, checking the status and Content-Length.
func get(ctx context.Context, hc *http.Client, url string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("bench: GET %s: %s", url, resp.Status)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("bench: GET %s: %w", url, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("bench: GET %s: %d bytes of %d", url, n, resp.ContentLength)
	}
	return n, nil
}
