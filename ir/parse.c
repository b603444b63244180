/* parse.c — reads the IR text form (docs/ir.md) back into a Module.
 *
 * A hand-written recursive-descent parser working directly on the characters: the grammar is
 * small and line-shaped, and reading in place keeps every error's line:col exact.
 *
 *   file   := 'module' STRING config* [train group*] param* func*
 *   config := 'config' WORD '=' NUMBER
 *   train  := 'train' {KEY '=' VALUE}        group := 'train_group' {KEY '=' VALUE}
 *   param  := ('param' | 'buffer' | 'state' | 'derived') '@'NAME ':' type ['init' '=' STRING]
 *             ['frozen']
 *   cfunc  := 'cfunc' '@'NAME '(' ['%'NAME {',' '%'NAME}] ')' ['at' STRING ':' INT ':' INT]
 *             ['grads' '=' '[' ('@'NAME | '-') {',' ...} ']'] '{' node* 'return' '%'INT '}'
 *   node   := '%'INT '=' ('const' NUMBER | 'arg' '(' '%'NAME ')' | KIND '(' '%'INT {',' '%'INT} ')')
 *             (a C scalar function's expression DAG, ir/cfunc.h; nodes numbered from 0)
 *   func   := 'func' '@'NAME '(' [arg {',' arg}] ')' '{' item* 'return' [out {',' out}] '}'
 *   item   := op | 'fused.'PATTERN '{' op+ '}'     (a fused group: its ops run as one kernel)
 *   arg    := '%'NAME ':' type          op := '%'NAME '=' WORD '(' [operands] ')' [attrs] ':' type
 *   attrs  := '{' WORD '=' VALUE {',' WORD '=' VALUE} '}'  out := ['@']WORD '=' '%'NAME
 *   type   := '?' | DTYPE '[' [INT {',' INT}] ']'
 *
 * Attribute values are handed to attr_parse (attrs.c), the same code that reads the op
 * table's defaults. The parser insists on what the printer guarantees: every attribute of the
 * schema present, values defined before use, names unique.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cfunc.h"
#include "diag.h"
#include "ops.h"

enum { MAX_WORD = 512 };

typedef struct Parser {
    const char *text, *p;
    const char *filename;
    Module *m;
    Diag *d;
    const char *file_in_module; /* filename copied into the module, for op locations */
    Value **ins;                /* operand scratch array, reused; freed by ir_parse */
    int cap_ins;
    CfBuilder nodes;            /* the cfunc being read; freed by ir_parse */
    const char *pos_at;         /* loc_of resumes counting here (lines only move forward) */
    int pos_line, pos_col;
    jmp_buf fail; /* errors unwind to ir_parse, which frees the half-built module */
} Parser;

/* Line and column of a position. Counting resumes from the last position asked for, so
 * locating every op of a large file stays linear. */
static void loc_of(Parser *ps, const char *at, int *line, int *col) {
    if (!ps->pos_at || at < ps->pos_at) {
        ps->pos_at = ps->text;
        ps->pos_line = 1;
        ps->pos_col = 1;
    }
    for (const char *q = ps->pos_at; q < at && *q; q++) {
        if (*q == '\n') {
            ps->pos_line++;
            ps->pos_col = 1;
        } else {
            ps->pos_col++;
        }
    }
    ps->pos_at = at;
    *line = ps->pos_line;
    *col = ps->pos_col;
}

static void fail_at(Parser *ps, const char *at, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
static void fail_at(Parser *ps, const char *at, const char *fmt, ...) {
    int line, col;
    loc_of(ps, at, &line, &col);
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_set(ps->d, (SrcLoc){ps->filename, line, col}, "%d:%d: %s", line, col, msg);
    longjmp(ps->fail, 1);
}

/* Skips blanks, newlines and '#' comments. */
static void skip(Parser *ps) {
    for (;;) {
        char c = *ps->p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            ps->p++;
        } else if (c == '#') {
            while (*ps->p && *ps->p != '\n') ps->p++;
        } else {
            return;
        }
    }
}

static bool word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.';
}

