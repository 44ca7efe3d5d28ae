/*
 * Nebula: yajl's memory for one parse (see nebula_arena.h).
 */

#include <stdlib.h>
#include <string.h>

#include "nebula_arena.h"


#define ARENA_SIZE   NEBULA_ARENA_SIZE
#define ARENA_ALIGN  NEBULA_ARENA_ALIGN


/* a block is its size, in ARENA_ALIGN bytes before it, then its bytes */
static int
arena_has(nebula_arena_t *a, void *ptr)
{
    return (unsigned char *) ptr >= a->buf
           && (unsigned char *) ptr < a->buf + ARENA_SIZE;
}


static void *
arena_malloc(void *ctx, size_t size)
{
    size_t           n;
    nebula_arena_t  *a;

    a = ctx;
    n = ARENA_ALIGN + ((size + ARENA_ALIGN - 1) & ~(size_t) (ARENA_ALIGN - 1));

    if (size > ARENA_SIZE || n > ARENA_SIZE - a->used) {
        return malloc(size);
    }

    memcpy(a->buf + a->used, &size, sizeof(size_t));
    a->last = a->used;
    a->used += n;

    return a->buf + a->last + ARENA_ALIGN;
}


static void
arena_free(void *ctx, void *ptr)
{
    nebula_arena_t  *a;

    a = ctx;

    if (!arena_has(a, ptr)) {
        free(ptr);
    }

    /* the arena's blocks go with the parse */
}


static void *
arena_realloc(void *ctx, void *ptr, size_t size)
{
    size_t           old, n;
    nebula_arena_t  *a;
    unsigned char   *p;

    a = ctx;

    if (ptr == NULL) {
        return arena_malloc(ctx, size);
    }

    if (!arena_has(a, ptr)) {
        return realloc(ptr, size);
    }

    p = ptr;
    memcpy(&old, p - ARENA_ALIGN, sizeof(size_t));

    if (size <= old) {
        return ptr;
    }

    n = ARENA_ALIGN + ((size + ARENA_ALIGN - 1) & ~(size_t) (ARENA_ALIGN - 1));

    if (p - ARENA_ALIGN == a->buf + a->last && size <= ARENA_SIZE
        && n <= ARENA_SIZE - a->last)
    {
        /* the last block grows where it is */
        memcpy(p - ARENA_ALIGN, &size, sizeof(size_t));
        a->used = a->last + n;
        return ptr;
    }

    p = arena_malloc(ctx, size);

    if (p != NULL) {
        memcpy(p, ptr, old);
    }

    return p;
}


void
nebula_arena_init(nebula_arena_t *a, yajl_alloc_funcs *afs)
{
    a->used = 0;
    a->last = 0;

    afs->malloc = arena_malloc;
    afs->realloc = arena_realloc;
    afs->free = arena_free;
    afs->ctx = a;
}
