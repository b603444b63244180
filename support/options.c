/* options.c — the table-driven command-line parser (options.h). */
#include "options.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define HELP_COLUMN 24
#define HELP_WIDTH 92

/* ---- the tables ------------------------------------------------------------------------- */

static bool spec_end(const OptSpec *s) { return s->name == NULL && s->short_name == 0; }

/* Options of cmd's tables, in order, as one index: the index-th, or NULL past the end. */
static const OptSpec *spec_at(const OptCommand *cmd, int index) {
    for (int t = 0; t < OPT_MAX_TABLES && cmd->tables[t] != NULL; t++)
        for (const OptSpec *s = cmd->tables[t]; !spec_end(s); s++)
            if (index-- == 0) return s;
    return NULL;
}

static int spec_count(const OptCommand *cmd) {
    int n = 0;
    while (spec_at(cmd, n) != NULL) n++;
    return n;
}

/* "--out" or "-o": how errors and rules name an option. */
static const char *spec_name(const OptSpec *s, char buf[3]) {
    if (s->name != NULL) return s->name;
    buf[0] = '-', buf[1] = s->short_name, buf[2] = '\0';
    return buf;
}

static bool names_match(const char *name, const char *text, size_t len) {
    return name != NULL && strlen(name) == len && strncmp(name, text, len) == 0;
}

/* The option whose long name (or alias) is the first len bytes of text; "-o" names a short
 * option alone. Returns its index or -1. */
static int find_long(const OptCommand *cmd, const char *text, size_t len) {
    const OptSpec *s;
    for (int i = 0; (s = spec_at(cmd, i)) != NULL; i++) {
        char buf[3];
        if (names_match(s->name, text, len) || names_match(s->alias, text, len) ||
            (s->name == NULL && names_match(spec_name(s, buf), text, len)))
            return i;
    }
    return -1;
}

static int find_short(const OptCommand *cmd, char c) {
    const OptSpec *s;
    for (int i = 0; (s = spec_at(cmd, i)) != NULL; i++)
        if (s->short_name == c) return i;
    return -1;
}

/* ---- suggestions ------------------------------------------------------------------------ */

/* Edit distance (insertions, deletions, substitutions) of two short strings. */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return (size_t)-1;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Keeps candidate in *best when it is closer to word than *best, and close enough to be
 * what was meant: within a third of the word's length (at least 1, and 2 from 4 letters on:
 * two letters swapped), or the word a prefix of it. */
static void consider(const char *word, const char *candidate, const char **best, size_t *dist) {
    if (candidate == NULL) return;
    size_t d = edit_distance(word, candidate), len = strlen(word);
    size_t limit = len / 3 > 2 ? len / 3 : len >= 4 ? 2 : 1;
    bool prefix = strlen(word) >= 4 && strncmp(word, candidate, strlen(word)) == 0;
    if ((d <= limit || prefix) && d < *dist) *best = candidate, *dist = d;
}

static const char *closest_option(const OptCommand *cmd, const char *word) {
    const char *best = NULL;
    size_t dist = (size_t)-1;
    const OptSpec *s;
    for (int i = 0; (s = spec_at(cmd, i)) != NULL; i++)
        if (!(s->flags & OPT_HIDDEN)) consider(word, s->name, &best, &dist);
    consider(word, "--help", &best, &dist);
    return best;
}

/* ---- parsing ---------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int error(char *err, size_t size, const char *fmt,
                                                       ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return OPT_ERROR;
}

static int add_to_list(OptValue *v, const char *value, int capacity) {
    if (v->list == NULL && (v->list = calloc((size_t)capacity, sizeof *v->list)) == NULL)
        return -1;
    v->list[v->n_list++] = value;
    return 0;
}

/* Gives option `index` the value (NULL for flags). */
static int set_value(OptResult *r, int index, const char *value, int argc, char *err,
                     size_t size) {
    const OptSpec *s = spec_at(r->cmd, index);
    OptValue *v = &r->values[index];
    char buf[3];
    v->count++;
    if (s->kind == OPT_FLAG || s->kind == OPT_COUNTED) {
        v->value = "1";
        return OPT_OK;
    }
    if ((s->flags & OPT_NONEMPTY) && *value == '\0')
        return error(err, size, "option '%s' needs a value", spec_name(s, buf));
    v->value = value;
    if ((s->kind == OPT_REPEAT || s->kind == OPT_MULTI) && add_to_list(v, value, argc) != 0)
        return error(err, size, "out of memory");
    return OPT_OK;
}

