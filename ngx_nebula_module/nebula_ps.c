/*
 * Nebula: a pool's answer to GET /api/ps, made the catalog's (see
 * nebula_ps.h).
 *
 * Each entry of "models" is generated into a scratch generator in which
 * the values of "name", "model" and "context_length" are one-byte
 * placeholders (their originals are dropped, so nothing of a model's
 * upstream name can pass); at the entry's end, once it is known which
 * catalog models it runs, it is copied out once for each, the
 * placeholders filled with that model's public name and context.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "nebula_ps.h"


/* deeper than any answer of Ollama's: refused, as yajl_gen's own limit */
#define NEBULA_PS_MAX_DEPTH  64

/* containers open inside the document's object, its list, an entry */
#define PS_TOP    1
#define PS_LIST   2
#define PS_ENTRY  3


/* an entry's fields that the gateway sets */
enum {
    PS_NAME = 0,
    PS_MODEL,
    PS_CONTEXT,
    PS_FIELDS
};

#define PS_NONE  PS_FIELDS


typedef struct {
    unsigned char  *p;
    size_t          len;
    size_t          size;
} ps_buf_t;


typedef struct {
    const nebula_ps_model_t  *models;
    size_t                    n;
    yajl_gen                  entry;          /* the entry being read */
    yajl_gen                  esc;            /* a public name, escaped */
    unsigned                  depth;          /* containers open */
    unsigned                  list;           /* "models" was an array */
    unsigned                  skip;           /* a value is being dropped */
    unsigned                  skip_at;        /* ... from this depth */
    unsigned                  field;          /* ... of this field, PS_* */
    unsigned                  seen;           /* fields placed, 1 << PS_* */
    unsigned                  nph;            /* placeholders, in order: */
    unsigned                  ph_field[PS_FIELDS];
    size_t                    ph_at[PS_FIELDS];  /* their offsets */
    unsigned                  run_from;       /* run came from PS_* */
    ps_buf_t                  run;            /* the model the entry runs */
    ps_buf_t                  out;
    size_t                    count;
} ps_ctx_t;


static int
ps_put(ps_buf_t *b, const void *s, size_t len)
{
    unsigned char  *p;

    if (len == 0) {
        return 1;
    }

    if (b->size - b->len < len) {
        p = realloc(b->p, 2 * (b->len + len));
        if (p == NULL) {
            return 0;
        }

        b->p = p;
        b->size = 2 * (b->len + len);
    }

    memcpy(b->p + b->len, s, len);
    b->len += len;

    return 1;
}


/* upstream model m runs as s: the same name, or m's with Ollama's tag */
static int
ps_runs(const nebula_ps_model_t *m, const unsigned char *s, size_t len)
{
    size_t  i;

    if (m->upstream_len == 0) {
        return 0;
    }

    if (len == m->upstream_len && memcmp(s, m->upstream, len) == 0) {
        return 1;
    }

    /* a ':' before the last '/' is a registry's port, not a tag */
    for (i = m->upstream_len; i > 0 && m->upstream[i - 1] != '/'; i--) {
        if (m->upstream[i - 1] == ':') {
            return 0;
        }
    }

    return len == m->upstream_len + 7
           && memcmp(s, m->upstream, m->upstream_len) == 0
           && memcmp(s + m->upstream_len, ":latest", 7) == 0;
}


