/*
 * Nebula: quota leases, Redis off the request path (on by default).
 *
 * An admission Redis grants in full (the ADMIT script: key, plan, model,
 * quota) may also reserve a block of the key's tokens for this worker: a
 * lease.  For the next five seconds the worker admits requests of that
 * key and model against the block alone, without asking Redis: admission
 * consults the table first, a cache of admissions.  Their usage is
 * recorded in Redis once a second (a partial settlement, which gives back
 * the part of the block they used) and when the lease is over, once its
 * last request has ended (the rest of the block given back).
 *
 * What stays as without leases:
 *
 * - nothing is admitted beyond the quota: a block is reserved in Redis as a
 *   request's reservation is, and a request the block cannot cover whole
 *   (its prompt estimate and the output it would reserve without leases)
 *   asks Redis as usual;
 * - the upstream's max_tokens is what it would be without leases: a block
 *   is granted only while the key has at least 64 blocks' worth left, so
 *   the whole month's remainder never limits a request admitted from it;
 * - recorded usage is the upstream's, request by request, summed; it is in
 *   Redis (and /v1/key, the admin API) within a second of the request's
 *   end;
 * - what a client is told remains (x-ratelimit-remaining-*, /v1/key) does
 *   not count the unused part of any block as spent (lin, lout in Redis);
 * - revocation, a plan change, a key's limits or models: the admin API
 *   writes the key's id into a feed (nb:changes) that every worker reads
 *   every quarter of a second, and closes what it holds of the key: the
 *   next request asks Redis (the contract's one second, with room);
 * - while Redis is away, nothing is admitted from a lease: the failure
 *   mode decides, as it would without;
 * - a key with a per-minute request limit never gets a lease: every request
 *   is counted in Redis.
 *
 * What changes: a block held by one worker cannot serve another.
 *
 * The table is the worker's own (no shared memory, no lock): a worker is
 * one thread, and its requests are all its lease serves.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_metrics.h"


#define NGX_NEBULA_LEASE_TTL       5000     /* ms of admissions a lease */
#define NGX_NEBULA_LEASE_JITTER    1000     /* less up to this */
#define NGX_NEBULA_LEASE_FLUSH     1000     /* usage reaches Redis within */
#define NGX_NEBULA_LEASE_POLL      250      /* the change feed is read */
#define NGX_NEBULA_LEASE_BUCKETS   1024
#define NGX_NEBULA_LEASE_MAX       4096     /* open or closing, a worker */
#define NGX_NEBULA_LEASE_TICK      125      /* two ticks a poll */

/*
 * A block: this many requests' worth, as the granting request reserved;
 * the ADMIT script grants no more than 1/64 of the key's remainder.  Its
 * output part is held by every request in flight for all it may write,
 * so it must be large for a busy key.
 */
#define NGX_NEBULA_LEASE_REQUESTS  1024



struct ngx_nebula_lease_s {
    ngx_queue_t               queue;        /* open: by expiry */
    ngx_nebula_lease_t       *next;         /* in its bucket, while open */
    ngx_nebula_model_t       *model;
    u_char                    key_id[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN + 1];  /* its
                                               account's */
    u_char                    digest[64];
    u_char                    month[8];
    u_char                    id[NGX_NEBULA_RES_ID_LEN + 2];  /* "L" and
                                               the granting reservation's */
    u_char                    member[NGX_NEBULA_RES_ID_LEN + 24];  /*
                                               id[.gen]: its block now */
    ngx_uint_t                gen;          /* partial settlements made */
    ngx_msec_t                flushed;      /* the last one's time */
    time_t                    granted;      /* the clock of the grant */
    time_t                    day;
    ngx_msec_t                expires;
    nebula_admit_t            rec;          /* the grant's view of the key */
    ngx_nebula_hold_t         hold;         /* its block, alive in Redis */

    int64_t                   block_in;     /* reserved in Redis */
    int64_t                   block_out;
    int64_t                   held_in;      /* by requests in flight */
    int64_t                   held_out;

    uint64_t                  used_in;      /* by requests ended, since */
    uint64_t                  used_out;     /* the last settlement */
    uint64_t                  spent_in;     /* settled since the grant */
    uint64_t                  spent_out;
    uint64_t                  cost;
    uint64_t                  requests;
    uint64_t                  est_requests;
    uint64_t                  est_in;
    uint64_t                  est_out;

    ngx_uint_t                inflight;
    ngx_queue_t               closing;      /* closed, requests running */
    ngx_msec_t                asked;        /* while pending */
    unsigned                  open:1;
    unsigned                  pending:1;    /* asked of Redis */
};


