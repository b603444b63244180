/* options.h — one table-driven command-line parser for every command line of the project
 * (capc, and every `cap` command and subcommand; docs/cli.md).
 *
 * A command is described once, by an OptCommand: its synopsis, what it does, its option tables
 * (each option with its names, metavar and help), the rules between options (required, one
 * of, excluding each other, going with another) and its subcommands. From that one
 * description come the parser, the --help text and the errors, which name the real
 * alternatives (an unknown option names the closest known one).
 *
 * Accepted forms: `--opt VALUE`, `--opt=VALUE`, `-o VALUE`, `-oVALUE` (so `-DNAME=VALUE`),
 * `-vv` (short flags together), flags, counted flags, repeatable options, options taking
 * every following argument up to the next option (`--image A B C`), positionals in any
 * order among the options, and `--` (everything after it is positional). `-h` and `--help`
 * anywhere before `--` ask for the help, whatever else the line holds.
 *
 * Nothing here keeps state between calls or exits; errors are returned as text.
 */
#ifndef CAPC_OPTIONS_H
#define CAPC_OPTIONS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

typedef enum OptKind {
    OPT_FLAG,   /* no value; value becomes "1" */
    OPT_COUNTED,  /* no value, counted: -v -v and -vv count 2 */
    OPT_VALUE,  /* one value; given again, the last wins */
    OPT_REPEAT, /* one value each time, all kept in order (-D A=1 -D B=2) */
    OPT_MULTI,  /* every following argument up to the next option (--image A B C); repeatable */
} OptKind;

enum {
    OPT_REQUIRED = 1u << 0, /* the command needs it: "cap train needs --out CKPT" */
    OPT_NONEMPTY = 1u << 1, /* an empty value is "option '--x' needs a value" */
    OPT_EARLY = 1u << 2,    /* like --help: wins over the rest of the line (--version) */
    OPT_HIDDEN = 1u << 3,   /* accepted but left out of the help */
};

typedef struct OptSpec {
    const char *name;    /* "--out", or NULL for a short option alone; NULL and no short: end */
    char short_name;     /* 'o', or 0 */
    OptKind kind;
    unsigned flags;      /* OPT_REQUIRED, ... */
    const char *metavar; /* "FILE" for options with values */
    const char *help;    /* one paragraph; the help text wraps it */
    const char *alias;   /* a second long name ("--time" for "--time-limit"), or NULL */
} OptSpec;

/* The entry that ends a table. */
#define OPT_END {NULL, 0, OPT_FLAG, 0, NULL, NULL, NULL}

typedef enum OptRuleKind {
    OPT_RULE_END,
    OPT_ONE_OF,   /* exactly one of the names: "needs one of --a, --b or --c", "--a and --b
                   * exclude each other" */
    OPT_ANY_OF,   /* at least one of them */
    OPT_EXCLUDE,  /* at most one of them */
    OPT_GOES_WITH /* names[0] only when names[1] is given: "--prefix goes with --from" */
} OptRuleKind;

typedef struct OptRule {
    OptRuleKind kind;
    const char *names[4]; /* long names (or "-o"), up to the first NULL */
} OptRule;

typedef struct OptCommand OptCommand;

/* A subcommand: its word, what it does in one line (for the parent's help), its own
 * description, and what runs it (argv[0] is the word; returns the exit status). */
typedef struct OptSub {
    const char *name;
    const OptCommand *cmd;
    int (*run)(int argc, char **argv);
    unsigned flags; /* OPT_HIDDEN: not listed in the parent's help */
} OptSub;

#define OPT_MAX_TABLES 3

struct OptCommand {
    const char *prog;     /* "cap train": the usage line, and the tool name before the space */
    const char *synopsis; /* what follows prog on the usage line ("cap.so --data SPEC ...") */
    const char *summary;  /* one line, for the parent's command list */
    const char *about;    /* a paragraph after the usage line, or NULL */
    const OptSpec *tables[OPT_MAX_TABLES]; /* option tables, up to the first NULL */
    const char *table_titles[OPT_MAX_TABLES]; /* "options", "options for every command" */
    const OptRule *rules; /* ending with OPT_RULE_END, or NULL */
    int min_pos, max_pos; /* positional arguments; max_pos -1: any number */
    const char *pos_missing; /* the error without enough positionals ("no model file given") */
    const char *pos_extra;   /* the error for one too many ("unexpected argument '%s'") */
    const OptSub *subs;      /* subcommands (ending with a NULL name), or NULL */
    const char *footer;      /* a last paragraph (exit statuses), or NULL */
};

