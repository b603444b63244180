#!/bin/sh
# cli_commands.sh CAP CAPC — both command lines, from their command tables (support/options.h):
#   - capc and every cap command and subcommand (`cap help --list-commands` walks the table)
#     answer --help and -h with the same usage on stdout, nothing on stderr, exit 0;
#   - `cap --help` lists every command of the table;
#   - what users ran into (issue 12): `cap data|data synth|data stats|vocab --help` were
#     "unknown option"; `cap train --data ... --batches` said "unknown option '--batches'";
#     `cap train` without input did not name --data; `cap eval --help` lacked --length-alpha.
set -u
cap=$1
capc=$2
# shellcheck source=cli_test_lib.sh
. "$(dirname "$0")/cli_test_lib.sh"

# check_help PROG [WORDS...]: --help and -h print the same usage, exit 0, stderr empty
check_help() {
    "$@" --help >"$t/out" 2>"$t/err"
    rc=$?
    [ "$rc" -eq 0 ] || fail "$* --help: exit $rc"
    head -n 1 "$t/out" | grep -q '^usage: ' || fail "$* --help: no usage line: $(head -c 300 "$t/out")"
    [ -s "$t/err" ] && fail "$* --help wrote to stderr: $(cat "$t/err")"
    "$@" -h >"$t/out2" 2>&1 || fail "$* -h: exit $?"
    cmp -s "$t/out" "$t/out2" || fail "$* -h differs from --help"
}

check_help "$capc"
"$cap" help --list-commands >"$t/commands" || fail "cap help --list-commands: exit $?"
"$cap" --help >"$t/top" 2>&1 || fail "cap --help: exit $?"
n=0
while read -r prog words; do
    [ "$prog" = cap ] || fail "list-commands printed '$prog $words'"
    # shellcheck disable=SC2086 # the words are the subcommand path
    check_help "$cap" $words
    case "$words" in
    *" "* | "" | help) ;;
    *) grep -q "^  $words " "$t/top" || fail "cap --help does not list '$words'" ;;
    esac
    n=$((n + 1))
done <"$t/commands"
[ "$n" -ge 13 ] || fail "only $n commands listed"

# the four reports
for words in "data" "data synth" "data stats" "vocab"; do
    # shellcheck disable=SC2086
    check_help "$cap" $words
done
grep -q '^  data ' "$t/top" || fail "cap --help does not list data"
grep -q '^  vocab ' "$t/top" || fail "cap --help does not list vocab"
expect 2 "--data and --batches exclude each other" \
    "$cap" train x.so --data coco:c.json --batches b.safetensors --steps 1 --out o.st
expect 2 "cap train needs one of --data, --batches or --batch-dir" \
    "$cap" train x.so --steps 1 --out o.st
"$cap" eval --help | grep -q -- '--length-alpha A' || fail "cap eval --help lacks --length-alpha"

# errors name the real alternatives
expect 2 "unknown option '--batchs'; did you mean --batches? (see cap train --help)" \
    "$cap" train x.so --batchs b.safetensors --steps 1 --out o.st
expect 2 "unknown command 'trian'; did you mean train?" "$cap" trian x.so
expect 2 "--vocab goes with --data" \
    "$cap" train x.so --batches b.safetensors --vocab v.txt --steps 1 --out o.st
expect 2 "cap train needs one of --steps or --epochs" \
    "$cap" train x.so --batches b.safetensors --out o.st
expect 2 "cap data needs a subcommand: synth or stats" "$cap" data
expect 2 "capc: error: unknown option '--chek'; did you mean --check? (see capc --help)" \
    "$capc" --chek m.json
expect 2 "capc: error: unknown option '-x' in '-vvx'" "$capc" -vvx m.json
expect 2 "cap info has no subcommands ('extra')" "$cap" help info extra
# an early option before the command word (cap --version) wins over the command
v=$("$cap" --version info x.so 2>&1) && [ "$v" = "$("$cap" --version)" ] ||
    { echo "FAIL: cap --version info x.so: '$v'"; fails=$((fails + 1)); }

[ "$fails" -eq 0 ] || { echo "$fails failures"; exit 1; }
echo "ok: $n commands"
