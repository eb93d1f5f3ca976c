#!/usr/bin/env bash
# Runs the full test suite: installs test dependencies, vets, checks
# formatting and runs all tests with the race detector.
#
# Extra arguments are passed to `go test`, e.g. `scripts/test.sh -short` or
# `scripts/test.sh -run TestRender`.
set -euo pipefail

cd "$(dirname "$0")/.."

scripts/test-deps.sh

go vet ./...
# Without cgo, frames are compressed by the Go zstd library rather than
# the C one: vet that build too, and run the store's tests on it below.
CGO_ENABLED=0 go vet ./...

# gofmt every Go file except generated ones (marked per
# https://go.dev/s/generatedcode) and test data.
go_files=()
while IFS= read -r -d '' f; do
	if ! grep -q -E '^// Code generated .* DO NOT EDIT\.$' "$f"; then
		go_files+=("$f")
	fi
done < <(find . \( -name .git -o -name vendor -o -name testdata \) -prune -o -name '*.go' -type f -print0)
unformatted=
if ((${#go_files[@]})); then
	unformatted=$(gofmt -l "${go_files[@]}")
fi
if [[ -n $unformatted ]]; then
	echo "gofmt needed for:" >&2
	sed 's/^/  /' <<<"$unformatted" >&2
	exit 1
fi

go test -race -timeout 30m "$@" ./...
CGO_ENABLED=0 go test -timeout 10m "$@" ./castore/pebblestore
