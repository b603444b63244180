/* cli_caption.h — the `cap` commands that work on datasets and captions (docs/cli.md):
 *   cap train cap.so --data SPEC ...   training from a dataset (train_data.h)
 *   cap sample cap.so --weights W --image FILE...
 *   cap eval cap.so --weights W --data SPEC [--split test]
 *   cap attend cap.so --weights W --image FILE -o attn.png
 * For sample, eval and attend argv[0] is the command name, argv[1..] the rest of the line. Each
 * returns the exit status (0 ok, 1 error, 2 bad command line) after printing; none exits.
 */
#ifndef CLI_CAPTION_H
#define CLI_CAPTION_H

#include "cap.h"
#include "options.h"

extern const OptCommand CAP_SAMPLE_COMMAND;
extern const OptCommand CAP_EVAL_COMMAND;
extern const OptCommand CAP_ATTEND_COMMAND;

/* o: `cap train`'s parsed line (cap_main.c) with --data given. comm: data parallel (the cap
 * CLI fills it under mpirun, docs/distributed.md), or NULL. */
int cap_cmd_train_data(const OptResult *o, const CapComm *comm);
int cap_cmd_sample(int argc, char **argv);
int cap_cmd_eval(int argc, char **argv);
int cap_cmd_attend(int argc, char **argv);

#endif
