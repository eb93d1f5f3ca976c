#!/usr/bin/env bash
# Benchmarks the HTTP binary cache (server/httpcache) against nginx serving
# the same NARs as static files, in one run: `nix copy --from` throughput,
# raw NAR GET throughput and narinfo latency at 1 and 16 connections, with a
# Go toolchain as the payload (see BenchmarkNixCopy in
# server/httpcache/bench_test.go). Installs Nix and nginx (Debian packages)
# when missing; nginx is started only by the benchmark, on a loopback port.
#
# Not part of the test suite. The machine should be otherwise idle: the
# load average is printed before and after. Extra arguments go to go test.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'bench-http: %s\n' "$*" >&2; }

as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo -E "$@"
	else
		log "need root to run: $*"
		exit 1
	fi
}

scripts/test-deps.sh

if ! command -v nginx >/dev/null 2>&1; then
	log "installing nginx"
	# Keep the package from starting its system service on port 80.
	policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod +x "$policy"
		trap 'as_root rm -f "$policy"' EXIT
	fi
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null
	as_root apt-get -o DPkg::Lock::Timeout=600 -q install -y nginx >/dev/null
fi

log "load before: $(uptime)"
go test -tags benchhttp -run '^$' -bench BenchmarkNixCopy -benchtime 1x -timeout 60m ./server/httpcache/ "$@"
log "load after: $(uptime)"
