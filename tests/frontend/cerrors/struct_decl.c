struct pair { float a, b; };
float f(float x) { return x; }
