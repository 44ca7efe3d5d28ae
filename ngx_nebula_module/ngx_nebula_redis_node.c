/*
 * Nebula: one Redis connection (a node), on nginx's event loop.
 *
 * hiredis's async API with its socket wrapped in an nginx connection (as
 * nchan's adapter does): hiredis asks for read and write interest, nginx's
 * event module delivers it.  What hiredis leaves to us is here too:
 *
 * - the addresses are resolved when the configuration is read, so
 *   connecting never calls a blocking resolver;
 * - one timer a connection bounds the connect and the oldest command in
 *   flight (Redis answers in order, so the oldest is the first to be
 *   late); when it fires the connection is dropped and every command in
 *   flight on it fails;
 * - a handshake (AUTH, SELECT, ROLE, the scripts) ahead of any request's
 *   command, which waits for it;
 * - reconnection with backoff, logged once per outage.
 */

#include "ngx_nebula_redis_int.h"
#include "ngx_nebula_metrics.h"


static void ngx_nebula_redis_release_waiting(ngx_nebula_redis_node_t *n);


void
ngx_nebula_redis_arm_timer(ngx_nebula_redis_node_t *n)
{
    ngx_msec_t              now;
    ngx_queue_t            *q;
    ngx_nebula_redis_op_t  *op;

    if (n->ac && !n->connected) {
        return;     /* the connect timeout runs */
    }

    if (ngx_queue_empty(&n->pending)) {
        if (n->timer.timer_set) {
            ngx_del_timer(&n->timer);
        }
        return;
    }

    q = ngx_queue_head(&n->pending);
    op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);
    now = ngx_current_msec;

    /* commands in flight keep a worker that shuts down gracefully alive */
    n->timer.cancelable = 0;

    ngx_add_timer(&n->timer,
                  (ngx_msec_int_t) (op->deadline - now) > 0
                  ? op->deadline - now : 1);
}


static void
ngx_nebula_redis_timer_handler(ngx_event_t *ev)
{
    ngx_queue_t              *q;
    ngx_nebula_redis_op_t    *op;
    ngx_nebula_redis_node_t  *n = ev->data;

    if (n->ac == NULL) {
        return;
    }

    if (!n->connected) {
        ngx_nebula_redis_node_lost(n, "connect timed out");
        return;
    }

    if (ngx_queue_empty(&n->pending)) {
        return;
    }

    q = ngx_queue_head(&n->pending);
    op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

    if ((ngx_msec_int_t) (op->deadline - ngx_current_msec) > 0) {
        ngx_nebula_redis_arm_timer(n);
        return;
    }

    /* a Redis that accepts commands and never answers is as good as gone */
    ngx_nebula_redis_node_lost(n, "command timed out");
}


static void
ngx_nebula_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_nebula_redis_node_connect(ev->data);
}


static void
ngx_nebula_redis_schedule_reconnect(ngx_nebula_redis_node_t *n)
{
    if (ngx_exiting || ngx_terminate || ngx_quit || n->unused) {
        return;
    }

    if (!n->reconnect.timer_set) {
        ngx_add_timer(&n->reconnect, n->backoff);
    }

    n->backoff = ngx_min(n->backoff * 2, NGX_NEBULA_REDIS_BACKOFF_MAX);
}


/*
 * A worker that shuts down (reload, QUIT, binary upgrade) does not
 * reconnect by itself: it has no new requests to serve.  One that still
 * holds settlements Redis did not take asks for it, from their retry
 * timer (ngx_nebula_settle_flush), so that a Redis back within the wait
 * takes them.
 */
void
ngx_nebula_redis_reconnect_exiting(void)
{
    ngx_uint_t                i;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *n;

    if (!rd->active || ngx_terminate) {
        return;
    }

    if (rd->conf->mode == NGX_NEBULA_REDIS_SENTINEL) {
        if (rd->data->ac == NULL && !rd->discover.timer_set
            && rd->sentinel == NULL)
        {
            ngx_add_timer(&rd->discover, rd->discover_backoff);
        }

        return;
    }

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (n->ac || n->reconnect.timer_set || n->unused || n->sentinel) {
            continue;
        }

        ngx_add_timer(&n->reconnect, n->backoff);
        n->backoff = ngx_min(n->backoff * 2, NGX_NEBULA_REDIS_BACKOFF_MAX);
    }
}


