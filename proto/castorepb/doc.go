// Package castorepb contains the generated Go types and gRPC stubs for the
// snix.castore.v1 protocol: Directory and its entries, and the BlobService
// and DirectoryService.
//
// Do not edit the *.pb.go files; regenerate them with "go generate ./proto".
// A Directory's identity is the BLAKE3 digest of its encoding with
// proto.MarshalOptions{Deterministic: true}.
package castorepb