typedef struct {
    ngx_nebula_lease_t       *buckets[NGX_NEBULA_LEASE_BUCKETS];
    ngx_queue_t               open;
    ngx_queue_t               closing;      /* closed, requests running */
    ngx_uint_t                count;        /* open and closing */
    ngx_event_t               tick;
    ngx_log_t                *log;

    /* the change feed: what was read last, and when it was asked */
    int64_t                   seen;         /* its last score */
    u_char                    seen_ids[8][NGX_NEBULA_KEY_ID_LEN];
    ngx_uint_t                nseen;        /* ids at that score */
    ngx_msec_t                polled;
    unsigned                  polling:1;

    unsigned                  enabled:1;
} ngx_nebula_lease_table_t;


static void ngx_nebula_lease_close(ngx_nebula_lease_t *l);
static void ngx_nebula_lease_flush(ngx_nebula_lease_t *l);
static void ngx_nebula_lease_spend(ngx_nebula_lease_t *l,
    ngx_uint_t held_only);
static void ngx_nebula_lease_tick(ngx_event_t *ev);
static void ngx_nebula_lease_poll(void);


/* each worker has its own */
static ngx_nebula_lease_table_t  ngx_nebula_leases;


static ngx_uint_t
ngx_nebula_lease_bucket(u_char *key_id, ngx_nebula_model_t *model)
{
    return (ngx_hash_key(key_id, NGX_NEBULA_KEY_ID_LEN)
            ^ (ngx_uint_t) ((uintptr_t) model >> 4))
           % NGX_NEBULA_LEASE_BUCKETS;
}


/* the open lease, or the grant pending, of a key and model */
static ngx_nebula_lease_t *
ngx_nebula_lease_find(u_char *key_id, ngx_nebula_model_t *model,
    ngx_uint_t pending)
{
    ngx_nebula_lease_t  *l;

    l = ngx_nebula_leases.buckets[ngx_nebula_lease_bucket(key_id, model)];

    for ( /* void */ ; l; l = l->next) {
        if (l->model == model && l->pending == pending
            && ngx_memcmp(l->key_id, key_id, NGX_NEBULA_KEY_ID_LEN) == 0)
        {
            return l;
        }
    }

    return NULL;
}


static void
ngx_nebula_lease_link(ngx_nebula_lease_t *l)
{
    ngx_nebula_lease_t  **pl;

    pl = &ngx_nebula_leases.buckets[ngx_nebula_lease_bucket(l->key_id,
                                                            l->model)];
    l->next = *pl;
    *pl = l;
}


static void
ngx_nebula_lease_unlink(ngx_nebula_lease_t *l)
{
    ngx_nebula_lease_t  **pl;

    pl = &ngx_nebula_leases.buckets[ngx_nebula_lease_bucket(l->key_id,
                                                            l->model)];

    for ( /* void */ ; *pl; pl = &(*pl)->next) {
        if (*pl == l) {
            *pl = l->next;
            break;
        }
    }

    l->next = NULL;
}


/*
 * The block asked of Redis with an admission: NGX_NEBULA_LEASE_REQUESTS
 * times this request, or nothing when leases are off, the table is full,
 * or a grant for the key and model is asked already (requests that come
 * meanwhile are admitted by Redis one by one, not each with a lease that
 * would replace the last).  The ADMIT script grants less, or nothing, as
 * the key's remainder says.  Returns the pending grant, which
 * ngx_nebula_lease_resolve() settles with Redis's answer.
 */
ngx_nebula_lease_t *
ngx_nebula_lease_want(ngx_nebula_ctx_t *ctx, int64_t in, int64_t out,
    int64_t *want_in, int64_t *want_out)
{
    ngx_nebula_lease_t        *l;
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    *want_in = 0;
    *want_out = 0;

    if (!t->enabled || t->count >= NGX_NEBULA_LEASE_MAX || ngx_exiting) {
        return NULL;
    }

    l = ngx_nebula_lease_find(ctx->key_id, ctx->model, 1);

    if (l) {
        /*
         * Asked already.  Its admission is always answered (by Redis, or
         * by the timeout as no answer), and that answer clears it: one
         * admission a pending grant, never two.
         */
        return NULL;
    }

    l = ngx_calloc(sizeof(ngx_nebula_lease_t), t->log);
    if (l == NULL) {
        return NULL;
    }

    l->model = ctx->model;
    ngx_memcpy(l->key_id, ctx->key_id, sizeof(l->key_id));
    ngx_memcpy(l->tag, ctx->tag, sizeof(l->tag));
    l->pending = 1;
    l->asked = ngx_current_msec;

    ngx_nebula_lease_link(l);
    t->count++;
    ngx_nebula_metrics_leases_held(t->count);

    *want_in = ngx_max(in, 1) * NGX_NEBULA_LEASE_REQUESTS;
    *want_out = ngx_max(out, 1) * NGX_NEBULA_LEASE_REQUESTS;

    return l;
}


