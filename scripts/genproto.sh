#!/usr/bin/env bash
# Regenerates the Go protobuf and gRPC code under proto/ from the .proto
# files in proto/snix/ and proto/nixcas/. Generators are pinned and
# installed into .bin/.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1
MODULE=github.com/nixcas/nixcas

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/.bin"

if ! command -v protoc >/dev/null 2>&1; then
	echo "genproto: protoc not found in PATH; install it with: apt-get install -y protobuf-compiler" >&2
	exit 1
fi

mkdir -p "$bin"

# install_gen NAME PACKAGE VERSION: (re)install a generator unless the pinned
# version is already present.
install_gen() {
	local name=$1 pkg=$2 version=$3
	if [[ -x "$bin/$name" ]] && "$bin/$name" --version 2>/dev/null | grep -qF "${version#v}"; then
		return
	fi
	echo "genproto: installing $pkg@$version into $bin" >&2
	(cd "$repo" && GOBIN="$bin" GOFLAGS= go install "$pkg@$version")
}

install_gen protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install_gen protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

cd "$repo"

# Remove previous output so renamed or deleted .proto files leave nothing stale.
rm -f proto/castorepb/*.pb.go proto/storepb/*.pb.go proto/nixcaspb/*.pb.go

# Sorted, paths relative to the include root, for deterministic output.
mapfile -t protos < <(cd proto && find snix nixcas -name '*.proto' | LC_ALL=C sort)

protoc \
	-I proto \
	--plugin=protoc-gen-go="$bin/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
	--go_out=. --go_opt=module="$MODULE" \
	--go-grpc_out=. --go-grpc_opt=module="$MODULE" \
	"${protos[@]/#/proto/}"

echo "genproto: generated $(ls proto/castorepb/*.pb.go proto/storepb/*.pb.go proto/nixcaspb/*.pb.go | wc -l) files" >&2
