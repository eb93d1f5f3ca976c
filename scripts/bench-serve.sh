#!/usr/bin/env bash
# Serving speed beside its baselines, each measured in the same run:
#
#   1. scripts/bench-http.sh: `nix copy --from` and narinfo latency of
#      nixcas beside nginx serving the same NARs and narinfos as static
#      files;
#   2. `nixcas bench speed`: rendering a NAR from a warm store beside
#      `nix-store --dump` of the same tree (the Go 1.22.0 toolchain);
#   3. scripts/bench-pull.sh: `nixcas pull` over gRPC beside `nix copy
#      --from` over HTTP, one large path and 1000 small ones.
#
# Usage: scripts/bench-serve.sh. The Go toolchain is fetched once into
# NIXCAS_BENCH_DIR/corpus (default $TMPDIR/nixcas-bench-http). Not part of
# the test suite; the load average is printed around every step (the
# ratios are only meaningful on an otherwise idle machine).
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'bench-serve: %s\n' "$*" >&2; }

bench_dir=${NIXCAS_BENCH_DIR:-${TMPDIR:-/tmp}/nixcas-bench-http}

log "1/3 nixcas beside nginx; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# Only BenchmarkNixCopy: the uploaded-compression variants are slow (xz,
# brotli) and compare nixcas with itself.
scripts/bench-http.sh -bench '^BenchmarkNixCopy$'

log "2/3 render beside nix-store --dump; load: $(cut -d' ' -f1-3 /proc/loadavg)"
tree=$(go run ./scripts/internal/gotoolchain "$bench_dir/corpus" go1.22.0)
go run ./cmd/nixcas bench speed --tree "$tree" --runs 3

log "3/3 nixcas pull beside nix copy; load: $(cut -d' ' -f1-3 /proc/loadavg)"
scripts/bench-pull.sh
log "done; load: $(cut -d' ' -f1-3 /proc/loadavg)"
