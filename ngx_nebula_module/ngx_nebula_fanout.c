/*
 * Nebula: the admin's listings on a Redis Cluster: each master reads its
 * share of the accounts, the gateway puts the shares together
 * (ngx_nebula_fanout.h has what the scripts and this file agree on).
 *
 * A listing is two round trips, however many accounts and masters: the
 * index (nb:accounts, nb:keys, on the node of their slot) with plain
 * commands, then one script on each master that serves some of the ids,
 * all sent at once.  The ids go to the master this worker's map names
 * for their slot; a map that changed since (a failover, a resharding)
 * makes a node answer NONLOCAL, and the listing a 503, as any outage of
 * Redis: the client tries again, by when the map is right again.
 *
 * The merged reply has the single-node script's shape, built of copies
 * in the request's pool (hiredis frees a reply once its callback
 * returns), and goes to the endpoint's own answer, which writes the
 * JSON or the CSV as it does for one Redis.
 */

#include "ngx_nebula_records.h"
#include "ngx_nebula_fanout.h"
#include "nebula_cluster.h"


/* what a node's lists of items make */
typedef enum {
    NGX_NEBULA_FANOUT_CONCAT = 0,     /* the items, in the ids' order */
    NGX_NEBULA_FANOUT_PAGE,           /* the same, cut at a page */
    NGX_NEBULA_FANOUT_SUM             /* rows, added up by their label */
} ngx_nebula_fanout_merge_e;


/* an index, read as the single-node script reads it */
typedef enum {
    NGX_NEBULA_FANOUT_SMEMBERS = 0,
    NGX_NEBULA_FANOUT_ZRANGE,
    NGX_NEBULA_FANOUT_SORT
} ngx_nebula_fanout_read_e;


typedef struct {
    ngx_nebula_script_e          script;
    ngx_nebula_script_e          node;         /* its node variant */
    ngx_uint_t                   nkeys;        /* its KEYS: the indexes */
    ngx_nebula_fanout_read_e     read[2];
} ngx_nebula_fanout_script_t;


static ngx_nebula_fanout_script_t  ngx_nebula_fanout_scripts[] = {

    { NGX_NEBULA_SCRIPT_KEY_LIST, NGX_NEBULA_SCRIPT_KEY_LIST_NODE, 1,
      { NGX_NEBULA_FANOUT_SMEMBERS, 0 } },

    { NGX_NEBULA_SCRIPT_USAGE, NGX_NEBULA_SCRIPT_USAGE_NODE, 2,
      { NGX_NEBULA_FANOUT_SMEMBERS, NGX_NEBULA_FANOUT_ZRANGE } },

    { NGX_NEBULA_SCRIPT_ACCT_LIST, NGX_NEBULA_SCRIPT_ACCT_LIST_NODE, 1,
      { NGX_NEBULA_FANOUT_ZRANGE, 0 } },

    { NGX_NEBULA_SCRIPT_USAGE_BY, NGX_NEBULA_SCRIPT_USAGE_BY_NODE, 2,
      { NGX_NEBULA_FANOUT_ZRANGE, NGX_NEBULA_FANOUT_SORT } }
};


typedef struct ngx_nebula_fanout_s  ngx_nebula_fanout_t;

/* a command of the listing's: an index's read, or a master's script */
typedef struct {
    ngx_nebula_fanout_t         *fo;
    ngx_nebula_redis_op_t       *op;
    ngx_uint_t                   index;        /* a read's: of KEYS[i] */
    ngx_uint_t                  *pos;          /* a script's: where its ids
                                                  are in the listing */
    ngx_uint_t                   n;
} ngx_nebula_fanout_part_t;


/* a row of a sum, USAGE_BY's counts (its cost in two parts) */
typedef struct {
    ngx_str_t                    label;
    int64_t                      v[8];
} ngx_nebula_fanout_sum_t;


