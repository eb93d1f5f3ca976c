//go:build benchhttp

package httpcache_test

// BenchmarkNixCopy compares nixcas with the same NARs served as static
// files by nginx, in one run: `nix copy --from` throughput (into stores on
// tmpfs, five rounds alternating which server goes first), the server's
// CPU time meanwhile, raw NAR GET throughput, and narinfo latency at 1 and
// 16 concurrent keep-alive connections. nixcas runs in a process of its
// own (this test binary, see TestMain) as `nixcas serve` runs it, with
// its access log off (benchServe), over a Pebble store with default
// options, filled by `nix copy --to`; nginx serves what
// `nix copy --to file://...?compression=none` wrote. It needs nginx and
// Nix; scripts/bench-http.sh installs them and runs
//
//	go test -tags benchhttp -run '^$' -bench BenchmarkNixCopy -benchtime 1x -timeout 60m ./server/httpcache/
//
// The build tag keeps the benchmark and its dependency on the bench
// package out of ordinary test builds. The payload is a Go toolchain
// (bench.GoToolchain), one store path per top-level entry;
// NIXCAS_BENCH_DIR (default $TMPDIR/nixcas-bench-http) keeps it between
// runs.
//
// NIXCAS_BENCH_BASELINE names the test binary of another version of this
// package (go test -tags benchhttp -c): it then serves a store of its own,
// filled the same way, as a third server "nixcas-base" in every round, so
// that two versions are compared in one run. NIXCAS_BENCH_SERVE_CPUPROFILE
// names a file prefix: each nixcas server writes a CPU profile of itself
// per round, PREFIX-NAME.R (R 0 the upload, 1 the first nix copy, ...).
// The server CPU per GiB is printed for the first round and for the
// others apart: the first decodes the frames the upload packed.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo"

	"github.com/nixcas/nixcas/bench"
	nixcas "github.com/nixcas/nixcas/server"
)

const benchRounds = 5