/* Reads [A-Za-z0-9_.]+ into buf; what names it in errors. */
static const char *read_word(Parser *ps, char *buf, const char *what) {
    skip(ps);
    const char *start = ps->p;
    size_t n = 0;
    while (word_char(*ps->p)) {
        if (n + 1 >= MAX_WORD) fail_at(ps, start, "%s is too long", what);
        buf[n++] = *ps->p++;
    }
    buf[n] = '\0';
    if (n == 0) fail_at(ps, start, "expected %s", what);
    return start;
}

static bool peek_char(Parser *ps, char c) {
    skip(ps);
    return *ps->p == c;
}

static bool accept_char(Parser *ps, char c) {
    if (!peek_char(ps, c)) return false;
    ps->p++;
    return true;
}

static void expect_char(Parser *ps, char c, const char *context) {
    if (accept_char(ps, c)) return;
    if (*ps->p == '\0') fail_at(ps, ps->p, "expected '%c' %s, found end of file", c, context);
    fail_at(ps, ps->p, "expected '%c' %s", c, context);
}

static bool peek_keyword(Parser *ps, const char *kw) {
    skip(ps);
    size_t n = strlen(kw);
    return strncmp(ps->p, kw, n) == 0 && !word_char(ps->p[n]);
}

static bool accept_keyword(Parser *ps, const char *kw) {
    if (!peek_keyword(ps, kw)) return false;
    ps->p += strlen(kw);
    return true;
}

/* A sigil-prefixed name: '%value' or '@global'. */
static const char *read_name(Parser *ps, char sigil, char *buf, const char *what) {
    skip(ps);
    if (*ps->p != sigil) fail_at(ps, ps->p, "expected %s starting with '%c'", what, sigil);
    const char *at = ps->p++;
    if (!word_char(*ps->p)) fail_at(ps, ps->p, "expected a name after '%c'", sigil);
    read_word(ps, buf, what);
    return at;
}

/* The extent of one attribute-like value starting at ps->p: a quoted string, a bracketed list
 * or a bare token; returned as a heap copy for attr_parse. */
static char *read_value_text(Parser *ps, const char **start) {
    skip(ps);
    const char *s = ps->p, *q = s;
    if (*q == '"') {
        for (q++; *q && *q != '"' && *q != '\n'; q++)
            if (*q == '\\' && q[1] && q[1] != '\n') q++;
        if (*q != '"') fail_at(ps, s, "unterminated string");
        q++;
    } else if (*q == '[') {
        while (*q && *q != ']' && *q != '\n') q++;
        if (*q != ']') fail_at(ps, s, "unterminated list");
        q++;
    } else {
        while (*q && (word_char(*q) || *q == '-' || *q == '+')) q++;
    }
    if (q == s) fail_at(ps, s, "expected a value");
    char *copy = malloc((size_t)(q - s) + 1);
    if (!copy) fail_at(ps, s, "out of memory");
    memcpy(copy, s, (size_t)(q - s));
    copy[q - s] = '\0';
    ps->p = q;
    *start = s;
    return copy;
}

static void parse_value_as(Parser *ps, AttrKind kind, AttrValue *v, const char *what) {
    const char *at;
    char *text = read_value_text(ps, &at);
    char err[256];
    int rc = attr_parse(ps->m, kind, text, v, err, sizeof err);
    free(text);
    if (rc != 0) fail_at(ps, at, "%s: %s", what, err);
}

static int64_t read_int(Parser *ps, const char *what) {
    AttrValue v;
    parse_value_as(ps, ATTR_INT, &v, what);
    return v.i;
}

