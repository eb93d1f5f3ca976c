package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/storepb"
)

// StoreDir is the Nix store directory every path lives in.
const StoreDir = storepath.StoreDir

var (
	// ErrNotFound: no PathInfo for that store path or NAR hash.
	ErrNotFound = errors.New("store: not found")
	// ErrInvalid: a PathInfo breaks the rules (bad store path, reference,
	// hash, signature or content address).
	ErrInvalid = errors.New("store: invalid")
	// ErrIncomplete: a PathInfo's tree is not all in the castore.
	ErrIncomplete = errors.New("store: tree incomplete")
)

// PathDigest is the 20-byte digest a store path's name begins with (the 32
// nixbase32 characters before the first '-').
type PathDigest [storepath.PathHashSize]byte

// String returns the digest in nixbase32, as it appears in store paths.
func (d PathDigest) String() string { return nixbase32.EncodeToString(d[:]) }

// ParsePathDigest parses the 32 nixbase32 characters of a store path hash.
func ParsePathDigest(s string) (PathDigest, error) {
	var d PathDigest
	if len(s) != nixbase32.EncodedLen(len(d)) {
		return d, fmt.Errorf("%w: store path hash %q: want %d characters", ErrInvalid, s, nixbase32.EncodedLen(len(d)))
	}
	b, err := nixbase32.DecodeString(s)
	if err != nil {
		return d, fmt.Errorf("%w: store path hash %q: %v", ErrInvalid, s, err)
	}
	copy(d[:], b)
	return d, nil
}

// Signature is a named ed25519 signature over a PathInfo's fingerprint.
type Signature = signature.Signature

// PathInfo is what the store knows of one store path.
type PathInfo struct {
	// Path is the store path's base name, "<hash>-<name>".
	Path string
	// Root is the tree of the path's contents; its Name is Path.
	Root castore.Entry
	// References are the base names of the paths this one refers to,
	// sorted.
	References []string
	NARSize    uint64
	NARSha256  [sha256.Size]byte
	Signatures []Signature
	// Deriver is the base name of the .drv that built the path, or "".
	Deriver string
	// CA is the content address in Nix's notation ("fixed:r:sha256:...",
	// "text:sha256:..."), or "".
	CA string
}

// Digest returns the digest of the store path's hash part. Call it on a
// valid PathInfo only.
func (p *PathInfo) Digest() PathDigest {
	d, _ := ParsePathDigest(p.Path[:nixbase32.EncodedLen(storepath.PathHashSize)])
	return d
}

// PathName returns the name part of a store path's base name
// "<hash>-<name>"; a string without a dash is returned as it is.
func PathName(base string) string {
	if i := strings.IndexByte(base, '-'); i >= 0 {
		return base[i+1:]
	}
	return base
}

// AbsolutePath returns /nix/store/<Path>.
func (p *PathInfo) AbsolutePath() string { return StoreDir + "/" + p.Path }

// Validate checks the store path, references, deriver, content address and
// root entry.
func (p *PathInfo) Validate() error {
	if err := ValidateBaseName(p.Path); err != nil {
		return fmt.Errorf("%w: store path %q: %v", ErrInvalid, p.Path, err)
	}
	if p.Root.Name != p.Path {
		return fmt.Errorf("%w: %s: root entry named %q", ErrInvalid, p.Path, p.Root.Name)
	}
	switch p.Root.Kind {
	case castore.KindDirectory, castore.KindFile, castore.KindSymlink:
	default:
		return fmt.Errorf("%w: %s: root entry of %v", ErrInvalid, p.Path, p.Root.Kind)
	}
	for i, r := range p.References {
		if err := ValidateBaseName(r); err != nil {
			return fmt.Errorf("%w: %s: reference %q: %v", ErrInvalid, p.Path, r, err)
		}
		if i > 0 && r <= p.References[i-1] {
			return fmt.Errorf("%w: %s: references not sorted or repeated at %q", ErrInvalid, p.Path, r)
		}
	}
	if p.Deriver != "" {
		if err := ValidateBaseName(p.Deriver); err != nil || !strings.HasSuffix(p.Deriver, ".drv") {
			return fmt.Errorf("%w: %s: deriver %q is not a .drv store path", ErrInvalid, p.Path, p.Deriver)
		}
	}
	if p.CA != "" {
		if _, err := caToProto(p.CA); err != nil {
			return fmt.Errorf("%s: %w", p.Path, err)
		}
	}
	if p.NARSize == 0 {
		return fmt.Errorf("%w: %s: NAR size 0", ErrInvalid, p.Path)
	}
	return nil
}

