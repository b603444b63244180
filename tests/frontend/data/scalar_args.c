/* scalar_args.c — functions called with scalar arguments (tests/frontend/test_cfuncs.c) */

/* two tensor operands a, b and two scalars t, s; gradients derived */
float mix_scaled(float a, float b, float t, float s) { return (a + t * (b - a)) * s + a * b; }

/* a user gradient that is right at slope 1 only: the finite-difference check must run at the
 * slope the call passes */
float scaled(float x, float slope) { return slope * x; }
float scaled_grad(float x, float slope) { return 1.0f; }
