#!/usr/bin/env bash
# Times `nixcas pull` over loopback gRPC beside `nix copy --from` over HTTP
# of the same store paths from the same `nixcas serve`, in one run:
#
#   - one large path, the Go 1.22.0 toolchain (a 198.8 MiB NAR of 9,537
#     files), into empty caches and stores;
#   - 1000 paths of one 10 KiB file each: in one `nixcas pull` of all of
#     them, one `nixcas pull` per path (the first PER_PATH of them, 100 by
#     default, timed and scaled to 1000), and one `nix copy --from` of all.
#
# Usage: scripts/bench-pull.sh [WORK]   (default $TMPDIR/nixcas-bench-pull)
# The large path is pulled and copied ROUNDS times (default 3), the two
# taking turns at going first, and the medians printed after the rounds.
# OLD_NIXCAS=BINARY also times a cold pull of the large path with that
# binary (another version of nixcas, say), from the same server, after
# the others in each round. The timed steps wait SETTLE seconds (default 40) after the
# set-up first: on ext4 without a journal (this project's VM), creating
# files within about 35 s of deleting many (the last run's trees) scans
# the inodes deleted (recently_deleted in a perf profile of the kernel),
# which slowed whichever client came first.
# The Go toolchain comes from the Go module proxy, kept in
# NIXCAS_BENCH_DIR/corpus (default $TMPDIR/nixcas-bench-http, shared with
# scripts/bench-http.sh). Not part of the test suite; the load average is
# printed with every figure, and beside each timed command the CPU seconds
# (user and system) it used and those the server used meanwhile. The
# timed commands' messages go to WORK/steps.log.
# NIXCAS_CPUPROFILE=DIR/%p.pprof profiles the server and every client.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'bench-pull: %s\n' "$*" >&2; }
load() { cut -d' ' -f1 /proc/loadavg; }

scripts/test-deps.sh

tmp=${TMPDIR:-/tmp}
work=${1:-$tmp/nixcas-bench-pull}
corpus=${NIXCAS_BENCH_DIR:-$tmp/nixcas-bench-http}/corpus
per_path=${PER_PATH:-100}
rm -rf "$work"
mkdir -p "$work/small" "$corpus"

go build -o "$work/nixcas" ./cmd/nixcas
nixcas=$work/nixcas

# The large tree, fetched once.
tree=$(go run ./scripts/internal/gotoolchain "$corpus" go1.22.0)

# 1000 trees of one 10 KiB file of random bytes.
for i in $(seq -w 0 999); do
	mkdir "$work/small/p$i"
	head -c 10240 /dev/urandom >"$work/small/p$i/data"
done

export XDG_CACHE_HOME=$work/xdg # Nix's own cache of binary cache answers
nixstore=$work/nix
large=$(nix-store --store "$nixstore" --add "$tree")
mapfile -t small < <(nix-store --store "$nixstore" --add "$work"/small/p*)
log "${#small[@]} small paths and $large in $nixstore"

"$nixcas" serve --data "$work/serve" --listen-grpc 127.0.0.1:0 --listen-http 127.0.0.1:0 2>"$work/serve.log" &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null || true' EXIT
# The first line names the addresses: "... gRPC on HOST:PORT, HTTP on HOST:PORT ...".
for _ in $(seq 100); do
	grep -q 'HTTP on' "$work/serve.log" 2>/dev/null && break
	sleep 0.1
done
grpc=$(sed -n 's/.*gRPC on \([^,]*\),.*/\1/p' "$work/serve.log" | head -1)
http=$(sed -n 's/.*HTTP on \([^ ]*\) .*/\1/p' "$work/serve.log" | head -1)
log "nixcas serve: gRPC $grpc, HTTP $http"
"$nixcas" push --server "$grpc" --cache "$work/push-cache" --nix-store "$nixstore" "$large" "${small[@]}" >/dev/null
log "pushed"

# seconds runs a command and prints its wall time in seconds; cpu then
# holds its user and system CPU seconds (bash's time), srv the CPU
# seconds (user + system) the server used meanwhile (/proc/PID/stat).
seconds() {
	local start end times s0 s1
	times=$(mktemp)
	s0=$(server_ticks)
	start=$(date +%s.%N)
	{ TIMEFORMAT='%U %S'; time "$@" >/dev/null 2>>"$work/steps.log"; } 2>"$times"
	end=$(date +%s.%N)
	s1=$(server_ticks)
	cpu=$(tail -1 "$times" | awk '{printf "%.2f user + %.2f sys", $1, $2}')
	srv=$(echo "($s1 - $s0) / $(getconf CLK_TCK)" | bc -l | awk '{printf "%.2f", $1}')
	rm -f "$times"
	echo "$end - $start" | bc -l
}
# server_ticks prints the CPU time, user and system, the server has used,
# in clock ticks.
server_ticks() { awk '{print $14 + $15}' "/proc/$serve_pid/stat"; }
cpu=
srv=
sleep "${SETTLE:-40}"

