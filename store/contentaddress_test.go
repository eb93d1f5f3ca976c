package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/store"
)

// Store paths and content addresses that Nix 2.8 computed, in a chroot
// store (--store DIR), for hello.txt = "hello nixcas\n", a.txt = "x",
// b.txt = "ref /nix/store/yxgc0j5fvmcrm1g6ycn7wsb5jlzsmi5f-a.txt" and a
// directory "tree" (sub/a = "a\n", link -> sub/a), as printed by
// `nix path-info --json --all` after:
//
//	nix-store --add hello.txt; nix-store --add tree
//	nix-store --add-fixed {sha256,sha1,sha512,md5} hello.txt
//	nix-store --add-fixed --recursive sha1 tree
//	nix-store --add-fixed --recursive md5 hello.txt
//	nix-instantiate --read-write-mode --eval --strict -E \
//	  'let a = builtins.toFile "a.txt" "x"; in [ a (builtins.toFile "b.txt" "ref ${a}") ]'
//	nix build of a ca-derivations derivation (its .drv, a text path)
var nixPaths = []struct {
	path, ca, contents string
	refs               []string
}{
	{"arv1l26ijdl8qgh4qayplq52jy0ndn99-hello.txt", "fixed:r:sha256:18q5s0c96pzy5szkc903sqjqskc0w2xciqyvn3jgkxafa7xc25ji", "hello nixcas\n", nil},
	{"xy44ajcbgaja3ma67nfdzsb9yggc7vki-hello.txt", "fixed:sha256:07yzjk7c714jagjhpfw4b18p2f7yf0w6i5q3a5bxxllgzsdz4i3h", "hello nixcas\n", nil},
	{"7lzmjr051cpg84ln77rlhnhr81f253h7-hello.txt", "fixed:sha1:lpa10lginla0dyvslwv8j4d47giis9sm", "hello nixcas\n", nil},
	{"6j9zfy1pjy365hm666ia9p0dd2s4x425-hello.txt", "fixed:sha512:2wklwh803mr6gvyk0lx8ml92pk92dsllph79fdfrdyrr8fhiv2myqqgsymbdlzc05c1mirwg6bqlzvfjsgj15aigj6mp6imr4lkzlk0", "hello nixcas\n", nil},
	{"lrhfzxfjlj3dnhr6nr40hqgyg0py43zp-hello.txt", "fixed:md5:6dx79vjzd9nkvd7jkdxv827b2n", "hello nixcas\n", nil},
	{"b3kak9jyyjyd9m3s41cnhmykp3as1n39-hello.txt", "fixed:r:md5:2a77096ysnm1hylwrzxaslb73y", "hello nixcas\n", nil},
	{"yxgc0j5fvmcrm1g6ycn7wsb5jlzsmi5f-a.txt", "text:sha256:10a83a91g1r50bdw8g4hn47m7j7m6angpabwc80l9c16nx11cw9d", "x", nil},
	{"a0s31l9rfpgj3kn1ka98slj9j7pcgp56-b.txt", "text:sha256:024x4k48x5pkqrxak1k017v7sblbp5g48dqvrzda2p4camrbvgay", "ref /nix/store/yxgc0j5fvmcrm1g6ycn7wsb5jlzsmi5f-a.txt", []string{"yxgc0j5fvmcrm1g6ycn7wsb5jlzsmi5f-a.txt"}},
	// Directories: the path only (contents: the httpcache tests upload
	// such paths with real Nix).
	{"mn2dja7kqby5h9x3zab68k6aryshfgmf-tree", "fixed:r:sha256:12v3pfpr09sz6igfafrj325mq1424531sn8fk5x4yj8vfjbyfq6i", "", nil},
	{"3ky2mpjv998injqkq9b7mkbd1jh9w74r-tree", "fixed:r:sha1:wi75lrakxa6h1n9cnsgayg60v14r3q7j", "", nil},
	{"i6302s6n4wnd15ydankb16982lla0b2v-ca-out.drv", "text:sha256:0qi4sg71n5cchv0sgc9n1hi32ch8a8c6q7p90fa5y67hsqraiaj1", "", nil},
	{"y7nripb9krm38wklxqfz83d2xfhr4skp-ca-out", "fixed:r:sha256:0ks2zbx1w8l10i9mz0f72bm7hia2i2kgbqzskjg68h3pmjndj3qy", "", nil},
}