/* the outage's first line: once for all workers, or once a cluster node */
static void
ngx_nebula_redis_log_outage(ngx_nebula_redis_node_t *n, const char *why)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (n->down) {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rd->log, 0,
                       "nebula: redis at \"%V\" still unavailable: %s",
                       &n->name, why);
        return;
    }

    n->down = 1;

    if (rd->conf->mode == NGX_NEBULA_REDIS_CLUSTER) {
        /* each worker says it of each node: the nodes fail one by one */
        ngx_nebula_metrics_redis_outage();
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "nebula: redis cluster node \"%V\" unavailable: %s; "
                      "will retry", &n->name, why);
        return;
    }

    if (ngx_atomic_cmp_set(rd->conf->outage, 0, 1)) {
        ngx_nebula_metrics_redis_outage();
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "nebula: redis at \"%V\" unavailable: %s; will retry",
                      &n->name, why);
    }
}


/* drops the connection: every command in flight fails with no reply */
void
ngx_nebula_redis_node_lost(ngx_nebula_redis_node_t *n, const char *why)
{
    redisAsyncContext   *ac;
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (!n->sentinel) {
        ngx_nebula_redis_log_outage(n, why);

    } else if (!n->down) {
        n->down = 1;
        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "nebula: redis sentinel \"%V\" unavailable: %s",
                      &n->name, why);
    }

    ac = n->ac;
    n->ac = NULL;
    n->connected = 0;

    if (n->timer.timer_set) {
        ngx_del_timer(&n->timer);
    }

    n->handshake = 0;
    ngx_nebula_redis_fail_waiting(n);

    if (ac) {
        /* runs the pending callbacks with no reply, then our cleanup hook */
        redisAsyncFree(ac);
    }

    switch (rd->conf->mode) {

    case NGX_NEBULA_REDIS_SENTINEL:
        /* a new master, perhaps: the sentinels say where */
        ngx_nebula_redis_sentinel_lost(n);
        break;

    case NGX_NEBULA_REDIS_CLUSTER:
        ngx_nebula_redis_schedule_reconnect(n);
        ngx_nebula_redis_cluster_lost(n);
        break;

    default:
        ngx_nebula_redis_schedule_reconnect(n);
    }
}


static void
ngx_nebula_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_queue_t              *q;
    ngx_nebula_redis_op_t    *op;
    ngx_nebula_redis_node_t  *n = ac->ev.data;

    if (n == NULL || ac != n->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context itself after this callback */
        n->ac = NULL;
        ngx_nebula_redis_node_lost(n, ac->c.err ? ac->c.errstr
                                                : "connect failed");
        return;
    }

    n->connected = 1;

    if (n->down) {
        ngx_nebula_metrics_redis_reconnect();
    }

    if (n->timer.timer_set) {
        ngx_del_timer(&n->timer);
    }

    /* what was queued while connecting has its whole time from now */
    for (q = ngx_queue_head(&n->pending);
         q != ngx_queue_sentinel(&n->pending);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);
        op->deadline = ngx_current_msec + ngx_nebula_redis.conf->timeout;
    }

    /*
     * The outage is not over yet: a frozen Redis accepts connections and
     * a Redis that refuses AUTH does so only after it; only the first
     * good reply (ngx_nebula_redis_reply) says Redis is back.
     */

    ngx_nebula_redis_arm_timer(n);
}


static void
ngx_nebula_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_nebula_redis_node_t  *n = ac->ev.data;

    if (n == NULL || ac != n->ac) {
        return;     /* we dropped it ourselves */
    }

    /* hiredis frees the context itself after this callback */
    n->ac = NULL;
    ngx_nebula_redis_node_lost(n, ac->errstr[0] ? ac->errstr
                                                : "connection closed");
}


/* a step of the handshake is done: the last one opens the connection */
void
ngx_nebula_redis_handshake_step(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op)
{
    if (!op->handshake || n->handshake == 0 || n->ac == NULL) {
        return;
    }

    op->handshake = 0;

    if (--n->handshake == 0) {
        ngx_nebula_redis_release_waiting(n);
    }
}


