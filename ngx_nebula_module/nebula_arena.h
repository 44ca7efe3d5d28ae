/*
 * Nebula: yajl's memory for one parse, in the parse's own frame.
 *
 * A parse's handle, lexer, stacks and the buffer yajl decodes escaped
 * strings into, a few hundred bytes to a few kilobytes, are taken from a
 * block on the stack instead of five or more mallocs and frees a request.
 * What does not fit goes to malloc.  Plain C, no nginx types.
 */

#ifndef NEBULA_ARENA_H
#define NEBULA_ARENA_H

#include <stddef.h>

#include <yajl/yajl_common.h>


#define NEBULA_ARENA_SIZE   8192
#define NEBULA_ARENA_ALIGN  16

typedef struct {
    size_t                 used;
    size_t                 last;    /* offset of the last block's header */
    unsigned char          buf[NEBULA_ARENA_SIZE]
                               __attribute__((aligned(NEBULA_ARENA_ALIGN)));
} nebula_arena_t;


/* empties the arena and points yajl's allocator at it */
void nebula_arena_init(nebula_arena_t *a, yajl_alloc_funcs *afs);

#endif /* NEBULA_ARENA_H */
