package store_test

import (
	"errors"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixcas/nixcas/store"
)

func mustKey(t *testing.T, name string) (signature.SecretKey, signature.PublicKey) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sk, pk
}

// signedBy returns the names of the keys among pks whose signature in sigs
// verifies over p's fingerprint.
func signedBy(p *store.PathInfo, pks ...signature.PublicKey) []string {
	var names []string
	for _, pk := range pks {
		if signature.VerifyFirst(p.Fingerprint(), p.Signatures, []signature.PublicKey{pk}) {
			names = append(names, pk.Name)
		}
	}
	return names
}

// TestIndexSigns: a path is signed with the index's keys when it is put
// (the signature is stored: an index without keys over the same data reads
// it), the uploader's signature is kept, and a path put before a key was
// configured gets that key's signature when read.
func TestIndexSigns(t *testing.T) {
	ctx := t.Context()
	s, plain := openStore(t)
	k1, pk1 := mustKey(t, "cache-1")
	k2, pk2 := mustKey(t, "cache-2")
	up, pkUp := mustKey(t, "uploader-1")
	signer1, err := store.NewSigner(k1)
	if err != nil {
		t.Fatal(err)
	}
	signer12, err := store.NewSigner(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	x1 := store.NewIndex(s, s, store.WithSigner(signer1))
	x12 := store.NewIndex(s, s, store.WithSigner(signer12))

	p := ingestNAR(t, s, pathA, "hello")
	upSig, err := up.Sign(nil, p.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	p.Signatures = []store.Signature{upSig}
	if err := x1.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	if len(p.Signatures) != 1 {
		t.Errorf("Put modified its argument: %d signatures", len(p.Signatures))
	}
	old := ingestNAR(t, s, pathB, "stored before any key")
	if err := plain.Put(ctx, old); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		x    *store.Index
		path *store.PathInfo
		want []string
	}{
		{"stored signature, read without keys", plain, p, []string{"cache-1", "uploader-1"}},
		{"stored signature, read with its key", x1, p, []string{"cache-1", "uploader-1"}},
		{"second key added on read", x12, p, []string{"cache-1", "cache-2", "uploader-1"}},
		{"old path, unsigned without keys", plain, old, nil},
		{"old path signed on read", x12, old, []string{"cache-1", "cache-2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.x.Get(ctx, tc.path.Digest())
			if err != nil {
				t.Fatal(err)
			}
			names := signedBy(got, pk1, pk2, pkUp)
			if len(got.Signatures) != len(tc.want) || len(names) != len(tc.want) {
				t.Fatalf("%d signatures, valid ones by %q; want %q", len(got.Signatures), names, tc.want)
			}
			for i := range names {
				if names[i] != tc.want[i] {
					t.Errorf("valid signatures by %q, want %q", names, tc.want)
				}
			}
			var listed *store.PathInfo
			err = tc.x.List(ctx, func(q *store.PathInfo) error {
				if q.Path == tc.path.Path {
					listed = q
				}
				return nil
			})
			if err != nil || listed == nil || len(listed.Signatures) != len(got.Signatures) {
				t.Errorf("List: %v, %+v; want the signatures Get gives", err, listed)
			}
		})
	}

	// Putting the same path again with the key adds nothing twice.
	if err := x12.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := plain.Get(ctx, p.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Signatures); n != 3 {
		t.Errorf("after a second put with two keys: %d stored signatures, want 3", n)
	}
}

func TestNewSigner(t *testing.T) {
	k, _ := mustKey(t, "cache-1")
	for _, tc := range []struct {
		name    string
		keys    []signature.SecretKey
		wantNil bool
		wantErr bool
	}{
		{"no keys", nil, true, false},
		{"one key", []signature.SecretKey{k}, false, false},
		{"zero key", []signature.SecretKey{{}}, true, true},
		{"good then zero key", []signature.SecretKey{k, {}}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.NewSigner(tc.keys...)
			if (err != nil) != tc.wantErr || (s == nil) != tc.wantNil {
				t.Fatalf("NewSigner: %v, %v", s, err)
			}
			if err != nil && !errors.Is(err, store.ErrInvalid) {
				t.Errorf("error %v does not wrap store.ErrInvalid", err)
			}
		})
	}
	// A nil Signer signs nothing.
	var s *store.Signer
	p := &store.PathInfo{Path: pathA, NARSize: 1}
	if q := s.Sign(p); q != p || len(q.Signatures) != 0 {
		t.Errorf("nil Signer changed the PathInfo")
	}
}

// TestSignSameName: under the name of one of the index's keys only that
// key's signature is recorded (an uploaded forgery, or a signature of an
// earlier key of the same name, is replaced by Put), while reads add a
// signature only under a name that has none.
func TestSignSameName(t *testing.T) {
	ctx := t.Context()
	s, plain := openStore(t)
	k, pk := mustKey(t, "cache-1")
	old, _ := mustKey(t, "cache-1") // an earlier key of the same name
	up, pkUp := mustKey(t, "uploader-1")
	signer, err := store.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	x := store.NewIndex(s, s, store.WithSigner(signer))

	p := ingestNAR(t, s, pathA, "hello")
	forged, err := old.Sign(nil, p.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	upSig, err := up.Sign(nil, p.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	p.Signatures = []store.Signature{forged, upSig}

	// Sign: the forgery goes, the uploader's stays, the key's comes.
	q := signer.Sign(p)
	if len(p.Signatures) != 2 {
		t.Fatalf("Sign modified its argument")
	}
	if got := signedBy(q, pk, pkUp); len(q.Signatures) != 2 || len(got) != 2 {
		t.Errorf("Sign: %d signatures, valid by %q; want 2, by cache-1 and uploader-1", len(q.Signatures), got)
	}
	if again := signer.Sign(q); again != q {
		t.Errorf("Sign of a signed PathInfo made a copy")
	}

	// SignMissing trusts the name: a read of a record signed under it
	// changes nothing; a record without it gets the key's signature.
	if r := signer.SignMissing(p); r != p {
		t.Errorf("SignMissing re-signed a PathInfo with a signature under the key's name")
	}
	bare := *p
	bare.Signatures = []store.Signature{upSig}
	r := signer.SignMissing(&bare)
	if got := signedBy(r, pk, pkUp); len(r.Signatures) != 2 || len(got) != 2 || len(bare.Signatures) != 1 {
		t.Errorf("SignMissing: %d signatures, valid by %q; want 2 by both (argument left with %d)", len(r.Signatures), got, len(bare.Signatures))
	}

	// Put records the key's signature in place of the forgery, also when
	// the forgery was recorded earlier by an index without keys.
	if err := plain.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := x.Put(ctx, &bare); err != nil {
		t.Fatal(err)
	}
	got, err := plain.Get(ctx, p.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if names := signedBy(got, pk, pkUp); len(got.Signatures) != 2 || len(names) != 2 {
		t.Errorf("recorded: %d signatures, valid by %q; want 2, by cache-1 and uploader-1", len(got.Signatures), names)
	}
}
