/* arena.c — bump allocation from a list of malloc'd chunks; see arena.h. */
#include "arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ir.h"

/* Chunks grow from ARENA_FIRST_CHUNK to ARENA_CHUNK_SIZE, doubling: a module's arena soon
 * allocates 64 KiB at a time, while the many small arenas (one per kernel description, tens
 * of thousands in a deep model) stay small. */
enum { ARENA_FIRST_CHUNK = 2 * 1024, ARENA_CHUNK_SIZE = 64 * 1024 };

typedef struct ArenaChunk {
    struct ArenaChunk *next;
    size_t size, used;
    alignas(max_align_t) unsigned char data[];
} ArenaChunk;

Arena *arena_new(void) { return calloc(1, sizeof(Arena)); }

void arena_free(Arena *a) {
    if (!a) return;
    ArenaChunk *c = a->head;
    while (c) {
        ArenaChunk *next = c->next;
        free(c);
        c = next;
    }
    free(a);
}

static size_t align_up(size_t n) {
    size_t al = alignof(max_align_t);
    return (n + al - 1) / al * al;
}

/* A request bigger than a chunk gets a chunk of its own, so big arrays waste nothing. `last`
 * is the size of the newest chunk (0 for none): the next one is twice that, up to the cap. */
static ArenaChunk *chunk_new(size_t need, size_t last) {
    size_t grow = last == 0 ? ARENA_FIRST_CHUNK : last >= ARENA_CHUNK_SIZE / 2 ? ARENA_CHUNK_SIZE : 2 * last;
    size_t size = need > grow ? need : grow;
    ArenaChunk *c = malloc(sizeof(ArenaChunk) + size);
    if (!c) ir_bug("out of memory allocating %zu bytes", size);
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

void *arena_alloc(Arena *a, size_t size) {
    size_t n = align_up(size ? size : 1);
    ArenaChunk *c = a->head;
    if (!c || c->size - c->used < n) {
        ArenaChunk *fresh = chunk_new(n, c ? c->size : 0);
        if (c && n > ARENA_CHUNK_SIZE / 4) {
            /* A big block: keep filling the current chunk afterwards. */
            fresh->next = c->next;
            c->next = fresh;
        } else {
            fresh->next = c;
            a->head = fresh;
        }
        c = fresh;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }
