#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs every benchmark: the bench-* programs built from bench/*.c and every
# bench/*.sh script but this one, each with the build directory as its
# argument, and prints their results. Exits non-zero if any of them failed.
#
#   bench/run-all.sh [BUILD_DIR]
set -u

BUILD=${1:-build}
HERE=$(dirname "$0")
FAILED=0

run() {
	echo "== $*"
	if ! "$@"; then
		echo "== FAILED: $*" >&2
		FAILED=1
	fi
	echo
}

for src in "$HERE"/bench-*.c; do
	[ -e "$src" ] || continue
	exe=$BUILD/bench/$(basename "$src" .c)
	if [ -x "$exe" ]; then
		run "$exe"
	else
		echo "== $exe is not built (ninja -C $BUILD)" >&2
		FAILED=1
	fi
done

for script in "$HERE"/*.sh; do
	[ "$(basename "$script")" = run-all.sh ] && continue
	run sh "$script" "$BUILD"
done

exit $FAILED
