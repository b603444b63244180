/* init.c — PyTorch's default initializers, from the init strings the model file records
 * ("zeros", "ones", "normal(0,0.02)", "uniform(-1,1)", "kaiming_uniform",
 * "kaiming_normal_fan_out", "xavier_uniform", "linear_bias(64)"; docs/model-format.md), and
 * "const(V)": every element V, the value of a hyperparameter (CAP_STATE_HPARAM: the learning
 * rates), written by capc with as many digits as strtod needs to read V back exactly.
 *
 * fan_in / fan_out follow torch.nn.init: for a shape [out, in, k...] with receptive field
 * r = prod(k...), fan_in = in * r and fan_out = out * r; fewer than 2 dimensions is an error.
 *   kaiming_uniform (a = sqrt(5)):   gain = sqrt(2 / (1 + a^2)), std = gain / sqrt(fan_in),
 *                                     U(-b, b) with b = sqrt(3) * std  (= 1/sqrt(fan_in))
 *   kaiming_normal_fan_out (relu):   N(0, std) with std = sqrt(2) / sqrt(fan_out)
 *   xavier_uniform (gain 1):         U(-b, b) with b = sqrt(6 / (fan_in + fan_out))
 *   linear_bias(n):                  U(-b, b) with b = 1 / sqrt(n)
 *
 * Random numbers: element e of state tensor k draws Philox4x32-10 with counter (e lo, e hi,
 * 0, 0) and key (seed, k): the values depend on (seed, k, e) only, so init is reproducible and
 * independent of the order tensors are filled in. A uniform uses the first two words (53
 * bits, [0, 1)); a normal is Box-Muller over all four. Values are computed in double and
 * rounded to float once. (The distributions match PyTorch's; the streams do not.)
 */
#include "cap_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CAP_TWO_PI 6.283185307179586476925286766559

static void draw(uint32_t seed, int index, int64_t e, uint32_t r[4]) {
    const uint32_t ctr[4] = {(uint32_t)e, (uint32_t)((uint64_t)e >> 32), 0, 0};
    const uint32_t key[2] = {seed, (uint32_t)index};
    philox4x32_10(ctr, key, r);
}

/* 53 random bits -> [0, 1). */
static double unit(uint32_t hi, uint32_t lo) {
    return ((double)(hi >> 5) * 67108864.0 + (double)(lo >> 6)) / 9007199254740992.0;
}

/* ---- parsing the spec ---------------------------------------------------------------------- */

typedef struct InitSpec {
    char name[48];
    int n_args;
    double args[4];
} InitSpec;

static int parse_spec(const char *text, InitSpec *sp) {
    memset(sp, 0, sizeof *sp);
    if (!text || !*text) {
        strcpy(sp->name, "zeros");
        return 0;
    }
    size_t n = strcspn(text, "(");
    if (n == 0 || n >= sizeof sp->name) return -1;
    memcpy(sp->name, text, n);
    const char *p = text + n;
    if (!*p) return 0;
    p++; /* '(' */
    for (;;) {
        char *end;
        if (sp->n_args == 4) return -1;
        sp->args[sp->n_args++] = strtod(p, &end);
        if (end == p) return -1;
        while (*end == ' ') end++;
        if (*end == ')') return end[1] ? -1 : 0;
        if (*end != ',') return -1;
        p = end + 1;
    }
}

static int compute_fans(const CapTensorInfo *t, double *fan_in, double *fan_out) {
    if (t->rank < 2) return -1;
    double r = 1;
    for (int i = 2; i < t->rank; i++) r *= (double)t->dims[i];
    *fan_in = (double)t->dims[1] * r;
    *fan_out = (double)t->dims[0] * r;
    return 0;
}

/* ---- filling ------------------------------------------------------------------------------- */

typedef enum { DIST_CONST, DIST_UNIFORM, DIST_NORMAL } DistKind;

typedef struct Dist {
    DistKind kind;
    double a, b; /* const: a; uniform: [a, b); normal: mean a, std b */
} Dist;

