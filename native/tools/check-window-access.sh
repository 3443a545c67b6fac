#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# check-window-access.sh: transport-neutral code assumes only what a PCI BAR gives
# (architecture rule 9, docs/memory-ordering.md "Window access"). It fails when code in
# native/core, native/devices or native/include does an atomic read-modify-write or a futex call
# that could reach window memory. Run by `make -C native check` (target check-window-access).
#
#   check-window-access.sh [--root DIR] [FILE...]   check FILE... (default: every neutral file)
#   check-window-access.sh --self-test DIR          every DIR/bad-*.c must be refused and
#                                                   every DIR/good-*.c accepted
#
# Allowed to do more (the allow list, nothing else):
#   core/xport_shm.c       the shm transport: futex doorbells and RMW on its doorbell words
#                          (what shm allows beyond a BAR stays inside the shm transport)
#   core/win_access.h      the accessors: loads, stores, fences, inline asm for fences
#   core/private_atomic.h  atomics on PRIVATE memory, through distinct types
#   core/private_atomic.c  (struct vop_private_*) that a window pointer cannot take
#
# Two layers, so that no alias can fool it:
#  1. Source (comments and string literals removed): no atomic RMW by name (atomic_fetch_*,
#     atomic_exchange*, atomic_compare_exchange*, atomic_flag_test_and_set*, any __atomic_* or
#     __c11_atomic_* builtin, __sync_*, vop_fetch_*), no futex (a call futex*(, FUTEX_* op
#     constants, SYS_futex*, <linux/futex.h>, futex_waitv), no raw __NR_* number, no syscall()
#     except syscall(SYS_openat2, ...) (so no futex by number either), no inline asm, and no
#     cast to `struct vop_private_*` (the only way a window pointer could reach a
#     private-atomic helper).
#  2. Objects: every neutral .c file is compiled (-O2, no sanitizers) and disassembled; any
#     locked or exclusive read-modify-write instruction fails (x86: lock-prefixed except the
#     `lock or $0,(%rsp)` store-load fence, xchg with a memory operand, cmpxchg, xadd; arm64:
#     ldxr/stxr/cas/swp/ld<op> families), as does a syscall instruction. This catches what
#     names cannot: C11 operators on an _Atomic lvalue (x++, x |= 1 on a pointer cast or
#     declared _Atomic), macros, typedefs, seq_cst stores compiled to xchg. Private atomics
#     are out-of-line calls into private_atomic.c, so a neutral object holds none.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CC=${CC:-cc}
OBJDUMP=${OBJDUMP:-objdump}

allowed() {
	case "$1" in
	*/core/xport_shm.c | */core/win_access.h | */core/private_atomic.h | */core/private_atomic.c) return 0 ;;
	esac
	return 1
}

neutral_files() {
	ls "$root"/core/*.c "$root"/core/*.h "$root"/devices/*.c "$root"/include/vop/*.h 2>/dev/null
}

# Source without comments and string/char literals, line numbers kept.
strip_source() {
	# Block comments may span lines: keep their newlines so that line numbers stay right.
	perl -0777 -pe '
		s{/\*.*?\*/}{ my $c = $&; $c =~ s/[^\n]//g; $c }gse;   # block comments -> keep newlines
		s{//[^\n]*}{}g;                                           # line comments
		s{"(?:[^"\\\n]|\\.)*"}{""}g;                              # string literals
		s{'"'"'(?:[^'"'"'\\\n]|\\.)*'"'"'}{'"'"''"'"'}g;          # char literals
	' "$1"
}

# Pattern (PCRE) and reason, one per rule.
SRC_RULES=(
	'\batomic_fetch_\w+|\batomic_exchange\w*|\batomic_compare_exchange\w*|\batomic_flag_test_and_set\w*'
	'atomic read-modify-write (C11 <stdatomic.h>)'
	'\b__atomic_\w+|\b__c11_atomic_\w+'
	'compiler __atomic builtin (use the accessors of core/win_access.h)'
	'\b__sync_\w+'
	'__sync builtin (atomic read-modify-write)'
	'\bvop_fetch_\w+'
	'vop_fetch_* read-modify-write helper'
	'\bfutex\w*\s*\(|\bFUTEX_[A-Z_0-9]+\b|\bSYS_futex\w*|linux/futex\.h|\bfutex_waitv\b'
	'futex (doorbells and waits belong to the transport ops; only xport_shm.c may use a futex)'
	'\b__NR_\w+'
	'raw system call number'
	'\bsyscall\b(?!\.h)(?!\s*\(\s*SYS_openat2\b)'
	'syscall() other than syscall(SYS_openat2, ...)'
	'\b(?:__asm__|__asm|asm)\b'
	'inline assembly (fences and spin hints live in core/win_access.h)'
	'\(\s*(?:const\s+|volatile\s+)*struct\s+vop_private_\w+\s*\*'
	'cast to a private-atomic type (private atomics take private memory only)'
)

