#!/usr/bin/python3
"""Produce the seed-size accuracy goldens for models/captioner_resnet50.json, once, with PyTorch.

Run from the repository root with Debian's torch (not a pyenv python):

    /usr/bin/python3 tests/golden/make_seed_golden.py [--dump DIR]

It writes tests/golden/seed_expected.safetensors (see docs/golden.md, "Seed-size accuracy
goldens"): the float64 loss of eval_grads and of train_grads, fixed slices of eight of
eval_grads' gradient tensors, each value with its own tolerance, and a few generator values
that the C test uses to check that its generator is bit-identical to this one. train_grads'
gradients are computed and their sensitivity printed, but not recorded (see below).

The ResNet-50 captioner has 52.8 million parameters, too many to commit. So the weights, the
image batch and the captions are not stored: this script and tests/runtime/
test_seed_accuracy.c both compute them from the small deterministic generator below
(splitmix64 over the FNV-1a hash of the tensor's name and the element index). --dump DIR
also writes them as DIR/seed_weights.safetensors and DIR/seed_batch.safetensors (F32, 211 MB)
for `cap loss`, to look into a mismatch.

The model is make_golden.py's TinyCaptioner (imported, not copied) in its ResNet-50 form,
as bench/torch_step.py builds it; its state_dict names and shapes equal capc's state names
for the model file (checked once against `cap init`: 369 tensors, 52,816,720 parameters,
44,273,424 trainable).

Tolerance (the reasoning is in docs/golden.md and the C test's top comment): the float64
computation is repeated with every float32 weight, BN statistic and image value moved by one
float32 ulp in a random direction (DRAWS draws). Where a ReLU pre-activation lies within
float32 rounding of zero, the draws flip its mask and the gradient entries it feeds move a
lot; elsewhere they move by about 1e-7 relative. Per entry:
    tol = SPREAD_FACTOR * max over draws |g_draw - g| + FLOOR_ULPS * 2^-24 * m
(m: the largest |g| among the tensor's recorded values)
and for a loss SPREAD_FACTOR * its spread + FLOOR_ULPS * 2^-24 * |loss|. PyTorch's own float32
run of the same batch is measured against these tolerances and its worst ratio printed (and
stored in the metadata): an honest float32 implementation must pass them.

In training mode the layer-4 BatchNorms normalise over 2 * 2 * 2 = 8 values; their batch
statistics amplify a one-ulp perturbation some 20x, so every draw flips ReLU masks in the
encoder and decoder FFNs, float32 rounding flips others, and neither PyTorch's float32 nor
capc stays inside a per-entry tolerance derived from the draws. So for train_grads only the
loss, which is well conditioned, is recorded.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (model classes and the safetensors writer)

# The compile flags of the C test: `capc models/captioner_resnet50.json` plus these.
DEFINES = {"image": 64, "batch": 2, "dropout": 0, "G": 4}
# models/captioner_resnet50.json's config with DEFINES applied, in TinyCaptioner's words.
CONFIG = dict(batch=2, image=64, d=512, heads=8, ff=2048, grid=4, max_len=52, vocab=10000,
              widths=[64, 128, 256, 512], blocks=[3, 4, 6, 3], bottleneck=True,
              enc_layers=2, dec_layers=4)
EXPECTED_PARAMS = 52816720
EXPECTED_TRAINABLE = 44273424
ENTRIES = (("eval_grads", False), ("train_grads", True))
GRAD_ENTRIES = ("eval_grads",)  # entries whose gradient slices are recorded

# Which gradient entries are recorded: (parameter, start, stride, count) over the flattened
# tensor, i.e. flat indices start + k * stride for k < count. Columns of weight matrices (or
# one kernel tap of one input channel) so that every output unit, and with it every ReLU
# mask of the layer, is represented.
SLICES = (
    ("backbone.layer4.0.conv2.weight", 4, 512 * 9, 512),   # 3x3 stride 2: centre tap, input ch 0
    ("backbone.layer4.0.bn1.weight", 0, 1, 512),            # whole tensor: the deepest BN
    ("neck.conv.weight", 0, 2048, 512),                     # column 0
    ("encoder.layers.0.self_attn.in_proj_weight", 0, 512, 1536),
    ("encoder.layers.1.ffn.conv1.weight", 0, 512, 2048),
    ("decoder.layers.0.ffn.fc1.weight", 0, 512, 2048),
    ("decoder.layers.3.cross_attn.in_proj_weight", 0, 512, 1536),
    ("decoder.embed.weight", 0, 512, 10000),                # tied with the output projection
)

DRAWS = 8             # one-ulp perturbations of the float64 computation
DRAW_SEED = 20240611  # their random signs (numpy; not needed by the C test)
SPREAD_FACTOR = 4.0   # the draws see flips within ~1 ulp; float32 rounding reaches a few ulps
FLOOR_ULPS = 64.0     # float32 rounding along ~100 ops of forward and backward, in units of
                      # 2^-24 times the largest recorded |g| (capc and PyTorch land at 6-14)

# --------------------------------------------------------------------------------------
# The generator (the C test has the same, bit for bit)
# --------------------------------------------------------------------------------------

M64 = (1 << 64) - 1
GAMMA = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(name, start, n):
    """Outputs start .. start+n-1 of splitmix64 seeded with fnv1a64(name): output i is
    mix(seed + (i + 1) * GAMMA), mod 2^64."""
    i = np.arange(start + 1, start + n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + i * GAMMA
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(name, n):
    """u = top 24 bits * 2^-23 - 1: multiples of 2^-23 in [-1, 1), exact in float32."""
    top = (splitmix64(name, 0, n) >> np.uint64(40)).astype(np.float64)
    return top * 2.0 ** -23 - 1.0


def tensor_value(name, shape):
    """The float32 value of state tensor `name` (or "image"). Each rule is one double
    operation on u or a power-of-two scale plus an offset (exact in double), then one rounding
    to float32, so C and NumPy agree bit for bit."""
    n = int(np.prod(shape, dtype=np.int64))
    u = uniform(name, n)
    if name == "image":
        v = u
    elif name.endswith("running_var"):
        v = 1.0 + u / 2.0                     # [0.5, 1.5)
    elif name.endswith("running_mean") or name.endswith("bias") or name == "encoder.pos_embed":
        v = u / 8.0
    elif name == "decoder.embed.weight":
        v = u / 8.0                           # tied output: logits of std ~1.6, loss ~10.5
    elif name.endswith("weight") and len(shape) == 1:
        v = 1.0 + u / 8.0                     # BatchNorm and LayerNorm scales
    elif name.endswith("weight"):
        fan_in = n // shape[0]
        v = u * math.sqrt(3.0 / fan_in)       # conv / linear: variance 1 / fan_in
    else:
        raise ValueError("no generator rule for %s" % name)
    return v.astype(np.float32).reshape(shape)


def caption_ids(batch, max_len, vocab):
    """Row b: <start>=1, then (max_len - 2) >> b words, <end>=2, pads 0. Word at position p
    of row b: 3 + (bits >> 11) % (vocab - 3), bits = output b * max_len + p of "caption"."""
    bits = splitmix64("caption", 0, batch * max_len).reshape(batch, max_len)
    words = (bits >> np.uint64(11)) % np.uint64(vocab - 3) + np.uint64(3)
    ids = np.zeros((batch, max_len), np.int32)
    for b in range(batch):
        n = (max_len - 2) >> b
        ids[b, 0] = mg.START
        ids[b, 1:n + 1] = words[b, 1:n + 1]
        ids[b, n + 1] = mg.END
    return ids


def state_fingerprint(shapes):
    """Sum mod 2^64 of fnv1a64("name[d0,d1,...]") over the state tensors: independent of
    order, so the C test can compare it with the model's WEIGHT and BUFFER states."""
    total = 0
    for name, shape in shapes:
        total = (total + fnv1a64("%s[%s]" % (name, ",".join(str(d) for d in shape)))) & M64
    return total