struct ngx_nebula_fanout_s {
    ngx_nebula_call_ctx_t       *call;
    ngx_nebula_fanout_script_t  *s;
    ngx_nebula_fanout_merge_e    merge;
    ngx_str_t                   *keys;         /* the script's KEYS */
    ngx_str_t                   *args;         /* and its ARGV */
    ngx_uint_t                   nargs;
    redisReply                  *index[2];
    ngx_str_t                   *ids;          /* in the listing's order */
    ngx_uint_t                   nids;
    ngx_uint_t                   nfirst;       /* of the first index */
    redisReply                 **items;        /* an id's list, from its
                                                  master */
    ngx_array_t                  sums;         /* of ngx_nebula_fanout_sum_t */
    ngx_nebula_fanout_part_t    *parts;
    ngx_uint_t                   nparts;
    ngx_uint_t                   waiting;
};


static void ngx_nebula_fanout_read(void *data, redisReply *reply);
static void ngx_nebula_fanout_took(void *data, redisReply *reply);


ngx_uint_t
ngx_nebula_fanout_wanted(ngx_nebula_script_e script)
{
    ngx_uint_t  i;

    for (i = 0; i < sizeof(ngx_nebula_fanout_scripts)
                    / sizeof(ngx_nebula_fanout_script_t); i++)
    {
        if (ngx_nebula_fanout_scripts[i].script == script) {
            return 1;
        }
    }

    return 0;
}


/* a reply of the merged tree: an array of n to fill, or an integer */
static redisReply *
ngx_nebula_fanout_reply(ngx_pool_t *pool, int type, size_t n)
{
    redisReply  *c;

    c = ngx_pcalloc(pool, sizeof(redisReply));
    if (c == NULL) {
        return NULL;
    }

    c->type = type;

    if (n) {
        c->element = ngx_palloc(pool, n * sizeof(redisReply *));
        if (c->element == NULL) {
            return NULL;
        }
    }

    return c;
}


/* the request went, or the listing ends early: no reply comes to it */
static void
ngx_nebula_fanout_cancel(void *data)
{
    ngx_nebula_fanout_t  *fo = data;

    ngx_uint_t  i;

    for (i = 0; i < fo->nparts; i++) {
        if (fo->parts[i].op) {
            ngx_nebula_redis_cancel(fo->parts[i].op);
            fo->parts[i].op = NULL;
        }
    }
}


/* the listing ends with rc, its answer sent: the call is finalized */
static void
ngx_nebula_fanout_end(ngx_nebula_fanout_t *fo, ngx_int_t rc)
{
    ngx_nebula_fanout_cancel(fo);
    ngx_nebula_call_finish(fo->call, rc);
}


static void
ngx_nebula_fanout_ignored(void *data, redisReply *reply)
{
}


/*
 * A master says an id's slot is not its: the map of this worker is old.
 * A command of the id goes where the map says, and the MOVED it gets
 * there sets the map right (ngx_nebula_redis_cluster.c then asks for the
 * whole of it again), for the next try.  Its reply is nobody's.
 */
static void
ngx_nebula_fanout_nudge(ngx_nebula_fanout_t *fo, u_char *id)
{
    size_t      len;
    ngx_str_t   argv[2];

    for (len = 0; id[len] && id[len] != ' ' && len < 64; len++) {
        /* void */
    }

    argv[1].data = ngx_pnalloc(fo->call->r->pool, len + 5);
    if (argv[1].data == NULL) {
        return;
    }

    argv[1].len = ngx_sprintf(argv[1].data, "nb:{%*s}", len, id)
                  - argv[1].data;
    ngx_str_set(&argv[0], "EXISTS");

    (void) ngx_nebula_redis_command(2, argv, ngx_nebula_fanout_ignored, NULL);
}


/*
 * An error from a master.  A slot that moved (a node variant's NONLOCAL,
 * Redis's own words for a key served elsewhere, or a cluster down or in
 * a resharding): a 503, which the client retries, and a warning, not an
 * error (the next try works).  Else a reply of none of ours: a 500.
 */