func BenchmarkNixCopy(b *testing.B) {
	ctx := b.Context()
	work := os.Getenv("NIXCAS_BENCH_DIR")
	if work == "" {
		work = filepath.Join(os.TempDir(), "nixcas-bench-http")
	}
	tree, err := bench.GoToolchain(ctx, "go1.22.0", filepath.Join(work, "corpus"))
	if err != nil {
		b.Fatal(err)
	}
	run := filepath.Join(work, "run")
	removeStore(run)
	b.Cleanup(func() { removeStore(run) }) // after the servers stop
	n := newNix(b)

	// The source store: one path per top-level entry of the toolchain.
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

	// nginx serving a file:// cache of the same paths.
	static := filepath.Join(run, "static")
	n.run("nix", append([]string{"copy", "--from", src, "--to", "file://" + static + "?compression=none"}, paths...)...)
	nginxURL, nginxPID := startNginx(b, run, static)

	// nixcas in a process of its own (this test binary, see TestMain),
	// filled by nix copy --to.
	type server struct {
		name, url string
		pid       int
	}
	servers := []server{{"nginx", nginxURL, nginxPID}}
	nixcasServers := []string{"nixcas"}
	if os.Getenv("NIXCAS_BENCH_BASELINE") != "" {
		nixcasServers = append(nixcasServers, "nixcas-base")
	}
	var upload time.Duration
	for _, name := range nixcasServers {
		url, pid := startNixcas(b, name, filepath.Join(run, "data-"+name))
		start := time.Now()
		n.run("nix", append([]string{"copy", "--from", src, "--to", url + "?compression=none"}, paths...)...)
		if name == "nixcas" {
			upload = time.Since(start)
		}
		servers = append(servers, server{name, url, pid})
	}
	narURLs := map[string][]string{}
	var hashes []string
	for _, p := range paths {
		hashes = append(hashes, filepath.Base(p)[:32])
	}
	for _, s := range servers {
		for _, h := range hashes {
			ni, err := narinfo.Parse(strings.NewReader(getText(b, s.url+"/"+h+".narinfo")))
			if err != nil {
				b.Fatal(err)
			}
			narURLs[s.name] = append(narURLs[s.name], s.url+"/"+ni.URL)
		}
	}

	// nix copy --from each server into a fresh store, alternating which
	// goes first. The stores are made on tmpfs when there is one, and
	// dirty pages are written back before each copy: the disk's writeback
	// of the previous copy's 20,000 files would otherwise slow the next.
	dstDir := run
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dstDir = filepath.Join("/dev/shm", "nixcas-bench-http")
		defer removeStore(dstDir)
	}
	copySecs := map[string][]float64{}
	serverCPU := map[string]time.Duration{} // during all rounds
	firstCPU := map[string]time.Duration{}  // during the first round
	for r := range benchRounds {
		order := servers
		if r%2 == 1 {
			order = slices.Clone(servers)
			slices.Reverse(order)
		}
		for _, s := range order {
			if s.name != "nginx" {
				syscall.Kill(s.pid, syscall.SIGUSR1) // the next profile
			}
			dst := filepath.Join(dstDir, fmt.Sprintf("dst-%s-%d", s.name, r))
			c := newNix(b)
			exec.Command("sync").Run()
			cpu0 := procCPU(s.pid)
			start := time.Now()
			c.run("nix", append([]string{"copy", "--no-check-sigs", "--from", s.url, "--to", dst}, paths...)...)
			copySecs[s.name] = append(copySecs[s.name], time.Since(start).Seconds())
			cpu := procCPU(s.pid) - cpu0
			serverCPU[s.name] += cpu
			if r == 0 {
				firstCPU[s.name] = cpu
			}
			removeStore(dst)
		}
	}
	// Raw GETs of every NAR, body discarded.
	getSecs := map[string][]float64{}
	for range benchRounds {
		for _, s := range servers {
			start := time.Now()
			for _, u := range narURLs[s.name] {
				getDiscard(b, u)
			}
			getSecs[s.name] = append(getSecs[s.name], time.Since(start).Seconds())
		}
	}
	// narinfo latency.
	type lat struct{ mean, p50, p99, rps float64 }
	lats := map[string]lat{}
	for _, conc := range []int{1, 16} {
		for _, s := range servers {
			var urls []string
			for _, h := range hashes {
				urls = append(urls, s.url+"/"+h+".narinfo")
			}
			d, rps := loadNarInfo(b, urls, conc, 3*time.Second)
			lats[fmt.Sprintf("%s-c%d", s.name, conc)] = lat{mean(d), pct(d, 50), pct(d, 99), rps}
		}
	}

	best := func(secs []float64) float64 { return mib / slices.Min(secs) }
	median := func(secs []float64) float64 { return mib / slices.Sorted(slices.Values(secs))[len(secs)/2] }
	fmt.Printf("\npayload: Go toolchain go1.22.0, %d store paths, %.1f MiB of NAR; nix copy --to nixcas (upload): %.0f MiB/s\n",
		len(paths), mib, mib/upload.Seconds())
	fmt.Printf("\n| measure (%d rounds) | nginx static files | nixcas | nixcas / nginx |\n|---|---|---|---|\n", benchRounds)
	cp, gt := [2]float64{median(copySecs["nginx"]), median(copySecs["nixcas"])}, [2]float64{median(getSecs["nginx"]), median(getSecs["nixcas"])}
	cb := [2]float64{best(copySecs["nginx"]), best(copySecs["nixcas"])}
	fmt.Printf("| nix copy --from, MiB/s, median | %.0f | %.0f | %.2fx |\n", cp[0], cp[1], cp[1]/cp[0])
	fmt.Printf("| nix copy --from, MiB/s, best | %.0f | %.0f | %.2fx |\n", cb[0], cb[1], cb[1]/cb[0])
	fmt.Printf("| server CPU per GiB during nix copy, s | %.2f | %.2f | %.1fx |\n",
		serverCPU["nginx"].Seconds()*1024/mib/benchRounds, serverCPU["nixcas"].Seconds()*1024/mib/benchRounds,
		serverCPU["nixcas"].Seconds()/serverCPU["nginx"].Seconds())
	fmt.Printf("| GET every NAR, MiB/s, median | %.0f | %.0f | %.2fx |\n", gt[0], gt[1], gt[1]/gt[0])
	perGiB := func(d time.Duration, rounds int) float64 { return d.Seconds() * 1024 / mib / float64(rounds) }
	for _, conc := range []int{1, 16} {
		g, x := lats[fmt.Sprintf("nginx-c%d", conc)], lats[fmt.Sprintf("nixcas-c%d", conc)]
		fmt.Printf("| narinfo, %d connection(s): mean / p50 / p99 us, req/s | %.0f / %.0f / %.0f, %.0f | %.0f / %.0f / %.0f, %.0f | %.2fx req/s |\n",
			conc, g.mean, g.p50, g.p99, g.rps, x.mean, x.p50, x.p99, x.rps, x.rps/g.rps)
	}
	fmt.Printf("\n| server | nix copy MiB/s, median | CPU s/GiB, first round | CPU s/GiB, later rounds |\n|---|---|---|---|\n")
	for _, s := range servers {
		fmt.Printf("| %s | %.0f | %.2f | %.2f |\n", s.name, median(copySecs[s.name]),
			perGiB(firstCPU[s.name], 1), perGiB(serverCPU[s.name]-firstCPU[s.name], benchRounds-1))
	}
	b.ReportMetric(cp[1], "nixcas-copy-MiB/s")
	b.ReportMetric(cp[0], "nginx-copy-MiB/s")
	b.ReportMetric(cp[1]/cp[0], "copy-ratio")
	b.ReportMetric(lats["nixcas-c1"].mean, "nixcas-narinfo-us")
}

