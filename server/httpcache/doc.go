// Package httpcache speaks the Nix binary cache protocol over HTTP: its
// handler ([New]) serves the store to unmodified Nix as a substituter and
// accepts what `nix copy --to http://...` uploads, [Import] copies an
// existing binary cache (a directory or an HTTP(S) cache) into the store,
// and [PullThrough] is an index that fetches paths from such a cache when
// Nix first asks for them (the proxy's pull-through mode).
//
// # Serving
//
//	GET  /nix-cache-info                  StoreDir, WantMassQuery, Priority
//	GET  /<hash>.narinfo                  from the PathInfo, signed (see below)
//	GET  /<hash>.ls                       the file listing (JSON, version 1)
//	GET  /nar/<narhash>.nar               rendered from the castore on the fly
//	GET  /nar/<narhash>.nar.zst           the same, zstd-compressed on the fly
//	GET  /nar/snix-castore/<entry>?narsize=N
//	                                      the NAR of any tree: <entry> is the
//	                                      base64url snix.castore.v1.Entry
//	GET  /nar/<file>                      a name a NAR file was uploaded
//	                                      under (see Uploading), in the
//	                                      compression its narinfo named
//
// HEAD works wherever GET does. <hash> is a store path's 32-character
// nixbase32 hash, <narhash> the 52-character nixbase32 SHA-256 of the NAR.
// Uncompressed NARs have an exact Content-Length and answer a single-range
// Range request with 206 and exactly those bytes, skipping the files
// before the range without reading them (narrender.RenderRange); a request
// for several ranges gets the whole NAR. NAR responses are immutable and
// say so in Cache-Control. An unknown hash is a 404 after one index
// look-up. A narinfo is served only for a PathInfo in the index, and the
// index accepts only PathInfos whose tree is all present, so every narinfo
// served can be followed by its NAR.
//
// A narinfo says "Compression: none" and names nar/<narhash>.nar, or, with
// Options.Compression "zstd", names nar/<narhash>.nar.zst without FileHash
// and FileSize (the compressed size is not known before compressing). Its
// Sig lines are every signature the uploader supplied plus one per
// Options.SignKeys that it lacks (a store.Index made with store.WithSigner
// has signed it already), all over Nix's fingerprint of the path
// (store.PathInfo.Fingerprint), which depends on the content only; with two
// keys configured both signatures are served, so clients can move from one
// key to the next.
//
// # Uploading
//
// `nix copy --to http://host:port[?compression=xz|zstd|bzip2|br|none]`
// first reads nix-cache-info and asks for the narinfos it means to write,
// then for each path PUTs nar/<filehash>.nar[.xz|.zst|.bz2|.br] and then
// <hash>.narinfo. A NAR PUT is decompressed (the format is recognised by
// its magic number; brotli, which has none, by its .br name) and ingested
// into the castore as it streams in; the result is remembered, by the URL
// it was put at and by NAR hash, for a limited time and number of uploads.
// The narinfo PUT must then name that URL (or a NAR already stored with the
// same hash) with the NarHash and NarSize that were ingested, else it is
// refused with 400 and nothing becomes visible; on success the PathInfo,
// with the uploader's signatures, is put in the index.
//
// A narinfo is also refused with 400 naming the field when its StorePath
// is not directly in /nix/store or has a name Nix forbids (a leading '.',
// characters outside [A-Za-z0-9+-._?=], over 211 characters), when it has
// no URL, or when it refers to a path the cache does not hold (a path may
// refer to itself; `nix copy` uploads references first). The index then
// checks its content address, if any, against the store path and the
// contents (store.CheckContentAddress); a PathInfo refused at any step
// leaves the one already recorded for the path, and its signatures, as
// they were.
//
// The narinfo's URL and Compression are recorded too (store.NARFile,
// durably, before the PathInfo), because the uploading Nix keeps the
// narinfo it wrote in its narinfo cache and later fetches the NAR at that
// URL, expecting that compression; it also HEADs the URL before uploading
// and skips the upload when it answers. Every recorded name answers GET,
// HEAD and Range with the stored NAR in that format, whatever bytes were
// uploaded: xz, zstd, br, gzip and lz4 are framed without compressing
// (uncompressed LZMA2 chunks, raw zstd blocks, uncompressed brotli
// meta-blocks, stored deflate blocks, uncompressed lz4 blocks; see
// storedFormat), so the body's length follows from the NAR size and a
// range renders only the NAR under it; bzip2, which has no such mode, is
// compressed on the fly (CPU-bound, no Content-Length, no ranges); none is
// the NAR itself. The body differs from the uploaded file, so its
// FileHash and FileSize no longer hold: Nix 2.8 does not check them when
// it downloads (it decompresses and checks the NAR's hash and size). A
// NAR uploaded again under another name gains that name.
//
// # Deleting
//
//	DELETE /<hash>.narinfo                204: the store path is gone from the
//	                                      index; 404 when it was not there
//
// A delete is a write: it needs the push token as PUTs do. From the 204
// on, the narinfo and the NAR URLs of the path answer 404 (the handler
// keeps no narinfo cache; a Nix client's own narinfo cache may still
// remember the path until its TTL). The path's data stays stored until a
// garbage collection frees it. An Index without the power to delete
// (store.Index has it) answers 405.
//
// # Access times
//
// Serving a narinfo (GET or HEAD), a NAR by its hash or a NAR under an
// uploaded name notes the path as read (store.Index.RecordAccess, in
// memory; the server writes them every 30 s), for retention.
//
// # Logs, debug info and realisations
//
//	PUT|GET /log/<drv base name>                nix store copy-log --to, nix log --store
//	PUT|GET /debuginfo/<build id>[.debug]       nix copy --to '...?index-debug-info=1'
//	PUT|GET /realisations/<drv output id>.doi   nix copy of ca-derivations outputs
//
// These are kept as uploaded: the body as a castore blob, with its
// Content-Type and Content-Encoding, both sent back on GET (HEAD works
// too, as Nix asks before writing debug info). A second PUT replaces the
// first, as Nix's upsertFile expects. A log may have 64 MiB, the others
// 1 MiB (413 beyond); an uncompressed realisation must be JSON whose "id"
// is its file name and whose "outPath" a store path base name. They need
// an Index that keeps files (store.Index); without one, PUTs get 405.
//
// # Authorization
//
// With Options.PushToken set, PUTs and DELETEs need it; with Options.ReadToken set,
// GETs need it (or the push token). With a read token and no push token,
// or with Options.RefuseAnonymousWrites and no push token, PUTs are
// refused (403); the rules are server/auth's, shared with gRPC. A token is given either as
// "Authorization: Bearer <token>" or as the password of HTTP basic
// authentication (any user name), so that Nix's netrc-file works. A
// missing token is a 401 with WWW-Authenticate, a wrong one a 403.
//
// # Errors
//
// Errors of this package wrap [ErrInvalid] (a malformed request, narinfo or
// file) or castore.ErrCorrupt (a NAR that does not match its narinfo), or
// come from the castore, narrender and store packages; the handler
// translates them to HTTP statuses.
package httpcache
