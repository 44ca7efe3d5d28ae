/*
 * Fuzz target: where the cost goes in an answer's usage (nebula_usage.c).
 * Whatever the bytes, read as a JSON document and as an SSE event: no
 * read past them, and a place found is a closing brace within them, with
 * a "usage" key before it.
 */

#include <stdlib.h>
#include <string.h>

#include "nebula_usage.h"


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    int             sse, empty;
    size_t          off;
    unsigned char  *p;

    /* a copy of its own size: ASan sees a read past it */
    p = malloc(size ? size : 1);
    if (p == NULL) {
        return 0;
    }

    memcpy(p, data, size);

    for (sse = 0; sse < 2; sse++) {
        if (nebula_usage_close(p, size, sse, &off, &empty) != 0) {
            continue;
        }

        if (off >= size || p[off] != '}' || off < 10) {
            abort();
        }

        if (empty && p[off - 1] != '{' && p[off - 1] != ' '
            && p[off - 1] != '\t' && p[off - 1] != '\r' && p[off - 1] != '\n')
        {
            abort();
        }
    }

    free(p);

    return 0;
}