static ngx_int_t
ngx_nebula_fanout_refused(ngx_nebula_fanout_t *fo, redisReply *reply)
{
    u_char              *p;
    ngx_uint_t           i;
    ngx_http_request_t  *r;

    static const char  *moving[] = {
        "NONLOCAL ", "non local key", "CLUSTERDOWN", "cluster is down",
        "TRYAGAIN", "MOVED ", "ASK ", NULL
    };

    r = fo->call->r;

    p = (u_char *) ngx_strstr(reply->str, "NONLOCAL ");
    if (p) {
        ngx_nebula_fanout_nudge(fo, p + 9);
    }

    for (i = 0; moving[i]; i++) {
        if (ngx_strstr(reply->str, moving[i])) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "nebula: a master refused its share of a listing "
                          "(a slot moving, a failover): %s; answered 503",
                          reply->str);

            return ngx_nebula_call_unavailable(r);
        }
    }

    return ngx_nebula_call_bad_reply(r, reply);
}


/* an array to read: NGX_OK; else NGX_ERROR, and the listing ended */
static ngx_int_t
ngx_nebula_fanout_check(ngx_nebula_fanout_t *fo, redisReply *reply)
{
    ngx_int_t  rc;

    if (reply == NULL) {
        rc = ngx_nebula_call_unavailable(fo->call->r);

    } else if (reply->type == REDIS_REPLY_ERROR) {
        rc = ngx_nebula_fanout_refused(fo, reply);

    } else if (reply->type != REDIS_REPLY_ARRAY) {
        rc = ngx_nebula_call_bad_reply(fo->call->r, reply);

    } else {
        return NGX_OK;
    }

    ngx_nebula_fanout_end(fo, rc);

    return NGX_ERROR;
}