ngx_nebula_redis_op_t *
ngx_nebula_redis_load(ngx_nebula_redis_node_t *n, ngx_nebula_script_e s)
{
    const char           *argv[3];
    size_t                argvlen[3];
    ngx_nebula_script_t  *script;

    script = ngx_nebula_script(s);

    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;
    argv[2] = (const char *) script->source.data;
    argvlen[2] = script->source.len;

    return ngx_nebula_redis_node_internal(n, 3, argv, argvlen, "SCRIPT LOAD",
                                          0);
}


/* to a node: now, or once its handshake is done; NGX_ERROR: no connection */
ngx_int_t
ngx_nebula_redis_node_send(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op)
{
    if (n->ac == NULL) {
        return NGX_ERROR;
    }

    op->node = n;

    if (n->handshake) {
        /*
         * Not behind a SELECT that Redis may refuse: there it would run in
         * database 0, another deployment's maybe, and count.  It waits
         * here, in order, for the handshake; the handshake's own timeout
         * bounds the wait (ngx_nebula_redis_node_lost() fails what waits).
         */
        ngx_queue_insert_tail(&n->waiting, &op->queue);
        return NGX_OK;
    }

    return ngx_nebula_redis_node_submit(n, op);
}


/* the command goes to hiredis, in flight from now */
ngx_int_t
ngx_nebula_redis_node_submit(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op)
{
    op->node = n;
    op->written = 0;
    op->deadline = ngx_current_msec + ngx_nebula_redis.conf->timeout;
    op->wait = NULL;

    if (op->durable) {
        n->unwaited++;

        if (!n->wait_ev.posted) {
            ngx_post_event(&n->wait_ev, &ngx_posted_events);
        }
    }

    ngx_queue_insert_tail(&n->pending, &op->queue);
    n->npending++;

    if (redisAsyncFormattedCommand(n->ac, ngx_nebula_redis_reply, op,
                                   op->cmd, op->cmd_len)
        != REDIS_OK)
    {
        ngx_queue_remove(&op->queue);
        n->npending--;
        return NGX_ERROR;
    }

    ngx_nebula_redis_arm_timer(n);

    return NGX_OK;
}


/*
 * The handshake is done: what waited goes, in the order it came; on a
 * cluster, to its slot's node, which the map now says.
 */
static void
ngx_nebula_redis_release_waiting(ngx_nebula_redis_node_t *n)
{
    ngx_int_t                 rc;
    ngx_queue_t              *q;
    ngx_nebula_redis_op_t    *op;
    ngx_nebula_redis_node_t  *to;

    while (!ngx_queue_empty(&n->waiting) && n->ac && !n->handshake) {
        q = ngx_queue_head(&n->waiting);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        to = n;

        if (ngx_nebula_redis.conf->mode == NGX_NEBULA_REDIS_CLUSTER) {
            to = ngx_nebula_redis_cluster_route(op);
        }

        if (to == NULL) {
            rc = NGX_ERROR;

        } else if (to == n) {
            rc = ngx_nebula_redis_node_submit(n, op);

        } else {
            rc = ngx_nebula_redis_node_send(to, op);
        }

        if (rc != NGX_OK) {
            ngx_nebula_redis_op_fail(op);
        }
    }
}


/* the connection went before its handshake was done: what waited fails */
void
ngx_nebula_redis_fail_waiting(ngx_nebula_redis_node_t *n)
{
    ngx_queue_t            *q;
    ngx_nebula_redis_op_t  *op;

    while (!ngx_queue_empty(&n->waiting)) {
        q = ngx_queue_head(&n->waiting);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        ngx_nebula_redis_op_fail(op);
    }
}


/*
 * A command of the connection's own (AUTH, SELECT, SCRIPT LOAD, ROLE,
 * CLUSTER SLOTS, ASKING, SENTINEL): it goes at once, ahead of what waits
 * for the handshake; one that is a step of the handshake holds them.
 */
ngx_nebula_redis_op_t *
ngx_nebula_redis_node_internal(ngx_nebula_redis_node_t *n, int argc,
    const char **argv, const size_t *argvlen, const char *what,
    ngx_uint_t handshake)
{
    char                   *cmd;
    int                     len;
    ngx_nebula_redis_op_t  *op;

    if (n->ac == NULL) {
        return NULL;
    }

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len <= 0) {
        return NULL;
    }

    op = ngx_nebula_redis_op(cmd, len, NGX_NEBULA_SCRIPT_N, NULL, NULL);
    if (op == NULL) {
        redisFreeCommand(cmd);
        return NULL;
    }

    op->internal = 1;
    op->what = what;

    if (ngx_nebula_redis_node_submit(n, op) != NGX_OK) {
        redisFreeCommand(cmd);
        ngx_free(op);
        return NULL;
    }

    if (handshake) {
        op->handshake = 1;
        n->handshake++;
    }

    return op;
}


