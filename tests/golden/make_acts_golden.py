#!/usr/bin/python3
"""PyTorch's GELU (tanh form), Mish and SiLU and their gradients, once.

    /usr/bin/python3 tests/golden/make_acts_golden.py

writes tests/golden/acts.txt, which tests/frontend/test_cfuncs.c reads: for each function of
models/acts.c, points x from -8 to 8 (and the Mish/softplus threshold region), one line
`NAME x value gradient` in float64, with x a float32 value (the C functions take floats).
The test evaluates capc's expression tree of the C function and of its derived gradient in
float64 and requires agreement within 1e-6.
"""

import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))

FUNCS = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "mish": F.mish,
    "silu": F.silu,
}


def points():
    xs = [i / 8.0 for i in range(-64, 65)] + [-19.5, 19.9, 20.5, 25.0, 1e-3, -1e-3, 0.7071]
    # the C functions take floats: use the float32 values themselves
    return torch.tensor(xs, dtype=torch.float32).to(torch.float64)


def main():
    lines = []
    for name, fn in FUNCS.items():
        x = points().requires_grad_(True)
        y = fn(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        for xi, yi, gi in zip(x.tolist(), y.tolist(), g.tolist()):
            lines.append("%s %r %r %r" % (name, xi, yi, gi))
    path = os.path.join(HERE, "acts.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s: %d points" % (path, len(lines)))


if __name__ == "__main__":
    main()
