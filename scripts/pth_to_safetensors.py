#!/usr/bin/python3
"""Converts a PyTorch state dict (.pth / .pt) to safetensors for `cap init --from`.

    python3 scripts/pth_to_safetensors.py resnet50.pth resnet50.safetensors

Needs PyTorch on the user's side only (capc never imports it). Accepts a plain state dict
or a checkpoint dict holding one under "state_dict" or "model". Every tensor is written as
F32 (integer buffers such as num_batches_tracked as I64), contiguous, in the order of the
dict; `cap init cap.so --from resnet50.safetensors --prefix backbone. -o init.safetensors`
then fills the captioner's backbone from it (docs/cli.md, "cap init --from").
"""

import json
import struct
import sys


def state_dict_of(obj):
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.is_floating_point():
            t, dtype = t.float(), "F32"
        else:
            t, dtype = t.long(), "I64"
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 3 or sys.argv[1] == sys.argv[2]:
        sys.exit("usage: pth_to_safetensors.py IN.pth OUT.safetensors (two different files)")
    import torch  # here, so that --help-less misuse fails before the import's cost
    sd = state_dict_of(torch.load(sys.argv[1], map_location="cpu"))
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        sys.exit("%s: no tensors found (not a state dict?)" % sys.argv[1])
    write_safetensors(sys.argv[2], tensors)
    print("wrote %s: %d tensors" % (sys.argv[2], len(tensors)))


if __name__ == "__main__":
    main()