/* The value of option `index` given as argv[*i] (with `inline_value` after '=' or the short
 * letter, or NULL): the inline one, else the next argument. OPT_MULTI also takes the
 * arguments after it up to the next option. */
static int take_value(OptResult *r, int index, const char *inline_value, int argc, char **argv,
                      int *i, char *err, size_t size) {
    const OptSpec *s = spec_at(r->cmd, index);
    char buf[3];
    if (s->kind == OPT_FLAG || s->kind == OPT_COUNTED) {
        if (inline_value != NULL)
            return error(err, size, "option '%s' takes no value", spec_name(s, buf));
        return set_value(r, index, NULL, argc, err, size);
    }
    const char *arg = argv[*i];
    if (inline_value == NULL) {
        if (*i + 1 >= argc) return error(err, size, "option '%s' needs a value", arg);
        inline_value = argv[++*i];
    }
    int rc = set_value(r, index, inline_value, argc, err, size);
    while (rc == OPT_OK && s->kind == OPT_MULTI && *i + 1 < argc && argv[*i + 1][0] != '-')
        rc = set_value(r, index, argv[++*i], argc, err, size);
    return rc;
}

static int parse_long(OptResult *r, int argc, char **argv, int *i, char *err, size_t size) {
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    int index = find_long(r->cmd, arg, len);
    if (index < 0) {
        char word[64];
        snprintf(word, sizeof word, "%.*s", (int)(len < 63 ? len : 63), arg);
        const char *near = closest_option(r->cmd, word);
        if (near != NULL)
            return error(err, size, "unknown option '%s'; did you mean %s?", arg, near);
        return error(err, size, "unknown option '%s'", arg);
    }
    return take_value(r, index, eq != NULL ? eq + 1 : NULL, argc, argv, i, err, size);
}

/* "-o FILE", "-oFILE", "-DNAME=V", "-vv" (flags together); "-o" alone may also be a name
 * of a long-only table entry. */
static int parse_short(OptResult *r, int argc, char **argv, int *i, char *err, size_t size) {
    const char *arg = argv[*i];
    for (const char *p = arg + 1; *p != '\0'; p++) {
        int index = find_short(r->cmd, *p);
        if (index < 0 && p == arg + 1) index = find_long(r->cmd, arg, strlen(arg));
        if (index < 0) {
            if (p == arg + 1) return error(err, size, "unknown option '%s'", arg);
            return error(err, size, "unknown option '-%c' in '%s'", *p, arg);
        }
        OptKind kind = spec_at(r->cmd, index)->kind;
        if (kind != OPT_FLAG && kind != OPT_COUNTED)
            return take_value(r, index, p[1] != '\0' ? p + 1 : NULL, argc, argv, i, err, size);
        int rc = set_value(r, index, NULL, argc, err, size);
        if (rc != OPT_OK) return rc;
    }
    return OPT_OK;
}

static bool is_option(const char *arg) { return arg[0] == '-' && arg[1] != '\0'; }

/* Whether arg is -h/--help, or a cluster of flags that holds h ("-vh"; in "-oh" the h is
 * -o's value). */
static bool asks_help(const OptCommand *cmd, const char *arg) {
    if (strcmp(arg, "--help") == 0) return true;
    if (arg[0] != '-' || arg[1] == '-') return false;
    for (const char *p = arg + 1; *p != '\0'; p++) {
        if (*p == 'h') return true;
        int index = find_short(cmd, *p);
        if (index < 0) return false;
        OptKind kind = spec_at(cmd, index)->kind;
        if (kind != OPT_FLAG && kind != OPT_COUNTED) return false;
    }
    return false;
}

