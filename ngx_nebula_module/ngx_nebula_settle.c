/*
 * Nebula: settlements, the SETTLE records a worker sends to Redis: a
 * request's (its reservation replaced by its usage), a lease's (its block
 * given back, the usage of all its requests recorded), a give-back (an
 * admission whose client left).  One that Redis could not take is kept
 * and sent again once Redis is back; the SETTLE script's marker (the
 * reservation itself) makes a repeat harmless.  A worker that shuts down
 * keeps its settlements and reconnects for them for up to a minute.
 *
 * Off the request path, in batches: a request that ends only queues its
 * record; every NGX_NEBULA_SETTLE_EVERY ms (or as soon as
 * NGX_NEBULA_SETTLE_BATCH wait) the worker sends what waits as one
 * EVALSHA SETTLE carrying them all, one command and one reply where
 * there were as many as requests.  A reservation is settled a few
 * milliseconds later than its request ended, and no later.
 *
 * What is charged is ngx_nebula_charge.c's; this file only carries it.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_metrics.h"
#include "nebula_cluster.h"


/* a settlement to send, or to send again */
typedef struct {
    ngx_queue_t               queue;
    ngx_uint_t                attempts;      /* refused as "not now" */
    ngx_uint_t                alone;         /* its batch was refused */
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN];  /* its
                                                account's */
    ngx_str_t                 argv[21];
    ngx_uint_t                argc;
    u_char                    data[1];       /* the strings, in a row */
} ngx_nebula_settlement_t;


#define NGX_NEBULA_SETTLE_QUEUE_MAX  100000

/* the Redis keys of a settlement, its first arguments */
#define NGX_NEBULA_SETTLE_KEYS       6
#define NGX_NEBULA_SETTLE_ATTEMPTS   20

/* a batch: sent this often, or at once when this many wait */
#define NGX_NEBULA_SETTLE_EVERY      2
#define NGX_NEBULA_SETTLE_BATCH      64

/* how long a worker that shuts down waits for Redis to take them */
#define NGX_NEBULA_SETTLE_EXIT_WAIT  60000


/* the settlements of one EVALSHA SETTLE, until Redis answers */
typedef struct {
    ngx_queue_t               settlements;
    ngx_uint_t                n;
} ngx_nebula_settle_batch_t;


typedef struct {
    ngx_queue_t               ready;         /* to go with the next batch */
    ngx_uint_t                nready;
    ngx_queue_t               retry;         /* Redis could not take them */
    ngx_uint_t                nretry;
    ngx_uint_t                dropped;
    ngx_log_t                *log;
    ngx_event_t               tick;          /* the next batch */
    ngx_event_t               flush;         /* the next retry */
    ngx_msec_t                exit_deadline;
    unsigned                  exit_wait:1;
} ngx_nebula_settle_queue_t;


static ngx_nebula_settle_queue_t  ngx_nebula_settle_queue;


static void ngx_nebula_settle_send(ngx_nebula_settlement_t *s,
    ngx_uint_t now);
static void ngx_nebula_settle_tick(ngx_event_t *ev);
static ngx_int_t ngx_nebula_settle_batch(void);


static ngx_nebula_settlement_t *
ngx_nebula_settlement(ngx_log_t *log, u_char *tag, u_char *month,
    time_t now, u_char *res_id, ngx_str_t *model, uint64_t rin,
    uint64_t rout, uint64_t in, uint64_t out, uint64_t cost,
    ngx_uint_t flags)
{
    u_char                   *p;
    ngx_nebula_settlement_t  *s;

    s = ngx_alloc(sizeof(ngx_nebula_settlement_t) + 768 + model->len, log);
    if (s == NULL) {
        return NULL;
    }

    p = s->data;
    s->argc = 16;
    s->attempts = 0;
    s->alone = 0;
    ngx_memcpy(s->tag, tag, NGX_NEBULA_KEY_ID_LEN);

#define ngx_nebula_arg(i, fmt, ...)                                          \
    s->argv[i].data = p;                                                      \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                     \
    s->argv[i].len = p - s->argv[i].data

    ngx_nebula_arg(0, "nb:{%s}:u:%s", tag, month);
    ngx_nebula_arg(1, "nb:{%s}:m:%s", tag, month);
    s->argv[2].data = p;
    p = ngx_sprintf(p, "nb:{%s}:d:", tag);
    p = ngx_nebula_day(p, now);
    s->argv[2].len = p - s->argv[2].data;
    ngx_nebula_arg(3, "nb:{%s}:res:%s", tag, month);
    ngx_nebula_arg(4, "nb:{%s}:exp:%s", tag, month);
    ngx_nebula_arg(5, "nb:{%s}:ku:%s", tag, month);
    ngx_nebula_arg(6, "%uL", rin);
    ngx_nebula_arg(7, "%uL", rout);
    ngx_nebula_arg(8, "%uL", in);
    ngx_nebula_arg(9, "%uL", out);
    ngx_nebula_arg(10, "%uL", cost);
    ngx_nebula_arg(11, "%V", model);
    ngx_nebula_arg(12, "%d", NGX_NEBULA_USAGE_TTL);
    ngx_nebula_arg(13, "%s:%uL:%uL", res_id, rin, rout);
    ngx_nebula_arg(14, "%d", (flags & NGX_NEBULA_SETTLE_COUNT) ? 1 : 0);

    /* the SETTLE script's own encoding: 1 the input, 2 the output */
    ngx_nebula_arg(15, "%d", ((flags & NGX_NEBULA_SETTLE_EST_IN) ? 1 : 0)
                             | ((flags & NGX_NEBULA_SETTLE_EST_OUT) ? 2 : 0));

#undef ngx_nebula_arg

    return s;
}


