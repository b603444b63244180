float f(float x) { return x > 1.0f ? f(x * 0.5f) : x; }
