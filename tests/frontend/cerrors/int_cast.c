float f(float x) { return (int)x; }