static void fill_f32(const Dist *d, uint32_t seed, int index, int64_t n, float *out) {
    for (int64_t e = 0; e < n; e++) {
        if (d->kind == DIST_CONST) {
            out[e] = (float)d->a;
            continue;
        }
        uint32_t r[4];
        draw(seed, index, e, r);
        if (d->kind == DIST_UNIFORM) {
            out[e] = (float)(d->a + (d->b - d->a) * unit(r[0], r[1]));
        } else {
            double u1 = 1.0 - unit(r[0], r[1]); /* (0, 1]: log is finite */
            double u2 = unit(r[2], r[3]);
            double z = sqrt(-2.0 * log(u1)) * cos(CAP_TWO_PI * u2);
            out[e] = (float)(d->a + d->b * z);
        }
    }
}

static CapStatus spec_error(const CapStateInfo *info, const char *why, char *err,
                            size_t err_size) {
    return cap_fail(err, err_size, CAP_E_FORMAT, "state '%s': initializer '%s': %s",
                    info->t.name, info->init ? info->init : "", why);
}

/* Turns the spec into a distribution for tensor t. */
static CapStatus spec_to_dist(const CapStateInfo *info, const InitSpec *sp, Dist *d, char *err,
                              size_t err_size) {
    const CapTensorInfo *t = &info->t;
    double fi = 0, fo = 0;
    int want = 0;
    const char *nm = sp->name;
    if (strcmp(nm, "zeros") == 0) *d = (Dist){DIST_CONST, 0, 0};
    else if (strcmp(nm, "ones") == 0) *d = (Dist){DIST_CONST, 1, 0};
    else if (strcmp(nm, "const") == 0) want = 1, *d = (Dist){DIST_CONST, sp->args[0], 0};
    else if (strcmp(nm, "normal") == 0) want = 2, *d = (Dist){DIST_NORMAL, sp->args[0], sp->args[1]};
    else if (strcmp(nm, "uniform") == 0) want = 2, *d = (Dist){DIST_UNIFORM, sp->args[0], sp->args[1]};
    else if (strcmp(nm, "linear_bias") == 0) {
        want = 1;
        if (!(sp->args[0] > 0)) return spec_error(info, "fan_in must be positive", err, err_size);
        double b = 1.0 / sqrt(sp->args[0]);
        *d = (Dist){DIST_UNIFORM, -b, b};
    } else if (strcmp(nm, "kaiming_uniform") == 0 || strcmp(nm, "kaiming_normal_fan_out") == 0 ||
               strcmp(nm, "xavier_uniform") == 0) {
        if (compute_fans(t, &fi, &fo) || fi <= 0 || fo <= 0)
            return spec_error(info, "fan in and fan out need a shape of 2 or more non-empty "
                              "dimensions", err, err_size);
        if (nm[0] == 'x') {
            double b = sqrt(6.0 / (fi + fo));
            *d = (Dist){DIST_UNIFORM, -b, b};
        } else if (strcmp(nm, "kaiming_uniform") == 0) {
            double a = sqrt(5.0);
            double gain = sqrt(2.0 / (1.0 + a * a));
            double b = sqrt(3.0) * gain / sqrt(fi);
            *d = (Dist){DIST_UNIFORM, -b, b};
        } else {
            *d = (Dist){DIST_NORMAL, 0, sqrt(2.0) / sqrt(fo)};
        }
    } else return spec_error(info, "unknown initializer", err, err_size);
    if (sp->n_args != want) return spec_error(info, "wrong number of arguments", err, err_size);
    return CAP_OK;
}

CapStatus cap_init_state(const CapStateInfo *info, int index, uint32_t seed, void *dst,
                         char *err, size_t err_size) {
    const CapTensorInfo *t = &info->t;
    InitSpec sp;
    if (info->kind == CAP_STATE_OPTIM || info->kind == CAP_STATE_DERIVED) {
        /* moments and counters start at zero; derived state is computed by "fold" */
        memset(dst, 0, cap_tensor_bytes(t));
        return CAP_OK;
    }
    if (parse_spec(info->init, &sp)) return spec_error(info, "cannot parse", err, err_size);
    Dist d = {DIST_CONST, 0, 0};
    CapStatus st = spec_to_dist(info, &sp, &d, err, err_size);
    if (st) return st;
    if (t->dtype == CAP_DT_I32) {
        if (d.kind != DIST_CONST)
            return spec_error(info, "an integer tensor takes zeros or ones", err, err_size);
        int32_t *p = dst;
        for (int64_t e = 0; e < t->numel; e++) p[e] = (int32_t)d.a;
        return CAP_OK;
    }
    fill_f32(&d, seed, index, t->numel, dst);
    return CAP_OK;
}