nar_mb=$(nix-store --store "$nixstore" --query --size "$large" | awk '{printf "%.1f", $1/1e6}')
echo "| step | seconds | MB/s or paths/s | client CPU s | server CPU s | load |"
echo "|---|---:|---:|---:|---:|---:|"
# The large path, ROUNDS times (default 3), nixcas pull and nix copy
# taking turns at going first (the first writer after the set-up meets
# the disk at its slowest), each into empty caches and stores; every
# round is printed, then the median of each.
rounds=${ROUNDS:-3}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { log "ROUNDS must be a whole number of at least 1, got $rounds"; exit 1; }
declare -a pull_s copy_s old_s
# timed_large LABEL ACC COMMAND... times one command on the large path,
# prints its row under LABEL and adds its seconds to the array ACC.
timed_large() {
	local label=$1
	local -n acc=$2
	shift 2
	seconds "$@" >"$work/t"
	acc+=("$(cat "$work/t")")
	printf '| %s | %.2f | %.0f MB/s | %s | %s | %s |\n' "$label" "$(cat "$work/t")" "$(echo "$nar_mb / $(cat "$work/t")" | bc -l)" "$cpu" "$srv" "$(load)"
}
large_pull() { # round
	timed_large "nixcas pull, $nar_mb MB path, cold cache (round $1)" pull_s \
		"$nixcas" pull --server "$grpc" --cache "$work/pull-cache-1-$1" "$large" --to "$work/out-large-$1"
}
large_copy() { # round
	timed_large "nix copy --from (HTTP), same path, empty store (round $1)" copy_s \
		nix copy --extra-experimental-features nix-command --no-check-sigs --from "http://$http" --to "$work/nix-copy-1-$1" "$large"
}
large_old() { # round
	timed_large "$OLD_NIXCAS pull, same path, cold cache (round $1)" old_s \
		"$OLD_NIXCAS" pull --server "$grpc" --cache "$work/pull-cache-old-$1" "$large" --to "$work/out-large-old-$1"
}
# median prints the median of its arguments (of an even number, the
# lower of the two in the middle).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for ((r = 1; r <= rounds; r++)); do
	if ((r % 2)); then
		large_pull "$r"
		large_copy "$r"
	else
		large_copy "$r"
		large_pull "$r"
	fi
	if [[ -n ${OLD_NIXCAS:-} ]]; then
		large_old "$r"
	fi
done
mp=$(median "${pull_s[@]}")
mc=$(median "${copy_s[@]}")
printf '| nixcas pull, median of %d | %.2f | %.0f MB/s | | | |\n' "$rounds" "$mp" "$(echo "$nar_mb / $mp" | bc -l)"
printf '| nix copy --from, median of %d | %.2f | %.0f MB/s | | | |\n' "$rounds" "$mc" "$(echo "$nar_mb / $mc" | bc -l)"
if [[ -n ${OLD_NIXCAS:-} ]]; then
	mo=$(median "${old_s[@]}")
	printf '| %s pull, median of %d | %.2f | %.0f MB/s | | | |\n' "$OLD_NIXCAS" "$rounds" "$mo" "$(echo "$nar_mb / $mo" | bc -l)"
fi

seconds "$nixcas" pull --server "$grpc" --cache "$work/pull-cache-2" --to "$work/out-many" "${small[@]}" >"$work/t"
printf '| nixcas pull of 1000 paths of 10 KiB, one run | %.2f | %.0f paths/s | %s | %s | %s |\n' "$(cat "$work/t")" "$(echo "1000 / $(cat "$work/t")" | bc -l)" "$cpu" "$srv" "$(load)"
mkdir "$work/out-one"
start=$(date +%s.%N)
for ((i = 0; i < per_path; i++)); do
	"$nixcas" pull --server "$grpc" --cache "$work/pull-cache-3" "${small[$i]}" --to "$work/out-one/$i" >/dev/null
done
t=$(echo "$(date +%s.%N) - $start" | bc -l)
printf '| nixcas pull, one run per path (%d timed, x%d) | %.2f | %.0f paths/s | | | %s |\n' "$per_path" "$((1000 / per_path))" "$(echo "$t * 1000 / $per_path" | bc -l)" "$(echo "$per_path / $t" | bc -l)" "$(load)"
seconds nix copy --extra-experimental-features nix-command --no-check-sigs --from "http://$http" --to "$work/nix-copy-2" "${small[@]}" >"$work/t"
printf '| nix copy --from (HTTP) of the 1000 paths | %.2f | %.0f paths/s | %s | %s | %s |\n' "$(cat "$work/t")" "$(echo "1000 / $(cat "$work/t")" | bc -l)" "$cpu" "$srv" "$(load)"

# The pulled trees are the ones Nix has.
want=$(nix-store --store "$nixstore" --query --hash "$large")
for out in "$work"/out-large-*; do
	got=sha256:$(nix-hash --type sha256 --base32 "$out")
	[[ $got == "$want" ]] || { log "$out hashes to $got, want $want"; exit 1; }
done
for i in 0 500 999; do
	b=$(basename "${small[$i]}")
	cmp -s "$work/out-many/$b/data" "$work/small/p$(printf %03d "$i")/data" || { log "$b differs"; exit 1; }
done
log "pulled trees checked"
