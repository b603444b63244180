float f(float x) {
    while (x > 1.0f) x = x * 0.5f;
    return x;
}