/* the event hooks hiredis calls; the connection is level-triggered */

static void
ngx_nebula_redis_add_read(void *privdata)
{
    ngx_nebula_redis_node_t  *n = privdata;
    ngx_connection_t         *c = n->conn;

    if (c && !c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_nebula_redis_del_read(void *privdata)
{
    ngx_nebula_redis_node_t  *n = privdata;
    ngx_connection_t         *c = n->conn;

    if (c && c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_nebula_redis_add_write(void *privdata)
{
    ngx_nebula_redis_node_t  *n = privdata;
    ngx_connection_t         *c = n->conn;

    if (c && !c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_nebula_redis_del_write(void *privdata)
{
    ngx_nebula_redis_node_t  *n = privdata;
    ngx_connection_t         *c = n->conn;

    if (c && c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis is about to close the socket: nginx forgets it first */
static void
ngx_nebula_redis_cleanup(void *privdata)
{
    ngx_nebula_redis_node_t  *n = privdata;
    ngx_connection_t         *c = n->conn;

    if (c == NULL) {
        return;
    }

    ngx_nebula_redis_del_read(privdata);
    ngx_nebula_redis_del_write(privdata);

    /* as ngx_close_connection does: a posted event must not outlive it */
    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
    n->conn = NULL;
}


static void
ngx_nebula_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c = ev->data;
    ngx_nebula_redis_node_t  *n = c->data;

    if (n->ac) {
        redisAsyncHandleRead(n->ac);
    }
}


static void
ngx_nebula_redis_write_handler(ngx_event_t *ev)
{
    ngx_queue_t              *q;
    ngx_connection_t         *c = ev->data;
    ngx_nebula_redis_op_t    *op;
    ngx_nebula_redis_node_t  *n = c->data;

    if (n->ac == NULL) {
        return;
    }

    redisAsyncHandleWrite(n->ac);

    if (n->ac == NULL || !n->connected) {
        return;
    }

    /*
     * A command's time runs from when it is written, not queued: a worker
     * busy for longer than the timeout between the two (a burst, a slow
     * machine) would otherwise take a healthy Redis for a frozen one.
     * The ones written now are the newest, at the queue's tail.
     */
    for (q = ngx_queue_last(&n->pending);
         q != ngx_queue_sentinel(&n->pending);
         q = ngx_queue_prev(q))
    {
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        if (op->written) {
            break;
        }

        op->written = 1;
        op->deadline = ngx_current_msec + ngx_nebula_redis.conf->timeout;
    }

    ngx_nebula_redis_arm_timer(n);
}


/* AUTH, SELECT, ROLE and the scripts: queued first on a new connection */
static void
ngx_nebula_redis_handshake(ngx_nebula_redis_node_t *n)
{
    u_char                    db[NGX_INT_T_LEN];
    ngx_uint_t                i;
    const char               *argv[4];
    size_t                    argvlen[4];
    ngx_str_t                *password;
    ngx_nebula_redis_conf_t  *conf = ngx_nebula_redis.conf;

    password = n->sentinel ? &conf->sentinel_password : &conf->password;

    if (password->len) {
        i = 0;
        argv[i] = "AUTH";
        argvlen[i++] = 4;

        if (conf->user.len && !n->sentinel) {
            argv[i] = (const char *) conf->user.data;
            argvlen[i++] = conf->user.len;
        }

        argv[i] = (const char *) password->data;
        argvlen[i++] = password->len;

        (void) ngx_nebula_redis_node_internal(n, i, argv, argvlen, "AUTH", 1);
    }

    if (n->sentinel) {
        return;
    }

    if (conf->db) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", conf->db) - db;
        (void) ngx_nebula_redis_node_internal(n, 2, argv, argvlen, "SELECT",
                                              1);
    }

    if (conf->mode == NGX_NEBULA_REDIS_SENTINEL) {
        argv[0] = "ROLE";
        argvlen[0] = 4;
        (void) ngx_nebula_redis_node_internal(n, 1, argv, argvlen, "ROLE", 1);
    }

    for (i = 0; i < NGX_NEBULA_SCRIPT_N; i++) {
        if (i >= NGX_NEBULA_SCRIPT_CLUSTER_ONLY
            && conf->mode != NGX_NEBULA_REDIS_CLUSTER)
        {
            break;  /* Redis 7's flags: a Redis 6 would refuse them */
        }

        (void) ngx_nebula_redis_load(n, i);
    }
}


void
ngx_nebula_redis_node_connect(ngx_nebula_redis_node_t *n)
{
    ngx_connection_t    *c;
    redisAsyncContext   *ac;
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (n->ac || (n->unix_path == NULL && n->port == 0)) {
        return;
    }

    ac = n->unix_path ? redisAsyncConnectUnix((char *) n->unix_path)
                      : redisAsyncConnect((char *) n->ip, (int) n->port);

    if (ac == NULL) {
        ngx_nebula_redis_node_lost(n, "out of memory");
        return;
    }

    if (ac->err) {
        n->ac = NULL;
        ngx_nebula_redis_node_lost(n, ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_nebula_redis_node_lost(n, "no free worker connection");
        return;
    }

    c->data = n;
    c->read->handler = ngx_nebula_redis_read_handler;
    c->write->handler = ngx_nebula_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    n->conn = c;
    n->ac = ac;
    n->connected = 0;
    n->answered = 0;
    n->handshake = 0;

    ac->ev.data = n;
    ac->ev.addRead = ngx_nebula_redis_add_read;
    ac->ev.delRead = ngx_nebula_redis_del_read;
    ac->ev.addWrite = ngx_nebula_redis_add_write;
    ac->ev.delWrite = ngx_nebula_redis_del_write;
    ac->ev.cleanup = ngx_nebula_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_nebula_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_nebula_redis_on_disconnect);

    /* the socket is connecting: ask to hear when it is writable */
    ngx_nebula_redis_add_write(n);

    n->timer.cancelable = 1;
    ngx_add_timer(&n->timer, rd->conf->connect_timeout);

    /* queued now, sent once connected, ahead of any request's command */
    ngx_nebula_redis_handshake(n);
}


/* the node at an address, made on first use: a worker has a few */
ngx_nebula_redis_node_t *
ngx_nebula_redis_node(u_char *ip, ngx_int_t port, ngx_uint_t sentinel)
{
    size_t                    len;
    ngx_uint_t                i;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *n;

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (n->port == port && (ngx_uint_t) n->sentinel == sentinel
            && ngx_strcmp(n->ip, ip) == 0)
        {
            return n;
        }
    }

    len = ngx_strlen(ip);

    if (rd->nnodes == NGX_NEBULA_REDIS_MAX_NODES
        || len > NGX_SOCKADDR_STRLEN)
    {
        return NULL;
    }

    n = ngx_calloc(sizeof(ngx_nebula_redis_node_t), rd->log);
    if (n == NULL) {
        return NULL;
    }

    ngx_memcpy(n->ip, ip, len + 1);
    n->port = port;
    n->sentinel = sentinel ? 1 : 0;
    n->index = rd->nnodes;
    n->backoff = NGX_NEBULA_REDIS_BACKOFF_MIN;
    n->name.data = n->name_buf;
    n->name.len = ngx_sprintf(n->name_buf,
                              ngx_strchr(ip, ':') ? "[%s]:%i" : "%s:%i",
                              ip, port)
                  - n->name_buf;

    ngx_queue_init(&n->pending);
    ngx_queue_init(&n->waiting);

    n->timer.handler = ngx_nebula_redis_timer_handler;
    n->timer.log = rd->log;
    n->timer.data = n;

    n->reconnect.handler = ngx_nebula_redis_reconnect_handler;
    n->reconnect.log = rd->log;
    n->reconnect.data = n;
    n->reconnect.cancelable = 1;

    n->wait_ev.handler = ngx_nebula_redis_wait_handler;
    n->wait_ev.log = rd->log;
    n->wait_ev.data = n;

    rd->nodes[rd->nnodes++] = n;

    return n;
}
