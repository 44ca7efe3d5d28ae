/*
 * Nebula: a pool's answer to POST /api/show, made the catalog's (see
 * nebula_show.h).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "nebula_show.h"


/* deeper than any answer of Ollama's: refused, as yajl_gen's own limit */
#define NEBULA_SHOW_MAX_DEPTH  64


typedef struct {
    const nebula_show_t  *show;
    yajl_gen              gen;
    unsigned              depth;          /* containers open */
    unsigned              in_info;        /* depth of model_info, or 0 */
    unsigned              info_key;       /* the top key is model_info */
    unsigned              context_key;    /* ... a .context_length in it */
    unsigned              top;            /* the document is an object */
    unsigned char        *buf;            /* a string with the name put */
    size_t                size;
} show_ctx_t;


static int
ends_with(const unsigned char *s, size_t len, const char *tail)
{
    size_t  n = strlen(tail);

    return len >= n && memcmp(s + len - n, tail, n) == 0;
}


static int
show_null(void *ctx)
{
    return yajl_gen_null(((show_ctx_t *) ctx)->gen) == yajl_gen_status_ok;
}


static int
show_boolean(void *ctx, int v)
{
    return yajl_gen_bool(((show_ctx_t *) ctx)->gen, v) == yajl_gen_status_ok;
}


static int
show_number(void *ctx, const char *s, size_t len)
{
    char         num[24];
    show_ctx_t  *c = ctx;

    if (c->context_key && c->depth == c->in_info) {
        len = (size_t) snprintf(num, sizeof(num), "%llu",
                                (unsigned long long) c->show->context);
        s = num;
    }

    c->context_key = 0;

    return yajl_gen_number(c->gen, s, len) == yajl_gen_status_ok;
}


/* the string, every occurrence of the upstream's name made the public one */
static int
show_string(void *ctx, const unsigned char *s, size_t len)
{
    size_t                i, n, need;
    unsigned char        *p;
    show_ctx_t           *c = ctx;
    const nebula_show_t  *sh = c->show;

    c->context_key = 0;

    if (sh->upstream_len == 0 || len < sh->upstream_len
        || (sh->upstream_len == sh->name_len
            && memcmp(sh->upstream, sh->name, sh->name_len) == 0))
    {
        return yajl_gen_string(c->gen, s, len) == yajl_gen_status_ok;
    }

    /* at most len / upstream_len names, each name_len long */
    n = len / sh->upstream_len;
    need = len + n * (sh->name_len > sh->upstream_len
                      ? sh->name_len - sh->upstream_len : 0);

    if (need > c->size) {
        p = realloc(c->buf, need);
        if (p == NULL) {
            return 0;
        }

        c->buf = p;
        c->size = need;
    }

    p = c->buf;
    i = 0;

    while (i < len) {
        if (len - i >= sh->upstream_len
            && memcmp(s + i, sh->upstream, sh->upstream_len) == 0)
        {
            memcpy(p, sh->name, sh->name_len);
            p += sh->name_len;
            i += sh->upstream_len;
            continue;
        }

        *p++ = s[i++];
    }

    return yajl_gen_string(c->gen, c->buf, p - c->buf) == yajl_gen_status_ok;
}


static int
show_map_key(void *ctx, const unsigned char *key, size_t len)
{
    show_ctx_t  *c = ctx;

    c->info_key = (c->depth == 1 && len == 10
                   && memcmp(key, "model_info", 10) == 0);
    c->context_key = (c->in_info && c->depth == c->in_info
                      && ends_with(key, len, ".context_length"));

    return yajl_gen_string(c->gen, key, len) == yajl_gen_status_ok;
}


static int
show_open(show_ctx_t *c, int map)
{
    if (c->depth == 0) {
        if (!map) {
            return 0;       /* not an object: no answer of /api/show */
        }

        c->top = 1;
    }

    if (++c->depth > NEBULA_SHOW_MAX_DEPTH) {
        return 0;
    }

    if (map && c->info_key && c->depth == 2) {
        c->in_info = 2;
    }

    c->info_key = 0;
    c->context_key = 0;

    return (map ? yajl_gen_map_open(c->gen) : yajl_gen_array_open(c->gen))
           == yajl_gen_status_ok;
}


static int
show_start_map(void *ctx)
{
    return show_open(ctx, 1);
}


static int
show_start_array(void *ctx)
{
    return show_open(ctx, 0);
}


static int
show_end_map(void *ctx)
{
    show_ctx_t  *c = ctx;

    if (c->depth == c->in_info) {
        c->in_info = 0;
    }

    c->depth--;

    return yajl_gen_map_close(c->gen) == yajl_gen_status_ok;
}


static int
show_end_array(void *ctx)
{
    show_ctx_t  *c = ctx;

    c->depth--;

    return yajl_gen_array_close(c->gen) == yajl_gen_status_ok;
}


static yajl_callbacks  show_callbacks = {
    show_null,
    show_boolean,
    NULL,
    NULL,
    show_number,
    show_string,
    show_start_map,
    show_map_key,
    show_end_map,
    show_start_array,
    show_end_array
};


int
nebula_show_rewrite(const nebula_show_t *show, const unsigned char *in,
    size_t len, nebula_show_alloc_pt alloc, void *data, unsigned char **out,
    size_t *out_len)
{
    int                   rc;
    size_t                n;
    yajl_handle           h;
    show_ctx_t            c;
    const unsigned char  *buf;

    memset(&c, 0, sizeof(c));
    c.show = show;
    *out = NULL;
    *out_len = 0;

    c.gen = yajl_gen_alloc(NULL);
    if (c.gen == NULL) {
        return -1;
    }

    h = yajl_alloc(&show_callbacks, NULL, &c);
    if (h == NULL) {
        yajl_gen_free(c.gen);
        return -1;
    }

    rc = -1;

    if (yajl_parse(h, in, len) == yajl_status_ok
        && yajl_complete_parse(h) == yajl_status_ok
        && c.top
        && yajl_gen_get_buf(c.gen, &buf, &n) == yajl_gen_status_ok)
    {
        *out = alloc(data, n + 1);

        if (*out) {
            memcpy(*out, buf, n);
            (*out)[n] = '\n';
            *out_len = n + 1;
            rc = 0;
        }
    }

    yajl_free(h);
    yajl_gen_free(c.gen);
    free(c.buf);

    return rc;
}