/* -h/--help, then the first OPT_EARLY option, anywhere before "--". */
static int find_early(OptResult *r, int argc, char **argv) {
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (asks_help(r->cmd, argv[i])) return OPT_HELP;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        bool is_long = argv[i][0] == '-' && argv[i][1] == '-';
        int index = is_long ? find_long(r->cmd, argv[i], strlen(argv[i])) : -1;
        if (index >= 0 && (spec_at(r->cmd, index)->flags & OPT_EARLY)) {
            r->early = spec_at(r->cmd, index);
            r->values[index].value = "1";
            r->values[index].count = 1;
            return OPT_OK;
        }
    }
    return -2; /* neither */
}

static int add_positional(OptResult *r, const char *arg, int argc, char *err, size_t size) {
    const OptCommand *cmd = r->cmd;
    if (cmd->max_pos >= 0 && r->n_pos >= cmd->max_pos)
        return error(err, size, cmd->pos_extra != NULL ? cmd->pos_extra
                                                       : "unexpected argument '%s'", arg);
    if (r->pos == NULL && (r->pos = calloc((size_t)argc, sizeof *r->pos)) == NULL)
        return error(err, size, "out of memory");
    r->pos[r->n_pos++] = arg;
    return OPT_OK;
}

/* ---- rules ------------------------------------------------------------------------------ */

/* "--a", "--a or --b", "--a, --b or --c" (joiner "or" / "and") of the given names. */
static void join_names(const char *const *names, int n, const char *joiner, char *out,
                       size_t size) {
    out[0] = '\0';
    for (int k = 0; k < n; k++) {
        size_t len = strlen(out);
        const char *sep = k == 0 ? "" : k == n - 1 ? " " : ", ";
        snprintf(out + len, size - len, "%s%s%s%s", sep, k > 0 && k == n - 1 ? joiner : "",
                 k > 0 && k == n - 1 ? " " : "", names[k]);
    }
}

static int rule_names(const OptRule *rule) {
    int n = 0;
    while (n < 4 && rule->names[n] != NULL) n++;
    return n;
}

static int check_rule(const OptResult *r, const OptRule *rule, char *err, size_t size) {
    int n = rule_names(rule), given = 0;
    const char *seen[4];
    for (int k = 0; k < n; k++)
        if (opt_has(r, rule->names[k])) seen[given++] = rule->names[k];
    char list[256];
    if (rule->kind == OPT_GOES_WITH && opt_has(r, rule->names[0]) && !opt_has(r, rule->names[1]))
        return error(err, size, "%s goes with %s", rule->names[0], rule->names[1]);
    if ((rule->kind == OPT_ONE_OF || rule->kind == OPT_ANY_OF) && given == 0) {
        join_names(rule->names, n, "or", list, sizeof list);
        return error(err, size, "%s needs %s%s", r->cmd->prog, n > 1 ? "one of " : "", list);
    }
    if ((rule->kind == OPT_ONE_OF || rule->kind == OPT_EXCLUDE) && given > 1) {
        join_names(seen, given, "and", list, sizeof list);
        return error(err, size, "%s exclude each other", list);
    }
    return OPT_OK;
}

static int check(const OptResult *r, char *err, size_t size) {
    const OptCommand *cmd = r->cmd;
    if (r->n_pos < cmd->min_pos)
        return error(err, size, "%s", cmd->pos_missing != NULL ? cmd->pos_missing
                                                               : "missing argument");
    const OptSpec *s;
    for (int i = 0; (s = spec_at(cmd, i)) != NULL; i++) {
        char buf[3];
        if ((s->flags & OPT_REQUIRED) && r->values[i].count == 0)
            return error(err, size, "%s needs %s%s%s", cmd->prog, spec_name(s, buf),
                         s->metavar ? " " : "", s->metavar ? s->metavar : "");
    }
    for (const OptRule *rule = cmd->rules; rule != NULL && rule->kind != OPT_RULE_END; rule++)
        if (check_rule(r, rule, err, size) != OPT_OK) return OPT_ERROR;
    return OPT_OK;
}

