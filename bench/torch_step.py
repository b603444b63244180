#!/usr/bin/env python3
"""torch_step.py — PyTorch's time for one train step of the tiny or the ResNet-50 captioner
(--model, --device cuda or cpu), the yardstick bench/gpu-check.sh and bench/train_step.sh
print beside capc's.

The model is tests/golden/make_golden.py's TinyCaptioner (imported, not copied), float32,
dropout 0, the frozen prefixes frozen, Adam (lr 1e-4) with global grad-norm clipping at 5.0,
as capc's train_step does. A step = zero_grad, forward, loss.backward, clip, optimizer.step;
timed with CUDA events on the GPU (wall clock on the CPU), median of --iters after --warmup. Prints one line:
    pytorch tiny train_step cuda: median 4.321 ms, min 4.100 ms (batch 16, 20 runs after 3 warm-up)
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
import make_golden as mg  # noqa: E402


# The configs of models/captioner_tiny.json and models/captioner_resnet50.json.
MODELS = {
    "tiny": mg.CONFIG,
    "resnet50": dict(image=224, d=512, heads=8, ff=2048, grid=14, max_len=52, vocab=10000,
                     widths=[64, 128, 256, 512], blocks=[3, 4, 6, 3], bottleneck=True,
                     enc_layers=2, dec_layers=4),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads (torch.set_num_threads); 0: PyTorch's default")
    ap.add_argument("--model", default="tiny", choices=sorted(MODELS),
                    help="tiny (models/captioner_tiny.json) or resnet50 (captioner_resnet50.json)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cfg = dict(MODELS[a.model], batch=a.batch)
    torch.manual_seed(0)
    model = mg.TinyCaptioner(cfg, p=0.0).to(dev).float()
    model.train(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    b, s, L, V = a.batch, cfg["image"], cfg["max_len"], cfg["vocab"]
    image = torch.randn(b, 3, s, s, device=dev)
    caption = torch.randint(3, V, (b, L), device=dev, dtype=torch.int32)
    caption[:, 0] = mg.START

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _, _ = model(image, caption)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    times = []
    for i in range(a.warmup + a.iters):
        if dev.type == "cuda":
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            step()
            t1.record()
            torch.cuda.synchronize()
            ms = t0.elapsed_time(t1)
        else:
            start = time.perf_counter()
            step()
            ms = (time.perf_counter() - start) * 1e3
        if i >= a.warmup:
            times.append(ms)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else \
        f"cpu, {torch.get_num_threads()} threads"
    print(f"pytorch {a.model} train_step {dev.type}: median {statistics.median(times):.3f} ms, "
          f"min {min(times):.3f} ms (batch {b}, {a.iters} runs after {a.warmup} warm-up; "
          f"torch {torch.__version__}, {where})")


if __name__ == "__main__":
    main()
