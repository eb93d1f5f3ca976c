package store_test

import (
	"slices"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixcas/nixcas/store"
)

// TestPutReplacesSignatures: putting a path that is already recorded
// (with the same NAR) keeps the signatures of the record it replaces,
// except that under the index's key name only that key's signature over
// the new record is kept; and signs nothing but the new record (the
// record replaced is not signed first: whatever that would add under the
// key's name is dropped again).
func TestPutReplacesSignatures(t *testing.T) {
	k, pk := mustKey(t, "cache-1")
	forger, _ := mustKey(t, "cache-1") // an earlier key of the same name
	up, pkUp := mustKey(t, "uploader-1")
	up2, pkUp2 := mustKey(t, "uploader-2")
	sign := func(sk signature.SecretKey, p *store.PathInfo) store.Signature {
		sig, err := sk.Sign(nil, p.Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}

	for _, tc := range []struct {
		name string
		// old is what an index without keys recorded first; new what
		// the index with key cache-1 is then given.
		oldRefs, newRefs []string
		oldSigs, newSigs func(old, new *store.PathInfo) []store.Signature
		// want: the keys whose signature over the new record is
		// stored; stale: how many other signatures are stored.
		want  []string
		stale int
	}{
		{
			name:    "unsigned record, unsigned put",
			oldSigs: func(_, _ *store.PathInfo) []store.Signature { return nil },
			newSigs: func(_, _ *store.PathInfo) []store.Signature { return nil },
			want:    []string{"cache-1"},
		},
		{
			name:    "uploader signatures of both kept",
			oldSigs: func(o, _ *store.PathInfo) []store.Signature { return []store.Signature{sign(up2, o)} },
			newSigs: func(_, n *store.PathInfo) []store.Signature { return []store.Signature{sign(up, n)} },
			want:    []string{"cache-1", "uploader-1", "uploader-2"},
		},
		{
			name:    "forgery under the key's name recorded earlier is dropped",
			oldSigs: func(o, _ *store.PathInfo) []store.Signature { return []store.Signature{sign(forger, o), sign(up, o)} },
			newSigs: func(_, _ *store.PathInfo) []store.Signature { return nil },
			want:    []string{"cache-1", "uploader-1"},
		},
		{
			name:    "forgery in the put is dropped",
			oldSigs: func(o, _ *store.PathInfo) []store.Signature { return []store.Signature{sign(up, o)} },
			newSigs: func(_, n *store.PathInfo) []store.Signature { return []store.Signature{sign(forger, n)} },
			want:    []string{"cache-1", "uploader-1"},
		},
		{
			// Same NAR, other references: the fingerprints differ.
			// The uploader's signature over the old one is kept (as
			// signatures of a replaced record are), the key signs the
			// new one only.
			name:    "record with another fingerprint, unsigned by the key",
			oldRefs: []string{pathB},
			oldSigs: func(o, _ *store.PathInfo) []store.Signature { return []store.Signature{sign(up, o)} },
			newSigs: func(_, _ *store.PathInfo) []store.Signature { return nil },
			want:    []string{"cache-1"},
			stale:   1,
		},
		{
			name:    "record with another fingerprint, forged by the key's name",
			oldRefs: []string{pathB},
			oldSigs: func(o, _ *store.PathInfo) []store.Signature { return []store.Signature{sign(forger, o)} },
			newSigs: func(_, n *store.PathInfo) []store.Signature { return []store.Signature{sign(up2, n)} },
			want:    []string{"cache-1", "uploader-2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			s, plain := openStore(t)
			signer, err := store.NewSigner(k)
			if err != nil {
				t.Fatal(err)
			}
			x := store.NewIndex(s, s, store.WithSigner(signer))

			old := ingestNAR(t, s, pathA, "hello")
			old.References = tc.oldRefs
			n := *old
			n.References = tc.newRefs
			old.Signatures = tc.oldSigs(old, &n)
			n.Signatures = tc.newSigs(old, &n)
			if err := plain.Put(ctx, old); err != nil {
				t.Fatal(err)
			}
			if err := x.Put(ctx, &n); err != nil {
				t.Fatal(err)
			}
			got, err := plain.Get(ctx, n.Digest())
			if err != nil {
				t.Fatal(err)
			}
			names := signedBy(got, pk, pkUp, pkUp2)
			slices.Sort(names)
			if !slices.Equal(names, tc.want) || len(got.Signatures) != len(tc.want)+tc.stale {
				t.Errorf("stored %d signatures, valid over the record by %q; want %d, by %q", len(got.Signatures), names, len(tc.want)+tc.stale, tc.want)
			}
			for _, sig := range got.Signatures {
				if sig.Name == "cache-1" && !signature.VerifyFirst(got.Fingerprint(), []store.Signature{sig}, []signature.PublicKey{pk}) {
					t.Errorf("a signature under the key's name that is not the key's over the record is stored")
				}
			}
			if f := store.SignedFingerprints(signer); f != 1 {
				t.Errorf("the index signed %d fingerprints, want 1 (the record put)", f)
			}
		})
	}
}
