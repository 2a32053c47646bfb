#!/bin/sh
# SPDX-License-Identifier: MIT
# How the restore from a park file depends on the hook's staging ring
# (VRAM_HOOK_PARK_STAGING buffers of VRAM_HOOK_PARK_PIECE bytes, one reader
# thread each), on a GPU host, from the repository root (build/ and .rt/ as
# for run-park.sh):
#   sh tests/gpu/run-park-sweep.sh [PARK_DIR]
# One 8B-shaped transformers server per setting, one after another: start,
# offload, park, drop the page cache, restore; the engine's restore time and
# the tokens of a greedy request, which must match the reference.
set -u
PARK=${1:-/var/tmp/vramd-park}
. "$(dirname "$0")/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vsw.XXXXXX)}
S=$(mktemp -d /tmp/vss.XXXXXX)
CACHE=${CACHE:-/var/tmp/vramd-weights}
PORT=${PORT:-18690}
U="http://127.0.0.1:$PORT"
C="build/src/ctl/bin/vramctl --url $S/state/vramd.sock"
SETTINGS=${SETTINGS:-"4:64 8:64 16:64 8:128"} # staging buffers : MiB per piece
VPID=
cleanup() {
	[ -n "$VPID" ] && kill -TERM "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null
	rm -rf "$S" "$PARK"
}
trap cleanup EXIT
mkdir -p "$PARK" "$CACHE"
python3 tests/gpu/tf_server.py --size 8b --cache "$CACHE" --prepare >"$W/prepare.txt" 2>&1 ||
	{ cat "$W/prepare.txt" >&2; exit 1; }
dd if=/dev/zero of="$PARK/dd.test" bs=64M count=64 oflag=direct 2>/dev/null
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
echo "dd read, O_DIRECT, 4 GiB: $(dd if="$PARK/dd.test" of=/dev/null bs=64M iflag=direct 2>&1 | tail -1)" | tee "$W/summary.txt"
rm -f "$PARK/dd.test"
{
	echo "daemon: { listen: \"127.0.0.1:$PORT\", hook_library: $HOOK }"
	echo "gpus: { backend: nvml, reserve: 1GiB }"
	echo "host: { limit: 100GiB, park_dir: $PARK }"
	echo "defaults: { idle: { offload_after: never, release_after: never } }"
	echo "workloads:"
	for s in $SETTINGS; do
		n=$(echo "$s" | cut -d: -f1); p=$(echo "$s" | cut -d: -f2)
		cat <<EOF
  s$n-$p:
    cmd: [python3, $ROOT/tests/gpu/tf_server.py, --port, "\${PORT}", --size, 8b, --cache, $CACHE]
    gpus: [0]
    memory: 40GiB
    health: { path: /health, start_timeout: 300s }
    offload: hook
    env: { VRAM_HOOK_PARK_STAGING: "$n", VRAM_HOOK_PARK_PIECE: "${p}MiB" }
EOF
	done
} >"$W/sweep.yaml"
"$VRAMD" --config "$W/sweep.yaml" --state-dir "$S/state" >"$W/vramd.log" 2>&1 &
VPID=$!
for _ in $(seq 1 100); do curl -sf "$U/healthz" >/dev/null && break; sleep 0.1; done
gen() {
	curl -s -H 'Content-Type: application/json' \
		-d '{"prompt": [128000, 791, 6864, 315, 9822, 374], "max_new_tokens": 16}' "$U/w/$1/generate" |
		python3 -c "import json,sys; print(json.load(sys.stdin)['tokens'])" | tr -d ' '
}
secs() { curl -sf "$U/api/workloads/$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['engine']['last_seconds'])"; }
REF=
for s in $SETTINGS; do
	w=s$(echo "$s" | tr : -)
	$C start "$w" >/dev/null || { echo "$w did not start" >&2; continue; }
	T=$(gen "$w"); [ -n "$REF" ] || REF=$T
	$C offload "$w" >/dev/null
	PK=$($C park "$w" 2>&1 | tail -1)
	sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
	RS=$($C restore "$w" 2>&1 | tail -1)
	T2=$(gen "$w")
	echo "staging $s (buffers:MiB): park: $PK; restore: $RS; engine $(secs "$w") s; tokens $([ "$T2" = "$REF" ] && echo identical || echo DIFFERENT)" | tee -a "$W/summary.txt"
	$C stop "$w" >/dev/null
done
