float f(float x) {
    float y = 0.0f;
    for (int i = 0; i < 3; i = i + 1) y = y + x;
    return y;
}