/* the entry just read, for m: the placeholders filled */
static int
ps_copy(ps_ctx_t *c, const nebula_ps_model_t *m, const unsigned char *e,
    size_t len)
{
    int                   nlen;
    char                  num[24];
    size_t                pos, qlen;
    unsigned              i;
    const unsigned char  *q;

    yajl_gen_reset(c->esc, NULL);
    yajl_gen_clear(c->esc);

    if (yajl_gen_string(c->esc, m->name, m->name_len) != yajl_gen_status_ok
        || yajl_gen_get_buf(c->esc, &q, &qlen) != yajl_gen_status_ok
        || (c->out.len && !ps_put(&c->out, ",", 1)))
    {
        return 0;
    }

    nlen = snprintf(num, sizeof(num), "%llu", (unsigned long long) m->context);
    pos = 0;
    c->count++;

    for (i = 0; i < c->nph; i++) {
        if (!ps_put(&c->out, e + pos, c->ph_at[i] - pos)
            || !(c->ph_field[i] == PS_CONTEXT ? ps_put(&c->out, num, nlen)
                                              : ps_put(&c->out, q, qlen)))
        {
            return 0;
        }

        pos = c->ph_at[i] + 1;
    }

    /* the rest but the closing brace, before which a missing context goes */
    return ps_put(&c->out, e + pos, len - 1 - pos)
           && ((c->seen & (1 << PS_CONTEXT))
               || (ps_put(&c->out, ",\"context_length\":", 18)
                   && ps_put(&c->out, num, nlen)))
           && ps_put(&c->out, "}", 1);
}