check_source() {
	local f=$1 bad=0 i n
	local text
	text=$(strip_source "$f")
	for ((i = 0; i < ${#SRC_RULES[@]}; i += 2)); do
		local hits
		hits=$(printf '%s\n' "$text" | grep -nP -- "${SRC_RULES[i]}" || true)
		if [ -n "$hits" ]; then
			while IFS= read -r n; do
				echo "$f:${n%%:*}: ${SRC_RULES[i + 1]}: ${n#*:}"
			done <<<"$hits"
			bad=1
		fi
	done
	return $bad
}

# Locked / exclusive RMW instructions in a disassembly (function names kept for the report).
OBJ_PATTERN='(\block\b(?!\s+or[bwlq]?\s+\$0x0,(-?0x[0-9a-f]+)?\(%[re]sp\)))|(\bxchg[bwlq]?\b[^#]*\()|\bcmpxchg\w*|\bxadd[bwlq]?\b|\bsyscall\b|\b(ldx[rp]|ldax[rp]|stx[rp]|stlx[rp]|cas[alb]*|casp\w*|swp\w*|ldadd\w*|ldclr\w*|ldeor\w*|ldset\w*|ldsmax\w*|ldsmin\w*|ldumax\w*|ldumin\w*|svc)\b'

check_object() {
	local f=$1 tmp out
	case "$f" in *.c) ;; *) return 0 ;; esac
	tmp=$(mktemp -d)
	if ! "$CC" -std=gnu11 -O2 -I"$root/include" -I"$root/core" -pthread -c -o "$tmp/o.o" "$f" 2>"$tmp/err"; then
		echo "$f: does not compile for the object check:"
		cat "$tmp/err"
		rm -rf "$tmp"
		return 1
	fi
	out=$("$OBJDUMP" -d --no-show-raw-insn "$tmp/o.o" | awk '
		/^[0-9a-f]+ <.*>:$/ { fn = $2; next }
		{ print fn "\t" $0 }' | grep -P -- "$OBJ_PATTERN" || true)
	rm -rf "$tmp"
	if [ -n "$out" ]; then
		while IFS= read -r line; do
			echo "$f: atomic read-modify-write or syscall instruction in ${line%%$'\t'*}: ${line#*$'\t'}"
		done <<<"$out"
		return 1
	fi
	return 0
}

run_checks() {
	local fail=0 f
	for f in "$@"; do
		if allowed "$f"; then
			continue
		fi
		check_source "$f" || fail=1
		check_object "$f" || fail=1
	done
	return $fail
}

if [ "${1:-}" = "--self-test" ]; then
	dir=${2:?usage: --self-test DIR}
	fail=0
	for f in "$dir"/bad-*.c; do
		if run_checks "$f" >/dev/null 2>&1; then
			echo "self-test: $f was accepted but must be refused"
			fail=1
		else
			echo "self-test: refused $(basename "$f") (as it must be)"
		fi
	done
	for f in "$dir"/good-*.c; do
		if ! run_checks "$f"; then
			echo "self-test: $f was refused but must be accepted"
			fail=1
		else
			echo "self-test: accepted $(basename "$f")"
		fi
	done
	[ $fail -eq 0 ] && echo "window-access self-test: ok"
	exit $fail
fi

if [ $# -gt 0 ]; then
	files=("$@")
else
	mapfile -t files < <(neutral_files)
fi
if run_checks "${files[@]}"; then
	echo "window-access check: ${#files[@]} files, no atomic read-modify-write or futex outside the allow list"
	exit 0
fi
echo "window-access check FAILED: see docs/memory-ordering.md (Window access) for the rule and the allow list"
exit 1
