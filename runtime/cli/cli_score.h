/* cli_score.h — the `cap score` command (cli_score.c). */
#ifndef CAP_CLI_SCORE_H
#define CAP_CLI_SCORE_H

#include "options.h"

extern const OptCommand CAP_SCORE_COMMAND;

/* `cap score RESULTS.json --refs CAPTIONS.json [--tokenizer ptb|none]` (cli_score.c):
 * argv[0] is "score". Prints BLEU-1..4 and CIDEr-D; returns the exit status (0 ok, 1 error,
 * 2 bad command line) with messages on stderr. Never exits. */
int cap_cmd_score(int argc, char **argv);

#endif /* CAP_CLI_SCORE_H */
