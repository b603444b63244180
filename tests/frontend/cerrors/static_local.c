float f(float x) {
    static float calls = 0.0f;
    return x + calls;
}