// BenchmarkNarInfoServers compares narinfo requests only, nixcas beside
// nginx serving the same narinfos as static files: requests per second
// and each server's CPU time per request (from /proc, so load on the
// machine inflates it far less than the request rate), at 1 and 16
// keep-alive connections, for 3 s each. The payload is 200 small store
// paths (nix-store --add), served as BenchmarkNixCopy serves its own:
//
//	go test -tags benchhttp -run '^$' -bench BenchmarkNarInfoServers -benchtime 1x ./server/httpcache/
func BenchmarkNarInfoServers(b *testing.B) {
	// Not b.TempDir, which nginx's workers (running as another user)
	// cannot read.
	work, err := os.MkdirTemp("", "nixcas-bench-narinfo-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { removeStore(work) }) // after the servers stop
	if err := os.Chmod(work, 0o755); err != nil {
		b.Fatal(err)
	}
	n := newNix(b)
	src := filepath.Join(work, "src")
	files := filepath.Join(work, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		b.Fatal(err)
	}
	args := []string{"--store", src, "--add"}
	for i := range 200 {
		f := filepath.Join(files, fmt.Sprintf("file-%03d", i))
		if err := os.WriteFile(f, []byte(strings.Repeat(fmt.Sprintf("contents of file %d\n", i), 50)), 0o644); err != nil {
			b.Fatal(err)
		}
		args = append(args, f)
	}
	paths := strings.Fields(n.run("nix-store", args...))
	static := filepath.Join(work, "static")
	n.run("nix", append([]string{"copy", "--from", src, "--to", "file://" + static + "?compression=none"}, paths...)...)
	nginxURL, nginxPID := startNginx(b, work, static)
	nixcasURL, nixcasPID := startNixcas(b, "nixcas", filepath.Join(work, "data"))
	n.run("nix", append([]string{"copy", "--from", src, "--to", nixcasURL + "?compression=none"}, paths...)...)
	servers := []struct {
		name, url string
		pid       int
	}{{"nginx", nginxURL, nginxPID}, {"nixcas", nixcasURL, nixcasPID}}
	fmt.Printf("\n| narinfo, %d paths | nginx req/s | nixcas req/s | nixcas / nginx | nginx CPU us/req | nixcas CPU us/req | load |\n|---|---:|---:|---:|---:|---:|---|\n", len(paths))
	for _, conc := range []int{1, 16} {
		var rps [2]float64
		var cpu [2]float64
		for i, s := range servers {
			var urls []string
			for _, p := range paths {
				urls = append(urls, s.url+"/"+filepath.Base(p)[:32]+".narinfo")
			}
			cpu0 := procCPU(s.pid)
			d, r := loadNarInfo(b, urls, conc, 3*time.Second)
			cpu[i] = float64((procCPU(s.pid) - cpu0).Microseconds()) / float64(len(d))
			rps[i] = r
		}
		load, _ := os.ReadFile("/proc/loadavg")
		fmt.Printf("| %d connection(s) | %.0f | %.0f | %.2fx | %.1f | %.1f | %s |\n", conc, rps[0], rps[1], rps[1]/rps[0], cpu[0], cpu[1], strings.Join(strings.Fields(string(load))[:3], " "))
		b.ReportMetric(rps[1]/rps[0], fmt.Sprintf("ratio-c%d", conc))
		b.ReportMetric(cpu[1], fmt.Sprintf("nixcas-cpu-us/req-c%d", conc))
		b.ReportMetric(cpu[0], fmt.Sprintf("nginx-cpu-us/req-c%d", conc))
	}
}

// startNginx serves dir with nginx on a loopback port until the benchmark
// ends, and returns its URL.
func startNginx(b *testing.B, run, dir string) (string, int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	prefix := filepath.Join(run, "nginx")
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		b.Fatal(err)
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log stderr;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; text/x-nix-cache-info nix-cache-info; }
	default_type application/octet-stream;
	server {
		listen %[2]s;
		root %[3]s;
	}
}
`, prefix, addr, dir)
	cf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("nginx", "-p", prefix, "-c", cf)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting nginx (scripts/bench-http.sh installs it): %v", err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	waitListening(b, addr)
	return "http://" + addr, cmd.Process.Pid
}

// TestMain serves a nixcas store when NIXCAS_BENCH_SERVE names one, so that
// the benchmark runs the server in a process of its own.
func TestMain(m *testing.M) {
	if dir := os.Getenv("NIXCAS_BENCH_SERVE"); dir != "" {
		stop := func() {}
		if prefix := os.Getenv("NIXCAS_BENCH_SERVE_CPUPROFILE"); prefix != "" {
			stop = profileRounds(prefix)
		}
		err := benchServe(dir, os.Getenv("NIXCAS_BENCH_ADDR"))
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// profileRounds writes a CPU profile of this process to prefix.0, and on
// each SIGUSR1 ends it and starts the next (prefix.1, ...). The returned
// function ends the last.
func profileRounds(prefix string) (stop func()) {
	var (
		mu sync.Mutex
		f  *os.File
		n  int
	)
	next := func() {
		mu.Lock()
		defer mu.Unlock()
		if f != nil {
			pprof.StopCPUProfile()
			f.Close()
			f = nil
		}
		if n < 0 {
			return
		}
		var err error
		if f, err = os.Create(fmt.Sprintf("%s.%d", prefix, n)); err == nil {
			pprof.StartCPUProfile(f)
		}
		n++
	}
	next()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for range sig {
			next()
		}
	}()
	return func() {
		signal.Stop(sig)
		mu.Lock()
		n = -1
		mu.Unlock()
		next()
	}
}

// benchServe runs the server `nixcas serve` runs (server.New with its
// defaults: metrics, connection limits and timeouts, the narinfo cache)
// over the store in dir, HTTP on addr, until interrupted. The access log
// is off (as `nixcas serve --log-level warn`), as nginx's is.
func benchServe(dir, addr string) error {
	srv, err := nixcas.New(nixcas.Options{DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: addr})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return srv.Serve(ctx)
}

// startNixcas runs a nixcas server called name over the store in dir
// until the benchmark ends, and returns its URL and process id. The server
// "nixcas-base" is NIXCAS_BENCH_BASELINE's binary, the others this one.
func startNixcas(b *testing.B, name, dir string) (string, int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	bin := os.Args[0]
	if name == "nixcas-base" {
		bin = os.Getenv("NIXCAS_BENCH_BASELINE")
	}
	cmd := exec.Command(bin, "-test.run", "^$")
	cmd.Env = append(os.Environ(), "NIXCAS_BENCH_SERVE="+dir, "NIXCAS_BENCH_ADDR="+addr)
	if prefix := os.Getenv("NIXCAS_BENCH_SERVE_CPUPROFILE"); prefix != "" {
		cmd.Env = append(cmd.Env, "NIXCAS_BENCH_SERVE_CPUPROFILE="+prefix+"-"+name)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	waitListening(b, addr)
	return "http://" + addr, cmd.Process.Pid
}

func waitListening(b *testing.B, addr string) {
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if i == 200 {
			b.Fatalf("nothing listens on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procCPU returns the CPU time used so far by process pid and its
// children (nginx's workers).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which is in parentheses: utime and stime
	// are the 12th and 13th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	total := time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, k := range strings.Fields(string(kids)) {
		var c int
		fmt.Sscan(k, &c)
		total += procCPU(c)
	}
	return total
}

// removeStore deletes a directory that may hold a Nix store, whose
// directories Nix makes read-only.
func removeStore(dir string) {
	exec.Command("chmod", "-R", "u+w", dir).Run()
	os.RemoveAll(dir)
}

func getText(b *testing.B, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(body)
}

func getDiscard(b *testing.B, url string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
}

// loadNarInfo GETs urls round robin on conc keep-alive connections for d
// and returns each request's latency in microseconds and the request rate.
func loadNarInfo(b *testing.B, urls []string, conc int, d time.Duration) ([]float64, float64) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(b.Context(), d)
	defer cancel()
	var (
		mu  sync.Mutex
		all []float64
		wg  sync.WaitGroup
	)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			for i := w; ctx.Err() == nil; i++ {
				t0 := time.Now()
				req, _ := http.NewRequest(http.MethodGet, urls[i%len(urls)], nil)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("GET %s: %s", urls[i%len(urls)], resp.Status)
					return
				}
				mine = append(mine, float64(time.Since(t0).Nanoseconds())/1e3)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, float64(len(all)) / time.Since(start).Seconds()
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func pct(xs []float64, p int) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[min(len(s)-1, len(s)*p/100)]
}