static void parse_type(Parser *ps, DType *dtype, Shape *shape) {
    if (accept_char(ps, '?')) {
        *dtype = DT_F32;
        *shape = shape_unknown();
        return;
    }
    char word[MAX_WORD];
    const char *at = read_word(ps, word, "a type");
    if (!dtype_from_name(word, dtype)) fail_at(ps, at, "unknown dtype '%s'", word);
    expect_char(ps, '[', "after the dtype");
    Shape s = shape_scalar();
    if (!accept_char(ps, ']')) {
        do {
            skip(ps);
            const char *dim_at = ps->p;
            if (s.rank == IR_MAX_RANK)
                fail_at(ps, dim_at, "shape has more than %d dimensions", IR_MAX_RANK);
            int64_t dim = read_int(ps, "dimension");
            if (dim < 0) fail_at(ps, dim_at, "negative dimension %lld", (long long)dim);
            s.dims[s.rank++] = dim;
        } while (accept_char(ps, ','));
        expect_char(ps, ']', "to close the shape");
    }
    *shape = s;
}

static void parse_config(Parser *ps) {
    char name[MAX_WORD];
    const char *at = read_word(ps, name, "a config name");
    if (module_find_config(ps->m, name)) fail_at(ps, at, "config '%s' set twice", name);
    expect_char(ps, '=', "after the config name");
    const char *vat;
    char *text = read_value_text(ps, &vat);
    AttrValue v;
    char err[256];
    bool is_int = attr_parse(ps->m, ATTR_INT, text, &v, err, sizeof err) == 0;
    if (!is_int && attr_parse(ps->m, ATTR_FLOAT, text, &v, err, sizeof err) != 0) {
        free(text);
        fail_at(ps, vat, "config value: %s", err);
    }
    free(text);
    module_set_config(ps->m, name, is_int ? (double)v.i : v.f, is_int);
}

static void parse_param(Parser *ps, ParamKind kind) {
    char name[MAX_WORD];
    const char *at = read_name(ps, '@', name, "a parameter name");
    if (module_find_param(ps->m, name)) fail_at(ps, at, "parameter @%s declared twice", name);
    expect_char(ps, ':', "before the parameter's type");
    DType dtype;
    Shape shape;
    const char *type_at = ps->p;
    parse_type(ps, &dtype, &shape);
    if (!shape_known(&shape)) fail_at(ps, type_at, "parameter @%s needs a known shape", name);
    AttrValue init = {.kind = ATTR_STRING, .s = ""};
    if (accept_keyword(ps, "init")) {
        expect_char(ps, '=', "after init");
        parse_value_as(ps, ATTR_STRING, &init, "init");
    }
    bool frozen = false;
    if (peek_keyword(ps, "frozen")) {
        if (kind == PARAM_BUFFER) fail_at(ps, ps->p, "buffers are never trainable: drop 'frozen'");
        if (kind == PARAM_STATE || kind == PARAM_DERIVED || kind == PARAM_HPARAM)
            fail_at(ps, ps->p, "state is never trainable: drop 'frozen'");
        ps->p += strlen("frozen");
        frozen = true;
    }
    SrcLoc loc = SRCLOC_NONE;
    module_add_param(ps->m, name, dtype, shape, kind, kind == PARAM_WEIGHT && !frozen, init.s,
                     loc);
}

/* One `KEY=VALUE` field of a train line: the key table says its kind and where it goes. */
typedef struct TrainField {
    const char *key;
    AttrKind kind;
    void *dst; /* double*, int64_t* or const char** */
} TrainField;

/* Reads KEY=VALUE pairs while the next word is a key of fields (each at most once). */
static void parse_train_fields(Parser *ps, const TrainField *fields, int n, const char *what) {
    bool seen[16] = {false};
    IR_ASSERT(n <= 16);
    for (;;) {
        int k = -1;
        for (int i = 0; i < n && k < 0; i++)
            if (peek_keyword(ps, fields[i].key)) k = i;
        if (k < 0) return;
        if (seen[k]) fail_at(ps, ps->p, "%s: '%s' given twice", what, fields[k].key);
        seen[k] = true;
        ps->p += strlen(fields[k].key);
        expect_char(ps, '=', "after the key");
        AttrValue v;
        parse_value_as(ps, fields[k].kind, &v, fields[k].key);
        if (fields[k].kind == ATTR_FLOAT) *(double *)fields[k].dst = v.f;
        else if (fields[k].kind == ATTR_INT) *(int64_t *)fields[k].dst = v.i;
        else *(const char **)fields[k].dst = v.s;
    }
}

