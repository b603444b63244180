#!/bin/sh
# cli_attend.sh CAP CAPC PYTHON SRC — `cap attend` on the tiny captioner (random weights):
#   - the PNG decodes (tests/runtime/png_panels.py: libpng-independent, zlib and the PNG
#     filters by hand), is cols x rows panels of the input image's own size (a 150x100
#     image: not the model's 128x128, not square), one panel per word printed, at most 4 per
#     row; its Description (tEXt) is the printed caption; the panels are not all the same
#     (each word has its own map); --cols 2 gives 2 per row;
#   - attend's logits agree with the greedy caption (no warning on stderr), also for a model
#     trained for 200 steps on the synthetic set (lr 0.002), whose captions have distinct words: row t
#     of attend's output must be the step that chose word t, or the argmax check warns;
#   - an image larger than 1024 on a side (2048x1000) gives panels of the image scaled down
#     (1024x500);
#   - refused with a message and exit 1: a cap.so compiled from a model without the attend
#     entry (what a cap.so from an older capc is), an image that is not one, an output that
#     is the input image (left as it was), an output in a directory that does not exist
#     (before any work); -o missing is a usage error (2).
set -u
cap=$1
capc=$2
python=$3
src=$4
# shellcheck source=cli_test_lib.sh
. "$(dirname "$0")/cli_test_lib.sh"

"$cap" data synth --out "$t/demo" --images 20 >/dev/null || fail "cap data synth"
"$cap" vocab --data "coco:$t/demo/captions.json" --min-count 1 -o "$t/vocab.txt" >/dev/null ||
    fail "cap vocab"
v=$(wc -l <"$t/vocab.txt")
"$capc" "$src/models/captioner_tiny.json" -D "vocab=$v" -D batch=2 -D lr=0.002 --target=cpu \
    -o "$t/cap.so" \
    >"$t/capc.log" 2>&1 || fail "capc: $(tail -3 "$t/capc.log")"
"$cap" init "$t/cap.so" -o "$t/w.safetensors" --seed 3 >/dev/null || fail "cap init"
"$python" "$src/tests/runtime/png_panels.py" write "$t/wide.png" 150 100 ||
    fail "writing a 150x100 PNG"

# check_picture PNG COLS [W H]: the picture of the caption in $t/out, panels of W x H
# (default 150 x 100)
check_picture() {
    caption=$(sed -n 's/^[^:]*: //p' "$t/out")
    n=$(echo "$caption" | wc -w)
    [ "$n" -ge 1 ] || fail "no words printed: $(cat "$t/out")"
    "$python" "$src/tests/runtime/png_panels.py" check "$1" "${3:-150}" "${4:-100}" "$n" "$2" \
        "$caption" || fail "$1: not $n panels of ${3:-150}x${4:-100} in rows of $2"
}

"$cap" attend "$t/cap.so" --weights "$t/w.safetensors" --vocab "$t/vocab.txt" \
    --image "$t/wide.png" -o "$t/attn.png" >"$t/out" 2>"$t/err" ||
    fail "cap attend: exit $? ($(cat "$t/err"))"
grep -q "warning" "$t/err" && fail "cap attend warned: $(cat "$t/err")"
grep -q "wrote $t/attn.png" "$t/err" || fail "no 'wrote' note: $(cat "$t/err")"
check_picture "$t/attn.png" 4
"$cap" attend "$t/cap.so" --weights "$t/w.safetensors" --vocab "$t/vocab.txt" \
    --image "$t/wide.png" -o "$t/attn2.png" --cols 2 >"$t/out" 2>"$t/err" ||
    fail "cap attend --cols 2: exit $? ($(cat "$t/err"))"
check_picture "$t/attn2.png" 2

# a trained model: distinct words, so a row of attend's output taken for the wrong word
# makes the argmax check warn
"$cap" train "$t/cap.so" --data "coco:$t/demo/captions.json" --vocab "$t/vocab.txt" \
    --steps 200 --out "$t/trained.safetensors" >"$t/train.log" 2>&1 ||
    fail "cap train: $(tail -3 "$t/train.log")"