// maxNameLen is the longest store path name Nix accepts.
const maxNameLen = 211

// ValidateBaseName checks a store path's base name, "<hash>-<name>": a
// nixbase32 hash, then a name of at most 211 characters from
// [A-Za-z0-9+-._?=] that does not start with '.' (which also rules out
// "." and "..").
func ValidateBaseName(s string) error {
	const hashLen = 32 // nixbase32 of storepath.PathHashSize bytes
	if len(s) < hashLen+1 || s[hashLen] != '-' {
		return fmt.Errorf("want %d nixbase32 characters, '-' and a name", hashLen)
	}
	// 32 characters of 5 bits are exactly 20 bytes: any 32 characters of
	// the alphabet are a valid hash.
	for _, c := range []byte(s[:hashLen]) {
		if !isNixbase32(c) {
			return fmt.Errorf("hash has the character %q", c)
		}
	}
	name := s[hashLen+1:]
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > maxNameLen:
		return fmt.Errorf("name of %d characters, more than %d", len(name), maxNameLen)
	case name[0] == '.':
		return errors.New("name starts with '.'")
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			return fmt.Errorf("name has the character %q", c)
		}
	}
	return nil
}

// isNixbase32 reports whether c is in nixbase32's alphabet
// (0-9 and a-z without e, o, u and t).
func isNixbase32(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' && c != 'e' && c != 'o' && c != 'u' && c != 't'
}

// NARHash returns the NAR hash as Nix writes it: "sha256:<nixbase32>".
func (p *PathInfo) NARHash() string {
	return "sha256:" + nixbase32.EncodeToString(p.NARSha256[:])
}

// Fingerprint returns what signatures are computed over.
func (p *PathInfo) Fingerprint() string {
	var b strings.Builder
	b.WriteString("1;")
	b.WriteString(p.AbsolutePath())
	b.WriteString(";")
	b.WriteString(p.NARHash())
	b.WriteString(";")
	b.WriteString(strconv.FormatUint(p.NARSize, 10))
	b.WriteString(";")
	for i, r := range p.References {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(StoreDir + "/" + r)
	}
	return b.String()
}

// NarInfo returns the narinfo for p, without URL, compression and file
// fields, which depend on how the NAR is served.
func (p *PathInfo) NarInfo() *narinfo.NarInfo {
	return &narinfo.NarInfo{
		StorePath:  p.AbsolutePath(),
		NarHash:    nixhash.MustNewHashWithEncoding(nixhash.SHA256, p.NARSha256[:], nixhash.NixBase32, true),
		NarSize:    p.NARSize,
		References: slices.Clone(p.References),
		Deriver:    p.Deriver,
		Signatures: slices.Clone(p.Signatures),
		CA:         p.CA,
	}
}

// ToProto converts p to snix.store.v1.PathInfo.
func (p *PathInfo) ToProto() *storepb.PathInfo {
	pb := &storepb.PathInfo{
		Entry: castore.EntryToProto(p.Root),
		Narinfo: &storepb.NARInfo{
			NarSize:        p.NARSize,
			NarSha256:      p.NARSha256[:],
			ReferenceNames: slices.Clone(p.References),
		},
	}
	for _, r := range p.References {
		d, _ := ParsePathDigest(r[:32])
		pb.References = append(pb.References, d[:])
	}
	for _, s := range p.Signatures {
		pb.Narinfo.Signatures = append(pb.Narinfo.Signatures, &storepb.NARInfo_Signature{Name: s.Name, Data: s.Data})
	}
	if p.Deriver != "" {
		d, _ := ParsePathDigest(p.Deriver[:32])
		pb.Narinfo.Deriver = &storepb.StorePath{Name: p.Deriver[33:], Digest: d[:]}
	}
	if p.CA != "" {
		pb.Narinfo.Ca, _ = caToProto(p.CA)
	}
	return pb
}