/*
 * A lease's requests' usage is recorded, in one SETTLE; the counts of
 * requests and of what was estimated are given as they add up, not as
 * flags of one request.  The block goes back: all of it (the lease is
 * over: next is NULL), or what its requests used (a partial settlement,
 * once a second while it goes on: what is left of it stays reserved as
 * the member next, "L...:IN:OUT", expiring at next_score).
 */
void
ngx_nebula_settle_lease(ngx_log_t *log, u_char *tag, u_char *month,
    time_t now, u_char *lease_id, ngx_str_t *model, uint64_t block_in,
    uint64_t block_out, uint64_t in, uint64_t out, uint64_t cost,
    uint64_t requests, uint64_t est_requests, uint64_t est_in,
    uint64_t est_out, ngx_str_t *next, time_t next_score)
{
    u_char                   *p;
    uint64_t                  val[4];
    ngx_uint_t                i;
    ngx_nebula_settlement_t  *s;

    /* the request count, and the estimated counts as they add up */
    static const ngx_uint_t   arg[4] = { 14, 16, 17, 18 };

    val[0] = requests;
    val[1] = est_requests;
    val[2] = est_in;
    val[3] = est_out;

    s = ngx_nebula_settlement(log, tag, month, now, lease_id, model,
                              block_in, block_out, in, out, cost, 0);
    if (s == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "nebula: no memory to settle a lease of account %s",
                      tag);
        return;
    }

    /* the strings of a settlement leave room for these (768 bytes) */
    p = s->argv[s->argc - 1].data + s->argv[s->argc - 1].len;

    for (i = 0; i < 4; i++) {
        s->argv[arg[i]].data = p;
        p = ngx_sprintf(p, "%uL", val[i]);
        s->argv[arg[i]].len = p - s->argv[arg[i]].data;
    }

    s->argc = 19;

    if (next) {
        s->argv[19].data = p;
        p = ngx_cpymem(p, next->data, ngx_min(next->len, 128));
        s->argv[19].len = p - s->argv[19].data;
        s->argv[20].data = p;
        p = ngx_sprintf(p, "%T", next_score);
        s->argv[20].len = p - s->argv[20].data;
        s->argc = 21;
    }

    ngx_nebula_settle_send(s, 0);
}


/*
 * A request's settlement: its reservation (rin, rout) replaced by its
 * usage, with the flags NGX_NEBULA_SETTLE_* say; sent with the next batch
 * (NGX_NEBULA_SETTLE_NOW: at once), or kept and sent again while Redis
 * cannot take it.
 */
void
ngx_nebula_settle_request(ngx_log_t *log, u_char *tag, u_char *month,
    time_t now, u_char *res_id, ngx_str_t *model, uint64_t rin,
    uint64_t rout, uint64_t in, uint64_t out, uint64_t cost,
    ngx_uint_t flags)
{
    ngx_nebula_settlement_t  *s;

    s = ngx_nebula_settlement(log, tag, month, now, res_id, model,
                              rin, rout, in, out, cost, flags);
    if (s == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "nebula: no memory to settle a request of account %s",
                      tag);
        return;
    }

    ngx_nebula_settle_send(s, flags & NGX_NEBULA_SETTLE_NOW);
}