/*
 * Admits the request from an open lease of its key and model, if one
 * covers it whole: NGX_OK, with ctx as an admission by Redis leaves it;
 * NGX_DECLINED: Redis decides.
 */
ngx_int_t
ngx_nebula_lease_admit(ngx_nebula_ctx_t *ctx, int64_t prompt, int64_t out,
    u_char *request_id)
{
    int64_t               avail_in, avail_out;
    ngx_nebula_lease_t   *l;

    if (!ngx_nebula_leases.enabled || !ngx_nebula_redis_ready()) {
        /* while Redis is away, the failure mode decides, not a lease */
        return NGX_DECLINED;
    }

    l = ngx_nebula_lease_find(ctx->key_id, ctx->model, 0);

    if (l == NULL) {
        return NGX_DECLINED;
    }

    if ((ngx_msec_int_t) (ngx_current_msec - l->expires) >= 0
        || ngx_memcmp(l->digest, ctx->digest, 64) != 0
        || ctx->now / 86400 != l->day)
    {
        /* Redis is asked again, and may grant a new lease */
        return NGX_DECLINED;
    }

    avail_in = l->block_in - (int64_t) l->used_in - l->held_in;
    avail_out = l->block_out - (int64_t) l->used_out - l->held_out;

    if (avail_in < prompt || avail_out < out) {
        /*
         * What the block has unused goes back to the key now, ahead of
         * this request's admission (ngx_nebula_settle_before() sends it
         * first on the same connection): a key near its quota is never
         * refused for tokens its own lease sits on.  The lease admits no
         * more; Redis may grant a new one.
         */
        if (l->inflight) {
            ngx_nebula_lease_spend(l, 1);
        }

        ngx_nebula_lease_close(l);

        return NGX_DECLINED;
    }

    l->held_in += prompt;
    l->held_out += out;
    l->inflight++;

    ctx->lease = l;
    ctx->admitted = 1;
    ctx->reserved_in = prompt;
    ctx->reserved_out = out;
    ngx_memcpy(ctx->month, l->month, sizeof(ctx->month));
    ngx_memcpy(ctx->request_id, request_id, sizeof(ctx->request_id));

    /*
     * What Redis would say: what remained when it granted the lease (no
     * block counted as spent), less what the lease's requests have used
     * and hold since
     */
    ctx->admit = l->rec;
    ctx->admit.status = NEBULA_ADMIT_OK;
    ctx->admit.reserved_out = out;
    ctx->admit.in_left = l->rec.in_left - (int64_t) l->spent_in
                         - (int64_t) l->used_in - l->held_in;
    ctx->admit.out_left = l->rec.out_left - (int64_t) l->spent_out
                          - (int64_t) l->used_out - l->held_out;

    return NGX_OK;
}


/*
 * Redis answered the admission that asked for a lease: with a block, the
 * pending grant opens (ctx is the request's, NULL when it has gone: its
 * block is given back by the caller); without, it is forgotten.
 */
