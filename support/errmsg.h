/* errmsg.h — the one way a library below the command lines reports an error as text: the
 * message goes into the caller's buffer, the status comes back (libcaprt's cap_fail and the
 * data side's data_fail are this function under their own names). */
#ifndef CAPC_ERRMSG_H
#define CAPC_ERRMSG_H

#include <stddef.h>

/* Writes the formatted message into err[0..err_size) (nothing when err is NULL or err_size 0,
 * cut off when it does not fit) and returns code. */
int errmsg_fail(char *err, size_t err_size, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