for i in 0 1 2; do
    img=$(ls "$t/demo/images/synth_00000$i".*)
    "$cap" attend "$t/cap.so" --weights "$t/trained.safetensors" --vocab "$t/vocab.txt" \
        --image "$img" -o "$t/trained$i.png" >"$t/out" 2>"$t/err" ||
        fail "cap attend (trained, $img): exit $? ($(cat "$t/err"))"
    grep -q "warning" "$t/err" && fail "cap attend warned for the trained model: $(cat "$t/err")"
    words=$(sed -n 's/^[^:]*: //p' "$t/out" | tr ' ' '\n' | sort -u | wc -l)
    [ "$words" -ge 3 ] || fail "the trained model's caption has $words distinct words: $(cat "$t/out")"
done
# a large image: panels scaled down to 1024 on the long side
"$python" "$src/tests/runtime/png_panels.py" write "$t/big.png" 2048 1000 ||
    fail "writing a 2048x1000 PNG"
"$cap" attend "$t/cap.so" --weights "$t/trained.safetensors" --vocab "$t/vocab.txt" \
    --image "$t/big.png" -o "$t/big_attn.png" >"$t/out" 2>"$t/err" ||
    fail "cap attend (2048x1000): exit $? ($(cat "$t/err"))"
grep -q "scaled down" "$t/err" || fail "no 'scaled down' note: $(cat "$t/err")"
check_picture "$t/big_attn.png" 4 1024 500

# a cap.so without the attend entry: the model file less its "entries"."attend"
"$python" - "$src/models/captioner.json" "$t/noattend.json" <<'EOF' || fail "writing noattend.json"
import json, os, sys
model = json.load(open(sys.argv[1]))
del model["entries"]["attend"]
here = os.path.dirname(os.path.abspath(sys.argv[1]))
model["import"] = [os.path.join(here, p) for p in model["import"]]
model["functions"] = [os.path.join(here, p) for p in model["functions"]]
json.dump(model, open(sys.argv[2], "w"))
EOF
"$capc" "$t/noattend.json" -D preset=tiny -D "vocab=$v" -D batch=2 --target=cpu \
    -o "$t/old.so" >"$t/capc.log" 2>&1 || fail "capc noattend: $(tail -3 "$t/capc.log")"
expect 1 "has no attend entry" "$cap" attend "$t/old.so" --weights "$t/w.safetensors" \
    --vocab "$t/vocab.txt" --image "$t/wide.png" -o "$t/x.png"
grep -qF "recompile it with \`capc MODEL.json" "$t/err" || fail "no recompile hint: $(cat "$t/err")"

# a file that is not an image
echo "not an image" >"$t/bad.png"
expect 1 "$t/bad.png" "$cap" attend "$t/cap.so" --weights "$t/w.safetensors" \
    --vocab "$t/vocab.txt" --image "$t/bad.png" -o "$t/x.png"
[ -e "$t/x.png" ] && fail "a picture was written for a bad image"
# the output is the input image
cp "$t/wide.png" "$t/keep.png"
expect 1 "is also the input" "$cap" attend "$t/cap.so" --weights "$t/w.safetensors" \
    --vocab "$t/vocab.txt" --image "$t/wide.png" -o "$t/wide.png"
cmp -s "$t/wide.png" "$t/keep.png" || fail "the input image was changed"
# an output in a directory that does not exist: refused before the model is opened
expect 1 "$t/nodir/x.png" "$cap" attend "$t/nothing.so" --weights "$t/w.safetensors" \
    --vocab "$t/vocab.txt" --image "$t/wide.png" -o "$t/nodir/x.png"
expect 2 "--out" "$cap" attend "$t/cap.so" --weights "$t/w.safetensors" --image "$t/wide.png"

[ "$fails" -eq 0 ] || exit 1
echo "cli_attend: all passed"
