#!/bin/bash
# The libFuzzer harnesses (tests/fuzz/), each for a bounded time over its
# seed corpus: no crash, leak, undefined behaviour, timeout or memory blow-up.
#
# FUZZ_TIME (seconds per harness, default 15) and FUZZ_NAMES (default all)
# tune it.  A crash leaves its input in build-fuzz/artifacts/; reproduce
# with build-fuzz/fuzz_NAME build-fuzz/artifacts/NAME-crash-....
# Skipped without clang's libFuzzer runtime, and under `make asan` (the
# harnesses are sanitizer builds already).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
FUZZ_TIME=${FUZZ_TIME:-15}
FUZZ_NAMES=${FUZZ_NAMES:-frame conf decompress aead ttlv repo}
FUZZ_BUILD=$TOP/build-fuzz
ARTIFACTS=$FUZZ_BUILD/artifacts

if [ "${TRANSPORTER_ASAN:-0}" = 1 ]; then
	skip "fuzz harnesses" "under make asan; run by make check"
	finish
fi
if ! command -v "${FUZZ_CC:-clang}" >/dev/null; then
	skip "fuzz harnesses" "no clang (apt-get install clang)"
	finish
fi
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ return 0; }\n' \
    >"$T/probe.c"
if ! "${FUZZ_CC:-clang}" -fsanitize=fuzzer,address,undefined -o "$T/probe" \
    "$T/probe.c" >"$T/probe.log" 2>&1; then
	skip "fuzz harnesses" "clang has no libFuzzer runtime" \
	    "(apt-get install libclang-rt-14-dev): $(head -n 1 "$T/probe.log")"
	finish
fi

# Built by a make of its own: nothing of the calling make's flags.
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make --no-print-directory -C "$TOP" fuzz >"$T/make.log" 2>&1; then
	ok "make fuzz builds the harnesses"
else
	not_ok "make fuzz builds the harnesses"
	diag "$T/make.log"
	finish
fi

mkdir -p "$ARTIFACTS"
for name in $FUZZ_NAMES; do
	bin=$FUZZ_BUILD/fuzz_$name
	seeds=$TOP/tests/fuzz/corpus/$name
	log=$T/fuzz_$name.log
	mkdir -p "$T/corpus-$name"
	# New inputs go to a scratch corpus, the seeds stay as committed.
	# -close_fd_mask=2 silences the code's own warnings; libFuzzer and
	# the sanitizers still report on a descriptor of their own.
	TMPDIR=$T timeout -k 10 $((FUZZ_TIME + 120)) "$bin" \
	    -max_total_time="$FUZZ_TIME" -rss_limit_mb=512 -timeout=10 \
	    -close_fd_mask=2 -print_final_stats=1 \
	    -artifact_prefix="$ARTIFACTS/$name-" \
	    "$T/corpus-$name" "$seeds" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1)
	echo "# fuzz_$name: ${runs:-?} runs in ${FUZZ_TIME} s, ${cov:-cov: ?}," \
	    "$(find "$T/corpus-$name" -type f | wc -l) new inputs"
	if [ "$rc" -eq 0 ]; then
		ok "fuzz_$name: no finding in $FUZZ_TIME s"
	else
		repro=$(grep -o "Test unit written to .*" "$log" | tail -n 1)
		not_ok "fuzz_$name: no finding in $FUZZ_TIME s" \
		    "exit $rc; ${repro:-no reproducer written}"
		grep -E 'ERROR|SUMMARY|runtime error|check failed|#[0-9]+ ' \
		    "$log" | head -n 25 | diag
	fi
done

finish
