/* distributed.h — data-parallel training over MPI for the cap CLI (docs/distributed.md).
 *
 * Only the cap executable links MPI (libcaprt stays free of it: the trainer sees a CapComm
 * with an allreduce callback, cap.h). Built without MPI (CAP_WITH_MPI undefined), every
 * function here still exists: cap_dist_init reports a single process, or an error when it
 * is clearly running under mpirun with more than one process (each would otherwise train
 * alone and all would write the same checkpoint).
 */
#ifndef CAP_DISTRIBUTED_H
#define CAP_DISTRIBUTED_H

#include <stddef.h>

#include "cap.h"

/* Starts MPI when this cap has it and mpirun (or another PMI launcher) started the process;
 * then fills *comm and returns 1. Returns 0 for a plain single process (comm untouched), or
 * -1 with err. */
int cap_dist_init(int *argc, char ***argv, CapComm *comm, char *err, size_t err_size);

/* Ends the MPI run: rc 0 finalizes; any other rc aborts every rank with it, so that ranks
 * waiting in an allreduce for a failed one do not hang. Nothing when MPI was not started. */
void cap_dist_finish(int rc);

/* The last paragraph of `cap train --help` (and `cap help train`): how distributed training
 * is launched, or how to get a cap that can. A literal, so that the option table can hold it. */
#ifdef CAP_WITH_MPI
#define CAP_DIST_HELP                                                                         \
    "data parallel: mpirun -np N cap train cap.so --data ... (the compiled batch is the "    \
    "per-process batch; docs/distributed.md)"
#else
#define CAP_DIST_HELP                                                                         \
    "data parallel (mpirun -np N cap train ...) needs a cap built with MPI: install Open MPI " \
    "(scripts/setup.sh) and rebuild (docs/distributed.md)"
#endif

#endif
