#!/usr/bin/python3
"""What PyTorch gives for NaN, infinities and signed zeros, op by op, once.

    /usr/bin/python3 tests/golden/make_nonfinite_golden.py

writes tests/golden/nonfinite.txt, which tests/codegen/test_nonfinite.c reads: for every op of
capc's table (a few exempt ones are listed there, with the reason) one or more one-op
functions in capc's IR text, their inputs full of special values, and the result PyTorch
computes for the same inputs (CPU, float64 where the op is float, so only the special values
matter, not rounding). The test runs each function through the float64 reference interpreter
and through the op's generated C kernel and checks both against these values: NaN where
PyTorch has NaN, the same infinity, finite values within 1e-5.

Decisions PyTorch leaves open are written down in docs/decisions.md ("NaN and infinity"):
f32 -> i32 casts follow PyTorch on the CPU (INT32_MIN for NaN, infinities and values outside
i32), padding in conv2d is zeros that multiply the weight (PyTorch's CPU im2col), and
dropout multiplies by its mask (a dropped NaN stays NaN).

File format, one block per case:
    case OP
    <IR text lines>
    end
    in TYPE v v v ...        one line per function input, in order
    want TYPE v v v ...      the result
Values are printed with repr() (nan, inf, -inf, -0.0 survive strtod).
"""

import math
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
NAN, INF = float("nan"), float("inf")
S8 = [NAN, INF, -INF, 0.0, -0.0, 1.5, -2.0, 3.0]  # the special values, and some numbers


def tensor(vals, shape, dtype=torch.float64):
    return torch.tensor(vals, dtype=dtype).reshape(shape)


def type_text(dtype, shape):
    return "%s[%s]" % ("i32" if dtype == "i32" else "f32", ",".join(str(d) for d in shape))


class Case:
    def __init__(self, op, attrs, inputs, fn, prelude=()):
        """inputs: list of (dtype "f32"/"i32", shape, values); fn(*torch tensors) -> result;
        prelude: IR lines between the module line and the function (a call's cfunc)."""
        self.op, self.attrs, self.inputs, self.fn = op, attrs, inputs, fn
        self.prelude = list(prelude)

    def render(self, index):
        args = []
        tensors = []
        for i, (dt, shape, vals) in enumerate(self.inputs):
            args.append("%%a%d : %s" % (i, type_text(dt, shape)))
            tensors.append(tensor(vals, shape, torch.int64 if dt == "i32" else torch.float64))
        out = self.fn(*tensors)
        out_dt = "i32" if out.dtype in (torch.int32, torch.int64) else "f32"
        attrs = ""
        if self.attrs:
            attrs = " {" + ", ".join("%s=%s" % kv for kv in self.attrs) + "}"
        lines = ["case " + self.op, "# capc IR", 'module "%s"' % self.op] + self.prelude + [
                 "func @c%d(%s) {" % (index, ", ".join(args)),
                 "  %%y = %s(%s)%s : %s" % (self.op, ", ".join("%%a%d" % i for i in range(len(args))),
                                           attrs, type_text(out_dt, list(out.shape))),
                 "  return y=%y", "}", "end"]
        for dt, shape, vals in self.inputs:
            lines.append("in %s %s" % (type_text(dt, shape), " ".join(fmt(v, dt) for v in vals)))
        flat = out.reshape(-1).tolist()
        lines.append("want %s %s" % (type_text(out_dt, list(out.shape)),
                                     " ".join(fmt(v, out_dt) for v in flat)))
        return "\n".join(lines) + "\n"


def fmt(v, dt):
    if dt == "i32":
        return str(int(v))
    return repr(float(v))


def f32(shape, vals):
    return ("f32", shape, vals)


def i32(shape, vals):
    return ("i32", shape, vals)


def unary(op, fn):
    return Case(op, [], [f32([8], S8)], fn)


# every pair of special values: a [8,1] against b [8]
A81 = f32([8, 1], S8)
B8 = f32([8], S8)
ROWS4 = [NAN, 1.0, 2.0, 3.0,
         INF, -INF, 0.0, 1.0,
         INF, 1.0, 2.0, 3.0,
         -INF, -INF, -INF, -INF]
