#include <math.h>
float f(float x) { return exp(x); }