int opt_parse(const OptCommand *cmd, int argc, char **argv, OptResult *r, char *err,
              size_t err_size) {
    memset(r, 0, sizeof *r);
    r->cmd = cmd;
    r->n_values = spec_count(cmd);
    r->values = calloc((size_t)r->n_values + 1, sizeof *r->values);
    if (r->values == NULL) return error(err, err_size, "out of memory");
    int early = find_early(r, argc, argv);
    if (early != -2) return early;
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int rc;
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (only_positional || !is_option(arg)) rc = add_positional(r, arg, argc, err, err_size);
        else if (arg[1] == '-') rc = parse_long(r, argc, argv, &i, err, err_size);
        else rc = parse_short(r, argc, argv, &i, err, err_size);
        if (rc != OPT_OK) return rc;
    }
    return check(r, err, err_size);
}

void opt_free(OptResult *r) {
    for (int i = 0; r->values != NULL && i < r->n_values; i++) free(r->values[i].list);
    free(r->values);
    free(r->pos);
    memset(r, 0, sizeof *r);
}

int opt_vfail(const OptCommand *cmd, const char *fmt, va_list ap) {
    fprintf(stderr, "%.*s: error: ", (int)strcspn(cmd->prog, " "), cmd->prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see %s --help)\n", cmd->prog);
    return 2;
}

int opt_fail(const OptCommand *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = opt_vfail(cmd, fmt, ap);
    va_end(ap);
    return rc;
}

int opt_begin(const OptCommand *cmd, int argc, char **argv, OptResult *r, int *status) {
    char err[512];
    int rc = opt_parse(cmd, argc, argv, r, err, sizeof err);
    *status = 0;
    if (rc == OPT_HELP) opt_help(stdout, cmd);
    if (rc == OPT_ERROR) *status = opt_fail(cmd, "%s", err);
    if (rc != OPT_OK) opt_free(r);
    return rc == OPT_OK;
}

int opt_run(const OptCommand *cmd, int argc, char **argv, int (*fn)(const OptResult *r)) {
    OptResult r;
    int status;
    if (!opt_begin(cmd, argc, argv, &r, &status)) return status;
    status = fn(&r);
    opt_free(&r);
    return status;
}

/* ---- values ----------------------------------------------------------------------------- */

const OptValue *opt_get(const OptResult *r, const char *name) {
    int index = find_long(r->cmd, name, strlen(name));
    if (index < 0 && name[0] == '-' && name[1] != '-' && name[1] != '\0' && name[2] == '\0')
        index = find_short(r->cmd, name[1]);
    return index >= 0 && r->values != NULL ? &r->values[index] : NULL;
}

const char *opt_str(const OptResult *r, const char *name) {
    const OptValue *v = opt_get(r, name);
    return v != NULL ? v->value : NULL;
}

int opt_has(const OptResult *r, const char *name) { return opt_str(r, name) != NULL; }

/* strtoll and strtod skip leading blanks and take a '+': a value is a number only if it
 * starts like one ("-3", "0.5", ".5"): " 3" and "+3" are refused. */
static bool number_start(const char *v) {
    return (*v >= '0' && *v <= '9') || *v == '-' || *v == '.';
}

int opt_int(const OptResult *r, const char *name, long long dflt, long long min, long long max,
            long long *out, char *err, size_t err_size) {
    const char *v = opt_str(r, name);
    *out = dflt;
    if (v == NULL) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!number_start(v) || *end != '\0' || errno != 0 || x < min || x > max) {
        snprintf(err, err_size, "%s must be an integer in %lld..%lld, not '%s'", name, min, max,
                 v);
        return -1;
    }
    *out = x;
    return 0;
}

