package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/internal/testtree"
)

// TestServerFlag pushes with each accepted form of --server to a real
// server, and checks the refusals of the others.
func TestServerFlag(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	srv := startGRPCServe(t, filepath.Join(dir, "server"))
	src := filepath.Join(dir, "src")
	testtree.Build(t, src, testtree.Dir(testtree.Entries{"f": testtree.File(testtree.Text("hello\n"))}))
	port := srv.grpcAddr[strings.LastIndex(srv.grpcAddr, ":")+1:]
	cache := filepath.Join(dir, "cache")
	for _, server := range []string{srv.grpcAddr, "localhost:" + port, "grpc://" + srv.grpcAddr, "grpc://localhost:" + port + "/"} {
		out := grpcPush(t, "--server", server, "--cache", cache, src)
		if len(out) != 1 || out[0].NARHash != grpcNixHash(t, src) {
			t.Errorf("push --server %s: %+v", server, out)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--server", "http://" + srv.httpAddr}, "http:// is the Nix binary cache"},
		{[]string{"--server", "https://cache.example.org"}, "https:// is the Nix binary cache"},
		{[]string{"--server", "unix:///run/nixcas.sock"}, "unknown scheme unix://"},
		{[]string{"--server", "localhost:http"}, `port "http"`},
		{[]string{"--server", srv.grpcAddr, "--tls-ca", filepath.Join(dir, "ca.pem")}, "--tls-ca is for grpcs:// servers"},
		{[]string{"--server", "grpcs://" + srv.grpcAddr, "--tls-ca", filepath.Join(dir, "missing.pem")}, "no such file"},
	} {
		res := e2eInvocation{Args: append(append([]string{"push", "--cache", cache}, tc.args...), src)}.run(t)
		if res.Err == nil || !strings.Contains(res.Stderr, tc.want) {
			t.Errorf("push %s: %v, stderr %q; want an error saying %q", strings.Join(tc.args, " "), res.Err, res.Stderr, tc.want)
		}
	}
}
