#!/usr/bin/env bash
# Serves one large NAR (by default the Go toolchain this machine builds
# with, TREE=DIR for another tree) from a store whose frames are in MinIO
# (S3) and from one whose frames are in its data directory, and prints
# each GET's throughput with the object store requests and bytes it took:
# cold (fresh process, empty local frame cache), warm (fresh process,
# frames in the local cache) and again in the same process. RUNS=N runs
# of each (default 3). Needs nix-bin, curl and the MinIO binary
# scripts/test-deps.sh builds; starts MinIO on 127.0.0.1:19000 and
# nixcas on 127.0.0.1:18080, and stops both at the end.
set -euo pipefail
B=${B:-$(mktemp -d)}
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
TREE=${TREE:-$(go env GOROOT)}
RUNS=${RUNS:-3}
rm -rf "$B"; mkdir -p "$B"
(cd "$REPO" && go build -o "$B/nixcas" ./cmd/nixcas)
MINIO=${XDG_CACHE_HOME:-$HOME/.cache}/nixcas/bin/minio
MINIO_ROOT_USER=bench MINIO_ROOT_PASSWORD=benchbench MINIO_BROWSER=off "$MINIO" server --quiet --address 127.0.0.1:19000 "$B/minio" >"$B/minio.log" 2>&1 &
MPID=$!
trap 'kill $MPID 2>/dev/null || true; [[ -n ${SPID:-} ]] && kill $SPID 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:19000/minio/health/ready >/dev/null; do sleep 0.2; done
curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user bench:benchbench -X PUT http://127.0.0.1:19000/frames
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchbench
export XDG_CACHE_HOME=$B/xdg
P=$(nix-store --store "$B/nix" --add "$TREE")
WANT=$(nix-store --dump "$B/nix$P" | sha256sum | cut -d' ' -f1)
SIZE=$(nix-store --dump "$B/nix$P" | wc -c)
echo "path $P: NAR $SIZE bytes, sha256 $WANT"
HASH=$(basename "$P" | cut -d- -f1)
URL=s3://frames/bench?endpoint=127.0.0.1:19000\&tls=false

SPID=
start() { # data port args...
	local data=$1 port=$2; shift 2
	"$B/nixcas" serve --data "$data" --listen-grpc 127.0.0.1:0 --listen-http 127.0.0.1:$port "$@" 2>>"$B/serve.log" &
	SPID=$!
	until curl -sf http://127.0.0.1:$port/readyz >/dev/null 2>&1; do sleep 0.1; done
}
stop() { kill $SPID; wait $SPID || true; SPID=; }
metric() { # port sample: its value, 0 when absent
	local v
	v=$(curl -s http://127.0.0.1:$1/metrics | awk -v m="$2" '$1==m {print $2}' | head -1)
	echo "${v:-0}"
}
waitpacked() { # port: until the put count stops changing (3 s)
	local last=-1 n
	while :; do n=$(metric $1 'nixcas_object_store_requests_total{op="put"}'); n=${n:-0}
		[[ $n == "$last" ]] && break; last=$n; sleep 3; done
}
get() { # port label
	local u
	u=$(curl -sf http://127.0.0.1:$1/$HASH.narinfo | awk '/^URL:/ {print $2}')
	local out
	out=$(curl -s -o "$B/got.nar" -w '%{http_code} %{size_download} %{time_total}' http://127.0.0.1:$1/$u)
	local sum; sum=$(sha256sum <"$B/got.nar" | cut -d' ' -f1)
	[[ $sum == "$WANT" ]] || { echo "MISMATCH $2"; exit 1; }
	read -r code bytes secs <<<"$out"
	awk -v l="$2" -v c="$code" -v b="$bytes" -v s="$secs" 'BEGIN { printf "%-28s %s %d bytes %.2f s %.0f MB/s\n", l, c, b, s, b/s/1e6 }'
}

for kind in s3 dir; do
	data=$B/data-$kind
	export XDG_CACHE_HOME=$B/xdg-$kind
	args=()
	[[ $kind == s3 ]] && args=(--blobs "$URL" --blob-cache-dir "$B/cache0")
	start "$data" 18080 "${args[@]}"
	t0=$(date +%s.%N)
	nix --extra-experimental-features nix-command copy --store "$B/nix" --to "http://127.0.0.1:18080?compression=none" "$P"
	t1=$(date +%s.%N)
	[[ $kind == s3 ]] && waitpacked 18080
	echo "$kind: nix copy --to took $(echo "$t1 - $t0" | bc) s"
	[[ $kind == s3 ]] && echo "$kind: frames put $(metric 18080 'nixcas_object_store_requests_total{op="put"}'), bytes $(metric 18080 'nixcas_object_store_bytes_total{op="put"}')"
	stop
	"$B/nixcas" store stats --data "$data" --json "${args[@]:0:2}" | tee "$B/stats-$kind.json"; echo
	for r in $(seq "$RUNS"); do
		if [[ $kind == s3 ]]; then
			start "$data" 18080 --blobs "$URL" --blob-cache-dir "$B/cache$r"
			get 18080 "s3 cold (empty cache) #$r"
			echo "   S3 GETs $(metric 18080 'nixcas_object_store_requests_total{op="get"}'), bytes $(metric 18080 'nixcas_object_store_bytes_total{op="get"}'), cache misses $(metric 18080 nixcas_object_cache_misses_total)"
			stop
			start "$data" 18080 --blobs "$URL" --blob-cache-dir "$B/cache$r"
			get 18080 "s3 warm (disk cache) #$r"
			echo "   S3 GETs $(metric 18080 'nixcas_object_store_requests_total{op="get"}'), cache hits $(metric 18080 nixcas_object_cache_hits_total)"
			get 18080 "s3 warm again, same process #$r"
			stop
		else
			start "$data" 18080
			get 18080 "dir (fresh process) #$r"
			get 18080 "dir again, same process #$r"
			stop
		fi
	done
done