# --------------------------------------------------------------------------------------
# The model and its float64 gradients
# --------------------------------------------------------------------------------------

def build_model():
    model = mg.TinyCaptioner(CONFIG, p=0.0).double()
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (n_all, n_train) == (EXPECTED_PARAMS, EXPECTED_TRAINABLE), (n_all, n_train)
    return model


def state_entries(model):
    return [(n, t) for n, t in model.state_dict().items() if not n.endswith("num_batches_tracked")]


def generated_state(model):
    return {n: tensor_value(n, tuple(t.shape)) for n, t in state_entries(model)}


def load_state(model, values):
    """Copies the float32 values (as float64) into the model; resets BN statistics, which a
    train-mode forward changes."""
    with torch.no_grad():
        for n, t in state_entries(model):
            t.copy_(torch.from_numpy(values[n].astype(np.float64)))


def one_ulp(values, rng):
    """Every element moved to its float32 neighbour towards +inf or -inf (random sign)."""
    out = {}
    for n, v in values.items():
        up = rng.random(v.shape) < 0.5
        out[n] = np.where(up, np.nextafter(v, np.float32(np.inf)),
                          np.nextafter(v, np.float32(-np.inf))).astype(np.float32)
    return out


def gradients(model, values, image, caption, train):
    """Loss and the recorded gradient slices (float64) for one pass."""
    load_state(model, values)
    model.train(train)
    model.zero_grad(set_to_none=True)
    loss, _, _ = model(torch.from_numpy(image.astype(np.float64)), torch.from_numpy(caption))
    loss.backward()
    params = dict(model.named_parameters())
    full = {p: params[p].grad.detach().double().numpy().reshape(-1) for p, _, _, _ in SLICES}
    return float(loss.detach()), full


