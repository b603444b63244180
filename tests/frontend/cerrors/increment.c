float f(float x) {
    x++;
    return x;
}
