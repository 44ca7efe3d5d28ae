/*
 * Nebula: a worker's Redis, the way in: commands sent (to the one node, the
 * master a sentinel names, or a cluster's master of the command's slot),
 * their replies dispatched, the worker's start and end.
 *
 * - EVALSHA, with the script loaded again when Redis says NOSCRIPT;
 * - a cluster's MOVED, ASK and TRYAGAIN followed (ngx_nebula_redis_cluster.c);
 * - an op whose request went away is cancelled, not freed: its reply
 *   arrives later and touches nothing of the request.
 *
 * A worker has one connection (a node, ngx_nebula_redis_node.c) to a
 * single Redis, or to the master the sentinels name
 * (ngx_nebula_redis_sentinel.c), or one to each master of a cluster
 * (ngx_nebula_redis_cluster.c).  nebula_redis_wait's WAIT is
 * ngx_nebula_redis_wait.c's.
 */

#include "ngx_nebula_redis_int.h"
#include "ngx_nebula_metrics.h"


ngx_nebula_redis_t  ngx_nebula_redis;


static void
ngx_nebula_redis_internal_reply(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op, redisReply *reply)
{
    char                 why[256];
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (ngx_strcmp(op->what, "WAIT") == 0) {
        ngx_nebula_redis_waited(n, op, reply);
        return;
    }

    if (reply == NULL || n->ac == NULL) {
        return;
    }

    if (ngx_strcmp(op->what, "CLUSTER SLOTS") == 0) {
        ngx_nebula_redis_cluster_reply(n, op, reply);
        return;
    }

    if (ngx_strcmp(op->what, "SENTINEL") == 0) {
        ngx_nebula_redis_sentinel_reply(n, op, reply);
        return;
    }

    if (ngx_strcmp(op->what, "ROLE") == 0 && reply->type != REDIS_REPLY_ERROR) {
        /* a sentinel's master must still be one: it may have failed over */
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0
            || reply->element[0]->type != REDIS_REPLY_STRING
            || ngx_strcmp(reply->element[0]->str, "master") != 0)
        {
            ngx_nebula_redis_node_lost(n, "it is not a master (ROLE)");
            return;
        }
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_nebula_redis_handshake_step(n, op);
        return;
    }

    if (ngx_strcmp(op->what, "SCRIPT LOAD") == 0) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "nebula: redis at \"%V\" refused SCRIPT LOAD: %s",
                      &n->name, reply->str);
        return;
    }

    if (ngx_strcmp(op->what, "ASKING") == 0) {
        return;     /* the command behind it gets its own reply */
    }

    /*
     * A refused AUTH or SELECT leaves a connection no command can use:
     * it is an outage, logged once, and retried with backoff.
     */
    *ngx_snprintf((u_char *) why, sizeof(why) - 1, "%s refused: %s",
                  op->what, reply->str) = '\0';

    ngx_nebula_redis_node_lost(n, why);
}


/* NOSCRIPT: SCRIPT FLUSH, or a new Redis; load it, then run it again */
static ngx_int_t
ngx_nebula_redis_noscript(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op)
{
    if (ngx_nebula_redis_load(n, op->script) == NULL) {
        return NGX_ERROR;
    }

    op->retried = 1;

    return ngx_nebula_redis_node_submit(n, op);
}