def take(flat, start, stride, count):
    return flat[start:start + (count - 1) * stride + 1:stride]


def float32_run(values, image, caption, train):
    """PyTorch's own float32 gradients of the same batch: how far an honest float32
    implementation lands from the float64 truth, i.e. what the tolerance must admit."""
    model = mg.TinyCaptioner(CONFIG, p=0.0).float()
    with torch.no_grad():
        for n, t in state_entries(model):
            t.copy_(torch.from_numpy(values[n]))
    model.train(train)
    loss, _, _ = model(torch.from_numpy(image), torch.from_numpy(caption))
    loss.backward()
    params = dict(model.named_parameters())
    return float(loss.detach()), {p: params[p].grad.double().numpy().reshape(-1)
                                  for p, _, _, _ in SLICES}


def record_entry(model, values, image, caption, train, rng):
    """Loss, golden slices, per-entry tolerances and diagnostics for one entry point."""
    loss, base = gradients(model, values, image, caption, train)
    spread = {p: np.zeros(c) for p, _, _, c in SLICES}
    loss_spread = 0.0
    for _ in range(DRAWS):
        l_d, g_d = gradients(model, one_ulp(values, rng), image, caption, train)
        loss_spread = max(loss_spread, abs(l_d - loss))
        for p, s, st, c in SLICES:
            spread[p] = np.maximum(spread[p], np.abs(take(g_d[p], s, st, c) - take(base[p], s, st, c)))
    l32, g32 = float32_run(values, image, caption, train)
    rows = []
    for p, s, st, c in SLICES:
        g = take(base[p], s, st, c)
        scale = float(np.max(np.abs(g)))  # the recorded values' largest
        tol = SPREAD_FACTOR * spread[p] + FLOOR_ULPS * 2.0 ** -24 * scale
        torch_ratio = float(np.max(np.abs(take(g32[p], s, st, c) - g) / tol))
        rows.append(dict(param=p, index=(s, st, c), grad=g, tol=tol, scale=scale,
                         spread=spread[p], torch32_ratio=torch_ratio))
    loss_tol = SPREAD_FACTOR * loss_spread + FLOOR_ULPS * 2.0 ** -24 * abs(loss)
    return dict(loss=loss, loss_tol=loss_tol, loss_spread=loss_spread,
                torch32_loss_ratio=abs(l32 - loss) / loss_tol, rows=rows)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

GENERATOR_CHECKS = (  # (tensor, first elements): the C test reproduces these bit for bit
    ("backbone.conv1.weight", [64, 3, 7, 7]), ("backbone.layer1.0.bn1.running_var", [64]),
    ("neck.bn.running_mean", [512]), ("decoder.layers.0.norm1.weight", [512]),
    ("decoder.out.bias", [10000]), ("decoder.embed.weight", [10000, 512]),
    ("encoder.pos_embed", [1, 16, 512]), ("image", [2, 3, 64, 64]),
)