static void parse_train(Parser *ps) {
    const char *at = ps->p;
    if (ps->m->train) fail_at(ps, at, "'train' given twice");
    TrainSpec *t = module_new_train_spec(ps->m, "loss");
    const char *opt = "adam", *sched = "constant";
    TrainField fields[] = {
        {"loss", ATTR_STRING, &t->loss},          {"optimizer", ATTR_STRING, &opt},
        {"lr", ATTR_FLOAT, &t->lr},               {"beta1", ATTR_FLOAT, &t->beta1},
        {"beta2", ATTR_FLOAT, &t->beta2},         {"eps", ATTR_FLOAT, &t->eps},
        {"weight_decay", ATTR_FLOAT, &t->weight_decay},
        {"clip_grad_norm", ATTR_FLOAT, &t->clip_grad_norm},
        {"schedule", ATTR_STRING, &sched},        {"warmup", ATTR_INT, &t->warmup},
        {"total", ATTR_INT, &t->total},           {"min_lr", ATTR_FLOAT, &t->min_lr},
        {"step_size", ATTR_INT, &t->step_size},   {"gamma", ATTR_FLOAT, &t->gamma},
    };
    parse_train_fields(ps, fields, (int)(sizeof fields / sizeof fields[0]), "train");
    if (!optimizer_from_name(opt, &t->optimizer))
        fail_at(ps, at, "train: unknown optimizer \"%s\" (adam, adamw)", opt);
    if (!lr_schedule_from_name(sched, &t->schedule))
        fail_at(ps, at, "train: unknown schedule \"%s\"", sched);
}

static void parse_train_group(Parser *ps) {
    const char *at = ps->p;
    if (!ps->m->train) fail_at(ps, at, "'train_group' before 'train'");
    const char *prefix = "";
    double lr = ps->m->train->lr, wd = ps->m->train->weight_decay;
    TrainField fields[] = {{"prefix", ATTR_STRING, &prefix},
                           {"lr", ATTR_FLOAT, &lr},
                           {"weight_decay", ATTR_FLOAT, &wd}};
    parse_train_fields(ps, fields, 3, "train_group");
    if (!prefix[0]) fail_at(ps, at, "train_group needs a non-empty prefix");
    train_spec_add_group(ps->m, ps->m->train, prefix, lr, wd);
}

/* '%name' that must already be defined in f. */
static Value *read_use(Parser *ps, Function *f) {
    char name[MAX_WORD];
    const char *at = read_name(ps, '%', name, "an operand");
    Value *v = func_find_value(f, name);
    if (!v) fail_at(ps, at, "use of undefined value %%%s", name);
    return v;
}

/* '%name' about to be defined in f: must be new, and keeps exactly that spelling. */
static const char *read_def(Parser *ps, Function *f, char *name) {
    const char *at = read_name(ps, '%', name, "a value name");
    if (func_find_value(f, name)) fail_at(ps, at, "value %%%s defined twice", name);
    return at;
}

static void parse_attrs(Parser *ps, Op *op) {
    const OpInfo *info = op_info(op->kind);
    bool seen[64] = {false};
    IR_ASSERT(info->n_attrs <= 64);
    const char *open = ps->p;
    if (accept_char(ps, '{')) {
        open = ps->p - 1;
        do {
            char name[MAX_WORD];
            const char *at = read_word(ps, name, "an attribute name");
            int i = op_attr_index(op->kind, name);
            if (i < 0) fail_at(ps, at, "op %s has no attribute '%s'", info->name, name);
            if (seen[i]) fail_at(ps, at, "attribute '%s' given twice", name);
            seen[i] = true;
            expect_char(ps, '=', "after the attribute name");
            char what[MAX_WORD + 32];
            snprintf(what, sizeof what, "attribute '%s' (%s)", name,
                     attr_kind_name(info->attrs[i].kind));
            parse_value_as(ps, info->attrs[i].kind, &op->attrs[i], what);
        } while (accept_char(ps, ','));
        expect_char(ps, '}', "to close the attributes");
    }
    for (int i = 0; i < info->n_attrs; i++)
        if (!seen[i])
            fail_at(ps, open, "op %s is missing attribute '%s'", info->name, info->attrs[i].name);
}

