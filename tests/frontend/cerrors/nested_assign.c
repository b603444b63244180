float f(float x) {
    float y;
    float z = (y = x) + 1.0f;
    return z;
}