void
ngx_nebula_lease_resolve(ngx_nebula_lease_t *l, ngx_nebula_ctx_t *ctx,
    nebula_admit_t *a)
{
    ngx_nebula_lease_t        *old;
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    if (ctx == NULL || a->status != NEBULA_ADMIT_OK || a->lease_in <= 0
        || a->lease_out <= 0)
    {
        ngx_nebula_lease_unlink(l);
        t->count--;
        ngx_nebula_metrics_leases_held(t->count);
        ngx_free(l);
        return;
    }

    old = ngx_nebula_lease_find(ctx->key_id, ctx->model, 0);

    if (old) {
        /* the lease it replaces admits no more */
        ngx_nebula_lease_close(old);
    }

    ngx_memcpy(l->digest, ctx->digest, 64);
    ngx_memcpy(l->month, ctx->month, sizeof(l->month));
    l->id[0] = 'L';
    ngx_memcpy(&l->id[1], ctx->res_id, sizeof(ctx->res_id));
    ngx_memcpy(l->member, l->id, sizeof(l->id));
    l->flushed = ngx_current_msec;
    l->granted = ctx->now;
    l->day = ctx->now / 86400;
    /*
     * From when it was asked, not answered: Redis vouched for the key no
     * earlier than that, and the bound on revocation counts from there.
     */
    /*
     * Four to five seconds: leases granted together (a thousand keys
     * starting at once, a restart) do not all ask Redis again in the same
     * moment five seconds later, and every five after that.
     */
    l->expires = l->asked + NGX_NEBULA_LEASE_TTL
                 - (ngx_msec_t) (ngx_random() % NGX_NEBULA_LEASE_JITTER);
    l->rec = *a;
    l->block_in = a->lease_in;
    l->block_out = a->lease_out;
    l->pending = 0;
    l->open = 1;

    ngx_queue_insert_tail(&t->open, &l->queue);

    /* its block stays reserved while any of its requests lives */
    ngx_nebula_hold_add(&l->hold, l->tag, l->month, l->member,
                        (uint64_t) l->block_in, (uint64_t) l->block_out,
                        l->granted, 1);

    if ((ngx_msec_int_t) (ngx_current_msec - l->expires) >= 0) {
        /* answered too late to admit anything: its block goes back now */
        ngx_nebula_lease_close(l);
        return;
    }

    if (!t->tick.timer_set) {
        ngx_add_timer(&t->tick, NGX_NEBULA_LEASE_TICK);
    }
}


/* a request admitted from the lease has ended with this usage */
void
ngx_nebula_lease_settle(ngx_nebula_ctx_t *ctx, uint64_t in, uint64_t out,
    uint64_t cost, ngx_uint_t est_in, ngx_uint_t est_out, ngx_uint_t count)
{
    ngx_nebula_lease_t  *l = ctx->lease;

    l->held_in -= ctx->reserved_in;
    l->held_out -= ctx->reserved_out;
    l->used_in += in;
    l->used_out += out;
    l->cost += cost;
    l->inflight--;

    /* counted as a request is without leases, failed or not */
    if (count) {
        l->requests++;
    }

    if (est_in || est_out) {
        l->est_requests++;
        l->est_in += est_in ? in : 0;
        l->est_out += est_out ? out : 0;
    }

    ctx->lease = NULL;

    if (!l->open && l->inflight == 0) {
        ngx_queue_remove(&l->closing);
        ngx_nebula_lease_flush(l);
    }
}


/* no more admissions; settled once its last request has ended */
static void
ngx_nebula_lease_close(ngx_nebula_lease_t *l)
{
    if (!l->open) {
        return;
    }

    l->open = 0;
    ngx_queue_remove(&l->queue);
    ngx_nebula_lease_unlink(l);

    if (l->inflight == 0) {
        ngx_nebula_lease_flush(l);
        return;
    }

    /* settled once a second still, until its last request ends */
    ngx_queue_insert_tail(&ngx_nebula_leases.closing, &l->closing);
}


/* one SETTLE: the block given back, the usage of its requests recorded */
static void
ngx_nebula_lease_flush(ngx_nebula_lease_t *l)
{
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    ngx_nebula_hold_remove(&l->hold);

    ngx_nebula_settle_lease(t->log, l->tag, l->month, l->granted,
                            l->member, &l->model->name, l->block_in,
                            l->block_out, l->used_in, l->used_out, l->cost,
                            l->requests, l->est_requests, l->est_in,
                            l->est_out, NULL, 0);

    t->count--;
    ngx_nebula_metrics_leases_held(t->count);
    ngx_free(l);
}


/*
 * A partial settlement: the usage of the requests that ended since the
 * last one goes to Redis, with the part of the block they used; what is
 * left of the block stays reserved, renamed (its member says how much),
 * and kept alive under its new name.  held_only: only what the requests
 * in flight hold stays reserved, the rest goes back too (the lease is
 * closing, and the key's other requests may need it).
 */
