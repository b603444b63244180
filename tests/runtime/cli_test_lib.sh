# cli_test_lib.sh — what the shell tests of the cap command line share; sourced by
# cli_commands.sh and cli_attend.sh. Sets $t (a temporary directory, removed on exit) and
# $fails (counted by fail).
fails=0
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT

fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}

# expect STATUS NEEDLE PROG ARGS...: exits STATUS and stderr holds NEEDLE
expect() {
    want=$1 needle=$2
    shift 2
    "$@" >"$t/out" 2>"$t/err"
    rc=$?
    [ "$rc" -eq "$want" ] || fail "$*: exit $rc, want $want ($(cat "$t/err"))"
    grep -qF -- "$needle" "$t/err" || fail "$*: stderr lacks '$needle': $(cat "$t/err")"
}
