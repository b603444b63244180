#!/usr/bin/env python3
"""param_counts.py - an independent model of the captioner's parameters (pure Python, no torch).

It enumerates, from the architecture alone (DESIGN.md, docs/models.md), every PyTorch
state_dict entry of the three captioner models: name, shape, and whether it is a trainable
parameter, a frozen parameter or a buffer (BatchNorm running statistics). It does not read
the model JSON files, so it is a cross-check of them and of capc:

    scripts/param_counts.py                   counts of all three models, checked against the
                                              numbers PyTorch prints (exit 1 on a mismatch)
    scripts/param_counts.py --list MODEL      every name with its shape and kind
    scripts/param_counts.py --compare-ir MODEL FILE.ir [-D name=value ...]
                                              compare the `param`/`buffer` lines of a capc IR
                                              dump (capc MODEL.json --dump-ir=DIR) with this
                                              list: names, shapes, frozen flags, buffers

Counting follows PyTorch: `parameters` = sum of numel over nn.Parameters (buffers excluded),
`trainable` = those not under a frozen prefix. num_batches_tracked is not modelled.
"""
import argparse
import re
import signal
import sys

# ---- configurations (the defaults of models/*.json) -------------------------------------------

BASE = dict(batch=32, vocab=10000, max_len=52, image=224, dropout=0.1, d=512, heads=8, ff=2048,
            G=14, enc_layers=2, dec_layers=4, bottleneck=1, stem=64,
            width1=64, width2=128, width3=256, width4=512)

MODELS = {
    "captioner": dict(BASE, blocks1=3, blocks2=4, blocks3=23, blocks4=3),
    "captioner_resnet50": dict(BASE, blocks1=3, blocks2=4, blocks3=6, blocks4=3),
    "captioner_tiny": dict(BASE, batch=16, vocab=64, max_len=16, image=128, d=64, heads=4,
                           ff=256, G=4, enc_layers=1, dec_layers=2, bottleneck=0, stem=16,
                           width1=16, width2=32, width3=64, width4=128,
                           blocks1=1, blocks2=1, blocks3=1, blocks4=1),
}

# the presets of models/captioner.json (-D preset=NAME): the configurations above
PRESETS = {"resnet101": "captioner", "resnet50": "captioner_resnet50", "tiny": "captioner_tiny"}

# what PyTorch prints (sum(p.numel() for p in model.parameters()), and with requires_grad)
EXPECTED = {
    "captioner": (71_901_008, 44_365_584),
    "captioner_resnet50": (52_908_880, 44_365_584),
    "captioner_tiny": (506_448, 427_136),
}

FROZEN = ["backbone.conv1", "backbone.bn1", "backbone.layer1", "backbone.layer2",
          "backbone.layer3"]

PARAM, BUFFER = "param", "buffer"


def enumerate_params(c):
    """Yield (name, shape, kind) in the order the model declares them."""
    out = []

    def p(name, shape, kind=PARAM):
        out.append((name, tuple(shape), kind))

    def conv(name, cin, cout, k):
        p(name + ".weight", (cout, cin, k, k))

    def bn(name, ch):
        p(name + ".weight", (ch,))
        p(name + ".bias", (ch,))
        p(name + ".running_mean", (ch,), BUFFER)
        p(name + ".running_var", (ch,), BUFFER)

    def basic(name, inplanes, planes, stride):
        conv(name + ".conv1", inplanes, planes, 3)
        bn(name + ".bn1", planes)
        conv(name + ".conv2", planes, planes, 3)
        bn(name + ".bn2", planes)
        if stride != 1 or inplanes != planes:
            conv(name + ".downsample.0", inplanes, planes, 1)
            bn(name + ".downsample.1", planes)

    def bottleneck(name, inplanes, planes, stride):
        conv(name + ".conv1", inplanes, planes, 1)
        bn(name + ".bn1", planes)
        conv(name + ".conv2", planes, planes, 3)
        bn(name + ".bn2", planes)
        conv(name + ".conv3", planes, planes * 4, 1)
        bn(name + ".bn3", planes * 4)
        if stride != 1 or inplanes != planes * 4:
            conv(name + ".downsample.0", inplanes, planes * 4, 1)
            bn(name + ".downsample.1", planes * 4)

    def linear(name, nin, nout):
        p(name + ".weight", (nout, nin))
        p(name + ".bias", (nout,))

    def conv1d(name, nin, nout):
        p(name + ".weight", (nout, nin, 1))
        p(name + ".bias", (nout,))

    def mha(name, d):
        p(name + ".in_proj_weight", (3 * d, d))
        p(name + ".in_proj_bias", (3 * d,))
        linear(name + ".out_proj", d, d)

    def ln(name, d):
        p(name + ".weight", (d,))
        p(name + ".bias", (d,))

    # backbone
    expansion = 4 if c["bottleneck"] else 1
    block = bottleneck if c["bottleneck"] else basic
    conv("backbone.conv1", 3, c["stem"], 7)
    bn("backbone.bn1", c["stem"])
    inplanes = c["stem"]
    for li in range(1, 5):
        planes = c["width%d" % li]
        for b in range(c["blocks%d" % li]):
            stride = (1 if li == 1 else 2) if b == 0 else 1
            block("backbone.layer%d.%d" % (li, b), inplanes, planes, stride)
            inplanes = planes * expansion
    d, ff, V, G = c["d"], c["ff"], c["vocab"], c["G"]
    # neck
    p("neck.conv.weight", (d, inplanes, 1, 1))
    bn("neck.bn", d)
    # encoder
    p("encoder.pos_embed", (1, G * G, d))
    for i in range(c["enc_layers"]):
        n = "encoder.layers.%d" % i
        mha(n + ".self_attn", d)
        ln(n + ".norm1", d)
        conv1d(n + ".ffn.conv1", d, ff)
        conv1d(n + ".ffn.conv2", ff, d)
        ln(n + ".norm2", d)
    # decoder
    p("decoder.embed.weight", (V, d))
    for i in range(c["dec_layers"]):
        n = "decoder.layers.%d" % i
        mha(n + ".self_attn", d)
        ln(n + ".norm1", d)
        mha(n + ".cross_attn", d)
        ln(n + ".norm2", d)
        linear(n + ".ffn.fc1", d, ff)
        linear(n + ".ffn.fc2", ff, d)
        ln(n + ".norm3", d)
    p("decoder.out.bias", (V,))
    return out