static void
ngx_nebula_lease_spend(ngx_nebula_lease_t *l, ngx_uint_t held_only)
{
    int64_t                    left_in, left_out;
    ngx_str_t                  next;
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;
    u_char                     member[NGX_NEBULA_RES_ID_LEN + 24], name[160];

    left_in = held_only ? l->held_in : l->block_in - (int64_t) l->used_in;
    left_out = held_only ? l->held_out
                         : l->block_out - (int64_t) l->used_out;

    /*
     * A request's input is charged as the pool counted it, which may pass
     * the estimate its block held: nothing is left of that part then
     */
    left_in = ngx_max(left_in, 0);
    left_out = ngx_max(left_out, 0);

    *ngx_snprintf(member, sizeof(member) - 1, "%s.%ui", l->id, l->gen + 1)
        = '\0';

    next.data = name;
    next.len = ngx_snprintf(name, sizeof(name), "%s:%L:%L", member, left_in,
                            left_out)
               - name;

    ngx_nebula_settle_lease(t->log, l->tag, l->month, l->granted,
                            l->member, &l->model->name, l->block_in,
                            l->block_out, l->used_in, l->used_out, l->cost,
                            l->requests, l->est_requests, l->est_in,
                            l->est_out, &next,
                            ngx_nebula_hold_score(&l->hold));

    l->gen++;
    ngx_memcpy(l->member, member, sizeof(member));
    l->block_in = left_in;
    l->block_out = left_out;
    l->spent_in += l->used_in;
    l->spent_out += l->used_out;
    l->used_in = 0;
    l->used_out = 0;
    l->cost = 0;
    l->requests = 0;
    l->est_requests = 0;
    l->est_in = 0;
    l->est_out = 0;
    l->flushed = ngx_current_msec;

    ngx_nebula_hold_remove(&l->hold);
    ngx_nebula_hold_add(&l->hold, l->tag, l->month, l->member,
                        (uint64_t) l->block_in, (uint64_t) l->block_out,
                        l->granted, 1);
}


/* its requests' usage is due in Redis: a second since the last */
static ngx_inline void
ngx_nebula_lease_due(ngx_nebula_lease_t *l)
{
    if (l->requests
        && (ngx_msec_int_t) (ngx_current_msec - l->flushed)
           >= NGX_NEBULA_LEASE_FLUSH)
    {
        ngx_nebula_lease_spend(l, 0);
    }
}


/*
 * An account changed, or one of its keys: what this worker holds of it
 * admits no more
 */
static void
ngx_nebula_lease_close_account(u_char *tag)
{
    ngx_queue_t               *q, *next;
    ngx_nebula_lease_t        *l;
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    for (q = ngx_queue_head(&t->open);
         q != ngx_queue_sentinel(&t->open);
         q = next)
    {
        next = ngx_queue_next(q);
        l = ngx_queue_data(q, ngx_nebula_lease_t, queue);

        if (ngx_memcmp(l->tag, tag, NGX_NEBULA_KEY_ID_LEN) == 0) {
            ngx_nebula_lease_close(l);
        }
    }

    /* what a closing lease's requests in flight do not hold goes back */
    for (q = ngx_queue_head(&t->closing);
         q != ngx_queue_sentinel(&t->closing);
         q = ngx_queue_next(q))
    {
        l = ngx_queue_data(q, ngx_nebula_lease_t, closing);

        if (ngx_memcmp(l->tag, tag, NGX_NEBULA_KEY_ID_LEN) == 0
            && (l->block_in - (int64_t) l->used_in > l->held_in
                || l->block_out - (int64_t) l->used_out > l->held_out))
        {
            ngx_nebula_lease_spend(l, 1);
        }
    }
}


static void
ngx_nebula_lease_recalled(void *data, redisReply *reply)
{
    /* not waited for: a lease a worker misses closes by itself (5 s) */
}


/*
 * Every worker is asked to close its leases of an account's keys (the
 * change feed, read every NGX_NEBULA_LEASE_POLL ms): the account or one
 * of its keys was changed (the admin API, the holder's), or Redis refused
 * it a request while leases sit on unused blocks of it, which then come
 * back to the account within a second.  The feed is in another hash slot
 * than the account's: a command of its own.
 */
void
ngx_nebula_lease_recall(u_char *tag)
{
    ngx_str_t      argv[2];
    static u_char  data;

    ngx_str_set(&argv[0], "nb:changes");
    argv[1].data = tag;
    argv[1].len = ngx_strlen(tag);

    (void) ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_CHANGED, 1, 2, argv,
                                 ngx_nebula_lease_recalled, &data);
}


/*
 * The change feed's answer: [id, score, id, score, ...], every change at
 * or after the last score read.  The ids of that last score were seen
 * already (two changes may share a millisecond): they are not closed
 * again, which would close the leases granted since.
 */
