#include <math.h>
float f(float x) { return powf(x, 2.0f); }