static void
ngx_nebula_settle_retry(ngx_nebula_settlement_t *s)
{
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (q->nretry >= NGX_NEBULA_SETTLE_QUEUE_MAX) {
        if (q->dropped++ == 0) {
            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "nebula: %d settlements wait for redis already: "
                          "dropping more", NGX_NEBULA_SETTLE_QUEUE_MAX);
        }

        ngx_free(s);
        return;
    }

    ngx_queue_insert_tail(&q->retry, &s->queue);
    q->nretry++;
    ngx_nebula_metrics_settlements_queued(q->nretry);

    if (!q->flush.timer_set) {
        ngx_add_timer(&q->flush, 500);
    }
}


/* errors that say "not now" rather than "never" */
ngx_uint_t
ngx_nebula_redis_transient(redisReply *reply)
{
    static const char  *transient[] = { "BUSY", "READONLY", "LOADING", "OOM",
                                        "NOSCRIPT", "MASTERDOWN", "TRYAGAIN",
                                        "CLUSTERDOWN", "NOREPLICAS", NULL };
    ngx_uint_t          i;

    for (i = 0; transient[i]; i++) {
        if (ngx_strncmp(reply->str, transient[i], ngx_strlen(transient[i]))
            == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* Redis answered a batch, or could not: each settlement's fate */
static void
ngx_nebula_settle_reply(void *data, redisReply *reply)
{
    ngx_queue_t                *h;
    ngx_uint_t                  refused;
    ngx_nebula_settlement_t    *s;
    ngx_nebula_settle_batch_t  *b = data;

    refused = 0;

    if (reply && reply->type == REDIS_REPLY_ERROR && b->n > 1
        && !ngx_nebula_redis_transient(reply))
    {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "nebula: redis refused a batch of %ui settlements: "
                      "%s; each goes again alone", b->n, reply->str);
    }

    while (!ngx_queue_empty(&b->settlements)) {
        h = ngx_queue_head(&b->settlements);
        ngx_queue_remove(h);
        s = ngx_queue_data(h, ngx_nebula_settlement_t, queue);

        if (reply == NULL) {
            /* Redis went away: maybe applied, maybe not; the marker knows */
            ngx_nebula_settle_retry(s);
            continue;
        }

        if (reply->type == REDIS_REPLY_ERROR) {
            if (ngx_nebula_redis_transient(reply)
                && ++s->attempts < NGX_NEBULA_SETTLE_ATTEMPTS)
            {
                ngx_nebula_settle_retry(s);
                continue;
            }

            if (b->n > 1) {
                /*
                 * "Never", said of a batch: one settlement in it may be
                 * the cause, and it must cost only itself.  Each goes
                 * again alone; what the batch had settled before the
                 * error is a repeat then.
                 */
                s->alone = 1;
                ngx_nebula_settle_retry(s);
                continue;
            }

            refused++;
        }

        ngx_free(s);
    }

    if (refused) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "nebula: redis refused %ui settlement%s: %s", refused,
                      refused == 1 ? "" : "s", reply->str);
    }

    ngx_free(b);
}


/*
 * A settlement goes with the next batch, a few milliseconds from now, or
 * now, with what waits for that batch.
 */
static void
ngx_nebula_settle_send(ngx_nebula_settlement_t *s, ngx_uint_t now)
{
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (q->nretry) {
        /*
         * Behind those that wait to go again, and behind those that wait
         * for a batch: a lease's settlements must keep their order, each
         * renaming the block the one before left.  The retry queue goes
         * back ahead of the ready one (ngx_nebula_settle_flush), so a
         * newer settlement put there would overtake an older one still
         * ready (one of another slot's batch on a cluster, or past the
         * first batch), and find no block: its usage taken for a repeat.
         */
        if (q->nretry + q->nready >= NGX_NEBULA_SETTLE_QUEUE_MAX) {
            ngx_nebula_settle_retry(s);     /* dropped, and said */
            return;
        }

        ngx_queue_insert_tail(&q->ready, &s->queue);
        q->nready++;
        return;
    }

    ngx_queue_insert_tail(&q->ready, &s->queue);
    q->nready++;

    if (now) {
        ngx_nebula_settle_tick(&q->tick);
        return;
    }

    if (q->nready >= NGX_NEBULA_SETTLE_BATCH) {
        (void) ngx_nebula_settle_batch();
        return;
    }

    if (!q->tick.timer_set) {
        ngx_add_timer(&q->tick, NGX_NEBULA_SETTLE_EVERY);
    }
}