static void parse_op(Parser *ps, Function *f) {
    char name[MAX_WORD], op_name[MAX_WORD];
    const char *at = read_def(ps, f, name);
    expect_char(ps, '=', "after the value name");
    const char *op_at = read_word(ps, op_name, "an op name");
    int kind = op_kind_from_name(op_name);
    if (kind < 0) fail_at(ps, op_at, "unknown op '%s'", op_name);
    expect_char(ps, '(', "before the operands");
    int n = 0;
    if (!accept_char(ps, ')')) {
        do {
            Value *v = read_use(ps, f);
            if (n == ps->cap_ins) {
                int cap = ps->cap_ins ? ps->cap_ins * 2 : 8;
                Value **grown = realloc(ps->ins, sizeof *grown * (size_t)cap);
                if (!grown) fail_at(ps, ps->p, "out of memory");
                ps->ins = grown;
                ps->cap_ins = cap;
            }
            ps->ins[n++] = v;
        } while (accept_char(ps, ','));
        if (!accept_char(ps, ')')) fail_at(ps, ps->p, "expected ',' or ')' in the operand list");
    }
    int line, col;
    loc_of(ps, at, &line, &col);
    Op *op = func_add_op(f, kind, ps->ins, n, name, (SrcLoc){ps->file_in_module, line, col});
    parse_attrs(ps, op);
    expect_char(ps, ':', "before the result type");
    parse_type(ps, &op->result->dtype, &op->result->shape);
}

static void parse_return(Parser *ps, Function *f) {
    if (peek_char(ps, '}')) return;
    do {
        char out_name[MAX_WORD + 1];
        /* "@X" names the new value of module state X (ir.h). */
        bool state = accept_char(ps, '@');
        const char *at = read_word(ps, out_name + state, "an output name");
        if (state) out_name[0] = '@';
        for (int i = 0; i < f->n_outputs; i++)
            if (strcmp(f->output_names[i], out_name) == 0)
                fail_at(ps, at, "output '%s' returned twice", out_name);
        expect_char(ps, '=', "after the output name");
        func_add_output(f, out_name, read_use(ps, f));
    } while (accept_char(ps, ','));
}

/* 'fused.PATTERN' '{' op+ '}': the ops become one fused group. */
static void parse_group(Parser *ps, Function *f) {
    char word[MAX_WORD];
    const char *at = read_word(ps, word, "a fused group");
    const char *pattern = word + 6; /* after "fused." */
    if (!*pattern) fail_at(ps, at, "a fused group needs a pattern name ('fused.NAME')");
    expect_char(ps, '{', "to open the fused group");
    int first = f->n_ops;
    for (;;) {
        skip(ps);
        if (accept_char(ps, '}')) break;
        if (*ps->p == '\0' || peek_keyword(ps, "return") || strncmp(ps->p, "fused.", 6) == 0)
            fail_at(ps, ps->p, "expected an op or '}' to close the fused group");
        parse_op(ps, f);
    }
    if (f->n_ops == first) fail_at(ps, at, "fused group '%s' has no ops", word);
    func_add_group(f, pattern, first, f->n_ops - first);
}

static void parse_function(Parser *ps) {
    char name[MAX_WORD];
    const char *at = read_name(ps, '@', name, "a function name");
    Function *f = module_add_function(ps->m, name);
    if (!f) fail_at(ps, at, "function @%s defined twice", name);
    expect_char(ps, '(', "before the function's inputs");
    if (!accept_char(ps, ')')) {
        do {
            char vname[MAX_WORD];
            read_def(ps, f, vname);
            expect_char(ps, ':', "before the input's type");
            DType dtype;
            Shape shape;
            parse_type(ps, &dtype, &shape);
            func_add_input(f, vname, dtype, shape);
        } while (accept_char(ps, ','));
        expect_char(ps, ')', "after the function's inputs");
    }
    expect_char(ps, '{', "to open the function body");
    for (;;) {
        skip(ps);
        if (accept_keyword(ps, "return")) break;
        if (*ps->p == '}' || *ps->p == '\0')
            fail_at(ps, ps->p, "function @%s has no 'return'", name);
        if (strncmp(ps->p, "fused.", 6) == 0) parse_group(ps, f);
        else parse_op(ps, f);
    }
    parse_return(ps, f);
    expect_char(ps, '}', "to close the function");
}

