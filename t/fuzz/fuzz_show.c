/*
 * Fuzz target: a pool's answer to /api/show made the catalog's
 * (nebula_show.c).  Whatever the bytes, no crash, no leak; an answer it
 * rewrites is one JSON object again, in which no string names the
 * upstream's model any more, and rewriting it again changes nothing.
 */

#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "nebula_show.h"


static nebula_show_t  show = {
    (const unsigned char *) "up:1", 4,
    (const unsigned char *) "public/model:x", 14,
    4096
};


static unsigned char *
alloc(void *data, size_t size)
{
    (void) data;
    return malloc(size);
}


static int
found_up(void *ctx, const unsigned char *s, size_t len)
{
    size_t  i;

    for (i = 0; i + 4 <= len; i++) {
        if (memcmp(s + i, "up:1", 4) == 0) {
            *(int *) ctx = 1;
        }
    }

    return 1;
}


static yajl_callbacks  strings = {
    NULL, NULL, NULL, NULL, NULL, found_up, NULL, NULL, NULL, NULL, NULL
};


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    int             up;
    size_t          n, n2;
    yajl_handle     h;
    unsigned char  *out, *again;

    if (nebula_show_rewrite(&show, data, size, alloc, NULL, &out, &n) != 0) {
        return 0;
    }

    up = 0;
    h = yajl_alloc(&strings, NULL, &up);

    if (h == NULL) {
        free(out);
        return 0;
    }

    if (yajl_parse(h, out, n) != yajl_status_ok
        || yajl_complete_parse(h) != yajl_status_ok
        || up)
    {
        abort();
    }

    yajl_free(h);

    if (nebula_show_rewrite(&show, out, n, alloc, NULL, &again, &n2) != 0
        || n2 != n || memcmp(again, out, n) != 0)
    {
        abort();
    }

    free(again);
    free(out);

    return 0;
}
