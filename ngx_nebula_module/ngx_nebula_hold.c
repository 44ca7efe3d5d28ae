/*
 * Nebula: the reservations this worker holds, kept alive in Redis while
 * their requests live.
 *
 * A reservation (a request's, or a lease's block) is a member of the key's
 * nb:{ID}:res:MONTH sorted set, scored by when it expires; the ADMIT
 * script gives back every one whose time has passed, for a worker that
 * died cannot settle what it held.  Age alone must not free one whose
 * request still runs (a slow reader, a long generation): its quota would
 * be reserved a second time and the first stream would still settle
 * later.  So the worker that holds a reservation pushes its expiry ahead,
 * every third of nebula_reservation_timeout, with one ZADD XX a
 * reservation (one slot a command: Redis Cluster ready): the score is the
 * liveness mark, and only a worker that stopped (or a Redis unreachable
 * for longer than the timeout) lets it lapse.  Settlement removes the
 * member, and the entry here.
 *
 * The score is on the admission's clock (nebula_test_clock may move it):
 * the entry keeps the difference to the real one.
 */

#include "ngx_nebula.h"


/* however short the timeout, no more often than this */
#define NGX_NEBULA_HOLD_TICK_MIN  300


typedef struct {
    ngx_queue_t               held;
    ngx_uint_t                count;
    ngx_event_t               tick;
    ngx_msec_t                period;
    time_t                    timeout;      /* seconds */
    ngx_log_t                *log;
    unsigned                  enabled:1;
} ngx_nebula_holds_t;


/* each worker has its own */
static ngx_nebula_holds_t  ngx_nebula_holds;

/* what a refresh's reply is handed: it is not read */
static u_char  ngx_nebula_hold_reply_data;


static void ngx_nebula_hold_tick(ngx_event_t *ev);


void
ngx_nebula_hold_init_worker(ngx_cycle_t *cycle, ngx_msec_t timeout)
{
    ngx_nebula_holds_t  *hs = &ngx_nebula_holds;

    ngx_memzero(hs, sizeof(ngx_nebula_holds_t));
    ngx_queue_init(&hs->held);

    hs->timeout = (time_t) (timeout / 1000);
    hs->period = ngx_max(timeout / 3, NGX_NEBULA_HOLD_TICK_MIN);
    hs->log = cycle->log;
    hs->enabled = 1;

    hs->tick.handler = ngx_nebula_hold_tick;
    hs->tick.log = cycle->log;
    hs->tick.data = hs;

    /* a worker that shuts down with nothing else to do need not wait */
    hs->tick.cancelable = 1;
}


/*
 * The reservation named id:in:out, made in Redis on the clock "clock",
 * is held from now on; extra: seconds it outlives a request's (a lease's
 * block, as the ADMIT script scores it).
 */
void
ngx_nebula_hold_add(ngx_nebula_hold_t *h, u_char *tag, u_char *month,
    u_char *id, uint64_t in, uint64_t out, time_t clock, time_t extra)
{
    ngx_nebula_holds_t  *hs = &ngx_nebula_holds;

    if (!hs->enabled || h->held) {
        return;
    }

    ngx_memcpy(h->tag, tag, NGX_NEBULA_KEY_ID_LEN);
    h->tag[NGX_NEBULA_KEY_ID_LEN] = '\0';
    ngx_memcpy(h->month, month, 7);
    h->month[7] = '\0';

    h->member_len = ngx_snprintf(h->member, sizeof(h->member), "%s:%uL:%uL",
                                 id, in, out)
                    - h->member;
    h->offset = clock - ngx_time();
    h->extra = extra;
    h->held = 1;

    ngx_queue_insert_tail(&hs->held, &h->queue);
    hs->count++;

    if (!hs->tick.timer_set) {
        ngx_add_timer(&hs->tick, hs->period);
    }
}


/* settled (or given back): no longer this worker's to keep alive */
void
ngx_nebula_hold_remove(ngx_nebula_hold_t *h)
{
    ngx_nebula_holds_t  *hs = &ngx_nebula_holds;

    if (!h->held) {
        return;
    }

    ngx_queue_remove(&h->queue);
    h->held = 0;
    hs->count--;

    if (hs->count == 0 && hs->tick.timer_set) {
        ngx_del_timer(&hs->tick);
    }
}


/* when the reservation expires if it is not pushed ahead again, as now */
time_t
ngx_nebula_hold_score(ngx_nebula_hold_t *h)
{
    return ngx_time() + h->offset + ngx_nebula_holds.timeout + h->extra;
}


static void
ngx_nebula_hold_reply(void *data, redisReply *reply)
{
    /*
     * Nothing to do either way: a refresh Redis did not take is sent again
     * at the next tick, two more before the reservation could lapse.
     */
}


static void
ngx_nebula_hold_tick(ngx_event_t *ev)
{
    u_char              *p;
    time_t               now;
    ngx_str_t            argv[5];
    ngx_queue_t         *q;
    ngx_nebula_hold_t   *h;
    ngx_nebula_holds_t  *hs = &ngx_nebula_holds;
    u_char               key[64], score[NGX_TIME_T_LEN];

    if (hs->count == 0) {
        return;
    }

    now = ngx_time();

    ngx_str_set(&argv[0], "ZADD");
    ngx_str_set(&argv[2], "XX");

    for (q = ngx_queue_head(&hs->held);
         q != ngx_queue_sentinel(&hs->held);
         q = ngx_queue_next(q))
    {
        h = ngx_queue_data(q, ngx_nebula_hold_t, queue);

        if (!ngx_nebula_redis_ready()) {
            break;
        }

        p = ngx_sprintf(key, "nb:{%s}:res:%s", h->tag, h->month);
        argv[1].data = key;
        argv[1].len = p - key;

        p = ngx_sprintf(score, "%T", now + h->offset + hs->timeout + h->extra);
        argv[3].data = score;
        argv[3].len = p - score;

        argv[4].data = h->member;
        argv[4].len = h->member_len;

        /* XX: one settled meanwhile, or given back, is not made again */
        (void) ngx_nebula_redis_command(5, argv, ngx_nebula_hold_reply,
                                        &ngx_nebula_hold_reply_data);
    }

    ngx_add_timer(&hs->tick, hs->period);
}


void
ngx_nebula_hold_exit_worker(ngx_cycle_t *cycle)
{
    ngx_nebula_holds_t  *hs = &ngx_nebula_holds;

    /* what is still held lapses in Redis after the timeout, as a crash's */
    hs->enabled = 0;
}
