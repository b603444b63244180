/* cli_data.h — the `cap data ...` and `cap vocab ...` commands (docs/cli.md, docs/data.md).
 * argv[0] is the command word ("data" / "vocab"). They print to stdout/stderr and return the
 * exit status (0 ok, 1 error, 2 bad command line); they never exit themselves. */
#ifndef CLI_DATA_H
#define CLI_DATA_H

#include "options.h"

extern const OptCommand CAP_DATA_COMMAND;  /* with its subcommands synth and stats */
extern const OptCommand CAP_VOCAB_COMMAND;

int cap_cmd_data(int argc, char **argv);
int cap_cmd_vocab(int argc, char **argv);

#endif
