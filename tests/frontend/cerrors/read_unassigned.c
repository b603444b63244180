float f(float x) {
    float y;
    if (x > 0.0f) y = x;
    return y;
}
