/*
 * Nebula: quota leases, Redis off the request path.
 *
 * With "nebula_lease on", an admission Redis grants in full (the ADMIT
 * script: key, plan, model, quota) may also reserve a block of the key's
 * tokens for this worker: a lease.  For the next second the worker admits
 * requests of that key and model against the block alone, without asking
 * Redis, and adds up their usage; then it closes the lease, and once its
 * last request has ended, one SETTLE gives the block back and records the
 * usage of all of them.
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
 * - recorded usage is the upstream's, request by request, summed;
 * - revocation, a plan change, a key's models: Redis is asked again within
 *   a second (NGX_NEBULA_LEASE_TTL), the contract's bound;
 * - a key with a per-minute request limit never gets a lease: every request
 *   is counted in Redis.
 *
 * What changes: usage reaches Redis when the lease closes (about a second
 * later), a block held by one worker cannot serve another, and the
 * x-ratelimit-remaining-* headers of a request admitted from a lease count
 * the unused part of the block as remaining.
 *
 * The table is the worker's own (no shared memory, no lock): a worker is
 * one thread, and its requests are all its lease serves.
 */

#include "ngx_nebula.h"


#define NGX_NEBULA_LEASE_TTL       900      /* ms of admissions a lease */
#define NGX_NEBULA_LEASE_BUCKETS   1024
#define NGX_NEBULA_LEASE_MAX       4096     /* open or closing, a worker */
#define NGX_NEBULA_LEASE_TICK      200

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
    u_char                    digest[64];
    u_char                    month[8];
    u_char                    id[34];       /* "L" and the granting id */
    time_t                    granted;      /* the clock of the grant */
    time_t                    day;
    ngx_msec_t                expires;
    nebula_admit_t            rec;          /* the grant's view of the key */
    ngx_nebula_hold_t         hold;         /* its block, alive in Redis */

    int64_t                   block_in;     /* reserved in Redis */
    int64_t                   block_out;
    int64_t                   held_in;      /* by requests in flight */
    int64_t                   held_out;

    uint64_t                  used_in;      /* by requests ended */
    uint64_t                  used_out;
    uint64_t                  cost;
    uint64_t                  requests;
    uint64_t                  est_requests;
    uint64_t                  est_in;
    uint64_t                  est_out;

    ngx_uint_t                inflight;
    ngx_msec_t                asked;        /* while pending */
    unsigned                  open:1;
    unsigned                  pending:1;    /* asked of Redis */
};


typedef struct {
    ngx_nebula_lease_t       *buckets[NGX_NEBULA_LEASE_BUCKETS];
    ngx_queue_t               open;
    ngx_uint_t                count;        /* open and closing */
    ngx_event_t               tick;
    ngx_log_t                *log;
    unsigned                  enabled:1;
} ngx_nebula_lease_table_t;


static void ngx_nebula_lease_close(ngx_nebula_lease_t *l);
static void ngx_nebula_lease_flush(ngx_nebula_lease_t *l);
static void ngx_nebula_lease_tick(ngx_event_t *ev);


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
    l->pending = 1;
    l->asked = ngx_current_msec;

    ngx_nebula_lease_link(l);
    t->count++;

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

    if (!ngx_nebula_leases.enabled) {
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

    /* what Redis would say: its remainder, and the block's unused part */
    ctx->admit = l->rec;
    ctx->admit.status = NEBULA_ADMIT_OK;
    ctx->admit.reserved_out = out;
    ctx->admit.in_left = l->rec.in_left + avail_in - prompt;
    ctx->admit.out_left = l->rec.out_left + avail_out - out;

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
    ngx_memcpy(&l->id[1], ctx->request_id, sizeof(ctx->request_id));
    l->granted = ctx->now;
    l->day = ctx->now / 86400;
    /*
     * From when it was asked, not answered: Redis vouched for the key no
     * earlier than that, and the bound on revocation counts from there.
     */
    l->expires = l->asked + NGX_NEBULA_LEASE_TTL;
    l->rec = *a;
    l->block_in = a->lease_in;
    l->block_out = a->lease_out;
    l->pending = 0;
    l->open = 1;

    ngx_queue_insert_tail(&t->open, &l->queue);

    /* its block stays reserved while any of its requests lives */
    ngx_nebula_hold_add(&l->hold, l->key_id, l->month, l->id,
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
    }
}


/* one SETTLE: the block given back, the usage of its requests recorded */
static void
ngx_nebula_lease_flush(ngx_nebula_lease_t *l)
{
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    ngx_nebula_hold_remove(&l->hold);

    ngx_nebula_settle_lease(t->log, l->key_id, l->month, l->granted, l->id,
                            &l->model->name, l->block_in, l->block_out,
                            l->used_in, l->used_out, l->cost, l->requests,
                            l->est_requests, l->est_in, l->est_out);

    t->count--;
    ngx_free(l);
}


static void
ngx_nebula_lease_tick(ngx_event_t *ev)
{
    ngx_queue_t               *q;
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

    if (!ngx_queue_empty(&t->open)) {
        ngx_add_timer(&t->tick, NGX_NEBULA_LEASE_TICK);
    }
}


void
ngx_nebula_lease_init_worker(ngx_cycle_t *cycle, ngx_flag_t enabled)
{
    ngx_nebula_lease_table_t  *t = &ngx_nebula_leases;

    ngx_memzero(t, sizeof(ngx_nebula_lease_table_t));
    ngx_queue_init(&t->open);
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