/* ---- cfunc ---------------------------------------------------------------------------- */

#define CF_MAX_PARAMS 64

/* '%N': an earlier node of the cfunc being read. */
static int read_node_ref(Parser *ps, int n_nodes) {
    char word[MAX_WORD];
    const char *at = read_name(ps, '%', word, "a node");
    char *end;
    long i = strtol(word, &end, 10);
    if (*end || i < 0 || i >= n_nodes) fail_at(ps, at, "%%%s is not an earlier node", word);
    return (int)i;
}

static void parse_cfunc_node(Parser *ps, const char *const *params, int n_params) {
    char word[MAX_WORD];
    const char *at = read_name(ps, '%', word, "a node");
    char *end;
    if (strtol(word, &end, 10) != ps->nodes.n || *end)
        fail_at(ps, at, "expected node %%%d", ps->nodes.n);
    expect_char(ps, '=', "after the node");
    const char *kat = read_word(ps, word, "a node kind");
    int kind = cf_kind_from_name(word);
    if (kind < 0) fail_at(ps, kat, "unknown node kind '%s'", word);
    if (kind == CF_CONST) {
        AttrValue v;
        parse_value_as(ps, ATTR_FLOAT, &v, "constant");
        cfb_const(&ps->nodes, v.f);
    } else if (kind == CF_ARG) {
        expect_char(ps, '(', "before the parameter");
        const char *pat = read_name(ps, '%', word, "a parameter");
        int i = 0;
        while (i < n_params && strcmp(params[i], word) != 0) i++;
        if (i == n_params) fail_at(ps, pat, "unknown parameter %%%s", word);
        expect_char(ps, ')', "after the parameter");
        cfb_arg(&ps->nodes, i);
    } else {
        int ops[3] = {-1, -1, -1};
        expect_char(ps, '(', "before the operands");
        for (int k = 0; k < cf_arity(kind); k++) {
            if (k) expect_char(ps, ',', "between operands");
            ops[k] = read_node_ref(ps, ps->nodes.n);
        }
        expect_char(ps, ')', "after the operands");
        cfb_node(&ps->nodes, kind, ops[0], ops[1], ops[2]);
    }
    if (ps->nodes.failed) fail_at(ps, at, "too many nodes");
}

static SrcLoc parse_cfunc_loc(Parser *ps) {
    AttrValue file;
    parse_value_as(ps, ATTR_STRING, &file, "source file");
    expect_char(ps, ':', "after the source file");
    int64_t line = read_int(ps, "line");
    expect_char(ps, ':', "after the line");
    int64_t col = read_int(ps, "column");
    return (SrcLoc){file.s, (int)line, (int)col};
}

static void parse_cfunc_grads(Parser *ps, int n_params, const char **grads) {
    expect_char(ps, '=', "after 'grads'");
    expect_char(ps, '[', "to open the gradient list");
    for (int i = 0; i < n_params; i++) {
        if (i) expect_char(ps, ',', "between gradients");
        char word[MAX_WORD];
        if (accept_char(ps, '-')) continue;
        read_name(ps, '@', word, "a gradient function");
        grads[i] = module_strdup(ps->m, word);
    }
    expect_char(ps, ']', "to close the gradient list");
}