int opt_real(const OptResult *r, const char *name, double dflt, double min, double max,
             double *out, char *err, size_t err_size) {
    const char *v = opt_str(r, name);
    *out = dflt;
    if (v == NULL) return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!number_start(v) || *end != '\0' || errno != 0 || !(x >= min && x <= max)) {
        snprintf(err, err_size, "%s must be a number in %g..%g, not '%s'", name, min, max, v);
        return -1;
    }
    *out = x;
    return 0;
}

int opt_choice(const OptResult *r, const char *name, const char *choices, int dflt, char *err,
               size_t err_size) {
    const char *v = opt_str(r, name);
    if (v == NULL) return dflt;
    int k = 0;
    for (const char *p = choices; *p != '\0'; k++) {
        size_t len = strcspn(p, "|");
        if (strlen(v) == len && strncmp(v, p, len) == 0) return k;
        p += len + (p[len] == '|');
    }
    char list[256];
    const char *words[4] = {NULL, NULL, NULL, NULL};
    char copy[256];
    snprintf(copy, sizeof copy, "%s", choices);
    int n = 0;
    for (char *save = NULL, *w = strtok_r(copy, "|", &save); w != NULL && n < 4;
         w = strtok_r(NULL, "|", &save))
        words[n++] = w;
    join_names(words, n, "or", list, sizeof list);
    snprintf(err, err_size, "%s is %s, not '%s'", name, list, v);
    return -1;
}

/* ---- help ------------------------------------------------------------------------------- */

/* Writes text wrapped to HELP_WIDTH, every line after the first indented by `indent`
 * (the first continues where the caller left the cursor, at column `col`). */
static void wrap(FILE *out, const char *text, int col, int indent) {
    for (const char *p = text; *p != '\0';) {
        size_t word = strcspn(p, " \n");
        if (col > indent && col + 1 + (int)word > HELP_WIDTH) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", (int)word, p);
        col += (int)word;
        p += word;
        if (*p == '\n') {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        }
        while (*p == ' ' || *p == '\n') p++;
    }
    fputc('\n', out);
}

static void option_line(FILE *out, const char *label, const char *help) {
    int col = fprintf(out, "  %s", label);
    if (col >= HELP_COLUMN) {
        fputc('\n', out);
        col = 0;
    }
    fprintf(out, "%*s", HELP_COLUMN - col, "");
    wrap(out, help, HELP_COLUMN, HELP_COLUMN);
}

static void option_help(FILE *out, const OptSpec *s) {
    char label[128];
    int n = 0;
    if (s->short_name) n += snprintf(label + n, sizeof label - (size_t)n, "-%c%s", s->short_name,
                                     s->name ? ", " : "");
    if (s->name) n += snprintf(label + n, sizeof label - (size_t)n, "%s", s->name);
    if (s->alias) n += snprintf(label + n, sizeof label - (size_t)n, ", %s", s->alias);
    if (s->metavar) snprintf(label + n, sizeof label - (size_t)n, " %s", s->metavar);
    option_line(out, label, s->help ? s->help : "");
}

static void commands_help(FILE *out, const OptCommand *cmd) {
    fprintf(out, "\ncommands:\n");
    for (const OptSub *sub = cmd->subs; sub->name != NULL; sub++)
        if (!(sub->flags & OPT_HIDDEN)) option_line(out, sub->name, sub->cmd->summary);
}

void opt_help(FILE *out, const OptCommand *cmd) {
    int col = fprintf(out, "usage: %s", cmd->prog);
    if (cmd->synopsis != NULL) { /* a long synopsis wraps under itself */
        fputc(' ', out);
        wrap(out, cmd->synopsis, col + 1, col + 1);
    } else fputc('\n', out);
    if (cmd->about != NULL) {
        fputc('\n', out);
        wrap(out, cmd->about, 0, 0);
    }
    if (cmd->subs != NULL) commands_help(out, cmd);
    for (int t = 0; t < OPT_MAX_TABLES && cmd->tables[t] != NULL; t++) {
        const char *title = cmd->table_titles[t] ? cmd->table_titles[t] : "options";
        fprintf(out, "\n%s:\n", title);
        for (const OptSpec *s = cmd->tables[t]; !spec_end(s); s++)
            if (!(s->flags & OPT_HIDDEN)) option_help(out, s);
        if (t == 0) option_line(out, "-h, --help", "print this help and exit");
    }
    if (cmd->tables[0] == NULL) {
        fprintf(out, "\noptions:\n");
        option_line(out, "-h, --help", "print this help and exit");
    }
    if (cmd->footer != NULL) {
        fputc('\n', out);
        wrap(out, cmd->footer, 0, 0);
    }
}

