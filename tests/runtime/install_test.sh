#!/bin/sh
# install_test.sh BUILD_DIR SOURCE_DIR FAKE_ARTIFACT SANITIZED(0|1)
# `cmake --install` into a temporary prefix, then what a user of the install does: run the
# installed cap, compile and run a C program against libcaprt with pkg-config, and run the
# ctypes example of docs/api.md (extracted from the document itself) on the hand-written test
# artifact, checking its loss against `cap loss` on the same files.
set -eu
B=$1 S=$2 FAKE=$3 SAN=$4
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cmake --install "$B" --prefix "$T/prefix" >"$T/install.log"
P="$T/prefix"
"$P/bin/cap" --version
"$P/bin/capc" --version
PC=$(find "$P" -name caprt.pc)
export PKG_CONFIG_PATH=$(dirname "$PC")
cat >"$T/prog.c" <<'EOC'
#include <cap.h>
#include <stdio.h>
int main(int argc, char **argv) {
    CapModel *m = NULL;
    char err[512];
    if (argc < 2 || cap_model_open(argv[1], &m, err, sizeof err) != CAP_OK) {
        fprintf(stderr, "error: %s\n", argc < 2 ? "no model" : err);
        return 1;
    }
    printf("opened model %s\n", cap_model_artifact(m)->model_name);
    cap_model_close(m);
    return 0;
}
EOC
FLAGS=""
[ "$SAN" = 1 ] && FLAGS="-fsanitize=address,undefined"
cc -std=c11 $FLAGS "$T/prog.c" $(pkg-config --cflags --libs caprt) -o "$T/prog"
"$T/prog" "$FAKE" | tee "$T/prog.out"
grep -q "opened model fake_affine" "$T/prog.out"

# the ctypes example: weights from the installed cap, a batch for the fake model's eval_loss
"$P/bin/cap" init "$FAKE" -o "$T/w.safetensors" --seed 3 >/dev/null
python3 - "$T/b.safetensors" <<'EOP'
import json, struct, sys
x = [0.5, -1.0, 2.0, 0.25, 1.5, 0.0, -0.5, 3.0]
h = json.dumps({"x": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<8f", *x))
EOP
sed -n '/^## Python (ctypes)/,/^```$/p' "$S/docs/api.md" | sed '1,/^```python$/d;/^```$/d' >"$T/example.py"
PRELOAD=""
[ "$SAN" = 1 ] && PRELOAD=$(cc -print-file-name=libasan.so)
LD_PRELOAD="$PRELOAD" ASAN_OPTIONS=detect_leaks=0 python3 "$T/example.py" \
  "$(find "$P" -name libcaprt.so)" "$FAKE" "$T/w.safetensors" "$T/b.safetensors" | tee "$T/py.out"
"$P/bin/cap" loss "$FAKE" --weights "$T/w.safetensors" --batch "$T/b.safetensors" | tee "$T/cli.out"
cmp "$T/py.out" "$T/cli.out"
echo "install test: ok"
