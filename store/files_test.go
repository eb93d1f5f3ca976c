package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// TestFiles: files kept beside store paths survive reopening the store;
// bad names, unknown kinds and blobs not in the castore are refused.
func TestFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := castore.NewWriter(s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, size, err := w.WriteBlob(ctx, strings.NewReader("build log\n"))
	if err == nil {
		err = w.Flush(ctx)
	}
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	x := store.NewIndex(s, s)
	f := store.File{ContentType: "text/plain", ContentEncoding: "br", Blob: d, Size: size}
	const realisation = "sha256:dfadfabebd3c069ab0157ca7c9fe607813c88ee22d8f5886b2bafcae87116f3f!out.doi"
	valid := []struct{ kind, name string }{
		{store.FileLog, drv},
		{store.FileDebugInfo, "abcdef0123456789abcdef0123456789abcdef01.debug"},
		{store.FileDebugInfo, "abcdef0123456789abcdef0123456789abcdef01"},
		{store.FileRealisation, realisation},
	}
	for _, v := range valid {
		if err := x.PutFile(ctx, v.kind, v.name, f); err != nil {
			t.Errorf("PutFile(%s, %s): %v", v.kind, v.name, err)
		}
	}
	for _, tc := range []struct {
		kind, name string
		f          store.File
		want       error
	}{
		{store.FileLog, "hello.drv", f, store.ErrInvalid},
		{store.FileLog, drv[:33] + ".hidden.drv", f, store.ErrInvalid},
		{store.FileLog, drv[:33] + "a/b", f, store.ErrInvalid},
		{store.FileDebugInfo, "ABCDEF.debug", f, store.ErrInvalid},
		{store.FileDebugInfo, "../x", f, store.ErrInvalid},
		{store.FileRealisation, strings.TrimSuffix(realisation, ".doi"), f, store.ErrInvalid},
		{store.FileRealisation, "sha256:abc!out.doi", f, store.ErrInvalid},
		{store.FileRealisation, strings.Replace(realisation, "!out", "!.out", 1), f, store.ErrInvalid},
		{"nar", drv, f, store.ErrInvalid},
		{store.FileLog, pathB, store.File{Blob: castore.Hash([]byte("not stored")), Size: 10}, store.ErrIncomplete},
	} {
		if err := x.PutFile(ctx, tc.kind, tc.name, tc.f); !errors.Is(err, tc.want) {
			t.Errorf("PutFile(%s, %s): %v, want %v", tc.kind, tc.name, err, tc.want)
		}
		if _, err := x.GetFile(ctx, tc.kind, tc.name); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetFile(%s, %s) after a refused put: %v, want ErrNotFound", tc.kind, tc.name, err)
		}
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x = store.NewIndex(s, s)
	for _, v := range valid {
		got, err := x.GetFile(ctx, v.kind, v.name)
		if err != nil || got != f {
			t.Errorf("after reopening, GetFile(%s, %s) = %+v, %v; want %+v", v.kind, v.name, got, err, f)
		}
	}
	if _, err := x.GetFile(ctx, store.FileLog, pathA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetFile of a log never put: %v", err)
	}
}
