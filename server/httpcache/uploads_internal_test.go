package httpcache

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/nixcas/nixcas/narrender"
)

// TestUploadsBounded: the upload memory keeps at most max uploads, each
// for ttl, and finds them by URL or NAR hash.
func TestUploadsBounded(t *testing.T) {
	u := newUploads(3, time.Hour)
	mk := func(i int) *upload {
		return &upload{url: fmt.Sprintf("nar/%d.nar", i), nar: narrender.Result{NARSha256: sha256.Sum256([]byte{byte(i)})}}
	}
	var ups []*upload
	for i := range 5 {
		ups = append(ups, mk(i))
		u.add(ups[i])
	}
	for i, up := range ups {
		byURL := u.get(up.url, [32]byte{}) != nil
		byHash := u.get("", up.nar.NARSha256) != nil
		if want := i >= 2; byURL != want || byHash != want {
			t.Errorf("upload %d: found by URL %v, by hash %v, want %v", i, byURL, byHash, want)
		}
	}
	u.remove(ups[3])
	if u.get(ups[3].url, ups[3].nar.NARSha256) != nil {
		t.Error("removed upload still found")
	}
	// Many uploads taken one by one keep the queue bounded.
	for i := range 100 {
		up := mk(10 + i)
		u.add(up)
		u.remove(up)
	}
	if len(u.queue) > 2*3+1 || u.live != 2 {
		t.Errorf("queue of %d, %d live, after adding and removing", len(u.queue), u.live)
	}
	// Expired uploads are not found.
	e := newUploads(10, -time.Second)
	e.add(mk(1))
	if e.get(mk(1).url, mk(1).nar.NARSha256) != nil {
		t.Error("expired upload found")
	}
}
