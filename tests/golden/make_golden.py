#!/usr/bin/python3
"""Produce the golden values for capc's tiny captioner, once, with PyTorch.

Run from the repository root with Debian's torch (not a pyenv python):

    /usr/bin/python3 tests/golden/make_golden.py

It writes three safetensors files next to this script (see docs/golden.md):

    tiny_weights.safetensors   every state_dict entry (F32; float32-representable values)
    tiny_batch.safetensors     image F32 [2,3,128,128], caption I32 [2,16]
    tiny_expected.safetensors  losses, gradients, BN running stats after one train forward (F64)

Everything is computed in float64 from float32-representable weights and inputs, so a
float64 reference that loads the F32 files reproduces the same computation. The safetensors
format is written by hand (no safetensors package). Deterministic: fixed seed, one thread.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 20240607
HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = {
    "batch": 2,
    "image": 128,
    "d": 64,
    "heads": 4,
    "ff": 256,
    "grid": 4,
    "max_len": 16,
    "vocab": 64,
    "widths": [16, 32, 64, 128],
    "enc_layers": 1,
    "dec_layers": 2,
}
PAD, START, END = 0, 1, 2
FROZEN_PREFIXES = ("backbone.conv1", "backbone.bn1", "backbone.layer1",
                   "backbone.layer2", "backbone.layer3")
EXPECTED_PARAMS = 506448
EXPECTED_TRAINABLE = 427136


# --------------------------------------------------------------------------------------
# The model. Attribute names give torchvision / PyTorch state_dict names.
# --------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block (stride on the 3x3), output planes * 4; for the
    ResNet-50 captioner in bench/torch_step.py (the goldens use BasicBlocks)."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNetBackbone(nn.Module):
    """torchvision ResNet layout (BasicBlocks, or Bottlenecks), minus avgpool and fc."""

    def __init__(self, widths, blocks=(1, 1, 1, 1), bottleneck=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block, expansion = (Bottleneck, 4) if bottleneck else (BasicBlock, 1)
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layer = []
            for j in range(n):
                layer.append(block(cin, w, stride if j == 0 else 1))
                cin = w * expansion
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*layer))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Neck(nn.Module):
    def __init__(self, cin, d, grid):
        super().__init__()
        self.conv = nn.Conv2d(cin, d, 1, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d((grid, grid))

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv(x))))   # [B, d, G, G]
        return x.flatten(2).permute(0, 2, 1)              # [B, G*G, d]


class ConvFFN(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.conv1 = nn.Conv1d(d, ff, 1)
        self.conv2 = nn.Conv1d(ff, d, 1)

    def forward(self, x):                                 # x [B, N, d]
        y = self.conv2(F.relu(self.conv1(x.permute(0, 2, 1))))
        return y.permute(0, 2, 1)


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff, p):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = ConvFFN(d, ff)
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(p)

    def forward(self, x):
        a, _ = self.self_attn(x, x, x, need_weights=False)
        x = self.norm1(x + self.dropout(a))
        return self.norm2(x + self.dropout(self.ffn(x)))


class Encoder(nn.Module):
    def __init__(self, d, heads, ff, tokens, n, p):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, d))
        self.layers = nn.ModuleList([EncoderLayer(d, heads, ff, p) for _ in range(n)])

    def forward(self, x):
        x = x + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        return x


class LinearFFN(nn.Module):
    def __init__(self, d, ff, p):
        super().__init__()
        self.fc1 = nn.Linear(d, ff)
        self.fc2 = nn.Linear(ff, d)
        self.dropout = nn.Dropout(p)

    def forward(self, x):
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, ff, p):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = LinearFFN(d, ff, p)
        self.norm3 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(p)

    def forward(self, x, memory, causal, key_pad):
        a, _ = self.self_attn(x, x, x, attn_mask=causal, key_padding_mask=key_pad,
                              need_weights=False)
        x = self.norm1(x + self.dropout(a))
        a, _ = self.cross_attn(x, memory, memory, need_weights=False)
        x = self.norm2(x + self.dropout(a))
        return self.norm3(x + self.dropout(self.ffn(x)))


class TiedOut(nn.Module):
    """The output projection: weight is decoder.embed.weight (tied), own bias [V].
    Only the bias is a parameter of this module, so the state_dict holds the tied matrix
    once, as decoder.embed.weight."""

    def __init__(self, vocab):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, x, weight):
        return F.linear(x, weight, self.bias)


def sinusoid_table(n, d, dtype, device=None):
    pe = torch.zeros(n, d, dtype=torch.float64)
    pos = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i2 = torch.arange(0, d, 2, dtype=torch.float64)
    freq = torch.exp(-math.log(10000.0) * i2 / d)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe.to(dtype=dtype, device=device)


class Decoder(nn.Module):
    def __init__(self, vocab, d, heads, ff, n, p):
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([DecoderLayer(d, heads, ff, p) for _ in range(n)])
        self.out = TiedOut(vocab)

    def forward(self, ids, memory):
        t = ids.shape[1]
        x = self.embed(ids) + sinusoid_table(t, self.d, memory.dtype, memory.device).unsqueeze(0)
        causal = torch.triu(torch.full((t, t), float("-inf"), dtype=memory.dtype, device=memory.device),
                            diagonal=1)
        key_pad = ids == PAD
        for layer in self.layers:
            x = layer(x, memory, causal, key_pad)
        return self.out(x, self.embed.weight)


class TinyCaptioner(nn.Module):
    def __init__(self, cfg, p=0.0):
        super().__init__()
        d, g = cfg["d"], cfg["grid"]
        bottleneck = cfg.get("bottleneck", False)
        self.backbone = ResNetBackbone(cfg["widths"], cfg.get("blocks", (1, 1, 1, 1)), bottleneck)
        self.neck = Neck(cfg["widths"][-1] * (4 if bottleneck else 1), d, g)
        self.encoder = Encoder(d, cfg["heads"], cfg["ff"], g * g, cfg["enc_layers"], p)
        self.decoder = Decoder(cfg["vocab"], d, cfg["heads"], cfg["ff"], cfg["dec_layers"], p)
        for name, prm in self.named_parameters():
            if is_frozen(name):
                prm.requires_grad_(False)

    def train(self, mode=True):
        # Frozen parts keep their BatchNorms in eval mode (running statistics) always.
        super().train(mode)
        for name, m in self.named_modules():
            if name and is_frozen(name):
                m.eval()
        return self

    def forward(self, image, caption):
        memory = self.encoder(self.neck(self.backbone(image)))
        ids = caption[:, :-1].long()
        logits = self.decoder(ids, memory)
        target = caption[:, 1:].long()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               ignore_index=PAD)
        return loss, logits, memory


def is_frozen(name):
    return any(name == p or name.startswith(p + ".") for p in FROZEN_PREFIXES)


# --------------------------------------------------------------------------------------
# safetensors, written and read by hand
# --------------------------------------------------------------------------------------

DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I32": np.dtype("<i4")}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, dtype string, numpy array), written in this order."""
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs, off = [], 0
    for name, dt, arr in tensors:
        a = np.array(arr, dtype=DTYPES[dt], order="C")  # keeps rank 0 (ascontiguousarray would not)
        b = a.tobytes(order="C")
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Returns (ordered dict name -> numpy array, metadata dict). Checks the layout."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out, expect = {}, 0
    for name, h in header.items():
        b, e = h["data_offsets"]
        dt = DTYPES[h["dtype"]]
        count = int(np.prod(h["shape"], dtype=np.int64))
        if b != expect or e - b != count * dt.itemsize:
            raise ValueError("%s: %s: bad data_offsets %r" % (path, name, h["data_offsets"]))
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(h["shape"]).copy()
        expect = e
    if expect != len(data):
        raise ValueError("%s: %d trailing bytes" % (path, len(data) - expect))
    return out, meta


