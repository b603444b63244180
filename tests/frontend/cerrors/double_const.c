float f(float x) {
    return x * 0.5;
}
