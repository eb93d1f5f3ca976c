package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportProtectedSource imports from a nixcas server whose binary cache
// needs a read token: refused without credentials, imported with the token
// as a bearer token or as a netrc password, with --json summaries.
func TestImportProtectedSource(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	cacheDir, ps := importE2ECache(t, "zstd")
	dir := t.TempDir()
	serverData := filepath.Join(dir, "server")
	e2eInvocation{Args: []string{"import", "--data", serverData, cacheDir}}.mustSucceed(t)
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("s3cret-read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startGRPCServe(t, serverData, "--read-token-file", tok)
	source := "http://" + srv.httpAddr
	var narBytes uint64
	for _, p := range ps {
		narBytes += uint64(len(p.nar))
	}

	netrc := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	host := strings.Split(srv.httpAddr, ":")[0]
	for _, tc := range []struct {
		name   string
		creds  []string
		status string // of a refusal
	}{
		{"no credentials", nil, "401"},
		{"bearer token", []string{"--token-file", tok}, ""},
		{"netrc", []string{"--netrc-file", netrc("netrc", "machine other.example password nope\nmachine "+host+"\n  login nix\n  password s3cret-read\n")}, ""},
		{"netrc default entry", []string{"--netrc-file", netrc("netrc-default", "default login nix password s3cret-read\n")}, ""},
		{"netrc wrong password", []string{"--netrc-file", netrc("netrc-wrong", "machine "+host+" password wrong\n")}, "403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"import", "--json", "--data", filepath.Join(t.TempDir(), "data")}, tc.creds...)
			res := e2eInvocation{Args: append(args, source, ps[2].abs())}.run(t)
			var sum importSummary
			if err := json.Unmarshal(res.Stdout, &sum); err != nil {
				t.Fatalf("import --json output %q: %v\n%s", res.Stdout, err, res.Stderr)
			}
			if tc.status != "" {
				if res.Err == nil || sum.Imported != 0 || !strings.Contains(res.Stderr, tc.status) {
					t.Errorf("import without valid credentials: %v, %+v\n%s", res.Err, sum, res.Stderr)
				}
				return
			}
			if res.Err != nil {
				t.Fatalf("import: %v\n%s", res.Err, res.Stderr)
			}
			if want := (importSummary{Imported: 3, NARBytes: narBytes}); sum != want {
				t.Errorf("import --json: %+v, want %+v", sum, want)
			}
		})
	}
}

func TestNetrcLookup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, host string
		login, password     string
		err                 string
	}{
		{"one line", "machine a.example login u password p", "a.example", "u", "p", ""},
		{"several machines", "machine a login ua password pa\nmachine b login ub password pb\n", "b", "ub", "pb", ""},
		{"password only", "machine a password p", "a", "", "p", ""},
		{"default after machines", "machine a password pa\ndefault login d password pd", "c", "d", "pd", ""},
		{"machine wins over default", "default password pd\nmachine c password pc", "c", "", "pc", ""},
		{"no entry", "machine a password p", "b", "", "", "no password for b"},
		{"no password", "machine a login u", "a", "", "", "no password for a"},
		{"missing value", "machine a password", "a", "", "", `"password" has no value`},
		{"macdef", "macdef init\n", "a", "", "", "not supported"},
		{"login outside machine", "login u", "a", "", "", "before any machine"},
		{"unknown token", "machine a pasword p", "a", "", "", `unexpected "pasword"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			login, password, err := netrcLookup(path, tc.host)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || login != tc.login || password != tc.password {
				t.Fatalf("got %q, %q, %v; want %q, %q", login, password, err, tc.login, tc.password)
			}
		})
	}
}
