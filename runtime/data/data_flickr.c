/* data_flickr.c — Flickr30k (and Flickr8k) captions in their two common forms:
 *   the original token file:  1000092795.jpg#0<TAB>Two young guys with shaggy hair ...
 *                             (one caption per line; "#N" is optional; blank lines ignored)
 *   Kaggle's CSV:             image,caption            <- this header line is required
 *                             1000092795.jpg,"Two young guys, with shaggy hair ..."
 *                             (RFC 4180: quoted fields may hold commas, newlines and "" for ";
 *                             every row has exactly two fields; \n, \r\n or \r line ends)
 * The form is told by the first line: `image,caption` (any case, after a UTF-8 BOM) is CSV,
 * anything else the token file. Lines end at \n, \r\n or a lone \r (old Mac files), as in
 * Python's universal newlines. NUL bytes are dropped with a warning before parsing, so that
 * they cannot end the text early. Images come into being with their first caption, in file
 * order; an image's id is the number its file name starts with; names without one get ids
 * after the largest such number once the file is read (so no two images share an id).
 * Neither form has splits: they come from the spec's split= rule (default: data_hash_split
 * of the file name). Errors name the file and line: a line without a tab, an unterminated
 * quoted field, a stray quote, a row with another number of fields, two images with one id.
 */
#include "data_internal.h"
#include "strbuf.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Reader {
    DataBuilder *b;
    const char *path;
    DataSplitRule rule;
    char *err;
    size_t err_size;
} Reader;

static CapStatus nomem(const Reader *r) {
    return data_fail(r->err, r->err_size, CAP_E_NOMEM, "%s: out of memory", r->path);
}

/* The number name starts with, or DB_NO_ID. At most 15 digits: ids go into JSON results
 * files as numbers, which are exact only below 2^53 (the JSON readers' 9e15 bound). */
static int64_t name_id(const char *name) {
    size_t digits = strspn(name, "0123456789");
    return digits >= 1 && digits <= 15 ? strtoll(name, NULL, 10) : DB_NO_ID;
}

/* Adds caption to the image named name (created on first sight). */
static CapStatus add_pair(Reader *r, const char *name, const char *caption, size_t len, int line) {
    char where[1200];
    snprintf(where, sizeof where, "%s:%d", r->path, line);
    if (!*name) return data_fail(r->err, r->err_size, CAP_E_FORMAT, "%s: empty image name", where);
    int32_t img = db_find_image(r->b, name);
    if (img < 0) {
        CapStatus st = db_add_image(r->b, name, name, name_id(name),
                                    data_rule_split(r->rule, name), where, &img);
        if (st) return st;
    }
    return db_add_caption(r->b, img, caption, len, where) ? nomem(r) : CAP_OK;
}

/* Images without a number in their name: ids after the largest one, in file order. */
static void assign_missing_ids(Dataset *ds) {
    int64_t next = 0;
    for (int32_t i = 0; i < ds->n_images; i++)
        if (ds->images[i].id != DB_NO_ID && ds->images[i].id >= next) next = ds->images[i].id + 1;
    for (int32_t i = 0; i < ds->n_images; i++)
        if (ds->images[i].id == DB_NO_ID) ds->images[i].id = next++;
}

/* Length of the line end at s: 2 for \r\n, 1 for \n or a lone \r, 0 for none. */
static size_t line_end_len(const char *s) {
    if (s[0] == '\r') return s[1] == '\n' ? 2 : 1;
    return s[0] == '\n';
}

/* Drops NUL bytes in place (warning once per line, counted with the bad UTF-8 captions) and
 * NUL-terminates the result. Why before parsing: both parsers treat NUL as the end of the
 * text, so one NUL would silently drop every line after it. */
static void drop_nul_bytes(Reader *r, char *text, size_t len) {
    size_t o = 0;
    int line = 1, warned_line = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == 0) {
            if (warned_line != line) {
                r->b->ds->stats.bad_utf8_captions++;
                db_warn(r->b, "%s:%d: NUL byte dropped", r->path, line);
                warned_line = line;
            }
            continue;
        }
        if (text[i] == '\n' || (text[i] == '\r' && (i + 1 == len || text[i + 1] != '\n'))) line++;
        text[o++] = text[i];
    }
    text[o] = 0;
}

/* ---- the token file ------------------------------------------------------------------------- */

static CapStatus token_line(Reader *r, char *line, int lineno) {
    size_t n = strlen(line);
    if (strspn(line, " \t") == n) return CAP_OK; /* blank */
    char *tab = strchr(line, '\t');
    if (!tab)
        return data_fail(r->err, r->err_size, CAP_E_FORMAT,
                         "%s:%d: expected 'IMAGE#N<TAB>caption' (no tab on this line)", r->path, lineno);
    *tab = 0;
    char *hash = strrchr(line, '#'); /* "#N" (digits) ends the name; other '#' belong to it */
    if (hash && hash[1] && hash[1 + strspn(hash + 1, "0123456789")] == 0) *hash = 0;
    return add_pair(r, line, tab + 1, strlen(tab + 1), lineno);
}

static CapStatus read_token_file(Reader *r, char *text) {
    int lineno = 1;
    for (char *line = text; *line; lineno++) {
        char *end = line + strcspn(line, "\r\n");
        size_t skip = line_end_len(end);
        *end = 0;
        CapStatus st = token_line(r, line, lineno);
        if (st) return st;
        line = end + skip;
    }
    return CAP_OK;
}