def golden_tensors(results, caption):
    out = []
    for name, shape in GENERATOR_CHECKS:
        out.append(("gen." + name, "F32", tensor_value(name, shape).reshape(-1)[:8]))
    out.append(("gen.caption", "I32", caption))
    for entry, _ in ENTRIES:
        r = results[entry]
        out.append(("%s.loss" % entry, "F64", np.array([r["loss"], r["loss_tol"]])))
        for row in (r["rows"] if entry in GRAD_ENTRIES else []):
            p = row["param"]
            out.append(("%s.index.%s" % (entry, p), "I32", np.array(row["index"], np.int32)))
            out.append(("%s.grad.%s" % (entry, p), "F64", row["grad"]))
            out.append(("%s.tol.%s" % (entry, p), "F64", row["tol"]))
    return out


def dump_inputs(directory, values, image, caption):
    os.makedirs(directory, exist_ok=True)
    mg.write_safetensors(os.path.join(directory, "seed_weights.safetensors"),
                         [(n, "F32", v) for n, v in values.items()], {})
    mg.write_safetensors(os.path.join(directory, "seed_batch.safetensors"),
                         [("image", "F32", image), ("caption", "I32", caption)], {})


def report(results):
    """Per tensor: the largest |g|, the draws' spread relative to it, how many entries the
    draws moved by more than 1e-5 of it (ReLU mask flips), how many tolerances the spread
    term dominates, and PyTorch's float32 error as a fraction of the tolerance."""
    for entry, _ in ENTRIES:
        r = results[entry]
        print("%s: loss %.17g (tol %.3g, 1-ulp spread %.3g, PyTorch f32 at %.3f of tol)%s" % (
            entry, r["loss"], r["loss_tol"], r["loss_spread"], r["torch32_loss_ratio"],
            "" if entry in GRAD_ENTRIES else "; gradients NOT recorded"))
        for row in r["rows"]:
            sp, scale = row["spread"], row["scale"]
            floor = FLOOR_ULPS * 2.0 ** -24 * scale
            print("  %-44s max|g| %.3g  spread/max|g| median %.1e max %.1e  moved >1e-5: %4d  "
                  "spread-dominated: %4d  PyTorch f32 at %.3f of tol" % (
                      row["param"], scale, np.median(sp) / scale, np.max(sp) / scale,
                      int(np.sum(sp > 1e-5 * scale)), int(np.sum(SPREAD_FACTOR * sp > floor)),
                      row["torch32_ratio"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", help="also write the generated weights and batch here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = build_model()
    values = generated_state(model)
    image = tensor_value("image", (CONFIG["batch"], 3, CONFIG["image"], CONFIG["image"]))
    caption = caption_ids(CONFIG["batch"], CONFIG["max_len"], CONFIG["vocab"])
    if args.dump:
        dump_inputs(args.dump, values, image, caption)
    rng = np.random.default_rng(DRAW_SEED)
    results = {entry: record_entry(model, values, image, caption, train, rng)
               for entry, train in ENTRIES}
    shapes = [(n, list(t.shape)) for n, t in state_entries(model)]
    meta = {"model": "captioner_resnet50", "defines": json.dumps(DEFINES, sort_keys=True),
            "config": json.dumps(CONFIG, sort_keys=True), "torch": torch.__version__,
            "generator": "tests/golden/make_seed_golden.py", "draws": str(DRAWS),
            "draw_seed": str(DRAW_SEED), "spread_factor": str(SPREAD_FACTOR),
            "floor_ulps": str(FLOOR_ULPS),
            "state_tensors": str(len(shapes)),
            "state_elements": str(sum(int(np.prod(s)) for _, s in shapes)),
            "state_fingerprint": "%016x" % state_fingerprint(shapes)}
    for entry, _ in ENTRIES:
        r = results[entry]
        worst = max([r["torch32_loss_ratio"]] + ([x["torch32_ratio"] for x in r["rows"]]
                                                 if entry in GRAD_ENTRIES else []))
        meta["%s.torch32_worst_ratio" % entry] = "%.4f" % worst
    path = os.path.join(HERE, "seed_expected.safetensors")
    mg.write_safetensors(path, golden_tensors(results, caption), meta)
    report(results)
    print("caption:\n%s" % caption)
    print("wrote %s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))


if __name__ == "__main__":
    main()