ngx_int_t
ngx_nebula_fanout(ngx_nebula_call_ctx_t *call, ngx_nebula_script_e script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv)
{
    ngx_uint_t                 i, n;
    ngx_str_t                  cmd[4], *by;
    ngx_pool_cleanup_t        *cln;
    ngx_http_request_t        *r;
    ngx_nebula_fanout_t       *fo;
    ngx_nebula_fanout_part_t  *part;

    r = call->r;

    fo = ngx_pcalloc(r->pool, sizeof(ngx_nebula_fanout_t));
    if (fo == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < sizeof(ngx_nebula_fanout_scripts)
                    / sizeof(ngx_nebula_fanout_script_t); i++)
    {
        if (ngx_nebula_fanout_scripts[i].script == script) {
            fo->s = &ngx_nebula_fanout_scripts[i];
        }
    }

    /* ACCT_LIST's ARGV: month, after, limit; USAGE_BY's: month, by, only */
    if (fo->s == NULL || nkeys != fo->s->nkeys || argc < nkeys + 1
        || ((script == NGX_NEBULA_SCRIPT_ACCT_LIST
             || script == NGX_NEBULA_SCRIPT_USAGE_BY)
            && argc < nkeys + 3))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the caller's arguments may be on its stack: they outlive it here */
    fo->keys = ngx_palloc(r->pool, argc * sizeof(ngx_str_t));
    if (fo->keys == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < argc; i++) {
        fo->keys[i].len = argv[i].len;
        fo->keys[i].data = (u_char *) "";

        if (argv[i].len) {
            fo->keys[i].data = ngx_pstrdup(r->pool, &argv[i]);
            if (fo->keys[i].data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    fo->call = call;
    fo->args = fo->keys + nkeys;
    fo->nargs = argc - nkeys;

    by = &fo->args[1];

    if (script == NGX_NEBULA_SCRIPT_ACCT_LIST) {
        fo->merge = NGX_NEBULA_FANOUT_PAGE;

    } else if (script == NGX_NEBULA_SCRIPT_USAGE_BY
               && !(by->len == 7 && ngx_strncmp(by->data, "account", 7) == 0)
               && !(by->len == 3 && ngx_strncmp(by->data, "key", 3) == 0))
    {
        fo->merge = NGX_NEBULA_FANOUT_SUM;

        if (ngx_array_init(&fo->sums, r->pool, 32,
                           sizeof(ngx_nebula_fanout_sum_t))
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    fo->parts = ngx_pcalloc(r->pool, nkeys * sizeof(ngx_nebula_fanout_part_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (fo->parts == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_nebula_fanout_cancel;
    cln->data = fo;

    fo->waiting = nkeys;

    /* the index, on its own slot's master: both reads at once */
    for (i = 0; i < nkeys; i++) {
        part = &fo->parts[i];
        part->fo = fo;
        part->index = i;

        cmd[1] = fo->keys[i];

        switch (fo->s->read[i]) {

        case NGX_NEBULA_FANOUT_SMEMBERS:
            ngx_str_set(&cmd[0], "SMEMBERS");
            n = 2;
            break;

        case NGX_NEBULA_FANOUT_ZRANGE:
            ngx_str_set(&cmd[0], "ZRANGE");
            ngx_str_set(&cmd[2], "0");
            ngx_str_set(&cmd[3], "-1");
            n = 4;
            break;

        default: /* SORT */
            ngx_str_set(&cmd[0], "SORT");
            ngx_str_set(&cmd[2], "ALPHA");
            n = 3;
            break;
        }

        part->op = ngx_nebula_redis_command(n, cmd, ngx_nebula_fanout_read,
                                            part);
        if (part->op == NULL) {
            ngx_nebula_fanout_cancel(fo);
            return ngx_nebula_call_unavailable(r);
        }

        fo->nparts++;
    }

    return NGX_AGAIN;
}


/*
 * The ids as the single-node script walks them: the first index, then
 * the second; ACCT_LIST's from after the page before, USAGE_BY's of one
 * account when asked
 */
static ngx_int_t
ngx_nebula_fanout_ids(ngx_nebula_fanout_t *fo)
{
    size_t       i, n;
    ngx_str_t   *only, *after;
    ngx_uint_t   k;
    redisReply  *e;

    n = 0;

    for (k = 0; k < fo->s->nkeys; k++) {
        n += fo->index[k]->elements;
    }

    fo->ids = ngx_palloc(fo->call->r->pool, (n + 1) * sizeof(ngx_str_t));
    if (fo->ids == NULL) {
        return NGX_ERROR;
    }

    only = (fo->s->script == NGX_NEBULA_SCRIPT_USAGE_BY) ? &fo->args[2]
                                                          : NULL;

    for (k = 0; k < fo->s->nkeys; k++) {
        for (i = 0; i < fo->index[k]->elements; i++) {
            e = fo->index[k]->element[i];

            if (only && only->len
                && (only->len != e->len
                    || ngx_strncmp(only->data, e->str, e->len) != 0))
            {
                continue;
            }

            fo->ids[fo->nids].data = (u_char *) e->str;
            fo->ids[fo->nids].len = e->len;
            fo->nids++;
        }

        if (k == 0) {
            fo->nfirst = fo->nids;
        }
    }

    after = &fo->args[1];

    if (fo->s->script != NGX_NEBULA_SCRIPT_ACCT_LIST || after->len == 0) {
        return NGX_OK;
    }

    /* an id no more listed: no page follows it, as on one Redis */
    for (i = 0; i < fo->nids; i++) {
        if (fo->ids[i].len == after->len
            && ngx_strncmp(fo->ids[i].data, after->data, after->len) == 0)
        {
            break;
        }
    }

    n = (i < fo->nids) ? i + 1 : fo->nids;
    fo->ids += n;
    fo->nids -= n;
    fo->nfirst = fo->nids;

    return NGX_OK;
}


/* a master's script: its ids, how many of the first index, the ARGV */
static ngx_int_t
ngx_nebula_fanout_send_part(ngx_nebula_fanout_t *fo,
    ngx_nebula_fanout_part_t *part)
{
    u_char      *p;
    ngx_str_t   *argv;
    ngx_uint_t   i, first;

    argv = ngx_palloc(fo->call->r->pool,
                      (3 + part->n + fo->nargs) * sizeof(ngx_str_t));
    p = ngx_pnalloc(fo->call->r->pool,
                    fo->ids[part->pos[0]].len + 5 + 2 * NGX_INT_T_LEN);
    if (argv == NULL || p == NULL) {
        return NGX_ERROR;
    }

    first = 0;

    for (i = 0; i < part->n; i++) {
        argv[3 + i] = fo->ids[part->pos[i]];
        first += (part->pos[i] < fo->nfirst);
    }

    /* KEYS[1]: a name of its first id's tag, which routes it there */
    argv[0].data = p;
    p = ngx_sprintf(p, "nb:{%V}", &argv[3]);
    argv[0].len = p - argv[0].data;

    argv[1].data = p;
    p = ngx_sprintf(p, "%ui", part->n);
    argv[1].len = p - argv[1].data;

    argv[2].data = p;
    p = ngx_sprintf(p, "%ui", first);
    argv[2].len = p - argv[2].data;

    ngx_memcpy(&argv[3 + part->n], fo->args, fo->nargs * sizeof(ngx_str_t));

    part->op = ngx_nebula_redis_eval(fo->s->node, 1, 3 + part->n + fo->nargs,
                                     argv, ngx_nebula_fanout_took, part);

    return part->op ? NGX_OK : NGX_ERROR;
}


static ngx_int_t ngx_nebula_fanout_answer(ngx_nebula_fanout_t *fo);


/*
 * Each id to the master of its slot, as this worker's map says: the ids
 * of one master in one script, in their order, all scripts at once
 */
static ngx_int_t
ngx_nebula_fanout_send(ngx_nebula_fanout_t *fo)
{
    u_char                    *key;
    size_t                     len;
    ngx_int_t                  node, part_of[256];
    ngx_uint_t                 i, k, *of, slot, nparts;
    ngx_http_request_t        *r;
    ngx_nebula_fanout_part_t  *part;

    r = fo->call->r;

    if (ngx_nebula_fanout_ids(fo) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (fo->nids == 0) {
        return ngx_nebula_fanout_answer(fo);
    }

    fo->items = ngx_pcalloc(r->pool, fo->nids * sizeof(redisReply *));
    of = ngx_palloc(r->pool, fo->nids * sizeof(ngx_uint_t));
    if (fo->items == NULL || of == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = 0;

    for (i = 0; i < fo->nids; i++) {
        len = ngx_max(len, fo->ids[i].len);
    }

    key = ngx_pnalloc(r->pool, len + 5);
    if (key == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < 256; i++) {
        part_of[i] = -1;
    }

    /* the index's reads are done: their parts are the masters' now */
    fo->parts = NULL;
    fo->nparts = 0;
    nparts = 0;

    for (i = 0; i < fo->nids; i++) {
        /* the slot of the names the script reads of it, "nb:{ID}:..." */
        len = ngx_sprintf(key, "nb:{%V}", &fo->ids[i]) - key;
        slot = nebula_cluster_slot(key, len);
        node = ngx_nebula_redis_slot_node(slot);

        if (node < 0 || node > 255) {
            /* a slot with no master now: a failover under way */
            return ngx_nebula_call_unavailable(r);
        }

        if (part_of[node] < 0) {
            part_of[node] = nparts++;
        }

        of[i] = part_of[node];
    }

    fo->parts = ngx_pcalloc(r->pool,
                            nparts * sizeof(ngx_nebula_fanout_part_t));
    if (fo->parts == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fo->nparts = nparts;

    for (i = 0; i < fo->nids; i++) {
        fo->parts[of[i]].n++;
    }

    for (k = 0; k < fo->nparts; k++) {
        part = &fo->parts[k];
        part->fo = fo;
        part->pos = ngx_palloc(r->pool, part->n * sizeof(ngx_uint_t));
        if (part->pos == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        part->n = 0;
    }

    for (i = 0; i < fo->nids; i++) {
        part = &fo->parts[of[i]];
        part->pos[part->n++] = i;
    }

    fo->waiting = fo->nparts;

    for (k = 0; k < fo->nparts; k++) {
        if (ngx_nebula_fanout_send_part(fo, &fo->parts[k]) != NGX_OK) {
            ngx_nebula_fanout_cancel(fo);
            return ngx_nebula_call_unavailable(r);
        }
    }

    return NGX_AGAIN;
}


/* an index read: its ids kept; the last one read sends the scripts */
static void
ngx_nebula_fanout_read(void *data, redisReply *reply)
{
    ngx_nebula_fanout_part_t  *part = data;

    ngx_int_t             rc;
    ngx_uint_t            i;
    ngx_nebula_fanout_t  *fo;

    fo = part->fo;
    part->op = NULL;

    if (ngx_nebula_fanout_check(fo, reply) != NGX_OK) {
        return;
    }

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            ngx_nebula_fanout_end(fo, ngx_nebula_call_bad_reply(fo->call->r,
                                                                reply));
            return;
        }
    }

    fo->index[part->index] = ngx_nebula_redis_copy(fo->call->r->pool, reply);
    if (fo->index[part->index] == NULL) {
        ngx_nebula_fanout_end(fo, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (--fo->waiting) {
        return;
    }

    rc = ngx_nebula_fanout_send(fo);

    if (rc != NGX_AGAIN) {
        ngx_nebula_fanout_end(fo, rc);
    }
}


/*
 * A row a master added up: {{label}, in, out, req, cost, est_req, est_in,
 * est_out, cost'}, added to the row of its label
 */
static ngx_int_t
ngx_nebula_fanout_add(ngx_nebula_fanout_t *fo, redisReply *row)
{
    ngx_uint_t                i;
    redisReply               *label;
    ngx_nebula_fanout_sum_t  *sum;

    if (row->type != REDIS_REPLY_ARRAY || row->elements != 9
        || row->element[0]->type != REDIS_REPLY_ARRAY
        || row->element[0]->elements == 0
        || row->element[0]->element[0]->type != REDIS_REPLY_STRING)
    {
        return NGX_ERROR;
    }

    for (i = 1; i < 9; i++) {
        if (row->element[i]->type != REDIS_REPLY_INTEGER) {
            return NGX_ERROR;
        }
    }

    label = row->element[0]->element[0];
    sum = fo->sums.elts;

    for (i = 0; i < fo->sums.nelts; i++) {
        if (sum[i].label.len == label->len
            && ngx_strncmp(sum[i].label.data, label->str, label->len) == 0)
        {
            break;
        }
    }

    if (i == fo->sums.nelts) {
        sum = ngx_array_push(&fo->sums);
        if (sum == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(sum, sizeof(ngx_nebula_fanout_sum_t));

        sum->label.data = ngx_pnalloc(fo->call->r->pool, label->len + 1);
        if (sum->label.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(sum->label.data, label->str, label->len);
        sum->label.len = label->len;

    } else {
        sum = &sum[i];
    }

    for (i = 0; i < 8; i++) {
        sum->v[i] += row->element[i + 1]->integer;
    }

    return NGX_OK;
}


/* a master's lists: kept in the ids' places, or added up */
static void
ngx_nebula_fanout_took(void *data, redisReply *reply)
{
    ngx_nebula_fanout_part_t  *part = data;

    size_t                i, k;
    ngx_int_t             rc;
    redisReply           *l;
    ngx_nebula_fanout_t  *fo;

    fo = part->fo;
    part->op = NULL;

    if (ngx_nebula_fanout_check(fo, reply) != NGX_OK) {
        return;
    }

    if (reply->elements > part->n) {
        goto bad;
    }

    for (i = 0; i < reply->elements; i++) {
        l = reply->element[i];

        if (l->type != REDIS_REPLY_ARRAY) {
            goto bad;
        }

        if (fo->merge == NGX_NEBULA_FANOUT_SUM) {
            for (k = 0; k < l->elements; k++) {
                if (ngx_nebula_fanout_add(fo, l->element[k]) != NGX_OK) {
                    goto bad;
                }
            }

            continue;
        }

        fo->items[part->pos[i]] = ngx_nebula_redis_copy(fo->call->r->pool,
                                                         l);
        if (fo->items[part->pos[i]] == NULL) {
            ngx_nebula_fanout_end(fo, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    if (--fo->waiting) {
        return;
    }

    rc = ngx_nebula_fanout_answer(fo);

    ngx_nebula_fanout_end(fo, rc);

    return;

bad:

    ngx_nebula_fanout_end(fo, ngx_nebula_call_bad_reply(fo->call->r, reply));
}


/*
 * The items in the ids' order; a page: {more, the first of them}, more
 * when one was found past the page (a master stops there: what it did
 * not send lies past it)
 */
static redisReply *
ngx_nebula_fanout_joined(ngx_nebula_fanout_t *fo)
{
    size_t       i, j, n, most;
    ngx_int_t    limit;
    redisReply  *list, *page, *more;
    ngx_pool_t  *pool;

    pool = fo->call->r->pool;
    n = 0;

    for (i = 0; i < fo->nids; i++) {
        n += fo->items[i] ? fo->items[i]->elements : 0;
    }

    most = n;

    if (fo->merge == NGX_NEBULA_FANOUT_PAGE) {
        limit = ngx_atoi(fo->args[2].data, fo->args[2].len);
        most = (limit == NGX_ERROR) ? 0 : ngx_min((size_t) limit, n);
    }

    list = ngx_nebula_fanout_reply(pool, REDIS_REPLY_ARRAY, most);
    if (list == NULL) {
        return NULL;
    }

    for (i = 0; i < fo->nids && list->elements < most; i++) {
        for (j = 0; fo->items[i] && j < fo->items[i]->elements
                    && list->elements < most; j++)
        {
            list->element[list->elements++] = fo->items[i]->element[j];
        }
    }

    if (fo->merge != NGX_NEBULA_FANOUT_PAGE) {
        return list;
    }

    page = ngx_nebula_fanout_reply(pool, REDIS_REPLY_ARRAY, 2);
    more = ngx_nebula_fanout_reply(pool, REDIS_REPLY_INTEGER, 0);
    if (page == NULL || more == NULL) {
        return NULL;
    }

    more->integer = (n > most);
    page->element[0] = more;
    page->element[1] = list;
    page->elements = 2;

    return page;
}


/* by label, in bytes' order, as USAGE_BY's table.sort() in the C locale */
static int ngx_libc_cdecl
ngx_nebula_fanout_cmp(const void *one, const void *two)
{
    const ngx_nebula_fanout_sum_t  *a = one;
    const ngx_nebula_fanout_sum_t  *b = two;

    return (int) ngx_memn2cmp(a->label.data, b->label.data, a->label.len,
                              b->label.len);
}


/* the rows added up, as USAGE_BY's: {{label}, 8 counts} */
static redisReply *
ngx_nebula_fanout_summed(ngx_nebula_fanout_t *fo)
{
    ngx_uint_t                i, k;
    redisReply               *list, *row, *e;
    ngx_pool_t               *pool;
    ngx_nebula_fanout_sum_t  *sum;

    pool = fo->call->r->pool;
    sum = fo->sums.elts;

    ngx_qsort(sum, fo->sums.nelts, sizeof(ngx_nebula_fanout_sum_t),
              ngx_nebula_fanout_cmp);

    list = ngx_nebula_fanout_reply(pool, REDIS_REPLY_ARRAY, fo->sums.nelts);
    if (list == NULL) {
        return NULL;
    }

    for (i = 0; i < fo->sums.nelts; i++) {
        row = ngx_nebula_fanout_reply(pool, REDIS_REPLY_ARRAY, 9);
        if (row == NULL) {
            return NULL;
        }

        e = ngx_nebula_fanout_reply(pool, REDIS_REPLY_ARRAY, 1);
        if (e == NULL) {
            return NULL;
        }

        row->element[0] = e;

        e->element[0] = ngx_nebula_fanout_reply(pool, REDIS_REPLY_STRING, 0);
        if (e->element[0] == NULL) {
            return NULL;
        }

        e->element[0]->str = (char *) sum[i].label.data;
        e->element[0]->len = sum[i].label.len;
        e->elements = 1;

        for (k = 0; k < 8; k++) {
            e = ngx_nebula_fanout_reply(pool, REDIS_REPLY_INTEGER, 0);
            if (e == NULL) {
                return NULL;
            }

            e->integer = sum[i].v[k];
            row->element[k + 1] = e;
        }

        row->elements = 9;
        list->element[list->elements++] = row;
    }

    return list;
}


/* the merged reply to the endpoint's answer, as one Redis's would go */
static ngx_int_t
ngx_nebula_fanout_answer(ngx_nebula_fanout_t *fo)
{
    redisReply  *merged;

    if (fo->merge == NGX_NEBULA_FANOUT_SUM) {
        merged = ngx_nebula_fanout_summed(fo);

    } else {
        merged = ngx_nebula_fanout_joined(fo);
    }

    if (merged == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return fo->call->answer(fo->call, merged);
}
