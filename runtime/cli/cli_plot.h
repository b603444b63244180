/* cli_plot.h — `cap plot`: a --log file's curves as SVG (docs/cli.md). */
#ifndef CLI_PLOT_H
#define CLI_PLOT_H

#include "options.h"

extern const OptCommand CAP_PLOT_COMMAND;

/* argv[0] is "plot". Returns the exit status (0 ok, 1 error, 2 bad command line). */
int cap_cmd_plot(int argc, char **argv);

#endif
