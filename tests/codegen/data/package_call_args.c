/* package_call_args.c — a C function with two tensor operands and a scalar argument
 * (tests/codegen/test_package.c): a + t (b - a) */
float lerp(float a, float b, float t) { return a + t * (b - a); }
