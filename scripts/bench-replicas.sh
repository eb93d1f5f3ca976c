#!/usr/bin/env bash
# Serves one large store path (by default the Go toolchain this machine
# builds with, TREE=DIR for another tree) from an embedded store and from
# records in PostgreSQL with frames in MinIO (S3), through one and through
# two replicas, and prints a table: `nix copy --from` throughput with a
# cold local frame cache (fresh process, empty --blob-cache-dir) and warm
# (the same process again), narinfo requests per second at 16 connections
# (scripts/narinfoload), and object-store GETs per MB served cold
# (nixcas_object_store_requests_total). The PostgreSQL store is loaded
# from the embedded one with `nixcas store copy`, which is timed too.
#
# Not a test. Starts a private PostgreSQL (as the postgres user when run
# as root, as internal/testpg does) on 127.0.0.1:15433, MinIO on
# 127.0.0.1:19100 and nixcas on 127.0.0.1:1808x, and stops them at the
# end. Needs nix-bin, curl, PostgreSQL 15 and the MinIO binary that
# scripts/test-deps.sh installs. The machine may be shared: the load
# average is printed with the table.
set -euo pipefail
B=${B:-$(mktemp -d)}
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
TREE=${TREE:-$(go env GOROOT)}
rm -rf "$B"; mkdir -p "$B"; chmod 755 "$B"
(cd "$REPO" && go build -o "$B/nixcas" ./cmd/nixcas && go build -o "$B/narinfoload" ./scripts/narinfoload)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
asPG() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

PIDS=()
PGUP=
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	[[ -n $PGUP ]] && asPG "$PGBIN/pg_ctl" -D "$B/pg/data" stop -m fast -w >/dev/null 2>&1
	wait 2>/dev/null || true
}
trap cleanup EXIT

# MinIO.
MINIO=${XDG_CACHE_HOME:-$HOME/.cache}/nixcas/bin/minio
MINIO_ROOT_USER=bench MINIO_ROOT_PASSWORD=benchbench MINIO_BROWSER=off "$MINIO" server --quiet --address 127.0.0.1:19100 "$B/minio" >"$B/minio.log" 2>&1 &
PIDS+=($!)
until curl -sf http://127.0.0.1:19100/minio/health/ready >/dev/null; do sleep 0.2; done
curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user bench:benchbench -X PUT http://127.0.0.1:19100/frames
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchbench
BLOBS="s3://frames/bench?endpoint=127.0.0.1:19100&tls=false&addressing=path"

# PostgreSQL, with the settings internal/testpg uses.
mkdir -p "$B/pg"; [[ $EUID -eq 0 ]] && chown postgres: "$B/pg"
asPG "$PGBIN/initdb" -D "$B/pg/data" -U postgres -A trust -E UTF8 --no-sync --no-instructions >"$B/initdb.log"
asPG "$PGBIN/postgres" -D "$B/pg/data" -p 15433 -k "$B/pg" -c listen_addresses=127.0.0.1 \
	-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB >"$B/postgres.log" 2>&1 &
PGPID=$!
PGUP=1
META="postgres://postgres@127.0.0.1:15433/postgres?sslmode=disable"
until asPG "$PGBIN/pg_isready" -q -h 127.0.0.1 -p 15433 2>/dev/null; do
	kill -0 $PGPID 2>/dev/null || { echo "postgres did not start:" >&2; tail -5 "$B/postgres.log" >&2; exit 1; }
	sleep 0.2
done
sleep 0.5
kill -0 $PGPID 2>/dev/null || { echo "postgres did not start:" >&2; tail -5 "$B/postgres.log" >&2; exit 1; }

# The store path.
export XDG_CACHE_HOME=$B/xdg
P=$(nix-store --store "$B/nix" --add "$TREE")
SIZE=$(nix-store --dump "$B/nix$P" | wc -c)
MB=$(echo "$SIZE / 1000000" | bc -l)
HASH=$(basename "$P" | cut -d- -f1)
printf 'path %s: NAR of %.1f MB\n' "$P" "$MB"

