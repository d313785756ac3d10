#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for a bounded time (issue 5), built
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/.
#   scripts/fuzz.sh                       every target, FUZZ_SECONDS (30) each
#   scripts/fuzz.sh jid sasl              only these targets
#   FUZZ_SECONDS=1800 scripts/fuzz.sh     the long run
# Each target starts from a copy of fuzz/corpus/<name>/ (what it finds stays
# out of the tree) with fuzz/<name>.dict. A crash, leak, timeout or oracle
# failure is copied to fuzz/crashes/<name>/ and fails the run; once the bug
# is fixed, move the file into fuzz/corpus/<name>/ so the gcc builds replay
# it as a regression test (meson test --suite fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test

seconds=${FUZZ_SECONDS:-30}
# libFuzzer reads -max_total_time=0 as "no limit".
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
	echo "fuzz.sh: FUZZ_SECONDS must be a positive number of seconds" >&2
	exit 2
fi
all=(xmlstream jid sasl base64 config)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# Longest input per target: past every limit the parser enforces, short
# enough to keep executions fast.
max_len() {
	case $1 in
	xmlstream) echo 16384 ;; # the tight limits are hit well before
	jid) echo 3200 ;;	 # three parts of 1023 bytes and separators
	sasl) echo 9000 ;;	 # two messages of SASL_MAX_INPUT, and then some
	base64) echo 4096 ;;
	config) echo 8192 ;;
	*) echo 4096 ;;
	esac
}

dir=build-fuzz
if [ ! -f $dir/build.ninja ]; then
	CC=clang meson setup $dir -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
		-Dtests=disabled >/dev/null
fi
ninja -C $dir "${targets[@]/#/fuzz/fuzz_}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

work=$(mktemp -d "${TMPDIR:-/tmp}/parley-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
	[ -d fuzz/corpus/$t ] || {
		echo "fuzz.sh: no target $t (fuzz/corpus/$t)" >&2
		exit 2
	}
	mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
	cp fuzz/corpus/$t/* "$work/$t/corpus/"
	dict=()
	[ -f fuzz/$t.dict ] && dict=(-dict=fuzz/$t.dict)
	echo "== fuzz_$t: ${seconds}s"
	rc=0
	# A fixed seed (FUZZ_SEED, default 1) makes CI explore the same inputs
	# each run; FUZZ_SEED=0 lets libFuzzer pick one, for longer hunts.
	$dir/fuzz/fuzz_$t "$work/$t/corpus" "${dict[@]}" -max_total_time="$seconds" \
		-seed="${FUZZ_SEED:-1}" \
		-max_len="$(max_len $t)" -rss_limit_mb=2048 -timeout=25 -print_final_stats=1 \
		-artifact_prefix="$work/$t/artifacts/" 2>"$work/$t/log" || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log" | tail -1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t/log" | tail -1)
	found=$(find "$work/$t/corpus" -type f | wc -l)
	if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$work/$t/artifacts")" ]; then
		mkdir -p fuzz/crashes/$t
		cp "$work/$t/artifacts"/* fuzz/crashes/$t/ 2>/dev/null || true
		grep -vE '^#[0-9]+' "$work/$t/log" | tail -60 >&2
		echo "fuzz_$t FAILED (exit $rc); reproducer(s) in fuzz/crashes/$t/:" >&2
		ls fuzz/crashes/$t >&2
		echo "replay one with: $dir/fuzz/fuzz_$t fuzz/crashes/$t/FILE" >&2
		failed+=("$t")
		summary+=("fuzz_$t: FAILED after ${execs:-?} executions")
	else
		summary+=("fuzz_$t: ok, ${execs:-?} executions (${speed:-?}/s), corpus $found inputs")
	fi
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz.sh: failures in: ${failed[*]}" >&2
	exit 1
fi
