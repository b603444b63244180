float scale = 2.0f;
float f(float x) { return x * scale; }
