float f(float x) { return x * x; }
float f_grad(float x, float y) { return 2.0f * x; }