static void
ngx_nebula_lease_changes(void *data, redisReply *reply)
{
    size_t                     i, k;
    int64_t                    score;
    redisReply                *id, *sc;
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    t->polling = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements % 2)
    {
        return;
    }

    for (i = 0; i < reply->elements; i += 2) {
        id = reply->element[i];
        sc = reply->element[i + 1];

        if (id->type != REDIS_REPLY_STRING
            || id->len != NGX_NEBULA_KEY_ID_LEN
            || sc->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        score = ngx_atoof((u_char *) sc->str, sc->len);
        if (score < 0) {
            continue;
        }

        if (score == t->seen) {
            for (k = 0; k < t->nseen; k++) {
                if (ngx_memcmp(t->seen_ids[k], id->str,
                               NGX_NEBULA_KEY_ID_LEN) == 0)
                {
                    break;
                }
            }

            if (k < t->nseen) {
                continue;
            }

        } else if (score > t->seen) {
            t->seen = score;
            t->nseen = 0;
        }

        if (score == t->seen && t->nseen < 8) {
            ngx_memcpy(t->seen_ids[t->nseen++], id->str,
                       NGX_NEBULA_KEY_ID_LEN);
        }

        ngx_nebula_lease_close_account((u_char *) id->str);
    }
}


/* the change feed read: a command of its own, cheap, a quarter second */
static void
ngx_nebula_lease_poll(void)
{
    ngx_str_t                  argv[5];
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;
    u_char                     min[NGX_INT64_LEN];

    if (t->polling
        || (ngx_msec_int_t) (ngx_current_msec - t->polled)
           < NGX_NEBULA_LEASE_POLL)
    {
        return;
    }

    ngx_str_set(&argv[0], "ZRANGEBYSCORE");
    ngx_str_set(&argv[1], "nb:changes");
    argv[2].data = min;
    argv[2].len = ngx_sprintf(min, "%L", t->seen) - min;
    ngx_str_set(&argv[3], "+inf");
    ngx_str_set(&argv[4], "WITHSCORES");

    if (ngx_nebula_redis_command(5, argv, ngx_nebula_lease_changes, t)
        != NULL)
    {
        t->polling = 1;
        t->polled = ngx_current_msec;
    }
}


static void
ngx_nebula_lease_tick(ngx_event_t *ev)
{
    ngx_queue_t               *q, *next;
    ngx_nebula_lease_t        *l;
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    while (!ngx_queue_empty(&t->open)) {
        q = ngx_queue_head(&t->open);
        l = ngx_queue_data(q, ngx_nebula_lease_t, queue);

        if (!ngx_exiting
            && (ngx_msec_int_t) (ngx_current_msec - l->expires) < 0)
        {
            break;
        }

        ngx_nebula_lease_close(l);
    }

    for (q = ngx_queue_head(&t->open);
         q != ngx_queue_sentinel(&t->open);
         q = ngx_queue_next(q))
    {
        ngx_nebula_lease_due(ngx_queue_data(q, ngx_nebula_lease_t, queue));
    }

    for (q = ngx_queue_head(&t->closing);
         q != ngx_queue_sentinel(&t->closing);
         q = next)
    {
        next = ngx_queue_next(q);
        ngx_nebula_lease_due(ngx_queue_data(q, ngx_nebula_lease_t, closing));
    }

    /* a closing lease may still sit on unused tokens a recall wants */
    if (!ngx_queue_empty(&t->open) || !ngx_queue_empty(&t->closing)) {
        ngx_nebula_lease_poll();
    }

    if (!ngx_queue_empty(&t->open) || !ngx_queue_empty(&t->closing)) {
        ngx_add_timer(&t->tick, NGX_NEBULA_LEASE_TICK);
    }
}


void
ngx_nebula_lease_init_worker(ngx_cycle_t *cycle, ngx_flag_t enabled)
{
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    ngx_memzero(t, sizeof(ngx_nebula_lease_table_t));
    ngx_queue_init(&t->open);
    ngx_queue_init(&t->closing);
    t->enabled = enabled ? 1 : 0;
    t->log = cycle->log;
    t->tick.handler = ngx_nebula_lease_tick;
    t->tick.log = cycle->log;
    t->tick.data = t;

    /* an open lease keeps a worker that shuts down until it is settled */
    t->tick.cancelable = 0;
}


/*
 * A worker that stops at once (TERM, a crash) cannot settle what its open
 * leases hold: their blocks come back when they expire in Redis, their
 * requests' usage is lost.  A graceful stop (QUIT, a reload) settles them.
 */
void
ngx_nebula_lease_exit_worker(ngx_cycle_t *cycle)
{
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    if (t->count) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "nebula: worker exits with %ui leases unsettled",
                      t->count);
    }
}