# --------------------------------------------------------------------------------------
# Weights, batch, and the quantities we record
# --------------------------------------------------------------------------------------

def f32_exact(t):
    return t.float().double()


def init_weights(model, gen):
    """PyTorch's default inits (torchvision's for the backbone convolutions), then random
    perturbations of everything that defaults to a constant, so that BN statistics, LayerNorm
    affine parameters and zero biases are actually exercised. Finally every value is rounded
    to float32."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and name.startswith("backbone"):
                # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu")
                fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=gen)
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
                m.running_mean.normal_(0.0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.num_batches_tracked.fill_(0)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.8, 1.2, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(m, nn.MultiheadAttention):
                m.in_proj_bias.normal_(0.0, 0.1, generator=gen)
                m.out_proj.bias.normal_(0.0, 0.1, generator=gen)
        model.encoder.pos_embed.normal_(0.0, 0.02, generator=gen)
        # nn.Embedding's default N(0,1) with a tied output gives logits of std ~sqrt(d) = 8
        # and a saturated softmax; scale it to N(0, 0.25^2) so the loss is in a useful range.
        model.decoder.embed.weight.normal_(0.0, 0.25, generator=gen)
        model.decoder.out.bias.normal_(0.0, 0.1, generator=gen)
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(f32_exact(t))


def make_batch(cfg, gen):
    b, s, L, V = cfg["batch"], cfg["image"], cfg["max_len"], cfg["vocab"]
    assert b == 2 and L == 16
    image = f32_exact(torch.randn(b, 3, s, s, generator=gen, dtype=torch.float64))
    caption = torch.zeros(b, L, dtype=torch.int32)
    caption[0, 0] = START
    caption[0, 1:15] = torch.randint(3, V, (14,), generator=gen, dtype=torch.int32)
    caption[0, 15] = END
    caption[1, 0] = START
    caption[1, 1:8] = torch.randint(3, V, (7,), generator=gen, dtype=torch.int32)
    caption[1, 8] = END
    return image, caption


def build_model(cfg):
    model = TinyCaptioner(cfg, p=0.0).double()
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_all == EXPECTED_PARAMS, n_all
    assert n_train == EXPECTED_TRAINABLE, n_train
    return model, n_all, n_train


def train_mode_bns(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.training]


def run(model, image, caption, train):
    """One forward + backward. Returns (loss, logits, memory, grads by trainable name)."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    loss, logits, memory = model(image, caption)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), logits.detach(), memory.detach(), grads


