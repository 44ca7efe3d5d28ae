/*
 * Fuzz target: a pool's answer to /api/ps made the catalog's
 * (nebula_ps.c).  Whatever the bytes, no crash, no leak; what it writes
 * is, inside {"models":[ ]}, one JSON document again, each entry of which
 * has a context and names only public models; and filtering that for the
 * one model published under its own name writes what filtering the input
 * for it wrote.
 */

#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "nebula_ps.h"


#define U(s)  (const unsigned char *) s, sizeof(s) - 1

/* two public names on one upstream, and a name with no tag */
static nebula_ps_model_t  models[] = {
    { U("up:1"), U("up:1"), 4096 },
    { U("up:1"), U("pub/a"), 8192 },
    { U("bare"), U("pub/b"), 1 }
};


static unsigned char *
alloc(void *data, size_t size)
{
    (void) data;
    return malloc(size);
}


/* a "name" or "model" the entry has is a public name */
static int
public_name(yajl_val e, const char *key)
{
    const char  *path[] = { key, NULL };
    yajl_val     v;

    v = yajl_tree_get(e, path, yajl_t_any);

    return v == NULL
           || (YAJL_IS_STRING(v)
               && (strcmp(v->u.string, "up:1") == 0
                   || strcmp(v->u.string, "pub/a") == 0
                   || strcmp(v->u.string, "pub/b") == 0));
}


static int
published(const unsigned char *doc)
{
    int          good;
    char         err[64];
    size_t       i;
    yajl_val     v, list, e;
    const char  *models_path[] = { "models", NULL };
    const char  *context_path[] = { "context_length", NULL };

    v = yajl_tree_parse((const char *) doc, err, sizeof(err));
    list = yajl_tree_get(v, models_path, yajl_t_array);
    good = (list != NULL);

    for (i = 0; good && i < list->u.array.len; i++) {
        e = list->u.array.values[i];
        good = YAJL_IS_OBJECT(e)
               && public_name(e, "name") && public_name(e, "model")
               && YAJL_IS_INTEGER(yajl_tree_get(e, context_path,
                                                yajl_t_number));
    }

    yajl_tree_free(v);

    return good;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t          n, n1, n2, count, count1, count2;
    unsigned char  *out, *doc, *one, *again;

    if (nebula_ps_filter(models, 3, data, size, alloc, NULL, &out, &n,
                         &count)
        != 0)
    {
        return 0;
    }

    if ((n == 0) != (count == 0)) {
        abort();
    }

    doc = malloc(n + 14);
    if (doc == NULL) {
        free(out);
        return 0;
    }

    memcpy(doc, "{\"models\":[", 11);
    if (n) {
        memcpy(doc + 11, out, n);
    }
    memcpy(doc + 11 + n, "]}", 3);

    if (!published(doc)) {
        abort();
    }

    /* each entry of "up:1" comes back as it was, with nothing else */
    if (nebula_ps_filter(models, 1, data, size, alloc, NULL, &one, &n1,
                         &count1)
        != 0
        || nebula_ps_filter(models, 1, doc, n + 13, alloc, NULL, &again, &n2,
                            &count2)
           != 0
        || n1 != n2 || count1 != count2 || 2 * count1 > count
        || (n1 && memcmp(one, again, n1) != 0))
    {
        abort();
    }

    free(one);
    free(again);
    free(doc);
    free(out);

    return 0;
}
