// Package nixcaspb contains the generated Go types and gRPC stubs for the
// nixcas.v1 protocol: SyncService, chunk-level sync between a client's
// chunk cache and the server (which chunks, blobs and directories are
// missing, verified chunk upload, batched chunk reads, blobs as chunk
// lists). It also registers the "zstd" gRPC compressor (see [Zstd]) the
// calls carrying chunks may use.
//
// Do not edit the *.pb.go files; regenerate them with "go generate ./proto".
package nixcaspb
