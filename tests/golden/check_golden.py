#!/usr/bin/python3
"""Re-read the golden files with our own safetensors parser and re-verify them.

    /usr/bin/python3 tests/golden/check_golden.py

1. Parses the three files (checking offsets, dtypes, contiguity), prints a summary.
2. Rebuilds the PyTorch model of make_golden.py from the loaded F32 weights, reruns the eval
   and train passes in float64 and compares losses, every gradient and the BN running
   statistics with tiny_expected.safetensors.
3. Recomputes both losses with an independent NumPy float64 forward written from the
   conventions in docs/golden.md (no torch), which is what capc's reference must match.
Exits non-zero on any mismatch.
"""

import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402  (model classes and the safetensors reader)

failures = []
FD_PARAMS = ["backbone.layer4.0.conv1.weight", "backbone.layer4.0.downsample.1.weight",
             "neck.bn.bias", "encoder.pos_embed", "encoder.layers.0.self_attn.in_proj_weight",
             "decoder.embed.weight", "decoder.layers.1.cross_attn.in_proj_bias",
             "decoder.out.bias"]


def check(what, got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        failures.append("%s: shape %s != %s" % (what, got.shape, want.shape))
        return float("inf")
    err = float(np.max(np.abs(got - want) / (1.0 + np.abs(want)))) if got.size else 0.0
    if not err <= tol:
        failures.append("%s: max rel err %.3g > %.3g" % (what, err, tol))
    return err


def summary(path, tensors, meta):
    print("%s: %d bytes, %d tensors" % (os.path.relpath(path), os.path.getsize(path), len(tensors)))
    for k in sorted(meta):
        v = meta[k]
        print("  meta %s = %s" % (k, v if len(v) < 100 else v[:97] + "..."))
    by_dtype = {}
    for n, a in tensors.items():
        by_dtype.setdefault(a.dtype.str, [0, 0])
        by_dtype[a.dtype.str][0] += 1
        by_dtype[a.dtype.str][1] += a.size
    for dt, (n, e) in sorted(by_dtype.items()):
        print("  %s: %d tensors, %d elements" % (dt, n, e))


# --------------------------------------------------------------------------------------
# Independent NumPy forward (float64)
# --------------------------------------------------------------------------------------

def conv2d(x, w, stride=1, pad=0):
    o, c, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]                       # [B, C, Ho, Wo, kh, kw]
    return np.einsum("bchwij,ocij->bohw", win, w, optimize=True)


def maxpool(x, k=3, stride=2, pad=1):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    return win[:, :, ::stride, ::stride].max(axis=(4, 5))


def adaptive_avg_pool2d(x, g):
    b, c, h, w = x.shape
    out = np.zeros((b, c, g, g))
    for i in range(g):
        h0, h1 = (i * h) // g, -((-(i + 1) * h) // g)
        for j in range(g):
            w0, w1 = (j * w) // g, -((-(j + 1) * w) // g)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