/*
 * An admission of this account goes to Redis: a settlement of the
 * account's that waits for its batch goes first, on the same connection, so Redis takes
 * it before the admission.  A client that sends its next request as soon
 * as the last one ended (on the same connection, so to this worker) is
 * never refused for a reservation already over; other keys' settlements
 * still wait for their batch.
 */
void
ngx_nebula_settle_before(u_char *tag)
{
    ngx_queue_t                *h;
    ngx_nebula_settlement_t    *s;
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    for (h = ngx_queue_head(&q->ready);
         h != ngx_queue_sentinel(&q->ready);
         h = ngx_queue_next(h))
    {
        s = ngx_queue_data(h, ngx_nebula_settlement_t, queue);

        if (ngx_memcmp(s->tag, tag, NGX_NEBULA_KEY_ID_LEN) == 0) {
            ngx_nebula_settle_tick(&q->tick);
            return;
        }
    }
}


static void
ngx_nebula_settle_tick(ngx_event_t *ev)
{
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (q->nretry) {
        /*
         * What waits to go again goes first (ngx_nebula_settle_flush puts
         * it ahead of these): a lease's settlements must reach Redis in
         * their order, each renaming the block the one before left.
         */
        return;
    }

    while (q->nready && q->nretry == 0) {
        if (ngx_nebula_settle_batch() != NGX_OK) {
            /* no memory for a batch now: they wait for the next tick */
            ngx_add_timer(&q->tick, NGX_NEBULA_SETTLE_EVERY);
            return;
        }
    }
}


/*
 * Up to NGX_NEBULA_SETTLE_BATCH ready settlements, in one EVALSHA
 * SETTLE: their keys, then each one's count of arguments and arguments.
 * When Redis cannot take it, they wait for it in the retry queue;
 * NGX_ERROR: none was taken from the ready queue.
 */
static ngx_int_t
ngx_nebula_settle_batch(void)
{
    u_char                     *p;
    ngx_int_t                   slot;
    ngx_str_t                  *argv;
    ngx_uint_t                  i, n, nkeys, argc, k, a;
    ngx_queue_t                *h, *next;
    ngx_nebula_settlement_t    *s;
    ngx_nebula_settle_batch_t  *b;
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;
    u_char                      counts[NGX_NEBULA_SETTLE_BATCH][4];

    b = ngx_alloc(sizeof(ngx_nebula_settle_batch_t), q->log);
    if (b == NULL) {
        return NGX_ERROR;
    }

    ngx_queue_init(&b->settlements);
    b->n = 0;

    n = 0;
    argc = 0;
    slot = -1;
    next = ngx_queue_head(&q->ready);

    while (next != ngx_queue_sentinel(&q->ready)
           && n < NGX_NEBULA_SETTLE_BATCH)
    {
        h = next;
        next = ngx_queue_next(h);
        s = ngx_queue_data(h, ngx_nebula_settlement_t, queue);

        if (s->alone && n) {
            break;      /* one of a refused batch goes in a batch of one */
        }

        if (ngx_nebula_redis_cluster()) {
            /*
             * A script's keys must lie in one slot of a cluster: the
             * batch takes the settlements of the first one's slot, the
             * others wait for the next batch, in their order.
             */
            if (slot == -1) {
                slot = nebula_cluster_slot(s->tag, NGX_NEBULA_KEY_ID_LEN);

            } else if (nebula_cluster_slot(s->tag, NGX_NEBULA_KEY_ID_LEN)
                       != (unsigned) slot)
            {
                continue;
            }
        }

        ngx_queue_remove(h);
        q->nready--;

        ngx_queue_insert_tail(&b->settlements, h);
        argc += s->argc + 1;
        n++;

        if (s->alone) {
            break;
        }
    }

    b->n = n;
    nkeys = NGX_NEBULA_SETTLE_KEYS * n;

    argv = ngx_alloc(argc * sizeof(ngx_str_t), q->log);
    if (argv == NULL) {
        ngx_nebula_settle_reply(b, NULL);
        return NGX_OK;
    }

    k = 0;
    a = nkeys;
    i = 0;

    for (h = ngx_queue_head(&b->settlements);
         h != ngx_queue_sentinel(&b->settlements);
         h = ngx_queue_next(h))
    {
        s = ngx_queue_data(h, ngx_nebula_settlement_t, queue);

        ngx_memcpy(&argv[k], s->argv,
                   NGX_NEBULA_SETTLE_KEYS * sizeof(ngx_str_t));
        k += NGX_NEBULA_SETTLE_KEYS;

        p = ngx_sprintf(counts[i], "%ui", s->argc - NGX_NEBULA_SETTLE_KEYS);
        argv[a].data = counts[i];
        argv[a].len = p - counts[i];
        a++;
        i++;

        ngx_memcpy(&argv[a], &s->argv[NGX_NEBULA_SETTLE_KEYS],
                   (s->argc - NGX_NEBULA_SETTLE_KEYS) * sizeof(ngx_str_t));
        a += s->argc - NGX_NEBULA_SETTLE_KEYS;
    }

    if (ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_SETTLE, nkeys, argc, argv,
                              ngx_nebula_settle_reply, b)
        == NULL)
    {
        ngx_free(argv);
        ngx_nebula_settle_reply(b, NULL);
        return NGX_OK;
    }

    ngx_free(argv);

    return NGX_OK;
}