static void parse_cfunc(Parser *ps) {
    char name[MAX_WORD], word[MAX_WORD];
    const char *at = read_name(ps, '@', name, "a function name");
    if (module_find_cfunc(ps->m, name)) fail_at(ps, at, "cfunc @%s defined twice", name);
    const char *params[CF_MAX_PARAMS];
    int n_params = 0;
    expect_char(ps, '(', "before the parameters");
    if (!accept_char(ps, ')')) {
        do {
            const char *pat = read_name(ps, '%', word, "a parameter");
            if (n_params == CF_MAX_PARAMS) fail_at(ps, pat, "more than %d parameters", CF_MAX_PARAMS);
            params[n_params++] = module_strdup(ps->m, word);
        } while (accept_char(ps, ','));
        expect_char(ps, ')', "after the parameters");
    }
    SrcLoc loc = SRCLOC_NONE;
    if (accept_keyword(ps, "at")) loc = parse_cfunc_loc(ps);
    const char *grads[CF_MAX_PARAMS] = {0};
    if (accept_keyword(ps, "grads")) parse_cfunc_grads(ps, n_params, grads);
    expect_char(ps, '{', "to open the cfunc body");
    cfb_free(&ps->nodes);
    while (!accept_keyword(ps, "return")) parse_cfunc_node(ps, params, n_params);
    skip(ps);
    const char *rat = ps->p;
    if (read_node_ref(ps, ps->nodes.n) != ps->nodes.n - 1)
        fail_at(ps, rat, "a cfunc returns its last node");
    expect_char(ps, '}', "to close the cfunc");
    CFunc *f = module_add_cfunc(ps->m, name, n_params, params, ps->nodes.nodes, ps->nodes.n, loc);
    for (int i = 0; i < n_params; i++)
        if (grads[i]) cfunc_set_grad(ps->m, f, i, grads[i]);
    char err[256];
    if (cfunc_check(f, err, sizeof err)) fail_at(ps, at, "%s", err);
}

static void parse_file(Parser *ps) {
    if (!accept_keyword(ps, "module")) fail_at(ps, ps->p, "expected 'module \"NAME\"' first");
    AttrValue name;
    parse_value_as(ps, ATTR_STRING, &name, "module name");
    ps->m->name = name.s;
    for (;;) {
        skip(ps);
        if (*ps->p == '\0') return;
        if (accept_keyword(ps, "config")) {
            parse_config(ps);
        } else if (accept_keyword(ps, "param")) {
            parse_param(ps, PARAM_WEIGHT);
        } else if (accept_keyword(ps, "buffer")) {
            parse_param(ps, PARAM_BUFFER);
        } else if (accept_keyword(ps, "state")) {
            parse_param(ps, PARAM_STATE);
        } else if (accept_keyword(ps, "derived")) {
            parse_param(ps, PARAM_DERIVED);
        } else if (accept_keyword(ps, "hparam")) {
            parse_param(ps, PARAM_HPARAM);
        } else if (accept_keyword(ps, "train_group")) {
            parse_train_group(ps);
        } else if (accept_keyword(ps, "train")) {
            parse_train(ps);
        } else if (accept_keyword(ps, "func")) {
            parse_function(ps);
        } else if (accept_keyword(ps, "cfunc")) {
            parse_cfunc(ps);
        } else {
            fail_at(ps, ps->p,
                    "expected 'config', 'train', 'param', 'buffer', 'state', 'derived', "
                    "'hparam', 'cfunc' or 'func'");
        }
    }
}

/* setjmp lives in its own frame: the parser state it guards is reached through a pointer
 * that never changes, so nothing is left indeterminate after a longjmp. */
static int parse_guarded(Parser *ps) {
    if (setjmp(ps->fail) != 0) return -1;
    parse_file(ps);
    return 0;
}

Module *ir_parse(const char *text, const char *filename, Diag *d) {
    Diag scratch;
    Parser ps = {.text = text, .p = text, .filename = filename, .d = d ? d : &scratch};
    diag_clear(ps.d);
    ps.m = module_new("");
    if (!ps.m) {
        diag_msg(ps.d, "1:1: out of memory");
        return NULL;
    }
    ps.file_in_module = filename ? module_strdup(ps.m, filename) : NULL;
    int rc = parse_guarded(&ps);
    free(ps.ins);
    cfb_free(&ps.nodes);
    if (rc != 0) {
        module_free(ps.m);
        return NULL;
    }
    return ps.m;
}
