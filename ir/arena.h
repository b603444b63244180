/* arena.h — a bump allocator of malloc'd chunks (internal to ir/).
 *
 * A Module allocates its strings, values and ops here and frees them all at once in
 * module_free(); nothing allocated from an arena is freed individually. The arena also
 * carries the module's value-name index (ir.c) because Module's layout is a public contract
 * that has no room for it.
 */
#ifndef CAPC_ARENA_H
#define CAPC_ARENA_H

#include <stddef.h>

struct ArenaChunk;
struct NameIndex;

typedef struct Arena {
    struct ArenaChunk *head; /* newest chunk first */
    struct NameIndex *names; /* owned by ir.c; freed by module_free */
} Arena;

/* Returns NULL if out of memory. */
Arena *arena_new(void);
void arena_free(Arena *a);
/* Zeroed memory aligned for any type; aborts (ir_bug) if malloc fails, since the IR has no
 * way to report allocation failure through its builder API. */
void *arena_alloc(Arena *a, size_t size);
char *arena_strdup(Arena *a, const char *s);
char *arena_strndup(Arena *a, const char *s, size_t n);

#endif