static int
ps_entry_end(ps_ctx_t *c)
{
    size_t                i, len;
    const unsigned char  *e;

    if (yajl_gen_map_close(c->entry) != yajl_gen_status_ok
        || yajl_gen_get_buf(c->entry, &e, &len) != yajl_gen_status_ok)
    {
        return 0;
    }

    for (i = 0; i < c->n; i++) {
        if (ps_runs(&c->models[i], c->run.p, c->run.len)
            && !ps_copy(c, &c->models[i], e, len))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * Every scalar: null, true and false go as a number does, since
 * yajl_gen_number() writes what it is given.  A dropped value's strings
 * tell which model the entry runs: its "model", or its "name" when it has
 * no "model".
 */
static int
ps_scalar(ps_ctx_t *c, const unsigned char *s, size_t len, int string)
{
    if (c->skip) {
        if (string && c->depth == c->skip_at
            && (c->field == PS_MODEL
                || (c->field == PS_NAME && c->run_from != PS_MODEL)))
        {
            c->run.len = 0;

            if (!ps_put(&c->run, s, len)) {
                return 0;
            }

            c->run_from = c->field;
        }

        c->skip = (c->depth != c->skip_at);
        return 1;
    }

    /* the document, "models" or an entry of it is no scalar */
    if (c->depth < PS_ENTRY) {
        return 0;
    }

    return (string ? yajl_gen_string(c->entry, s, len)
                   : yajl_gen_number(c->entry, (const char *) s, len))
           == yajl_gen_status_ok;
}


static int
ps_null(void *ctx)
{
    return ps_scalar(ctx, (const unsigned char *) "null", 4, 0);
}


static int
ps_boolean(void *ctx, int v)
{
    return ps_scalar(ctx, (const unsigned char *) (v ? "true" : "false"),
                     v ? 4 : 5, 0);
}


static int
ps_number(void *ctx, const char *s, size_t len)
{
    return ps_scalar(ctx, (const unsigned char *) s, len, 0);
}


static int
ps_string(void *ctx, const unsigned char *s, size_t len)
{
    return ps_scalar(ctx, s, len, 1);
}


static int
ps_map_key(void *ctx, const unsigned char *key, size_t len)
{
    size_t                n;
    unsigned              f;
    ps_ctx_t             *c = ctx;
    const unsigned char  *buf;

    static const char    *fields[PS_FIELDS] = {
        "name", "model", "context_length"
    };

    if (c->skip) {
        return 1;
    }

    /* of the document's keys only "models" is read */
    if (c->depth == PS_TOP) {
        c->skip = (len != 6 || memcmp(key, "models", 6) != 0);
        c->skip_at = PS_TOP;
        c->field = PS_NONE;
        return 1;
    }

    for (f = 0; c->depth == PS_ENTRY && f < PS_FIELDS; f++) {
        if (strlen(fields[f]) == len && memcmp(key, fields[f], len) == 0) {
            break;
        }
    }

    if (c->depth != PS_ENTRY || f == PS_FIELDS) {
        return yajl_gen_string(c->entry, key, len) == yajl_gen_status_ok;
    }

    /* the value goes, a placeholder in its place; a repeated key goes too,
     * lest a client read the second value */
    c->skip = 1;
    c->skip_at = PS_ENTRY;
    c->field = (c->seen & (1 << f)) ? PS_NONE : f;

    if (c->field == PS_NONE) {
        return 1;
    }

    if (yajl_gen_string(c->entry, key, len) != yajl_gen_status_ok
        || yajl_gen_number(c->entry, "0", 1) != yajl_gen_status_ok
        || yajl_gen_get_buf(c->entry, &buf, &n) != yajl_gen_status_ok)
    {
        return 0;
    }

    c->seen |= 1 << f;
    c->ph_field[c->nph] = f;
    c->ph_at[c->nph++] = n - 1;

    return 1;
}


static int
ps_open(ps_ctx_t *c, int map)
{
    unsigned  parent;

    parent = c->depth++;

    if (c->depth > NEBULA_PS_MAX_DEPTH) {
        return 0;
    }

    if (c->skip) {
        return 1;
    }

    switch (parent) {

    case 0:
        return map;

    case PS_TOP:
        c->list = !map;
        return !map;

    case PS_LIST:
        if (!map) {
            return 0;
        }

        yajl_gen_reset(c->entry, NULL);
        yajl_gen_clear(c->entry);
        c->seen = 0;
        c->nph = 0;
        c->run_from = PS_NONE;
        c->run.len = 0;

        return yajl_gen_map_open(c->entry) == yajl_gen_status_ok;

    default:
        return (map ? yajl_gen_map_open(c->entry)
                    : yajl_gen_array_open(c->entry))
               == yajl_gen_status_ok;
    }
}


static int
ps_close(ps_ctx_t *c, int map)
{
    c->depth--;

    if (c->skip) {
        c->skip = (c->depth != c->skip_at);
        return 1;
    }

    if (c->depth == PS_LIST && map) {
        return ps_entry_end(c);
    }

    return c->depth < PS_ENTRY
           || (map ? yajl_gen_map_close(c->entry)
                   : yajl_gen_array_close(c->entry))
              == yajl_gen_status_ok;
}


static int
ps_start_map(void *ctx)
{
    return ps_open(ctx, 1);
}


static int
ps_end_map(void *ctx)
{
    return ps_close(ctx, 1);
}


static int
ps_start_array(void *ctx)
{
    return ps_open(ctx, 0);
}


static int
ps_end_array(void *ctx)
{
    return ps_close(ctx, 0);
}


static yajl_callbacks  ps_callbacks = {
    ps_null,
    ps_boolean,
    NULL,
    NULL,
    ps_number,
    ps_string,
    ps_start_map,
    ps_map_key,
    ps_end_map,
    ps_start_array,
    ps_end_array
};


int
nebula_ps_filter(const nebula_ps_model_t *models, size_t n,
    const unsigned char *in, size_t len, nebula_ps_alloc_pt alloc,
    void *data, unsigned char **out, size_t *out_len, size_t *count)
{
    int          rc;
    ps_ctx_t     c;
    yajl_handle  h;

    memset(&c, 0, sizeof(c));
    c.models = models;
    c.n = n;
    *out = NULL;
    *out_len = 0;
    *count = 0;

    c.entry = yajl_gen_alloc(NULL);
    c.esc = yajl_gen_alloc(NULL);
    h = yajl_alloc(&ps_callbacks, NULL, &c);

    rc = (c.entry && c.esc && h
          && yajl_parse(h, in, len) == yajl_status_ok
          && yajl_complete_parse(h) == yajl_status_ok
          && c.list) ? 0 : -1;

    if (rc == 0 && c.out.len) {
        *out = alloc(data, c.out.len);

        if (*out) {
            memcpy(*out, c.out.p, c.out.len);
            *out_len = c.out.len;
            *count = c.count;

        } else {
            rc = -1;
        }
    }

    if (h) {
        yajl_free(h);
    }

    if (c.entry) {
        yajl_gen_free(c.entry);
    }

    if (c.esc) {
        yajl_gen_free(c.esc);
    }

    free(c.run.p);
    free(c.out.p);

    return rc;
}
