float f(float x) {
    float *p = &x;
    return x;
}
