/* Region allocator: everything of one stanza (tree, strings, JIDs) lives in
 * one arena and dies with it. Allocation is a pointer bump; there is no
 * per-object free. */
#ifndef PARLEY_ARENA_H
#define PARLEY_ARENA_H

#include <stddef.h>

struct arena;

/* first_chunk: size hint of the first chunk (0: a small default). */
struct arena *arena_new(size_t first_chunk);
void arena_free(struct arena *a);	      /* arena_free(NULL) is a no-op */
void *arena_alloc(struct arena *a, size_t n); /* 16-byte aligned, never NULL (aborts on OOM) */
void *arena_zalloc(struct arena *a, size_t n);
char *arena_strdup(struct arena *a, const char *s);
char *arena_strndup(struct arena *a, const char *s, size_t n); /* NUL-terminates */
size_t arena_used(const struct arena *a); /* bytes handed out plus overhead: for limits */

#endif