SPIDS=()
start() { # port data args...: a server, until it is ready
	local port=$1 data=$2; shift 2
	"$B/nixcas" serve --data "$data" --listen-grpc 127.0.0.1:0 --listen-http 127.0.0.1:"$port" "$@" 2>>"$B/serve-$port.log" &
	SPIDS+=($!); PIDS+=($!)
	until curl -sf http://127.0.0.1:"$port"/readyz >/dev/null 2>&1; do sleep 0.1; done
}
stopall() { for p in "${SPIDS[@]}"; do kill "$p"; wait "$p" || true; done; SPIDS=(); }
metric() { # port sample: its value, 0 when absent
	local v
	v=$(curl -s http://127.0.0.1:"$1"/metrics | awk -v m="$2" '$1==m {print $2}' | head -1)
	echo "${v:-0}"
}
gets() { metric "$1" 'nixcas_object_store_requests_total{op="get"}'; }
pull() { # port: nix copy --from the server into a fresh Nix store; prints seconds
	local N=$1-$RANDOM t0 t1
	t0=$(date +%s.%N)
	XDG_CACHE_HOME=$B/xdg-pull-$N nix --extra-experimental-features nix-command copy --no-check-sigs \
		--store "$B/pull-$N" --from "http://127.0.0.1:$1" "$P"
	t1=$(date +%s.%N)
	[[ $(nix-store --store "$B/pull-$N" --query --hash "$P") == $(nix-store --store "$B/nix" --query --hash "$P") ]] ||
		{ echo "NAR hash mismatch from port $1" >&2; exit 1; }
	rm -rf "$B/pull-$N"
	echo "$t1 - $t0" | bc -l
}
pull2() { # port port: one nix copy --from each, at once; prints wall seconds
	local t0 t1
	t0=$(date +%s.%N)
	pull "$1" >/dev/null & local a=$!
	pull "$2" >/dev/null & local b=$!
	wait $a; wait $b
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}
narinfo() { # port...: the narinfoload line
	local urls=()
	for p in "$@"; do urls+=("http://127.0.0.1:$p"); done
	"$B/narinfoload" -c 16 -d 5s -path "$HASH.narinfo" "${urls[@]}"
}
ROWS=()
row() { ROWS+=("$(printf '%-44s %s' "$1" "$2")"); }
rate() { printf '%.0f MB/s (%.1f s)' "$(echo "$2 * $MB / $1" | bc -l)" "$1"; } # seconds copies

# (a) The embedded store, loaded by nix copy --to.
start 18081 "$B/embedded"
t0=$(date +%s.%N)
nix --extra-experimental-features nix-command copy --store "$B/nix" --to "http://127.0.0.1:18081?compression=none" "$P"
t1=$(date +%s.%N)
stopall
row "load: nix copy --to, embedded" "$(rate "$(echo "$t1 - $t0" | bc -l)" 1)"

# (b) PostgreSQL and MinIO, loaded from (a) by store copy.
t0=$(date +%s.%N)
"$B/nixcas" store copy --from-data "$B/embedded" --to-data "$B/copy" --to-meta "$META" --to-blobs "$BLOBS" | tee "$B/copy.txt"
t1=$(date +%s.%N)
row "load: store copy embedded -> postgres+s3" "$(rate "$(echo "$t1 - $t0" | bc -l)" 1)"

# One replica.
start 18081 "$B/embedded"
row "embedded, 1 server: nix copy --from, fresh" "$(rate "$(pull 18081)" 1)"
row "embedded, 1 server: nix copy --from, again" "$(rate "$(pull 18081)" 1)"
row "embedded, 1 server: narinfo, 16 conns" "$(narinfo 18081)"
stopall

S3=(--meta "$META" --blobs "$BLOBS")
start 18082 "$B/r1" "${S3[@]}" --blob-cache-dir "$B/cache-1a"
row "pg+s3, 1 replica: nix copy --from, cold" "$(rate "$(pull 18082)" 1)"
g=$(gets 18082)
row "pg+s3, 1 replica: S3 GETs per MB, cold" "$(printf '%.2f (%d GETs)' "$(echo "$g / $MB" | bc -l)" "$g")"
row "pg+s3, 1 replica: nix copy --from, warm" "$(rate "$(pull 18082)" 1)"
row "pg+s3, 1 replica: S3 GETs after warm copy" "$(gets 18082) (in all)"
row "pg+s3, 1 replica: narinfo, 16 conns" "$(narinfo 18082)"
stopall

# Two replicas, one client each at once.
start 18082 "$B/r1" "${S3[@]}" --blob-cache-dir "$B/cache-1b"
start 18083 "$B/r2" "${S3[@]}" --blob-cache-dir "$B/cache-2b"
row "pg+s3, 2 replicas: 2 nix copy --from, cold" "$(rate "$(pull2 18082 18083)" 2) in all"
g=$(($(gets 18082) + $(gets 18083)))
row "pg+s3, 2 replicas: S3 GETs per MB, cold" "$(printf '%.2f (%d GETs)' "$(echo "$g / (2 * $MB)" | bc -l)" "$g")"
row "pg+s3, 2 replicas: 2 nix copy --from, warm" "$(rate "$(pull2 18082 18083)" 2) in all"
row "pg+s3, 2 replicas: narinfo, 16 conns" "$(narinfo 18082 18083)"
stopall

echo
echo "nixcas replicas: $P, NAR $SIZE bytes, $(nproc) cores"
for r in "${ROWS[@]}"; do echo "$r"; done
echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