def is_frozen(name):
    return any(name == f or name.startswith(f + ".") for f in FROZEN)


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def counts(entries):
    params = sum(numel(s) for _, s, k in entries if k == PARAM)
    trainable = sum(numel(s) for n, s, k in entries if k == PARAM and not is_frozen(n))
    buffers = sum(numel(s) for _, s, k in entries if k == BUFFER)
    return params, trainable, buffers


def config_for(model, defines):
    if model not in MODELS:
        sys.exit("unknown model %r (one of %s)" % (model, ", ".join(MODELS)))
    c = dict(MODELS[model])
    for dfn in defines or []:
        k, _, v = dfn.partition("=")
        if k == "preset":  # the file's preset first: the other -D apply on top of it
            c = dict(MODELS[PRESETS[v]], **{x: c[x] for x in c if c[x] != MODELS[model][x]})
            continue
        if k not in c:
            sys.exit("no config variable %r" % k)
        c[k] = int(v) if re.fullmatch(r"-?\d+", v) else float(v)
    return c


IR_LINE = re.compile(r"^(param|buffer)\s+@(\S+)\s*:\s*\w+\[([0-9,]*)\](.*)$")


def compare_ir(entries, path):
    """Compare our list with the param/buffer lines of a capc IR text dump."""
    got = {}
    with open(path) as f:
        for line in f:
            m = IR_LINE.match(line.strip())
            if not m:
                continue
            kind, name, dims, rest = m.groups()
            shape = tuple(int(x) for x in dims.split(",")) if dims else ()
            frozen = re.search(r"\bfrozen\b", rest) is not None
            got[name] = (shape, kind, frozen)
    bad = 0
    want = {n: (s, k, k == PARAM and is_frozen(n)) for n, s, k in entries}
    for n, w in want.items():
        if n not in got:
            print("missing in IR: %s %s" % (n, list(w[0])))
            bad += 1
        elif got[n] != w:
            print("differs: %s: IR %s, expected %s" % (n, got[n], w))
            bad += 1
    for n in got:
        if n not in want:
            print("unexpected in IR: %s %s" % (n, list(got[n][0])))
            bad += 1
    print("%s: %d entries compared, %d problems" % (path, len(want), bad))
    return bad == 0


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends quietly
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", metavar="MODEL")
    ap.add_argument("--compare-ir", nargs=2, metavar=("MODEL", "IR"))
    ap.add_argument("-D", dest="defines", action="append", metavar="NAME=VALUE")
    a = ap.parse_args()
    if a.list:
        for n, s, k in enumerate_params(config_for(a.list, a.defines)):
            tag = "buffer" if k == BUFFER else ("frozen" if is_frozen(n) else "trainable")
            print("%-60s %-20s %s" % (n, "[" + ",".join(map(str, s)) + "]", tag))
        return 0
    if a.compare_ir:
        model, path = a.compare_ir
        return 0 if compare_ir(enumerate_params(config_for(model, a.defines)), path) else 1
    ok = True
    for model in MODELS:
        entries = enumerate_params(config_for(model, a.defines))
        params, trainable, buffers = counts(entries)
        exp = EXPECTED[model]
        status = "ok" if a.defines or (params, trainable) == exp else \
            "MISMATCH (PyTorch: %d, %d)" % exp
        ok = ok and status == "ok"
        print("%-20s parameters: %11d  trainable: %11d  buffers: %8d  tensors: %4d  %s" %
              (model, params, trainable, buffers, len(entries), status))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
