/* Every construct a custom function may use (tests/frontend/test_cfuncs.c mirrors each in
 * double C to compare values and finite differences). */
#include <math.h>

float locals(float a, float b) {
    float t = a * b;
    t = t + 1.0f;
    t *= a;
    t -= b;
    t /= 2.0f;
    return t;
}

float branch(float a, float b) {
    float y = a;
    if (a > b) y = a * a;
    else {
        y = -b;
    }
    return y + b;
}

float early(float x) {
    if (x < -1.0f) return expf(x);
    if (!(x < 1.0f)) return logf(x + 1.0f);
    return x * 0.5f;
}

float ternary(float a, float b) {
    return (a > 0.0f && b > 0.0f) || a < -2.0f ? sinf(a) * cosf(b) : tanhf(a - b);
}

float math(float a, float b) { return sqrtf(a * a + 1.0f) + floorf(b) * a + expf(-a * a); }

float minmax(float a, float b) { return fmaxf(a, b) - 2 * fminf(a, -b) + fabsf(a - 0.25f); }

static float hill(float x) { return x * x / (1.0f + x * x); }
float calls(float a, float b) { return hill(a) * b + a * (a > 0.0f); }

float user_grad(float x) { return x * x * x; }
float user_grad_grad(float x) { return 3.0f * x * x; }

float compare_value(float a, float b) {
    float m = a >= b;
    return m * a + (a != b) * b + (a <= 0.0f) - (a == 3.0f);
}
