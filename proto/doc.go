// Package proto holds nixcas's protobuf definitions: the snix castore
// (snix.castore.v1) and store (snix.store.v1) messages and services,
// wire-compatible with snix/tvix, and nixcas's own chunk-sync extensions
// (nixcas.v1), with the generate step that turns them into Go.
//
// The .proto sources live under snix/ and nixcas/; the generated code lives
// in the castorepb, storepb and nixcaspb subpackages. Run
// "go generate ./proto" (which runs scripts/genproto.sh) after editing any
// .proto file.
package proto

//go:generate bash ../scripts/genproto.sh
