/*
 * Nebula: Redis Cluster, on hiredis 0.14, which has no cluster support.
 *
 * A worker learns the slot map with CLUSTER SLOTS from a seed (the nodes
 * nebula_redis names), keeps one connection to each master (a node of
 * ngx_nebula_redis.c), and sends each command to the master of its first
 * key's slot.  Every key of an account holds the account's hash tag
 * (docs/redis.md), so one request's script is on one slot, one master.
 *
 * - MOVED: the slot has a new master for good (a failover, a resharding):
 *   the map takes it at once, the command goes there, and the whole map is
 *   asked for again.
 * - ASK: the slot is migrating: the command goes to the target behind
 *   ASKING, and the map does not change.
 * - A master lost: its commands fail at once (the request gets the
 *   failure mode); the map is asked for again, from another node, every
 *   100 to 500 ms until it names a master for every slot that answers, so
 *   a replica that took over is found within a failover's time.
 *
 * The parsers (CRC16, hash tags, redirections, the map) are nginx-free,
 * in nebula_cluster.c, for the unit tests and the fuzzer.
 */

#include "ngx_nebula_redis_int.h"
#include "nebula_cluster.h"


#define NGX_NEBULA_CLUSTER_REFRESH_MIN  100
#define NGX_NEBULA_CLUSTER_REFRESH_MAX  500

/* ranges a map may have: more than a cluster resharded by hand needs */
#define NGX_NEBULA_CLUSTER_RANGES       2048


static void ngx_nebula_redis_cluster_ask(void);


static void
ngx_nebula_redis_cluster_refresh_handler(ngx_event_t *ev)
{
    ngx_nebula_redis_cluster_ask();
}


/* the map is asked for again soon, and less often while it stays wrong */
static void
ngx_nebula_redis_cluster_refresh(ngx_msec_t delay)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (rd->refresh.timer_set) {
        if (delay >= rd->refresh.timer.key - ngx_current_msec) {
            return;
        }

        ngx_del_timer(&rd->refresh);
    }

    ngx_add_timer(&rd->refresh, delay);
}


void
ngx_nebula_redis_cluster_start(void)
{
    ngx_uint_t                i;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_addr_t  *seed;

    rd->slots = ngx_alloc(NGX_NEBULA_REDIS_SLOTS, rd->log);
    if (rd->slots == NULL) {
        return;
    }

    ngx_memset(rd->slots, NGX_NEBULA_REDIS_NO_NODE, NGX_NEBULA_REDIS_SLOTS);

    seed = rd->conf->seeds->elts;

    for (i = 0; i < rd->conf->seeds->nelts; i++) {
        (void) ngx_nebula_redis_node(seed[i].ip, seed[i].port, 0);
    }

    rd->refresh.handler = ngx_nebula_redis_cluster_refresh_handler;
    rd->refresh.log = rd->log;
    rd->refresh.data = rd;
    rd->refresh.cancelable = 1;
    rd->refresh_backoff = NGX_NEBULA_CLUSTER_REFRESH_MIN;

    ngx_nebula_redis_cluster_ask();
}


/*
 * CLUSTER SLOTS, to a node that answers, else to the next node known in
 * turn (the seeds first).  Until the first map, the question is a step of
 * that node's handshake: the commands that come meanwhile wait behind it
 * and then go where the map says (ngx_nebula_redis_release_waiting).
 */
static void
ngx_nebula_redis_cluster_ask(void)
{
    ngx_uint_t                i;
    const char               *argv[2];
    size_t                    argvlen[2];
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *n, *to;

    if (rd->asked || rd->slots == NULL) {
        return;
    }

    to = NULL;

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (n->ac && n->connected && n->answered && n->handshake == 0) {
            to = n;
            break;
        }
    }

    if (to == NULL) {
        if (rd->nnodes == 0) {
            return;
        }

        to = rd->nodes[rd->next_seed++ % rd->nnodes];

        if (to->ac == NULL) {
            to->unused = 0;
            ngx_nebula_redis_node_connect(to);

            if (to->ac == NULL) {
                /* refused at once: the next node, after a while */
                ngx_nebula_redis_cluster_refresh(rd->refresh_backoff);
                return;
            }
        }
    }

    argv[0] = "CLUSTER";
    argvlen[0] = 7;
    argv[1] = "SLOTS";
    argvlen[1] = 5;

    if (ngx_nebula_redis_node_internal(to, 2, argv, argvlen, "CLUSTER SLOTS",
                                       !rd->mapped)
        == NULL)
    {
        ngx_nebula_redis_cluster_refresh(rd->refresh_backoff);
        return;
    }

    rd->asked = to;

    if (rd->data == NULL) {
        rd->data = to;
    }
}


