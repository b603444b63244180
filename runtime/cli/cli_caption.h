/* cli_caption.h — the `cap` commands that work on datasets and captions (docs/cli.md):
 *   cap train cap.so --data SPEC ...   training from a dataset (train_data.h)
 *   cap sample cap.so --weights W --image FILE...
 *   cap eval cap.so --weights W --data SPEC [--split test]
 * argv[0] is the command name, argv[1..] the rest of the line. Each returns the exit status
 * (0 ok, 1 error, 2 bad command line) after printing; none exits.
 */
#ifndef CLI_CAPTION_H
#define CLI_CAPTION_H

#include "cap.h"

/* comm: data parallel (the cap CLI fills it under mpirun, docs/distributed.md), or NULL. */
int cap_cmd_train_data(int argc, char **argv, const CapComm *comm);
int cap_cmd_sample(int argc, char **argv);
int cap_cmd_eval(int argc, char **argv);

/* Whether argv holds option `name` ("--data" or "--data=..."), for dispatching `cap train`. */
int cap_cli_has_option(int argc, char **argv, const char *name);
/* -v / --verbose, given anywhere on the command line: cap_main removes it and says so here. */
void cap_cli_set_verbose(int verbose);
/* The backend choice on stderr: always when cuda was chosen or asked for, but `auto` falling
 * back to the cpu (the normal case on a machine without a GPU) only with -v. */
void cap_cli_backend_note(const CapSession *s);

#endif
