// Package proto holds nixcas's protobuf definitions, wire-compatible with
// the snix castore (snix.castore.v1) and store (snix.store.v1) gRPC
// protocols, and the generate step that turns them into Go.
//
// The .proto sources live under snix/; the generated code lives in the
// castorepb and storepb subpackages. Run "go generate ./proto" (which runs
// scripts/genproto.sh) after editing any .proto file.
package proto

//go:generate bash ../scripts/genproto.sh