/* ---- subcommands ------------------------------------------------------------------------ */

const OptSub *opt_find_sub(const OptCommand *cmd, const char *word, char *err,
                           size_t err_size) {
    const char *best = NULL;
    size_t dist = (size_t)-1;
    char names[512] = "";
    for (const OptSub *sub = cmd->subs; sub != NULL && sub->name != NULL; sub++) {
        if (strcmp(sub->name, word) == 0) return sub;
        if (sub->flags & OPT_HIDDEN) continue;
        consider(word, sub->name, &best, &dist);
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "", sub->name);
    }
    if (best != NULL)
        snprintf(err, err_size, "unknown command '%s'; did you mean %s?", word, best);
    else snprintf(err, err_size, "unknown command '%s' (commands: %s)", word, names);
    return NULL;
}

/* The first positional argument of argv for cmd (skipping the values of its options), or
 * -1. */
static int first_positional(const OptCommand *cmd, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--") == 0) return i + 1 < argc ? i + 1 : -1;
        if (!is_option(arg)) return i;
        int index = arg[1] == '-' ? find_long(cmd, arg, strlen(arg))
                                  : arg[2] == '\0' ? find_short(cmd, arg[1]) : -1;
        OptKind kind = index >= 0 ? spec_at(cmd, index)->kind : OPT_FLAG;
        if (kind == OPT_VALUE || kind == OPT_REPEAT) i++;
    }
    return -1;
}

/* Whether argv[1..w-1] (before the command word) holds one of cmd's OPT_EARLY options. */
static bool early_before(const OptCommand *cmd, int w, char **argv) {
    for (int i = 1; i < w; i++) {
        if (argv[i][0] != '-' || argv[i][1] != '-') continue;
        int index = find_long(cmd, argv[i], strlen(argv[i]));
        if (index >= 0 && (spec_at(cmd, index)->flags & OPT_EARLY)) return true;
    }
    return false;
}

int opt_dispatch(const OptCommand *cmd, int argc, char **argv, OptResult *r, int *status) {
    int w = first_positional(cmd, argc, argv);
    memset(r, 0, sizeof *r);
    if (w < 0) return !opt_begin(cmd, argc, argv, r, status);
    /* `cap --version info`: the early option wins over the rest of the line, the command too */
    if (early_before(cmd, w, argv)) return !opt_begin(cmd, w, argv, r, status);
    char err[512];
    const OptSub *sub = opt_find_sub(cmd, argv[w], err, sizeof err);
    if (sub == NULL) {
        *status = opt_fail(cmd, "%s", err);
        return 1;
    }
    /* the word first, then every other argument in order */
    char **args = malloc(((size_t)argc + 1) * sizeof *args);
    if (args == NULL) {
        *status = opt_fail(cmd, "out of memory");
        return 1;
    }
    int n = 0;
    args[n++] = argv[w];
    for (int i = 1; i < argc; i++)
        if (i != w) args[n++] = argv[i];
    args[n] = NULL;
    *status = sub->run(n, args);
    free(args);
    return 1;
}

void opt_walk(const OptCommand *cmd, void (*fn)(const OptCommand *c, void *ctx), void *ctx) {
    fn(cmd, ctx);
    for (const OptSub *sub = cmd->subs; sub != NULL && sub->name != NULL; sub++)
        opt_walk(sub->cmd, fn, ctx);
}