class NumpyModel:
    def __init__(self, weights, train):
        self.w = {k: v.astype(np.float64) for k, v in weights.items()}
        self.train = train
        self.stats = {}

    def bn(self, x, name):
        w = self.w
        if self.train and not mg.is_frozen(name):
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))                    # biased, for normalizing
            n = x.size // x.shape[1]
            self.stats[name + ".running_mean"] = 0.9 * w[name + ".running_mean"] + 0.1 * mean
            self.stats[name + ".running_var"] = (0.9 * w[name + ".running_var"]
                                                 + 0.1 * var * n / (n - 1))
        else:
            mean, var = w[name + ".running_mean"], w[name + ".running_var"]
        r = lambda v: v[None, :, None, None]
        return (x - r(mean)) / np.sqrt(r(var) + 1e-5) * r(w[name + ".weight"]) + r(w[name + ".bias"])

    def block(self, x, p, stride):
        w = self.w
        y = np.maximum(self.bn(conv2d(x, w[p + ".conv1.weight"], stride, 1), p + ".bn1"), 0)
        y = self.bn(conv2d(y, w[p + ".conv2.weight"], 1, 1), p + ".bn2")
        if p + ".downsample.0.weight" in w:
            x = self.bn(conv2d(x, w[p + ".downsample.0.weight"], stride, 0), p + ".downsample.1")
        return np.maximum(y + x, 0)

    @staticmethod
    def layernorm(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w + b

    def mha(self, p, q, kv, heads, mask=None):
        """q [B,Tq,d], kv [B,Tk,d]; mask additive [B,Tq,Tk] (0 / -inf) or None."""
        w = self.w
        d = q.shape[-1]
        hd = d // heads
        W, bias = w[p + ".in_proj_weight"], w[p + ".in_proj_bias"]
        Q = q @ W[:d].T + bias[:d]
        K = kv @ W[d:2 * d].T + bias[d:2 * d]
        V = kv @ W[2 * d:].T + bias[2 * d:]
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, hd).transpose(0, 2, 1, 3)
        Q, K, V = split(Q), split(K), split(V)
        s = Q @ K.transpose(0, 1, 3, 2) / math.sqrt(hd)
        if mask is not None:
            s = s + mask[:, None]
        s = s - s.max(-1, keepdims=True)
        a = np.exp(s)
        a /= a.sum(-1, keepdims=True)
        o = (a @ V).transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], d)
        return o @ w[p + ".out_proj.weight"].T + w[p + ".out_proj.bias"]

    def forward(self, image, caption, cfg):
        w = self.w
        x = conv2d(image, w["backbone.conv1.weight"], 2, 3)
        x = maxpool(np.maximum(self.bn(x, "backbone.bn1"), 0))
        for i in range(4):
            x = self.block(x, "backbone.layer%d.0" % (i + 1), 1 if i == 0 else 2)
        x = np.maximum(self.bn(conv2d(x, w["neck.conv.weight"]), "neck.bn"), 0)
        x = adaptive_avg_pool2d(x, cfg["grid"])
        x = x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1) + w["encoder.pos_embed"]
        heads = cfg["heads"]
        for i in range(cfg["enc_layers"]):
            p = "encoder.layers.%d" % i
            x = self.layernorm(x + self.mha(p + ".self_attn", x, x, heads),
                               w[p + ".norm1.weight"], w[p + ".norm1.bias"])
            h = np.maximum(x @ w[p + ".ffn.conv1.weight"][:, :, 0].T + w[p + ".ffn.conv1.bias"], 0)
            h = h @ w[p + ".ffn.conv2.weight"][:, :, 0].T + w[p + ".ffn.conv2.bias"]
            x = self.layernorm(x + h, w[p + ".norm2.weight"], w[p + ".norm2.bias"])
        memory = x

        ids = caption[:, :-1].astype(np.int64)
        tgt = caption[:, 1:].astype(np.int64)
        b, t = ids.shape
        d = cfg["d"]
        pos = np.arange(t)[:, None]
        freq = np.exp(-math.log(10000.0) * np.arange(0, d, 2) / d)
        pe = np.zeros((t, d))
        pe[:, 0::2], pe[:, 1::2] = np.sin(pos * freq), np.cos(pos * freq)
        E = w["decoder.embed.weight"]
        x = E[ids] + pe
        causal = np.triu(np.full((t, t), -np.inf), 1)
        mask = causal[None] + np.where(ids == mg.PAD, -np.inf, 0.0)[:, None, :]
        for i in range(cfg["dec_layers"]):
            p = "decoder.layers.%d" % i
            x = self.layernorm(x + self.mha(p + ".self_attn", x, x, heads, mask),
                               w[p + ".norm1.weight"], w[p + ".norm1.bias"])
            x = self.layernorm(x + self.mha(p + ".cross_attn", x, memory, heads),
                               w[p + ".norm2.weight"], w[p + ".norm2.bias"])
            h = np.maximum(x @ w[p + ".ffn.fc1.weight"].T + w[p + ".ffn.fc1.bias"], 0)
            h = h @ w[p + ".ffn.fc2.weight"].T + w[p + ".ffn.fc2.bias"]
            x = self.layernorm(x + h, w[p + ".norm3.weight"], w[p + ".norm3.bias"])
        logits = x @ E.T + w["decoder.out.bias"]
        z = logits - logits.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        keep = tgt != mg.PAD
        nll = -np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
        return nll[keep].mean(), logits, memory


