#!/bin/sh
# Runs each test binary with a timeout. Exit codes: 0 pass, 77 skip, else fail. A skip is a
# failure when $CI is set to anything non-empty (.ci/run sets it).
# Exits non-zero if any test failed.
fail=0; pass=0; skip=0
for t in "$@"; do
	name=$(basename "$t")
	start=$(date +%s)
	timeout -k 5 "${TEST_TIMEOUT:-120}" "$t" >"$t.log" 2>&1
	rc=$?
	dur=$(( $(date +%s) - start ))
	case $rc in
	0) pass=$((pass + 1)); echo "PASS $name (${dur}s)" ;;
	77) if [ -n "${CI:-}" ]; then
		fail=$((fail + 1)); echo "FAIL $name (skipped, and CI is set: a missing prerequisite is a failure)"; tail -n 5 "$t.log"
	else
		skip=$((skip + 1)); echo "SKIP $name: $(tail -n 1 "$t.log")"
	fi ;;
	*) fail=$((fail + 1)); echo "FAIL $name (rc=$rc, ${dur}s)"; tail -n 30 "$t.log" ;;
	esac
done
echo "native tests: $pass passed, $skip skipped, $fail failed"
[ "$fail" -eq 0 ]