/* What one option received. */
typedef struct OptValue {
    const char *value; /* the last value (OPT_FLAG/OPT_COUNTED: "1"); NULL when absent */
    int count;         /* how many times it was given (-vv: 2) */
    const char **list; /* OPT_REPEAT, OPT_MULTI: every value in order (n_list of them) */
    int n_list;
} OptValue;

typedef struct OptResult {
    const OptCommand *cmd;
    OptValue *values; /* one per option of cmd's tables, in table order */
    int n_values;
    const char **pos; /* the positional arguments */
    int n_pos;
    const OptSpec *early; /* the OPT_EARLY option that ended parsing, or NULL */
} OptResult;

enum { OPT_OK = 0, OPT_HELP = 1, OPT_ERROR = -1 };

/* Parses argv[1..argc-1] (argv[0] is the program or command word) for cmd into *r.
 * Returns OPT_OK, OPT_HELP (-h or --help given: nothing else is parsed or checked), or
 * OPT_ERROR with a message in err (no prefix, no hint). An OPT_EARLY option returns OPT_OK
 * with r->early set and nothing else checked. Free r with opt_free whatever it returns. */
int opt_parse(const OptCommand *cmd, int argc, char **argv, OptResult *r, char *err,
              size_t err_size);
void opt_free(OptResult *r);

/* opt_parse as a command runs it: returns 1 to go on; else 0 with *status the exit status,
 * after printing the help to stdout (0) or the error to stderr (2). */
int opt_begin(const OptCommand *cmd, int argc, char **argv, OptResult *r, int *status);

/* A command's whole run: opt_begin, then fn on the parsed line, then opt_free. Returns the
 * exit status (fn's, or that of the help or the error). */
int opt_run(const OptCommand *cmd, int argc, char **argv, int (*fn)(const OptResult *r));

/* The values, by the option's long name (or "-o" for a short option alone). */
const OptValue *opt_get(const OptResult *r, const char *name);
const char *opt_str(const OptResult *r, const char *name);
int opt_has(const OptResult *r, const char *name);

/* Integer and real values checked against [min, max]; absent: dflt. Returns 0, or -1 with
 * "--steps must be an integer in 1..100, not 'x'" in err. */
int opt_int(const OptResult *r, const char *name, long long dflt, long long min, long long max,
            long long *out, char *err, size_t err_size);
int opt_real(const OptResult *r, const char *name, double dflt, double min, double max,
             double *out, char *err, size_t err_size);
/* The value as one of the |-separated words of choices ("stop|skip"); absent: dflt. Returns
 * the index, or -1 with "--x is stop or skip, not 'y'" in err. */
int opt_choice(const OptResult *r, const char *name, const char *choices, int dflt, char *err,
               size_t err_size);

/* "TOOL: error: MESSAGE (see PROG --help)" on stderr; returns 2, the usage exit status. */
int opt_fail(const OptCommand *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int opt_vfail(const OptCommand *cmd, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* The help: usage line, description, commands, option tables, footer. */
void opt_help(FILE *out, const OptCommand *cmd);

/* The subcommand named word, or NULL (then err suggests the closest one). */
const OptSub *opt_find_sub(const OptCommand *cmd, const char *word, char *err, size_t err_size);

/* Runs the subcommand that the first positional argument of argv names, with the options
 * before it passed on too (`cap -v info x.so` is `cap info x.so -v`); an option of cmd's
 * tables that takes a value skips its value. Returns 1 with *status its exit status (2 after
 * an unknown word, printed). Without a word: parses argv for cmd and returns 0 with *status
 * 0 and *r filled (the caller looks at r->early, else says a command is needed), or 1 after
 * printing the help (status 0) or an error (status 2). */
int opt_dispatch(const OptCommand *cmd, int argc, char **argv, OptResult *r, int *status);

/* Calls fn with each command reachable from cmd, itself first ("cap", "cap data",
 * "cap data synth", ...), hidden ones included. */
void opt_walk(const OptCommand *cmd, void (*fn)(const OptCommand *c, void *ctx), void *ctx);

#endif
