/* json_loc.h — JSON parsing with source positions.
 *
 * cJSON builds the tree but records no positions. JsonDoc pairs the cJSON tree with a side
 * table, filled by our own scanner over the same text, that gives every value its byte offset
 * (and, for object members, the offset of its key), so errors can point at `line:col`. The
 * scanner also validates the text first, which lets malformed JSON be reported with a useful
 * message ("expected ',' or '}'") at the right place, and it rejects duplicate keys in one
 * object (cJSON would silently keep both).
 */
#ifndef CAPC_JSON_LOC_H
#define CAPC_JSON_LOC_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "ir.h"

typedef struct JsonSpan JsonSpan;

typedef struct JsonDoc {
    cJSON *root;
    const char *text; /* not owned: must outlive the doc */
    size_t len;
    const char *file; /* not owned: used in every SrcLoc the doc hands out */
    JsonSpan *spans;  /* one per JSON value, sorted by node pointer for lookup */
    size_t n_spans;
    size_t *line_starts; /* byte offset where each line begins */
    size_t n_lines;
} JsonDoc;

/* Parses text into doc. Returns 0, or -1 with d filled ("malformed JSON: ...", or
 * "duplicate key 'x'") at the offending position; doc is then empty (json_doc_free is still
 * safe to call). */
int json_doc_parse(JsonDoc *doc, const char *text, size_t len, const char *file, Diag *d);
void json_doc_free(JsonDoc *doc);

/* True when node is a value of this document (a model reads several: imports, extends). */
bool json_doc_has(const JsonDoc *doc, const cJSON *node);
/* Location of a node's value (its first character). NULL node or unknown node: the file with
 * line 0, which diag prints as just the file name. */
SrcLoc json_loc(const JsonDoc *doc, const cJSON *node);
/* Location of an object member's key; for a node without a key, its value's location. */
SrcLoc json_key_loc(const JsonDoc *doc, const cJSON *node);
/* Location of the character that is byte `index` of the decoded string value of node (a JSON
 * string), accounting for escapes; used to point inside expressions. */
SrcLoc json_string_loc(const JsonDoc *doc, const cJSON *node, size_t index);
/* Location of a byte offset in the text. */
SrcLoc json_offset_loc(const JsonDoc *doc, size_t offset);

/* For a JSON number: true when its text is an integer (no '.', 'e' or 'E'), so "3" stays an
 * int and "3.0" a real, as the expression language keeps them. */
bool json_number_is_int(const JsonDoc *doc, const cJSON *node);

/* Short English name of a node's JSON type: "a string", "a number", "a list", ... */
const char *json_type_name(const cJSON *node);

#endif