/* the map: each range's master, its node made and connected if new */
void
ngx_nebula_redis_cluster_reply(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op, redisReply *reply)
{
    int                       nranges, k;
    u_char                    used[NGX_NEBULA_REDIS_MAX_NODES];
    u_char                   *ip;
    ngx_uint_t                i, s, wrong;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *t;
    nebula_cluster_range_t   *ranges;
    char                      why[256];

    if (rd->asked == n) {
        rd->asked = NULL;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        *ngx_snprintf((u_char *) why, sizeof(why) - 1,
                      "CLUSTER SLOTS refused: %s", reply->str) = '\0';
        ngx_nebula_redis_node_lost(n, why);
        return;
    }

    ranges = ngx_alloc(NGX_NEBULA_CLUSTER_RANGES
                       * sizeof(nebula_cluster_range_t), rd->log);
    if (ranges == NULL) {
        ngx_nebula_redis_cluster_refresh(rd->refresh_backoff);
        return;
    }

    nranges = nebula_cluster_slots(reply, ranges, NGX_NEBULA_CLUSTER_RANGES);

    if (nranges <= 0) {
        ngx_free(ranges);
        ngx_nebula_redis_node_lost(n, nranges < 0
                                      ? "CLUSTER SLOTS reply malformed, or "
                                        "more than 2048 ranges"
                                      : "CLUSTER SLOTS names no master");
        return;
    }

    ngx_memzero(used, sizeof(used));
    ngx_memset(rd->slots, NGX_NEBULA_REDIS_NO_NODE, NGX_NEBULA_REDIS_SLOTS);

    for (k = 0; k < nranges; k++) {
        /* no address: the node's own, the one asked */
        ip = ranges[k].host[0] ? (u_char *) ranges[k].host : n->ip;

        t = ngx_nebula_redis_node(ip, ranges[k].port, 0);
        if (t == NULL) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "nebula: redis cluster has more than %d masters",
                          NGX_NEBULA_REDIS_MAX_NODES);
            continue;
        }

        used[t->index] = 1;

        for (s = ranges[k].start; s <= ranges[k].end; s++) {
            rd->slots[s] = (uint8_t) t->index;
        }
    }

    ngx_free(ranges);

    wrong = 0;

    for (s = 0; s < NGX_NEBULA_REDIS_SLOTS; s++) {
        if (rd->slots[s] == NGX_NEBULA_REDIS_NO_NODE) {
            wrong = 1;
            break;
        }
    }

    for (i = 0; i < rd->nnodes; i++) {
        t = rd->nodes[i];

        if (!used[i]) {
            /* a replica, or a master no more: kept, not reconnected */
            t->unused = 1;

            if (t->reconnect.timer_set) {
                ngx_del_timer(&t->reconnect);
            }

            continue;
        }

        t->unused = 0;

        if (t->ac == NULL && !t->reconnect.timer_set) {
            ngx_nebula_redis_node_connect(t);
        }

        if (t->ac == NULL || t->down) {
            wrong = 1;
        }
    }

    rd->mapped = 1;

    if (wrong) {
        ngx_nebula_redis_cluster_refresh(rd->refresh_backoff);
        rd->refresh_backoff = ngx_min(rd->refresh_backoff * 2,
                                      NGX_NEBULA_CLUSTER_REFRESH_MAX);

    } else {
        rd->refresh_backoff = NGX_NEBULA_CLUSTER_REFRESH_MIN;
    }

    /* what waited for the first map goes where it says */
    ngx_nebula_redis_handshake_step(n, op);
}


