// Package storepb contains the generated Go types and gRPC stubs for the
// snix.store.v1 protocol: PathInfo, NARInfo and the PathInfoService.
//
// Do not edit the *.pb.go files; regenerate them with "go generate ./proto".
package storepb