// TestContentAddressedPath: the store paths computed from content
// addresses, names and references are the ones Nix computed.
func TestContentAddressedPath(t *testing.T) {
	for _, tc := range nixPaths {
		name := tc.path[33:]
		got, err := store.ContentAddressedPath(tc.ca, name, tc.refs, tc.path)
		if err != nil || got != tc.path {
			t.Errorf("ContentAddressedPath(%s, %s, %v) = %s, %v; Nix computed %s", tc.ca, name, tc.refs, got, err, tc.path)
		}
	}
	for _, tc := range []struct {
		name, ca string
		refs     []string
		self     string
	}{
		{"flat with references", "fixed:sha256:07yzjk7c714jagjhpfw4b18p2f7yf0w6i5q3a5bxxllgzsdz4i3h", []string{pathB}, pathA},
		{"recursive sha1 referring to itself", "fixed:r:sha1:wi75lrakxa6h1n9cnsgayg60v14r3q7j", []string{pathA}, pathA},
		{"text referring to itself", "text:sha256:10a83a91g1r50bdw8g4hn47m7j7m6angpabwc80l9c16nx11cw9d", []string{pathA}, pathA},
		{"unknown kind", "fixed:r:sha3:10a83a91g1r50bdw8g4hn47m7j7m6angpabwc80l9c16nx11cw9d", nil, pathA},
		{"text with sha1", "text:sha1:lpa10lginla0dyvslwv8j4d47giis9sm", nil, pathA},
		{"short hash", "fixed:sha256:07yzjk7c714jagjhpf", nil, pathA},
	} {
		if got, err := store.ContentAddressedPath(tc.ca, "x", tc.refs, tc.self); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: ContentAddressedPath = %s, %v; want ErrInvalid", tc.name, got, err)
		}
	}
}

// TestIndexChecksContentAddress: Put accepts the paths Nix made with
// their contents, and refuses a content address that contradicts the
// store path or the contents, keeping the PathInfo already recorded.
func TestIndexChecksContentAddress(t *testing.T) {
	ctx := context.Background()
	s, x := openStore(t)
	for _, tc := range nixPaths {
		if tc.contents == "" {
			continue
		}
		p := ingestNAR(t, s, tc.path, tc.contents)
		p.CA, p.References = tc.ca, tc.refs
		if err := x.Put(ctx, p); err != nil {
			t.Errorf("Put %s (%s): %v", tc.path, tc.ca, err)
		}
	}

	hello := nixPaths[0]
	// withCA returns a PathInfo of contents under the path ca gives.
	withCA := func(ca, name, contents string, refs []string) *store.PathInfo {
		path, err := store.ContentAddressedPath(ca, name, refs, "")
		if err != nil {
			t.Fatal(err)
		}
		p := ingestNAR(t, s, path, contents)
		p.CA, p.References = ca, refs
		return p
	}
	for _, tc := range []struct {
		name, want string
		p          *store.PathInfo
	}{
		{"path does not follow from the CA", "gives store path", func() *store.PathInfo {
			p := ingestNAR(t, s, pathA, hello.contents)
			p.CA = hello.ca
			return p
		}()},
		{"references change the path", "gives store path", func() *store.PathInfo {
			p := ingestNAR(t, s, hello.path, hello.contents)
			p.CA, p.References = hello.ca, []string{pathB}
			return p
		}()},
		{"recursive sha256 of another NAR", "contents hash to", withCA(hello.ca, "hello.txt", "bye\n", nil)},
		{"flat sha256 of another file", "contents hash to", withCA(nixPaths[1].ca, "hello.txt", "bye\n", nil)},
		{"flat md5 of another file", "contents hash to", withCA(nixPaths[4].ca, "hello.txt", "bye\n", nil)},
		{"recursive md5 of another NAR", "contents hash to", withCA(nixPaths[5].ca, "hello.txt", "bye\n", nil)},
		{"text of another file", "contents hash to", withCA(nixPaths[6].ca, "a.txt", "y", nil)},
		{"text of an executable", "non-executable regular file", func() *store.PathInfo {
			p := withCA(nixPaths[6].ca, "a.txt", "x", nil)
			p.Root.Executable = true
			return p
		}()},
	} {
		err := x.Put(ctx, tc.p)
		if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Put = %v, want ErrInvalid saying %q", tc.name, err, tc.want)
		}
	}

	// A valid PathInfo stays when an invalid one for the same path comes.
	bad := ingestNAR(t, s, hello.path, "bye\n")
	bad.CA = hello.ca
	if err := x.Put(ctx, bad); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Put of another NAR under %s: %v, want ErrInvalid", hello.path, err)
	}
	got, err := x.Get(ctx, bad.Digest())
	if err != nil || got.NARSha256 == bad.NARSha256 || got.CA != hello.ca {
		t.Errorf("after a refused Put, Get = %+v, %v; want the first PathInfo", got, err)
	}
}
