#!/bin/sh
# SPDX-License-Identifier: MIT
# Where the first request after a restore spends its time (issue "a
# swapped-in model answers at warm speed at once"), on a GPU host from the
# repository root with build/ and .rt/ carried:
#   sh tests/gpu/run-swap-probe.sh
# An 8B-shaped transformers server (tf_server.py) under vramd with offload:
# hook. Each row is one request: the client's total, the server's own
# generate time and its per-step marks (prefill first), or a probe (one pass
# over every weight, one matmul, one forward pass), after: warm requests, an
# idle pause without an offload, an API restore (at once and after a
# pause), a gateway wake, and a request straight to the server's port. GPU
# clocks are sampled every 100 ms beside it (clocks.csv).
set -u
. "$(dirname "$0")/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vsp.XXXXXX)}
S=$(mktemp -d /tmp/vss.XXXXXX)
CACHE=${CACHE:-/var/tmp/vramd-weights}
SIZE=${SIZE:-8b}
PORT=${PORT:-18690}
U="http://127.0.0.1:$PORT"
C="build/src/ctl/bin/vramctl --url $S/state/vramd.sock"
VPID= SMI=
cleanup() {
	[ -n "$SMI" ] && kill "$SMI" 2>/dev/null
	[ -n "$VPID" ] && kill -TERM "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null
	rm -rf "$S"
}
trap cleanup EXIT
mkdir -p "$CACHE"
python3 tests/gpu/tf_server.py --size "$SIZE" --cache "$CACHE" --prepare >"$W/prepare.txt" 2>&1 ||
	{ cat "$W/prepare.txt" >&2; exit 1; }
cat >"$W/probe.yaml" <<YAML
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK, log_level: debug }
gpus: { backend: nvml, reserve: 1GiB }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
  big:
    cmd: [python3, $ROOT/tests/gpu/tf_server.py, --port, "\${PORT}", --size, $SIZE, --cache, $CACHE]
    gpus: [0]
    memory: 40GiB
    health: { path: /health, start_timeout: 300s }
    offload: hook
YAML
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,pstate,utilization.gpu --format=csv,noheader -lms 100 >"$W/clocks.csv" 2>&1 &
SMI=$!
"$VRAMD" --config "$W/probe.yaml" --state-dir "$S/state" >"$W/vramd.log" 2>&1 &
VPID=$!
for _ in $(seq 1 100); do curl -sf "$U/healthz" >/dev/null && break; sleep 0.1; done
$C start big >/dev/null || { tail -30 "$S/state/logs/big.log" >&2; exit 1; }
BASE=$U/w/big
row() { printf '%s %-34s %s\n' "$(date +%T.%N | cut -c1-12)" "$1" "$2" | tee -a "$W/summary.txt"; }
gen() { # label [url]
	curl -s -o "$W/g.json" -w '%{time_starttransfer} %{time_total}' -H 'Content-Type: application/json' \
		-d '{"prompt": [128000, 791, 6864, 315, 9822, 374], "max_new_tokens": 16}' "${2:-$BASE}/generate" >"$W/g.t"
	row "$1" "client $(cat "$W/g.t") | $(python3 -c "
import json; g = json.load(open('$W/g.json')); s = g['steps']
print('server %.3f prefill %.3f decode/step %.4f first-steps %s tokens %s' % (g['seconds'], s[1], (s[-1] - s[1]) / max(1, len(s) - 2), s[1:4], g['tokens'][:4]))" 2>&1)"
}
probe() { # label what
	row "$1" "$(curl -s -w ' client %{time_total}' -d "{\"what\": \"$2\"}" "$BASE/probe")"
}
act() { # label vramctl-args
	T0=$(date +%s.%N); O=$($C $2 2>&1); T1=$(date +%s.%N)
	row "$1" "$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.3f s", b - a }') $(echo "$O" | tail -1 | cut -c1-150)"
}
gen "first (after warm-up)"
gen warm; gen warm; gen warm
probe "probe touch warm" touch; probe "probe touch warm" touch
probe "probe matmul warm" matmul; probe "probe forward warm" forward
sleep 10; gen "after 10 s idle, no offload"; gen "again"
act offload "offload big"; act restore "restore big"
gen "right after API restore"; gen "second"; gen "third"
act offload "offload big"; act restore "restore big"
probe "probe touch after restore" touch; probe "probe touch again" touch
gen "request after touch"
act offload "offload big"; act restore "restore big"
probe "probe matmul after restore" matmul; probe "probe matmul again" matmul
probe "probe forward" forward; probe "probe forward again" forward
gen "request after forward"
act offload "offload big"; act restore "restore big"
sleep 5; gen "5 s after API restore"
act offload "offload big"
gen "gateway wake (restore + request)"; gen "second"
act offload "offload big"; act restore "restore big"
UP=$(curl -sf "$U/api/workloads/big" | python3 -c "import json,sys; print(json.load(sys.stdin)['port'])")
gen "straight to the port after restore" "http://127.0.0.1:$UP"; gen "second, straight" "http://127.0.0.1:$UP"
grep -E "restored|offloaded" "$S/state/logs/big.log" | tail -12 >"$W/hook-lines.txt"
cp "$S/state/logs/big.log" "$W/big.log" 2>/dev/null
echo "== summary"; cat "$W/summary.txt"; echo "== hook"; cat "$W/hook-lines.txt"
