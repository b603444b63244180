/* diag.c — filling and printing user-facing errors (diag.h).
 *
 * The printer reopens the file named in the location to show the offending line with a
 * caret under the column, as compilers do; if the file cannot be read (a model given as text
 * in a test), the first line alone still says everything.
 */
#include "diag.h"
#include "files.h"
#include "strbuf.h"

#include <stdlib.h>
#include <string.h>

const char DIAG_FILE_IN_DIAG[] = "<the file named in the Diag>";

void diag_vset(Diag *d, SrcLoc loc, const char *fmt, va_list ap) {
    diag_vmsg(d, fmt, ap);
    d->loc = loc;
}

void diag_clear(Diag *d) {
    d->msg[0] = '\0';
    d->loc = SRCLOC_NONE;
}

void diag_vmsg(Diag *d, const char *fmt, va_list ap) {
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
}

void diag_msg(Diag *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vmsg(d, fmt, ap);
    va_end(ap);
}

int diag_internal(Diag *d, SrcLoc loc, const char *fmt, ...) {
    char msg[sizeof d->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    diag_set(d, loc, "internal error: %s (this is a bug in capc)", msg);
    return -1;
}

int diag_path_error(Diag *d, const char *what, const char *path, int err) {
    diag_set(d, SRCLOC_NONE, "cannot %s '%.900s': %s", what, path, strerror(err));
    return -1;
}

void diag_set(Diag *d, SrcLoc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vset(d, loc, fmt, ap);
    va_end(ap);
}

/* Reads line `line` (1-based) of path into a malloc'd string without its newline. */
static char *read_line(const char *path, int line) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    StrBuf buf = {0};
    int cur = 1, c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '\n') {
            if (cur == line) break;
            cur++;
            continue;
        }
        if (cur == line && !strbuf_putc(&buf, (char)c)) break;
    }
    fclose(f);
    if (cur != line) {
        strbuf_free(&buf);
        return NULL;
    }
    size_t len = buf.len;
    char *text = strbuf_take(&buf);
    if (text && len && text[len - 1] == '\r') text[len - 1] = '\0';
    return text;
}

static void print_caret(FILE *out, const SrcLoc *loc) {
    char *text = read_line(loc->file, loc->line);
    if (!text) return;
    fprintf(out, "  %s\n  ", text);
    /* Keep tabs so the caret lines up with what the terminal showed above. */
    size_t len = strlen(text);
    for (int i = 0; i < loc->col - 1; i++) fputc((size_t)i < len && text[i] == '\t' ? '\t' : ' ', out);
    fputs("^\n", out);
    free(text);
}

void diag_set_in_file(Diag *d, const char *file, int line, int col, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vset(d, (SrcLoc){DIAG_FILE_IN_DIAG, line, col}, fmt, ap);
    va_end(ap);
    snprintf(d->file, sizeof d->file, "%s", file);
}

void diag_print(FILE *out, const Diag *d) {
    SrcLoc owned = d->loc;
    if (owned.file == DIAG_FILE_IN_DIAG) owned.file = d->file;
    const SrcLoc *loc = &owned;
    if (!loc->file) {
        fprintf(out, "capc: error: %s\n", d->msg);
    } else if (loc->line <= 0) {
        fprintf(out, "%s: error: %s\n", loc->file, d->msg);
    } else {
        fprintf(out, "%s:%d:%d: error: %s\n", loc->file, loc->line, loc->col, d->msg);
        print_caret(out, loc);
    }
}

int diag_make_dirs(Diag *d, const char *dir) {
    char failed[4096];
    int err = file_make_dirs(dir, failed, sizeof failed);
    return err ? diag_path_error(d, "create directory", failed, err) : 0;
}
