#include <math.h>
float f(float x) {
    expf(x);
    return x;
}
