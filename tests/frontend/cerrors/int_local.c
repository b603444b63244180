float f(float x) {
    int n = 2;
    return x;
}
