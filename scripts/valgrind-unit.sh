#!/usr/bin/env bash
# Runs the cmocka unit tests of a gcc build under valgrind memcheck (issue 5):
# any memory error or definite leak fails the test it happens in.
#   scripts/valgrind-unit.sh [BUILD_DIR [MESON_TEST_ARGS...]]
#   scripts/valgrind-unit.sh build                    the unit tests of build/
#   scripts/valgrind-unit.sh build --suite fuzz       the corpus replays too
# BUILD_DIR (default build/) must be a build without sanitizers: valgrind
# and ASan cannot share a process.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--suite unit)

if [ ! -f "$dir/build.ninja" ]; then
	echo "valgrind-unit.sh: $dir is not a meson build directory" >&2
	exit 2
fi
if ! command -v valgrind >/dev/null; then
	echo "valgrind-unit.sh: valgrind is missing: scripts/deps.sh test" >&2
	exit 2
fi
if meson introspect --buildoptions "$dir" |
	/usr/bin/python3 -c 'import json,sys; o={x["name"]:x["value"] for x in json.load(sys.stdin)}; sys.exit(o.get("b_sanitize","none") not in ("none",""))'; then
	:
else
	echo "valgrind-unit.sh: $dir is built with sanitizers; use a plain build" >&2
	exit 2
fi

ninja -C "$dir"
# --errors-for-leak-kinds=definite: memory nobody points to any more is a
# leak; "possibly" and "still reachable" are what libraries (OpenSSL, ICU)
# keep until exit. Every test gets ten times its usual timeout.
meson test -C "$dir" --print-errorlogs --timeout-multiplier 10 "${args[@]}" \
	--wrapper "valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --track-origins=yes"