conv_attrs = [("stride", "[1,1]"), ("padding", "[1,1]"), ("dilation", "[1,1]"), ("groups", "1")]
W_NAN_CORNER = [0.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, NAN]
X_NAN_CORNER = [NAN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def torch_grad(fn, wrt, *args):
    """d(sum(fn(args) * dy))/d(args[wrt]) where dy = args[-1] (the upstream gradient)."""
    xs = [a.clone().requires_grad_(i == wrt) for i, a in enumerate(args[:-1])]
    y = fn(*xs)
    y.backward(args[-1])
    return xs[wrt].grad


CASES = [
    unary("relu", torch.relu),
    unary("neg", torch.neg),
    unary("exp", torch.exp),
    unary("log", torch.log),
    unary("sqrt", torch.sqrt),
    unary("rsqrt", torch.rsqrt),
    unary("tanh", torch.tanh),
    unary("cos", torch.cos),
    unary("floor", torch.floor),
    Case("scale", [("factor", "0.5")], [f32([8], S8)], lambda x: x * 0.5),
    Case("cast", [("dtype", '"i32"')], [f32([10], S8 + [3e9, -3e9])],
         lambda x: x.float().to(torch.int32)),
    # all NaN: whatever the mask, PyTorch's x * mask / (1 - p) is NaN everywhere
    Case("dropout", [("p", "0.5"), ("stream", "0")], [f32([8], [NAN] * 8), i32([2], [7, 3])],
         lambda x, rng: F.dropout(x, 0.5, training=True)),
    Case("padding_mask", [("pad", "0")], [i32([4], [0, 3, 0, 1])],
         lambda ids: torch.where(ids == 0, -INF, 0.0).double()),
    Case("causal_mask", [("size", "3")], [],
         lambda: torch.triu(torch.full((3, 3), -INF, dtype=torch.float64), 1)),
    Case("position_mask", [("size", "4")], [i32([], [1])],
         lambda pos: torch.where(torch.arange(4) <= pos, 0.0, -INF).double()),
    Case("add", [], [A81, B8], torch.add),
    Case("sub", [], [A81, B8], torch.sub),
    Case("mul", [], [A81, B8], torch.mul),
    Case("div", [], [A81, B8], torch.div),
    Case("minimum", [], [A81, B8], torch.minimum),
    Case("maximum", [], [A81, B8], torch.maximum),
    Case("equal", [], [A81, B8], lambda a, b: torch.eq(a, b).double()),
    # the side not chosen never leaks its NaN; a NaN condition counts as true (it is != 0)
    Case("where", [], [f32([6, 1], [1, 0, NAN, 0, 2, -0.0]), f32([6, 2], [NAN, 1, 2, INF, 3, 4, 5, 6, -INF, 7, 8, NAN]),
                       f32([2], [NAN, -1])],
         lambda c, a, b: torch.where(c != 0, a, b)),
    # a C function (ir/cfunc.h): blend(a, b) = a > b ? a * tanhf(b) : expf(a) - b, the same
    # function as tests/ir/cfunc_test_util.h; a NaN compares false, so it takes the else side
    Case("call", [("fn", '"blend"'), ("args", "[]")], [A81, B8],
         lambda a, b: torch.where(a > b, a * torch.tanh(b), torch.exp(a) - b),
         prelude=["cfunc @blend(%a, %b) {", "  %0 = arg(%a)", "  %1 = arg(%b)",
                  "  %2 = gt(%0, %1)", "  %3 = tanh(%1)", "  %4 = mul(%0, %3)", "  %5 = exp(%0)",
                  "  %6 = sub(%5, %1)", "  %7 = select(%2, %4, %6)", "  return %7", "}"]),
    Case("broadcast", [("shape", "[2,8]")], [f32([8], S8)], lambda x: x.expand(2, 8)),
    Case("reshape", [("shape", "[4,2]")], [f32([2, 4], S8)], lambda x: x.reshape(4, 2)),
    Case("transpose", [("perm", "[1,0]")], [f32([2, 4], S8)], lambda x: x.t()),
    Case("slice", [("axis", "0"), ("start", "1"), ("end", "7"), ("step", "2")], [f32([8], S8)],
         lambda x: x[1:7:2]),
    Case("concat", [("axis", "0")], [f32([4], S8[:4]), f32([4], S8[4:])],
         lambda a, b: torch.cat([a, b])),
    Case("embedding", [], [f32([4, 2], S8), i32([3], [3, 0, 1])],
         lambda w, ids: F.embedding(ids, w)),
    Case("sum", [("axes", "[1]"), ("keepdim", "false")], [f32([4, 4], ROWS4)],
         lambda x: x.sum(1)),
    Case("mean", [("axes", "[1]"), ("keepdim", "false")], [f32([4, 4], ROWS4)],
         lambda x: x.mean(1)),
    Case("max", [("axes", "[1]"), ("keepdim", "false")], [f32([4, 4], ROWS4)],
         lambda x: x.amax(1)),
    Case("reduce_to_shape", [("shape", "[1,4]")], [f32([4, 4], ROWS4)],
         lambda x: x.sum(0, keepdim=True)),
    # rows: a NaN, +inf, all -inf (a fully masked row), a partly masked row
    Case("softmax", [("axis", "-1")],
         [f32([4, 4], [NAN, 1, 2, 3, INF, 1, 2, 3, -INF, -INF, -INF, -INF, 0, -INF, 1, 2])],
         lambda x: torch.softmax(x, -1)),
    Case("layer_norm", [("eps", "1e-05")],
         [f32([3, 4], [NAN, 1, 2, 3, INF, 1, 2, 3, 1, 2, 3, 4]), f32([4], [1, 1, 1, INF]),
          f32([4], [0, 0, NAN, 0])],
         lambda x, w, b: F.layer_norm(x, (4,), w, b, 1e-5)),
    Case("batch_norm", [("training", "false"), ("eps", "1e-05"), ("momentum", "0.1")],
         [f32([2, 3, 2], [NAN, 1, INF, 2, 1, 2, 3, 4, -INF, 5, 6, 7]), f32([3], [1, 2, 3]),
          f32([3], [0, 1, 2]), f32([3], [0, INF, 1]), f32([3], [1, 1, 0])],
         lambda x, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, False, 0.1, 1e-5)),
    Case("batch_norm", [("training", "true"), ("eps", "1e-05"), ("momentum", "0.1")],
         [f32([2, 3, 2], [NAN, 1, INF, 2, 1, 2, 3, 4, 5, 5, 6, 7]), f32([3], [1, 2, 3]),
          f32([3], [0, 1, 2]), f32([3], [0, 0, 0]), f32([3], [1, 1, 1])],
         lambda x, w, b, rm, rv: F.batch_norm(x, rm.clone(), rv.clone(), w, b, True, 0.1, 1e-5)),
    # every target ignored: PyTorch's mean over no rows is NaN
    Case("cross_entropy", [("ignore_index", "0")], [f32([2, 3], [1, 2, 3, 4, 5, 6]), i32([2], [0, 0])],
         lambda x, t: F.cross_entropy(x, t, ignore_index=0)),
    # a fully masked row (-inf logits) and a NaN logit
    Case("cross_entropy", [("ignore_index", "0")],
         [f32([3, 3], [-INF, -INF, -INF, 1, 2, 3, 1, NAN, 3]), i32([3], [1, 2, 0])],
         lambda x, t: F.cross_entropy(x, t, ignore_index=0)),
    Case("cross_entropy", [("ignore_index", "0")],
         [f32([2, 3], [INF, 1, 2, 1, 2, 3]), i32([2], [1, 2])],
         lambda x, t: F.cross_entropy(x, t, ignore_index=0)),
    Case("max_pool2d", [("kernel", "[2,2]"), ("stride", "[2,2]"), ("padding", "[1,1]")],
         [f32([1, 1, 4, 4], [NAN, 1, 2, 3, 4, 5, INF, 7, -INF, -INF, 1, 2, -INF, -INF, NAN, 0])],
         lambda x: F.max_pool2d(x, 2, 2, 1)),
    Case("adaptive_avg_pool2d", [("output", "[2,2]")],
         [f32([1, 1, 3, 3], [1, 2, 3, 4, NAN, 6, 7, 8, INF])],
         lambda x: F.adaptive_avg_pool2d(x, (2, 2))),
    Case("matmul", [("transpose_a", "false"), ("transpose_b", "false")],
         [f32([2, 3], [0, 0, 0, 1, NAN, 2]), f32([3, 2], [INF, 1, 2, 3, 4, -INF])],
         torch.matmul),
    Case("linear", [], [f32([2, 3], [0, 0, 0, 1, 2, 3]), f32([2, 3], [INF, 1, 2, 1, 2, 3]),
                        f32([2], [0, NAN])],
         F.linear),
    # a NaN weight tap that only ever reads padding: im2col's 0 * NaN makes every output NaN
    Case("conv2d", conv_attrs, [f32([1, 1, 3, 3], [1.0] * 9), f32([1, 1, 3, 3], W_NAN_CORNER)],
         lambda x, w: F.conv2d(x, w, padding=1)),
    # a NaN input pixel, zero weights: 0 * NaN reaches every output whose window holds it
    Case("conv2d", conv_attrs, [f32([1, 1, 3, 3], X_NAN_CORNER), f32([1, 1, 3, 3], [0.0] * 9),
                                f32([1], [1.0])],
         lambda x, w, b: F.conv2d(x, w, b, padding=1)),
    Case("update_slice", [("axis", "0")], [f32([4], [1, 2, 3, 4]), f32([2], [NAN, -INF]), i32([], [1])],
         lambda x, u, pos: torch.cat([x[:1], u, x[3:]])),
    Case("scatter_add", [("num", "3")], [f32([2, 2], [NAN, 1, INF, 2]), i32([2], [0, 2])],
         lambda g, ids: torch.zeros(3, 2, dtype=torch.float64).index_add(0, ids, g)),
    Case("relu_grad", [], [f32([8], [1, 1, 1, 1, 1, NAN, NAN, 1]), f32([8], S8)],
         lambda dy, y: torch.ops.aten.threshold_backward(dy, y, 0)),
    Case("slice_grad", [("axis", "0"), ("start", "1"), ("end", "4"), ("step", "2"), ("size", "5")],
         [f32([2], [NAN, INF])],
         lambda dy: torch.ops.aten.slice_backward(dy, [5], 0, 1, 4, 2)),
    # dy lands on the window's last NaN, as PyTorch's CPU kernel picks it
    Case("max_pool2d_grad", [("kernel", "[2,2]"), ("stride", "[2,2]"), ("padding", "[0,0]")],
         [f32([1, 1, 2, 2], [1, 2, 3, 4]),
          f32([1, 1, 4, 4], [NAN, 1, 5, 6, NAN, 2, INF, 7, -INF, -INF, 1, 2, -INF, -INF, NAN, 0])],
         lambda dy, x: torch_grad(lambda xx: F.max_pool2d(xx, 2, 2), 0, x, dy)),
    Case("adaptive_avg_pool2d_grad", [("input_size", "[3,3]")], [f32([1, 1, 2, 2], [1, NAN, 2, INF])],
         lambda dy: torch_grad(lambda xx: F.adaptive_avg_pool2d(xx, (2, 2)), 0,
                               torch.zeros(1, 1, 3, 3, dtype=torch.float64), dy)),
    Case("conv2d_grad_input", conv_attrs + [("input_size", "[3,3]")],
         [f32([1, 1, 3, 3], [1.0] * 9), f32([1, 1, 3, 3], W_NAN_CORNER)],
         lambda dy, w: torch_grad(lambda xx, ww: F.conv2d(xx, ww, padding=1), 0,
                                  torch.ones(1, 1, 3, 3, dtype=torch.float64), w, dy)),
    # a NaN upstream gradient at a corner output, whose window is mostly padding
    Case("conv2d_grad_weight", conv_attrs + [("kernel", "[3,3]")],
         [f32([1, 1, 3, 3], X_NAN_CORNER), f32([1, 1, 3, 3], [1.0] * 9)],
         lambda dy, x: torch_grad(lambda xx, ww: F.conv2d(xx, ww, padding=1), 1,
                                  x, torch.ones(1, 1, 3, 3, dtype=torch.float64), dy)),
    Case("cross_entropy_grad", [("ignore_index", "0")],
         [f32([], [1.0]), f32([3, 3], [-INF, -INF, -INF, 1, 2, 3, 1, NAN, 3]), i32([3], [1, 2, 0])],
         lambda dy, x, t: torch_grad(lambda xx: F.cross_entropy(xx, t, ignore_index=0), 0, x, dy)),
    Case("cross_entropy_grad", [("ignore_index", "0")],
         [f32([], [1.0]), f32([2, 3], [1, 2, 3, 4, 5, 6]), i32([2], [0, 0])],
         lambda dy, x, t: torch_grad(lambda xx: F.cross_entropy(xx, t, ignore_index=0), 0, x, dy)),
]


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = os.path.join(HERE, "nonfinite.txt")
    with open(path, "w") as f:
        f.write("# written by tests/golden/make_nonfinite_golden.py with PyTorch %s; do not edit\n"
                % torch.__version__)
        for i, c in enumerate(CASES):
            f.write(c.render(i))
    print("wrote %s: %d cases" % (os.path.relpath(path), len(CASES)))


if __name__ == "__main__":
    main()