/* a master is gone, or a seed: its replica may take over; ask again */
void
ngx_nebula_redis_cluster_lost(ngx_nebula_redis_node_t *n)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (rd->asked == n) {
        rd->asked = NULL;
    }

    ngx_nebula_redis_cluster_refresh(rd->mapped
                                     ? NGX_NEBULA_CLUSTER_REFRESH_MIN
                                     : rd->refresh_backoff);

    if (!rd->mapped) {
        rd->refresh_backoff = ngx_min(rd->refresh_backoff * 2,
                                      NGX_NEBULA_CLUSTER_REFRESH_MAX);
    }
}


/* the node a command goes to: its slot's master, or NULL for none now */
ngx_nebula_redis_node_t *
ngx_nebula_redis_cluster_route(ngx_nebula_redis_op_t *op)
{
    ngx_uint_t                i;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *n;

    if (!rd->mapped) {
        /* it waits behind the question, on the node asked */
        return rd->asked;
    }

    if (op->slot < 0) {
        /* no key (PING): any master that answers */
        for (i = 0; i < rd->nnodes; i++) {
            n = rd->nodes[i];

            if (!n->unused && n->ac && n->connected && !n->down) {
                return n;
            }
        }

        return NULL;
    }

    i = rd->slots[op->slot];

    return (i == NGX_NEBULA_REDIS_NO_NODE) ? NULL : rd->nodes[i];
}


static void
ngx_nebula_redis_cluster_again(ngx_event_t *ev)
{
    ngx_nebula_redis_op_t    *op = ev->data;
    ngx_nebula_redis_node_t  *to;

    ngx_free(ev);

    to = ngx_nebula_redis_cluster_route(op);

    if (to == NULL || ngx_nebula_redis_node_send(to, op) != NGX_OK) {
        ngx_nebula_redis_op_fail(op);
    }
}


/*
 * TRYAGAIN: a command of several keys while their slot migrates, some
 * moved and some not (an account's script declares keys that may not
 * exist yet, a minute's counter): it goes again in 25 ms, up to five
 * times, the time a slot of a resharding takes to move.
 */
static ngx_int_t
ngx_nebula_redis_cluster_tryagain(ngx_nebula_redis_op_t *op)
{
    ngx_event_t  *ev;

    ev = ngx_calloc(sizeof(ngx_event_t), ngx_nebula_redis.log);
    if (ev == NULL) {
        return 0;
    }

    op->redirects++;

    ev->handler = ngx_nebula_redis_cluster_again;
    ev->data = op;
    ev->log = ngx_nebula_redis.log;

    ngx_add_timer(ev, 25);

    return 1;
}


/*
 * MOVED and ASK, and TRYAGAIN: 1 when the op went on to another node (or
 * failed there, or waits to go again), 0 when the reply is the caller's
 * to hear.
 */
ngx_int_t
ngx_nebula_redis_cluster_redirected(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op, redisReply *reply)
{
    u_char                      *ip;
    const char                  *argv[1];
    size_t                       argvlen[1];
    ngx_nebula_redis_t          *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t     *t;
    nebula_cluster_redirect_t    rr;

    if (nebula_cluster_redirect(reply->str, reply->len, &rr)
        != NEBULA_CLUSTER_MOVED
        && rr.kind != NEBULA_CLUSTER_ASK)
    {
        if (reply->len >= 8 && ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0
            && op->redirects < NGX_NEBULA_REDIS_MAX_REDIRECTS)
        {
            return ngx_nebula_redis_cluster_tryagain(op);
        }

        return 0;
    }

    if (op->redirects == NGX_NEBULA_REDIS_MAX_REDIRECTS) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "nebula: redis cluster redirected a command %d times, "
                      "last to \"%s:%d\"", NGX_NEBULA_REDIS_MAX_REDIRECTS,
                      rr.host, rr.port);
        return 0;
    }

    ip = rr.host[0] ? (u_char *) rr.host : n->ip;

    t = ngx_nebula_redis_node(ip, rr.port, 0);
    if (t == NULL) {
        return 0;
    }

    op->redirects++;
    t->unused = 0;

    if (t->ac == NULL) {
        ngx_nebula_redis_node_connect(t);
    }

    if (rr.kind == NEBULA_CLUSTER_MOVED) {
        /* the slot's master for good: the rest of the map may move too */
        rd->slots[rr.slot] = (uint8_t) t->index;
        ngx_nebula_redis_cluster_refresh(0);

        if (ngx_nebula_redis_node_send(t, op) != NGX_OK) {
            ngx_nebula_redis_op_fail(op);
        }

        return 1;
    }

    /*
     * ASK: the slot migrates, this key is there already.  ASKING must come
     * right before the command on the same connection, so both go now,
     * not behind a handshake (a cluster has no SELECT to wait for).
     */
    argv[0] = "ASKING";
    argvlen[0] = 6;

    if (ngx_nebula_redis_node_internal(t, 1, argv, argvlen, "ASKING", 0)
        == NULL
        || ngx_nebula_redis_node_submit(t, op) != NGX_OK)
    {
        ngx_nebula_redis_op_fail(op);
    }

    return 1;
}