# --------------------------------------------------------------------------------------

def main():
    import torch
    torch.set_num_threads(1)
    paths = {k: os.path.join(HERE, "tiny_%s.safetensors" % k) for k in ("weights", "batch", "expected")}
    files = {k: mg.read_safetensors(p) for k, p in paths.items()}
    for k, p in paths.items():
        summary(p, *files[k])
    weights, wmeta = files["weights"]
    batch, _ = files["batch"]
    exp, emeta = files["expected"]
    cfg = json.loads(wmeta["config"])
    total = sum(os.path.getsize(p) for p in paths.values())
    print("total %d bytes" % total)
    print("loss_eval  = %.17g" % exp["loss_eval"])
    print("loss_train = %.17g" % exp["loss_train"])
    assert exp["loss_eval"].shape == () and exp["loss_train"].shape == ()
    assert batch["image"].dtype == np.float32 and batch["caption"].dtype == np.int32

    # 2. PyTorch, from the loaded weights.
    model, n_all, n_train = mg.build_model(cfg)
    sd = {k: torch.from_numpy(v.astype(np.float64)) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        failures.append("state_dict: missing %s unexpected %s" % (missing, unexpected))
    image = torch.from_numpy(batch["image"].astype(np.float64))
    caption = torch.from_numpy(batch["caption"])
    got, bns = mg.compute_expected(model, image, caption)
    got = dict(got)
    if set(got) != set(exp):
        failures.append("expected names differ: %s" % sorted(set(got) ^ set(exp)))
    worst = max(check("torch rerun: " + n, got[n], exp[n], 1e-12) for n in exp if n in got)
    print("torch rerun from loaded weights: %d tensors, max rel err %.3g" % (len(exp), worst))
    ngrad = sum(exp[n].size for n in exp if n.startswith("grad_train."))
    if ngrad != n_train:
        failures.append("grad_train covers %d elements, trainable is %d" % (ngrad, n_train))

    # 3. Independent NumPy float64 forward.
    img, cap = batch["image"].astype(np.float64), batch["caption"]
    le, logits_e, mem_e = NumpyModel(weights, train=False).forward(img, cap, cfg)
    nt = NumpyModel(weights, train=True)
    lt, logits_t, mem_t = nt.forward(img, cap, cfg)
    print("numpy loss_eval  = %.17g (diff %.2g)" % (le, le - exp["loss_eval"]))
    print("numpy loss_train = %.17g (diff %.2g)" % (lt, lt - exp["loss_train"]))
    check("numpy loss_eval", le, exp["loss_eval"], 1e-12)
    check("numpy loss_train", lt, exp["loss_train"], 1e-12)
    check("numpy eval.logits", logits_e, exp["eval.logits"], 1e-11)
    check("numpy train.memory", mem_t, exp["train.memory"], 1e-11)
    for n, v in nt.stats.items():
        check("numpy bn " + n, v, exp["bn_after_train." + n], 1e-12)
    if len(nt.stats) != sum(1 for n in exp if n.startswith("bn_after_train.")):
        failures.append("numpy train-mode BN set differs from bn_after_train.*")

    # 4. Spot-check gradients (both modes) with central differences on the NumPy model.
    rng = np.random.default_rng(0)
    for mode in ("train", "eval"):
        for name in FD_PARAMS:
            shape = weights[name].shape
            idx = tuple(int(rng.integers(0, s)) for s in shape)
            w64 = {k: v.astype(np.float64) for k, v in weights.items()}
            h = 1e-5 * max(1.0, abs(w64[name][idx]))
            f = []
            for sgn in (1, -1):
                w = dict(w64)
                w[name] = w64[name].copy()
                w[name][idx] += sgn * h
                f.append(NumpyModel(w, train=(mode == "train")).forward(img, cap, cfg)[0])
            fd = (f[0] - f[1]) / (2 * h)
            g = exp["grad_%s.%s" % (mode, name)][idx]
            err = check("finite difference grad_%s.%s%s" % (mode, name, list(idx)), fd, g, 1e-7)
            print("fd grad_%s.%s%s: %.10g vs %.10g (err %.1g)" % (mode, name, list(idx), fd, g, err))

    if failures:
        print("FAILED:")
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
