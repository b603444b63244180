/* acts.c — activation functions for the `call` op (docs/custom-ops.md). Each is a pure float
 * function; capc reads it with libclang, derives its gradient and fuses it like a built-in op.
 * The captioner model files select one with -D act=... (docs/models.md). */
#include <math.h>

/* GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (torch approximate="tanh") */
float gelu_tanh(float x) {
    float inner = 0.7978845608f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}

/* softplus as torch computes it: x above the threshold 20, else log(1 + e^x) */
float softplus(float x) {
    if (x > 20.0f) return x;
    return logf(1.0f + expf(x));
}

/* Mish: x tanh(softplus(x)) */
float mish(float x) { return x * tanhf(softplus(x)); }

/* SiLU (swish): x sigmoid(x) */
float silu(float x) { return x / (1.0f + expf(-x)); }

/* Parametrized activations: the parameters after x are scalar arguments of the call, given
 * by the model file's "args" (docs/custom-ops.md), e.g.
 *   {"op": "call", "fn": "leaky_relu", "in": ["h"], "args": [0.01], "out": "h"} */

/* leaky ReLU: x, or slope * x below 0 (torch.nn.functional.leaky_relu); gradient derived */
float leaky_relu(float x, float slope) { return x > 0.0f ? x : slope * x; }

/* ELU: x, or alpha (e^x - 1) below 0 (torch.nn.functional.elu) */
float elu(float x, float alpha) { return x > 0.0f ? x : alpha * (expf(x) - 1.0f); }

/* its gradient with respect to x, written by hand: it takes the same parameters as elu
 * (alpha included) and returns d elu / dx; x is the one tensor operand, hence elu_grad */
float elu_grad(float x, float alpha) { return x > 0.0f ? 1.0f : alpha * expf(x); }