ngx_int_t
ngx_nebula_redis_cluster_ready(void)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    return rd->mapped || rd->asked != NULL;
}


/*
 * "up": every slot has a master that answers; "partial": some slot has
 * none now (a failover under way); "down": none answers, or no map yet.
 */
const char *
ngx_nebula_redis_cluster_state(void)
{
    ngx_uint_t                i, up, down;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *n;

    if (!rd->mapped) {
        return rd->asked ? "connecting" : "down";
    }

    up = 0;
    down = 0;

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (n->unused) {
            continue;
        }

        if (n->ac && n->connected && !n->down) {
            up++;

        } else {
            down++;
        }
    }

    if (up == 0) {
        return "down";
    }

    if (down) {
        return "partial";
    }

    for (i = 0; i < NGX_NEBULA_REDIS_SLOTS; i++) {
        if (rd->slots[i] == NGX_NEBULA_REDIS_NO_NODE) {
            return "partial";
        }
    }

    return "up";
}


/*
 * The slot of a command in RESP: of its first key, argument 1, or an
 * EVALSHA's fourth, when it declares keys; -1 when it names none.
 */
ngx_int_t
ngx_nebula_redis_cmd_slot(const char *cmd, int len)
{
    u_char      *p, *last, *arg[4];
    size_t       alen[4];
    ngx_uint_t   i, n, want;

    p = (u_char *) cmd;
    last = p + len;

    if (p == last || *p++ != '*') {
        return -1;
    }

    n = 0;

    while (p < last && *p >= '0' && *p <= '9') {
        n = n * 10 + (*p++ - '0');
    }

    p += 2;

    for (i = 0; i < 4 && i < n; i++) {
        if (p >= last || *p++ != '$') {
            return -1;
        }

        alen[i] = 0;

        while (p < last && *p >= '0' && *p <= '9') {
            alen[i] = alen[i] * 10 + (*p++ - '0');
        }

        p += 2;

        if (p > last || (size_t) (last - p) < alen[i]) {
            return -1;
        }

        arg[i] = p;
        p += alen[i] + 2;
    }

    if (i < 2) {
        return -1;
    }

    want = 1;

    if (alen[0] == 7 && ngx_strncasecmp(arg[0], (u_char *) "EVALSHA", 7) == 0)
    {
        if (i < 4 || (alen[2] == 1 && arg[2][0] == '0')) {
            return -1;
        }

        want = 3;
    }

    return nebula_cluster_slot(arg[want], alen[want]);
}


/*
 * The admin's listings across the cluster (ngx_nebula_fanout.c) send each
 * master the accounts it serves, in one script: they group them by this
 */
ngx_int_t
ngx_nebula_redis_slot_node(ngx_uint_t slot)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (!rd->mapped || rd->slots == NULL || slot >= NGX_NEBULA_REDIS_SLOTS
        || rd->slots[slot] == NGX_NEBULA_REDIS_NO_NODE)
    {
        return -1;
    }

    return rd->slots[slot];
}