/* hiredis's reply callback: the op at the head of the queue is answered */
void
ngx_nebula_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply               *reply = r;
    ngx_uint_t                readonly;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t    *op = privdata;
    ngx_nebula_redis_node_t  *n = op->node;

    ngx_queue_remove(&op->queue);
    n->npending--;
    readonly = 0;

    if (reply) {
        /* sent at its deadline less the timeout (on_connect resets both) */
        ngx_nebula_metrics_redis_reply(ngx_current_msec
                                       - (op->deadline - rd->conf->timeout));
    }

    if (reply && reply->type != REDIS_REPLY_ERROR && n->ac == ac
        && !n->answered && !n->sentinel
        && (!op->internal || ngx_strcmp(op->what, "SCRIPT LOAD") == 0))
    {
        /*
         * Redis answers: only now is a reconnection a success (a Redis
         * that accepts and then refuses AUTH, or accepts and is frozen,
         * is still an outage), so only now is the outage over.  An
         * accepted AUTH does not count: a refused SELECT may follow.
         */
        n->answered = 1;
        n->backoff = NGX_NEBULA_REDIS_BACKOFF_MIN;

        if (rd->conf->mode == NGX_NEBULA_REDIS_CLUSTER) {
            if (n->down) {
                ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                              "nebula: redis cluster node \"%V\" is back",
                              &n->name);
            }

        /*
         * Tried even when this worker saw no outage: a worker started
         * after one began (reload, respawn) would otherwise leave the
         * flag set and every later outage unlogged.  The worker that
         * clears it says so, once.
         */
        } else if (ngx_atomic_cmp_set(rd->conf->outage, 1, 0)) {
            ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                          "nebula: redis at \"%V\" is back", &n->name);
        }

        n->down = 0;
    }

    if (op->internal) {
        ngx_nebula_redis_internal_reply(n, op, reply);
        goto done;
    }

    if (op->durable && op->wait && reply && reply->type != REDIS_REPLY_ERROR)
    {
        /* answered once the replicas have it too: the WAIT's reply */
        op->held = ngx_nebula_redis_copy(NULL, reply);

        if (op->held) {
            ngx_queue_insert_tail(&op->wait->held_ops, &op->queue);

            if (n->ac == ac) {
                ngx_nebula_redis_arm_timer(n);
            }

            return;
        }
    }

    if (reply && reply->type == REDIS_REPLY_ERROR && n->ac == ac) {

        if (rd->conf->mode == NGX_NEBULA_REDIS_CLUSTER
            && ngx_nebula_redis_cluster_redirected(n, op, reply))
        {
            /* it went to another node, or failed there */
            ngx_nebula_redis_arm_timer(n);
            return;
        }

        if (!op->retried && op->cmd && op->script < NGX_NEBULA_SCRIPT_N
            && n->connected && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
            && ngx_nebula_redis_noscript(n, op) == NGX_OK)
        {
            ngx_nebula_redis_arm_timer(n);
            return;
        }

        /* a master the sentinels demoted, or a replica they named early */
        readonly = (rd->conf->mode == NGX_NEBULA_REDIS_SENTINEL
                    && ngx_strncmp(reply->str, "READONLY", 8) == 0);
    }

    if (op->data) {
        op->handler(op->data, reply);
    }

done:

    if (op->cmd) {
        redisFreeCommand(op->cmd);
    }

    ngx_free(op);

    if (readonly && n->ac == ac) {
        ngx_nebula_redis_node_lost(n, "it is a replica now (READONLY)");
        return;
    }

    if (n->ac == ac) {
        ngx_nebula_redis_arm_timer(n);
    }
}


ngx_nebula_redis_op_t *
ngx_nebula_redis_op(char *cmd, int len, ngx_nebula_script_e script,
    ngx_nebula_redis_handler_pt handler, void *data)
{
    ngx_nebula_redis_op_t  *op;

    op = ngx_alloc(sizeof(ngx_nebula_redis_op_t), ngx_nebula_redis.log);
    if (op == NULL) {
        return NULL;
    }

    ngx_memzero(op, sizeof(ngx_nebula_redis_op_t));
    op->handler = handler;
    op->data = data;
    op->script = script;
    op->cmd = cmd;
    op->cmd_len = len;
    op->slot = -1;

    return op;
}


/* the reply never comes: the caller hears of it at once */
void
ngx_nebula_redis_op_fail(ngx_nebula_redis_op_t *op)
{
    if (op->data && op->handler) {
        op->handler(op->data, NULL);
    }

    if (op->cmd) {
        redisFreeCommand(op->cmd);
    }

    ngx_free(op);
}


ngx_nebula_redis_op_t *
ngx_nebula_redis_send(char *cmd, int len, ngx_nebula_script_e script,
    ngx_nebula_redis_handler_pt handler, void *data, ngx_uint_t internal)
{
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t    *op;
    ngx_nebula_redis_node_t  *n;

    if (!rd->active) {
        redisFreeCommand(cmd);
        return NULL;
    }

    op = ngx_nebula_redis_op(cmd, len, script, handler, data);
    if (op == NULL) {
        redisFreeCommand(cmd);
        return NULL;
    }

    op->durable = rd->conf->wait
                  && (script == NGX_NEBULA_SCRIPT_ADMIT
                      || script == NGX_NEBULA_SCRIPT_SETTLE);

    if (rd->conf->mode == NGX_NEBULA_REDIS_CLUSTER) {
        op->slot = ngx_nebula_redis_cmd_slot(cmd, len);
        n = ngx_nebula_redis_cluster_route(op);

    } else {
        n = rd->data;
    }

    if (n && n->ac == NULL && rd->conf->mode == NGX_NEBULA_REDIS_SENTINEL
        && rd->sentinel)
    {
        /*
         * A sentinel is asked where the master is (a worker's start, a
         * failover): the command waits for the answer and the master's
         * handshake, or fails with them
         */
        op->node = n;
        ngx_queue_insert_tail(&n->waiting, &op->queue);
        return op;
    }

    if (n == NULL || ngx_nebula_redis_node_send(n, op) != NGX_OK) {
        redisFreeCommand(cmd);
        ngx_free(op);
        return NULL;
    }

    return op;
}