def compute_expected(model, image, caption):
    """Eval pass first (it leaves the running statistics alone), then the train pass.
    Returns an ordered list of (name, numpy float64 array) and the BN names in train mode."""
    loss_e, logits_e, memory_e, grads_e = run(model, image, caption, train=False)
    loss_t, logits_t, memory_t, grads_t = run(model, image, caption, train=True)
    bns = train_mode_bns(model)
    model.eval()
    bufs = dict(model.named_buffers())
    out = [("loss_eval", loss_e), ("loss_train", loss_t)]
    out += [("grad_train." + n, g) for n, g in grads_t.items()]
    out += [("grad_eval." + n, g) for n, g in grads_e.items()]
    for bn in bns:
        for s in ("running_mean", "running_var"):
            out.append(("bn_after_train.%s.%s" % (bn, s), bufs["%s.%s" % (bn, s)]))
    # Extras for debugging a mismatch: intermediate values of both passes.
    out += [("eval.memory", memory_e), ("eval.logits", logits_e),
            ("train.memory", memory_t), ("train.logits", logits_t)]
    return [(n, t.double().numpy()) for n, t in out], bns


def state_dict_entries(model):
    return [(n, t) for n, t in model.state_dict().items() if not n.endswith("num_batches_tracked")]


def main():
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    cfg = CONFIG
    model, n_all, n_train = build_model(cfg)
    init_weights(model, gen)
    image, caption = make_batch(cfg, gen)

    meta_common = {"model": "captioner_tiny", "config": json.dumps(cfg, sort_keys=True),
                   "seed": str(SEED), "torch": torch.__version__,
                   "generator": "tests/golden/make_golden.py"}
    wpath = os.path.join(HERE, "tiny_weights.safetensors")
    bpath = os.path.join(HERE, "tiny_batch.safetensors")
    epath = os.path.join(HERE, "tiny_expected.safetensors")

    # Weights are written before anything runs, so running stats are the initial ones.
    weights = [(n, "F32", t.detach().float().numpy()) for n, t in state_dict_entries(model)]
    for n, t in state_dict_entries(model):
        assert torch.equal(t.detach().float().double(), t.detach()), n
    frozen = sorted({n for n, p in model.named_parameters() if not p.requires_grad})
    write_safetensors(wpath, weights, dict(meta_common, params=str(n_all),
                                           trainable=str(n_train),
                                           frozen_prefixes=",".join(FROZEN_PREFIXES),
                                           tied="decoder.out.weight = decoder.embed.weight"))
    write_safetensors(bpath, [("image", "F32", image.float().numpy()),
                              ("caption", "I32", caption.numpy())], meta_common)

    expected, bns = compute_expected(model, image, caption)
    write_safetensors(epath, [(n, "F64", a) for n, a in expected],
                      dict(meta_common, train_mode_bn=",".join(bns), dropout="0.0",
                           bn_momentum="0.1"))

    exp = dict(expected)
    print("torch %s, seed %d" % (torch.__version__, SEED))
    print("parameters %d, trainable %d, frozen tensors %d" % (n_all, n_train, len(frozen)))
    print("caption:\n%s" % caption.numpy())
    print("loss_eval  = %.17g" % exp["loss_eval"])
    print("loss_train = %.17g" % exp["loss_train"])
    print("BNs in train mode: %s" % ", ".join(bns))
    for p in (wpath, bpath, epath):
        print("wrote %s (%d bytes)" % (os.path.relpath(p), os.path.getsize(p)))


if __name__ == "__main__":
    main()