static void
ngx_nebula_settle_flush(ngx_event_t *ev)
{
    ngx_queue_t                *h;
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (!ngx_nebula_redis_ready()) {
        if (ngx_exiting && !ngx_queue_empty(&q->retry)) {

            /*
             * A worker that shuts down while Redis is away (a reload or
             * a binary upgrade during an outage) keeps its settlements
             * and reconnects for them, for up to a minute; this timer
             * keeps the worker alive until then.
             */
            if (!q->exit_wait) {
                q->exit_wait = 1;
                q->exit_deadline = ngx_current_msec
                                   + NGX_NEBULA_SETTLE_EXIT_WAIT;
            }

            if ((ngx_msec_int_t) (q->exit_deadline - ngx_current_msec) > 0) {
                ngx_nebula_redis_reconnect_exiting();
                ngx_add_timer(&q->flush, 500);
                return;
            }

            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "nebula: worker exits with %ui settlements that "
                          "redis did not take", q->nretry);

            while (!ngx_queue_empty(&q->retry)) {
                h = ngx_queue_head(&q->retry);
                ngx_queue_remove(h);
                ngx_free(ngx_queue_data(h, ngx_nebula_settlement_t, queue));
            }

            q->nretry = 0;
            ngx_nebula_metrics_settlements_queued(0);
            return;
        }

        if (!ngx_queue_empty(&q->retry)) {
            ngx_add_timer(&q->flush, 500);
        }

        return;
    }

    if (q->dropped) {
        ngx_log_error(NGX_LOG_ERR, q->log, 0,
                      "nebula: %ui settlements were dropped while redis "
                      "was away", q->dropped);
        q->dropped = 0;
    }

    /* they go again with the next batches, ahead of what waits there */
    while (!ngx_queue_empty(&q->retry)) {
        h = ngx_queue_last(&q->retry);
        ngx_queue_remove(h);
        q->nretry--;
        ngx_nebula_metrics_settlements_queued(q->nretry);

        ngx_queue_insert_head(&q->ready, h);
        q->nready++;
    }

    ngx_nebula_settle_tick(&q->tick);
}


void
ngx_nebula_settle_init_worker(ngx_cycle_t *cycle)
{
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    ngx_memzero(q, sizeof(ngx_nebula_settle_queue_t));
    ngx_queue_init(&q->ready);
    ngx_queue_init(&q->retry);
    q->log = cycle->log;
    q->tick.handler = ngx_nebula_settle_tick;
    q->tick.log = cycle->log;
    q->tick.data = q;

    /* a batch that waits keeps a worker that shuts down until it goes */
    q->tick.cancelable = 0;

    q->flush.handler = ngx_nebula_settle_flush;
    q->flush.log = cycle->log;
    q->flush.data = q;

    /* settlements that wait keep a worker that shuts down alive a while */
    q->flush.cancelable = 0;
}


/*
 * The worker exits: what still waits for Redis goes with it (a fast
 * shutdown; redisAsyncFree() has just given the settlements in flight
 * back to the queue), so that nothing is left allocated.
 */
void
ngx_nebula_settle_exit_worker(ngx_cycle_t *cycle)
{
    ngx_queue_t                *h;
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (q->log == NULL) {
        return;
    }

    while (!ngx_queue_empty(&q->ready)) {
        h = ngx_queue_head(&q->ready);
        ngx_queue_remove(h);
        ngx_free(ngx_queue_data(h, ngx_nebula_settlement_t, queue));
    }

    q->nready = 0;

    while (!ngx_queue_empty(&q->retry)) {
        h = ngx_queue_head(&q->retry);
        ngx_queue_remove(h);
        ngx_free(ngx_queue_data(h, ngx_nebula_settlement_t, queue));
    }

    q->nretry = 0;
    ngx_nebula_metrics_settlements_queued(0);
}
