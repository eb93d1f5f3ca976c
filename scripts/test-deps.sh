#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine and checks that
# Nix can serialise and hash a local directory (`nix-store --dump`,
# `nix-hash`), which the end-to-end tests use as the reference NAR encoder.
#
# Idempotent: when everything is present it only runs a quick self-check.
# Installing packages requires root (or sudo).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { printf 'test-deps: %s\n' "$*" >&2; }

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

# Debian packages required, keyed by a command each one provides.
declare -A wanted=(
	[nix-store]=nix-bin
	[nix-hash]=nix-bin
	[nix]=nix-bin             # nix path-info, nix store dump-path (push of store paths)
	[nix-instantiate]=nix-bin # makes store paths with references in tests
	[protoc]=protobuf-compiler
	[gcc]=gcc # go test -race needs cgo
	[xz]=xz-utils             # bench dedup compares with xz and zstd
	[zstd]=zstd
	[brotli]=brotli # httpcache tests decode the containers NARs are served in
	[lz4]=lz4
	[bzip2]=bzip2
	[gzip]=gzip
)

# have reports whether cmd is an executable on PATH (bash's `command -v`
# alone also accepts non-executable files).
have() {
	local path
	path=$(command -v "$1") && [[ -x $path ]]
}

missing=()
for cmd in "${!wanted[@]}"; do
	pkg=${wanted[$cmd]}
	if ! have "$cmd" && [[ " ${missing[*]} " != *" $pkg "* ]]; then
		missing+=("$pkg")
	fi
done

# PostgreSQL 15's server programs (not on PATH): the PostgreSQL metadata
# tests start a private cluster with them (internal/testpg).
if [[ ! -x /usr/lib/postgresql/15/bin/postgres || ! -x /usr/lib/postgresql/15/bin/initdb ]] &&
	[[ " ${missing[*]} " != *" postgresql "* ]]; then
	missing+=(postgresql)
fi

if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	# Wait for a concurrent apt/dpkg run instead of failing on its lock.
	apt_opts=(-o DPkg::Lock::Timeout=600 -q)
	as_root apt-get "${apt_opts[@]}" update >/dev/null
	as_root apt-get "${apt_opts[@]}" install -y "${missing[@]}" >/dev/null
	for cmd in "${!wanted[@]}"; do
		if ! have "$cmd"; then
			log "$cmd is still missing after installing ${wanted[$cmd]}"
			exit 1
		fi
	done
	if [[ ! -x /usr/lib/postgresql/15/bin/postgres ]]; then
		log "/usr/lib/postgresql/15/bin/postgres is still missing after installing postgresql"
		exit 1
	fi
fi

if ! have go; then
	log "the Go toolchain is not installed (see go.mod for the required version)"
	exit 1
fi

# MinIO, the S3 server the object storage tests run (internal/testminio),
# built from source at a pinned version into the user's cache: a few
# minutes the first time, nothing after.
minio_bin="${XDG_CACHE_HOME:-$HOME/.cache}/nixcas/bin"
if [[ ! -x $minio_bin/minio ]]; then
	log "building MinIO into $minio_bin (a few minutes)"
	mkdir -p "$minio_bin"
	GOBIN=$minio_bin go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
	if [[ ! -x $minio_bin/minio ]]; then
		log "MinIO is still missing from $minio_bin after building it"
		exit 1
	fi
fi

# nix_smoke_test dumps and hashes a small fixed tree and compares against the
# hash real Nix produces for it.
nix_smoke_test() {
	local dir rc=0 got
	dir=$(mktemp -d)
	mkdir "$dir/t"
	printf 'hello\n' >"$dir/t/hello"
	printf '#!/bin/sh\n' >"$dir/t/run"
	chmod 755 "$dir/t/run"
	ln -s hello "$dir/t/link"
	if ! nix-store --dump "$dir/t" >"$dir/nar" 2>"$dir/err" ||
		! got=$(nix-hash --type sha256 --base32 "$dir/t" 2>>"$dir/err"); then
		rc=1
	elif [[ $got != 1hh47rhilhqr6bdlm12z6gp45vk7915c4vvnjhp797s7634winyk ]] ||
		[[ $(sha256sum <"$dir/nar") != d3dbc8c930479f742e94766fc24a4867ee42ee335f844adb3219431a613e04c2* ]]; then
		echo "unexpected NAR hash $got" >>"$dir/err"
		rc=1
	fi
	nix_error=$(cat "$dir/err")
	rm -rf "$dir"
	return "$rc"
}

if ! nix_smoke_test; then
	# The Debian nix-bin package normally works for these commands out of the
	# box. If it does not, fall back to the usual single-user setup: the
	# store directories, no build users and no sandbox.
	log "nix self-check failed (${nix_error}); setting up a single-user Nix configuration"
	as_root mkdir -p /nix/store /nix/var/nix/db /nix/var/nix/gcroots /nix/var/nix/profiles /nix/var/nix/temproots
	if [[ ! -s /etc/nix/nix.conf ]]; then
		as_root mkdir -p /etc/nix
		printf 'build-users-group =\nsandbox = false\n' | as_root tee /etc/nix/nix.conf >/dev/null
	fi
	if ! nix_smoke_test; then
		log "nix-store --dump / nix-hash do not work: ${nix_error}"
		exit 1
	fi
fi