// PathInfoFromProto converts and validates a PathInfo received on the wire.
// The references' digests must agree with their names.
func PathInfoFromProto(pb *storepb.PathInfo) (*PathInfo, error) {
	if pb.GetEntry() == nil || pb.GetNarinfo() == nil {
		return nil, fmt.Errorf("%w: PathInfo without entry or narinfo", ErrInvalid)
	}
	root, err := castore.EntryFromProto(pb.GetEntry())
	if err != nil {
		return nil, fmt.Errorf("%w: root entry: %v", ErrInvalid, err)
	}
	ni := pb.GetNarinfo()
	p := &PathInfo{
		Path:       root.Name,
		Root:       root,
		References: slices.Clone(ni.GetReferenceNames()),
		NARSize:    ni.GetNarSize(),
	}
	if len(ni.GetNarSha256()) != sha256.Size {
		return nil, fmt.Errorf("%w: %s: NAR sha256 of %d bytes", ErrInvalid, p.Path, len(ni.GetNarSha256()))
	}
	copy(p.NARSha256[:], ni.GetNarSha256())
	if len(pb.GetReferences()) != len(p.References) {
		return nil, fmt.Errorf("%w: %s: %d reference digests for %d names", ErrInvalid, p.Path, len(pb.GetReferences()), len(p.References))
	}
	for i, name := range p.References {
		if !hashPartIs(name, pb.GetReferences()[i]) {
			return nil, fmt.Errorf("%w: %s: reference %q does not match its digest", ErrInvalid, p.Path, name)
		}
	}
	for _, s := range ni.GetSignatures() {
		if s.GetName() == "" || len(s.GetData()) != 64 {
			return nil, fmt.Errorf("%w: %s: signature %q of %d bytes", ErrInvalid, p.Path, s.GetName(), len(s.GetData()))
		}
		p.Signatures = append(p.Signatures, Signature{Name: s.GetName(), Data: slices.Clone(s.GetData())})
	}
	if dv := ni.GetDeriver(); dv != nil {
		p.Deriver = nixbase32.EncodeToString(dv.GetDigest()) + "-" + dv.GetName()
	}
	if ca := ni.GetCa(); ca != nil {
		if p.CA, err = caFromProto(ca); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Path, err)
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// hashPartIs reports whether the base name starts with the nixbase32 of
// digest, a store path digest, without allocating.
func hashPartIs(name string, digest []byte) bool {
	var d PathDigest
	if len(digest) != len(d) || len(name) < 32 {
		return false
	}
	copy(d[:], digest)
	var enc [32]byte
	nixbase32.Encode(enc[:], d[:])
	return string(enc[:]) == name[:32]
}

// caKinds maps Nix's content-address prefixes to the wire enum.
var caKinds = []struct {
	prefix string
	algo   nixhash.Algorithm
	kind   storepb.NARInfo_CA_Hash
	method caMethod
}{
	{"fixed:r:sha256:", nixhash.SHA256, storepb.NARInfo_CA_NAR_SHA256, caNAR},
	{"fixed:r:sha1:", nixhash.SHA1, storepb.NARInfo_CA_NAR_SHA1, caNAR},
	{"fixed:r:sha512:", nixhash.SHA512, storepb.NARInfo_CA_NAR_SHA512, caNAR},
	{"fixed:r:md5:", nixhash.MD5, storepb.NARInfo_CA_NAR_MD5, caNAR},
	{"text:sha256:", nixhash.SHA256, storepb.NARInfo_CA_TEXT_SHA256, caText},
	{"fixed:sha1:", nixhash.SHA1, storepb.NARInfo_CA_FLAT_SHA1, caFlat},
	{"fixed:md5:", nixhash.MD5, storepb.NARInfo_CA_FLAT_MD5, caFlat},
	{"fixed:sha256:", nixhash.SHA256, storepb.NARInfo_CA_FLAT_SHA256, caFlat},
	{"fixed:sha512:", nixhash.SHA512, storepb.NARInfo_CA_FLAT_SHA512, caFlat},
}

func caToProto(ca string) (*storepb.NARInfo_CA, error) {
	for _, k := range caKinds {
		if rest, ok := strings.CutPrefix(ca, k.prefix); ok {
			algo := k.algo
			h, err := nixhash.ParseAny(rest, &algo)
			if err != nil {
				return nil, fmt.Errorf("%w: content address %q: %v", ErrInvalid, ca, err)
			}
			return &storepb.NARInfo_CA{Type: k.kind, Digest: h.Digest()}, nil
		}
	}
	return nil, fmt.Errorf("%w: content address %q of unknown kind", ErrInvalid, ca)
}

func caFromProto(ca *storepb.NARInfo_CA) (string, error) {
	for _, k := range caKinds {
		if k.kind == ca.GetType() {
			h, err := nixhash.NewHash(k.algo, ca.GetDigest())
			if err != nil {
				return "", fmt.Errorf("%w: content address: %v", ErrInvalid, err)
			}
			return k.prefix + h.Format(nixhash.NixBase32, false), nil
		}
	}
	return "", fmt.Errorf("%w: content address of unknown kind %d", ErrInvalid, ca.GetType())
}