/* ---- CSV ------------------------------------------------------------------------------------ */

#define CSV_MAX_FIELDS 16

typedef struct CsvRow {
    StrBuf fields; /* the fields, each NUL-terminated */
    size_t start[CSV_MAX_FIELDS];
    int n;
} CsvRow;

static int is_row_end(char c) {
    return c == ',' || c == '\n' || c == '\r' || c == 0;
}

/* A quoted field at text[*p] == '"'. */
static CapStatus csv_quoted(Reader *r, const char *text, size_t *p, int *line, CsvRow *row) {
    int open_line = *line;
    size_t i = *p + 1;
    for (;;) {
        char c = text[i];
        if (c == 0)
            return data_fail(r->err, r->err_size, CAP_E_FORMAT,
                             "%s:%d: unterminated quoted field (the quote opens on this line)",
                             r->path, open_line);
        if (c == '"' && text[i + 1] == '"') {
            if (!strbuf_putc(&row->fields, '"')) return nomem(r);
            i += 2;
            continue;
        }
        if (c == '"') break;
        if (c == '\n' || (c == '\r' && text[i + 1] != '\n')) (*line)++;
        if (!strbuf_putc(&row->fields, c)) return nomem(r);
        i++;
    }
    i++;
    if (!is_row_end(text[i]))
        return data_fail(r->err, r->err_size, CAP_E_FORMAT,
                         "%s:%d: '%c' after a closing quote (write a quote inside a quoted field "
                         "as \"\")", r->path, *line, text[i]);
    *p = i;
    return CAP_OK;
}

static CapStatus csv_plain(Reader *r, const char *text, size_t *p, int line, CsvRow *row) {
    size_t i = *p;
    for (; !is_row_end(text[i]); i++) {
        if (text[i] == '"')
            return data_fail(r->err, r->err_size, CAP_E_FORMAT,
                             "%s:%d: quote inside an unquoted field (quote the whole field and "
                             "double the quote)", r->path, line);
        if (!strbuf_putc(&row->fields, text[i])) return nomem(r);
    }
    *p = i;
    return CAP_OK;
}

/* Reads the row at text[*p] into row; *line advances past it. */
static CapStatus csv_row(Reader *r, const char *text, size_t *p, int *line, CsvRow *row) {
    strbuf_clear(&row->fields);
    row->n = 0;
    for (;;) {
        if (row->n == CSV_MAX_FIELDS)
            return data_fail(r->err, r->err_size, CAP_E_FORMAT, "%s:%d: too many fields", r->path, *line);
        row->start[row->n++] = row->fields.len;
        CapStatus st = text[*p] == '"' ? csv_quoted(r, text, p, line, row)
                                       : csv_plain(r, text, p, *line, row);
        if (st) return st;
        if (!strbuf_putc(&row->fields, 0)) return nomem(r);
        if (text[*p] != ',') break;
        (*p)++;
    }
    size_t skip = line_end_len(text + *p);
    *p += skip;
    if (skip) (*line)++;
    return CAP_OK;
}

static CapStatus read_csv(Reader *r, const char *text) {
    CsvRow row = {0};
    size_t p = 0;
    int line = 1;
    CapStatus st = csv_row(r, text, &p, &line, &row); /* the header, checked by the caller */
    while (!st && text[p]) {
        int row_line = line;
        st = csv_row(r, text, &p, &line, &row);
        if (st) break;
        if (row.n == 1 && row.fields.data[0] == 0) continue; /* blank line */
        if (row.n != 2) {
            st = data_fail(r->err, r->err_size, CAP_E_FORMAT,
                           "%s:%d: expected 2 fields (image,caption), found %d", r->path, row_line, row.n);
            break;
        }
        const char *cap = row.fields.data + row.start[1];
        st = add_pair(r, row.fields.data, cap, strlen(cap), row_line);
    }
    strbuf_free(&row.fields);
    return st;
}

static int is_csv_header(const char *text) {
    static const char header[] = "image,caption";
    for (size_t i = 0; i < sizeof header - 1; i++)
        if (tolower((unsigned char)text[i]) != header[i]) return 0;
    char c = text[sizeof header - 1];
    return c == '\n' || c == '\r' || c == 0;
}

CapStatus data_load_flickr30k(const char *path, const char *image_dir, DataSplitRule rule,
                              Dataset **out, char *err, size_t err_size) {
    *out = NULL;
    char *text;
    size_t len;
    CapStatus st = data_read_file(path, &text, &len, err, err_size);
    if (st) return st;
    DataBuilder b;
    if ((st = db_init(&b, DATA_FLICKR30K, path, image_dir, err, err_size))) {
        free(text);
        return st;
    }
    Reader r = {&b, path, rule, err, err_size};
    drop_nul_bytes(&r, text, len);
    char *body = strncmp(text, "\xEF\xBB\xBF", 3) == 0 ? text + 3 : text;
    st = is_csv_header(body) ? read_csv(&r, body) : read_token_file(&r, body);
    free(text);
    if (st) {
        db_abort(&b);
        return st;
    }
    assign_missing_ids(b.ds);
    return db_finish(&b, out, err, err_size);
}
