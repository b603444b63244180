float f(float x) {
    float y = x * 2.0f
    return y;
}
