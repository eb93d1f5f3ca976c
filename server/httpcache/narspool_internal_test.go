package httpcache

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNARSpoolWriteFailure: a write to the spool that fails (a full disk,
// say) empties its file, so that the fetch going on into the store gets
// the space back; its reader stops with the error at once, not after the
// bytes the file no longer holds, and no new reader is let in.
func TestNARSpoolWriteFailure(t *testing.T) {
	sp, err := newNARSpool(t.TempDir(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A file whose WriteAt fails (opened to append) but that can be
	// truncated, holding what was spooled so far.
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "spool"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	spooled := bytes.Repeat([]byte("x"), 1<<20)
	if _, err := f.Write(spooled); err != nil {
		t.Fatal(err)
	}
	sp.f.Close()
	sp.f, sp.n = f, int64(len(spooled))
	r, ok := sp.open(t.Context())
	if !ok {
		t.Fatal("cannot open a new spool")
	}
	defer r.Close()
	if n, err := sp.Write([]byte("more")); n != 4 || err != nil {
		t.Fatalf("Write: %d, %v; want 4, nil (the fetch never fails for its spool)", n, err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != 0 {
		t.Fatalf("spool file after a failed write: %v, %v; want it emptied", st.Size(), err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 4096))
		read <- err
	}()
	select {
	case err := <-read:
		if err == nil || !strings.Contains(err.Error(), "spooling the NAR") {
			t.Errorf("Read after a failed write: %v; want the write's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Read after a failed write did not return within 30 s")
	}
	if _, ok := sp.open(t.Context()); ok {
		t.Error("a spool given up let a new reader in")
	}
	sp.finish(nil)
}