ngx_int_t
ngx_nebula_redis_init_worker(ngx_cycle_t *cycle, ngx_nebula_redis_conf_t *conf)
{
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *n;

    ngx_memzero(rd, sizeof(ngx_nebula_redis_t));

    rd->conf = conf;
    rd->log = cycle->log;
    rd->active = 1;

    switch (conf->mode) {

    case NGX_NEBULA_REDIS_CLUSTER:
        ngx_nebula_redis_cluster_start();
        return NGX_OK;

    case NGX_NEBULA_REDIS_SENTINEL:
        ngx_nebula_redis_sentinel_start();
        return NGX_OK;

    default:
        break;
    }

    n = ngx_nebula_redis_node(conf->ip, conf->port, 0);
    if (n == NULL) {
        return NGX_ERROR;
    }

    /* messages name it as the configuration does */
    n->name = conf->name;
    n->unix_path = conf->unix_path;
    rd->data = n;

    ngx_nebula_redis_node_connect(n);

    return NGX_OK;
}


void
ngx_nebula_redis_exit_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t                i, npending;
    redisAsyncContext        *ac;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *n;

    if (!rd->active) {
        return;
    }

    npending = 0;

    for (i = 0; i < rd->nnodes; i++) {
        npending += rd->nodes[i]->npending;
    }

    if (npending) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "nebula: worker exits with %ui redis commands "
                      "unanswered", npending);
    }

    rd->active = 0;

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];
        ac = n->ac;
        n->ac = NULL;

        ngx_nebula_redis_fail_waiting(n);

        if (ac) {
            redisAsyncFree(ac);
        }
    }

    /* the process ends: nothing runs the nodes' events again */
    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (n->timer.timer_set) {
            ngx_del_timer(&n->timer);
        }

        if (n->reconnect.timer_set) {
            ngx_del_timer(&n->reconnect);
        }

        if (n->wait_ev.posted) {
            ngx_delete_posted_event(&n->wait_ev);
        }

        ngx_free(n);
    }

    rd->nnodes = 0;
    rd->data = NULL;

    if (rd->slots) {
        ngx_free(rd->slots);
        rd->slots = NULL;
    }
}


ngx_int_t
ngx_nebula_redis_cluster(void)
{
    return ngx_nebula_redis.conf
           && ngx_nebula_redis.conf->mode == NGX_NEBULA_REDIS_CLUSTER;
}


ngx_int_t
ngx_nebula_redis_ready(void)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (!rd->active) {
        return 0;   /* the worker exits (ngx_nebula_redis_exit_worker) */
    }

    if (rd->conf->mode == NGX_NEBULA_REDIS_CLUSTER) {
        return ngx_nebula_redis_cluster_ready();
    }

    if (rd->conf->mode == NGX_NEBULA_REDIS_SENTINEL && rd->sentinel) {
        return 1;   /* what is sent waits for the sentinel's answer */
    }

    /*
     * Connected; or connecting, but not in an outage: a worker's first
     * connection, or one to the master a sentinel just named, takes what
     * is sent meanwhile (its connect timeout bounds the wait).  In an
     * outage, a reconnection's attempts are no reason to make requests
     * wait: the failure mode applies at once.
     */
    return rd->data->ac != NULL
           && (rd->data->connected || !rd->data->down);
}


/* GET /admin/health: "up", "connecting" or "down", this worker's view */
const char *
ngx_nebula_redis_state(void)
{
    ngx_nebula_redis_node_t  *n = ngx_nebula_redis.data;

    if (!ngx_nebula_redis.active) {
        return "down";
    }

    if (ngx_nebula_redis.conf->mode == NGX_NEBULA_REDIS_CLUSTER) {
        return ngx_nebula_redis_cluster_state();
    }

    if (n->ac != NULL && n->connected && !n->down) {
        return "up";
    }

    return n->down ? "down" : "connecting";
}


void
ngx_nebula_redis_cancel(ngx_nebula_redis_op_t *op)
{
    op->data = NULL;
}
