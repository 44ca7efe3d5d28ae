/*
 * Nebula: one Redis connection per worker, on nginx's event loop.
 *
 * hiredis's async API with its socket wrapped in an nginx connection (as
 * nchan's adapter does): hiredis asks for read and write interest, nginx's
 * event module delivers it.  What hiredis leaves to us is here too:
 *
 * - the address is resolved when the configuration is read, so connecting
 *   never calls a blocking resolver;
 * - one timer bounds the connect and the oldest command in flight (Redis
 *   answers in order, so the oldest is the first to be late); when it
 *   fires the connection is dropped and every command in flight fails;
 * - reconnection with backoff, logged once per outage;
 * - EVALSHA, with the script loaded again when Redis says NOSCRIPT;
 * - an op whose request went away is cancelled, not freed: its reply
 *   arrives later and touches nothing of the request.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_redis.h"
#include "ngx_nebula_metrics.h"


#define NGX_NEBULA_REDIS_BACKOFF_MIN  50
#define NGX_NEBULA_REDIS_BACKOFF_MAX  2000


struct ngx_nebula_redis_op_s {
    ngx_queue_t                   queue;
    ngx_nebula_redis_handler_pt   handler;
    void                         *data;         /* NULL once cancelled */
    ngx_msec_t                    deadline;
    ngx_nebula_script_e           script;
    char                         *cmd;          /* for a NOSCRIPT retry */
    int                           cmd_len;
    unsigned                      retried:1;
    unsigned                      internal:1;
    unsigned                      written:1;
};


typedef struct {
    ngx_nebula_redis_conf_t      *conf;
    ngx_log_t                    *log;
    redisAsyncContext            *ac;
    ngx_connection_t             *conn;
    ngx_event_t                   timer;
    ngx_event_t                   reconnect;
    ngx_msec_t                    backoff;
    ngx_queue_t                   pending;
    ngx_uint_t                    npending;
    ngx_uint_t                    handshake;     /* AUTH, SELECT pending */
    ngx_queue_t                   waiting;       /* commands held until
                                                    the handshake is done */
    unsigned                      connected:1;
    unsigned                      answered:1;    /* a good reply came on
                                                    this connection */
    unsigned                      down:1;        /* in an outage, until a
                                                    good reply */
    unsigned                      active:1;      /* the worker uses Redis */
} ngx_nebula_redis_t;


static void ngx_nebula_redis_connect(void);
static void ngx_nebula_redis_lost(const char *why);
static ngx_int_t ngx_nebula_redis_submit(ngx_nebula_redis_op_t *op);
static void ngx_nebula_redis_release_waiting(void);
static void ngx_nebula_redis_fail_waiting(void);


/* each worker has its own; the master never connects */
static ngx_nebula_redis_t  ngx_nebula_redis;


static void
ngx_nebula_redis_arm_timer(void)
{
    ngx_msec_t              now;
    ngx_queue_t            *q;
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t  *op;

    if (rd->ac && !rd->connected) {
        return;     /* the connect timeout runs */
    }

    if (ngx_queue_empty(&rd->pending)) {
        if (rd->timer.timer_set) {
            ngx_del_timer(&rd->timer);
        }
        return;
    }

    q = ngx_queue_head(&rd->pending);
    op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);
    now = ngx_current_msec;

    /* commands in flight keep a worker that shuts down gracefully alive */
    rd->timer.cancelable = 0;

    ngx_add_timer(&rd->timer,
                  (ngx_msec_int_t) (op->deadline - now) > 0
                  ? op->deadline - now : 1);
}


static void
ngx_nebula_redis_timer_handler(ngx_event_t *ev)
{
    ngx_queue_t            *q;
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t  *op;

    if (rd->ac == NULL) {
        return;
    }

    if (!rd->connected) {
        ngx_nebula_redis_lost("connect timed out");
        return;
    }

    if (ngx_queue_empty(&rd->pending)) {
        return;
    }

    q = ngx_queue_head(&rd->pending);
    op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

    if ((ngx_msec_int_t) (op->deadline - ngx_current_msec) > 0) {
        ngx_nebula_redis_arm_timer();
        return;
    }

    /* a Redis that accepts commands and never answers is as good as gone */
    ngx_nebula_redis_lost("command timed out");
}


static void
ngx_nebula_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_nebula_redis_connect();
}


static void
ngx_nebula_redis_schedule_reconnect(void)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (!rd->reconnect.timer_set) {
        ngx_add_timer(&rd->reconnect, rd->backoff);
    }

    rd->backoff = ngx_min(rd->backoff * 2, NGX_NEBULA_REDIS_BACKOFF_MAX);
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
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (!rd->active || rd->ac || rd->reconnect.timer_set || ngx_terminate) {
        return;
    }

    ngx_add_timer(&rd->reconnect, rd->backoff);

    rd->backoff = ngx_min(rd->backoff * 2, NGX_NEBULA_REDIS_BACKOFF_MAX);
}


/* drops the connection: every command in flight fails with no reply */
static void
ngx_nebula_redis_lost(const char *why)
{
    redisAsyncContext   *ac;
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (!rd->down) {
        rd->down = 1;

        if (ngx_atomic_cmp_set(rd->conf->outage, 0, 1)) {
            ngx_nebula_metrics_redis_outage();
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "nebula: redis at \"%V\" unavailable: %s; "
                          "will retry", &rd->conf->name, why);
        }

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_EVENT, rd->log, 0,
                       "nebula: redis at \"%V\" still unavailable: %s",
                       &rd->conf->name, why);
    }

    ac = rd->ac;
    rd->ac = NULL;
    rd->connected = 0;

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    rd->handshake = 0;
    ngx_nebula_redis_fail_waiting();

    if (ac) {
        /* runs the pending callbacks with no reply, then our cleanup hook */
        redisAsyncFree(ac);
    }

    ngx_nebula_redis_schedule_reconnect();
}


static void
ngx_nebula_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_queue_t            *q;
    ngx_nebula_redis_op_t  *op;
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;

    if (ac != rd->ac) {
        return;
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context itself after this callback */
        rd->ac = NULL;
        ngx_nebula_redis_lost(ac->c.err ? ac->c.errstr : "connect failed");
        return;
    }

    rd->connected = 1;

    if (rd->down) {
        ngx_nebula_metrics_redis_reconnect();
    }

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    /* what was queued while connecting has its whole time from now */
    for (q = ngx_queue_head(&rd->pending);
         q != ngx_queue_sentinel(&rd->pending);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);
        op->deadline = ngx_current_msec + rd->conf->timeout;
    }

    /*
     * The outage is not over yet: a frozen Redis accepts connections and
     * a Redis that refuses AUTH does so only after it; only the first
     * good reply (ngx_nebula_redis_reply) says Redis is back.
     */

    ngx_nebula_redis_arm_timer();
}


static void
ngx_nebula_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (ac != rd->ac) {
        return;     /* we dropped it ourselves */
    }

    /* hiredis frees the context itself after this callback */
    rd->ac = NULL;
    ngx_nebula_redis_lost(ac->errstr[0] ? ac->errstr : "connection closed");
}


static void
ngx_nebula_redis_internal_reply(void *data, redisReply *reply)
{
    char                 why[256];
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (reply == NULL) {
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        if (ngx_strcmp(data, "SCRIPT LOAD") != 0 && rd->handshake) {
            /* AUTH or SELECT taken: the last one opens the connection */
            if (--rd->handshake == 0) {
                ngx_nebula_redis_release_waiting();
            }
        }

        return;
    }

    if (ngx_strcmp(data, "SCRIPT LOAD") == 0) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "nebula: redis at \"%V\" refused SCRIPT LOAD: %s",
                      &rd->conf->name, reply->str);
        return;
    }

    /*
     * A refused AUTH or SELECT leaves a connection no command can use:
     * it is an outage, logged once, and retried with backoff.
     */
    *ngx_snprintf((u_char *) why, sizeof(why) - 1, "%s refused: %s",
                  (char *) data, reply->str) = '\0';

    if (rd->ac) {
        ngx_nebula_redis_lost(why);
    }
}


/* hiredis's reply callback: the op at the head of the queue is answered */
static void
ngx_nebula_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply             *reply = r;
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t  *op = privdata;
    ngx_nebula_script_t    *script;
    ngx_nebula_redis_op_t  *load;
    const char             *argv[3];
    size_t                  argvlen[3];
    char                   *cmd;
    int                     len;

    ngx_queue_remove(&op->queue);
    rd->npending--;

    if (reply) {
        /* sent at its deadline less the timeout (on_connect resets both) */
        ngx_nebula_metrics_redis_reply(ngx_current_msec
                                       - (op->deadline - rd->conf->timeout));
    }

    if (reply && reply->type != REDIS_REPLY_ERROR && rd->ac == ac
        && !rd->answered
        && !(op->internal && op->script == NGX_NEBULA_SCRIPT_N
             && ngx_strcmp(op->data, "SCRIPT LOAD") != 0))
    {
        /*
         * Redis answers: only now is a reconnection a success (a Redis
         * that accepts and then refuses AUTH, or accepts and is frozen,
         * is still an outage), so only now is the outage over.  An
         * accepted AUTH does not count: a refused SELECT may follow.
         */
        rd->answered = 1;
        rd->down = 0;
        rd->backoff = NGX_NEBULA_REDIS_BACKOFF_MIN;

        /*
         * Tried even when this worker saw no outage: a worker started
         * after one began (reload, respawn) would otherwise leave the
         * flag set and every later outage unlogged.  The worker that
         * clears it says so, once.
         */
        if (ngx_atomic_cmp_set(rd->conf->outage, 1, 0)) {
            ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                          "nebula: redis at \"%V\" is back",
                          &rd->conf->name);
        }
    }

    if (reply && reply->type == REDIS_REPLY_ERROR && !op->retried
        && !op->internal && op->cmd && op->script < NGX_NEBULA_SCRIPT_N
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && rd->ac == ac && rd->connected)
    {
        /* SCRIPT FLUSH or a new Redis: load it, then run the same again */
        script = ngx_nebula_script(op->script);

        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = (const char *) script->source.data;
        argvlen[2] = script->source.len;

        len = redisFormatCommandArgv(&cmd, 3, argv, argvlen);
        load = (len > 0)
               ? ngx_nebula_redis_send(cmd, len, op->script,
                                       ngx_nebula_redis_internal_reply,
                                       "SCRIPT LOAD", 1)
               : NULL;

        if (load) {
            op->retried = 1;
            op->written = 0;
            op->deadline = ngx_current_msec + rd->conf->timeout;
            ngx_queue_insert_tail(&rd->pending, &op->queue);
            rd->npending++;

            if (redisAsyncFormattedCommand(ac, ngx_nebula_redis_reply, op,
                                           op->cmd, op->cmd_len)
                == REDIS_OK)
            {
                ngx_nebula_redis_arm_timer();
                return;
            }

            ngx_queue_remove(&op->queue);
            rd->npending--;
        }
    }

    if (op->data) {
        op->handler(op->data, reply);
    }

    if (op->cmd) {
        redisFreeCommand(op->cmd);
    }

    ngx_free(op);

    if (rd->ac == ac) {
        ngx_nebula_redis_arm_timer();
    }
}


ngx_nebula_redis_op_t *
ngx_nebula_redis_send(char *cmd, int len, ngx_nebula_script_e script,
    ngx_nebula_redis_handler_pt handler, void *data, ngx_uint_t internal)
{
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t  *op;

    if (rd->ac == NULL) {
        redisFreeCommand(cmd);
        return NULL;
    }

    op = ngx_alloc(sizeof(ngx_nebula_redis_op_t), rd->log);
    if (op == NULL) {
        redisFreeCommand(cmd);
        return NULL;
    }

    ngx_memzero(op, sizeof(ngx_nebula_redis_op_t));
    op->handler = handler;
    op->data = data;
    op->script = script;
    op->cmd = cmd;
    op->cmd_len = len;
    op->internal = internal ? 1 : 0;

    if (!internal && rd->handshake) {
        /*
         * Not behind a SELECT that Redis may refuse: there it would run in
         * database 0, another deployment's maybe, and count.  It waits
         * here, in order, for the handshake; the handshake's own timeout
         * bounds the wait (ngx_nebula_redis_lost() fails what waits).
         */
        ngx_queue_insert_tail(&rd->waiting, &op->queue);
        return op;
    }

    if (ngx_nebula_redis_submit(op) != NGX_OK) {
        redisFreeCommand(cmd);
        ngx_free(op);
        return NULL;
    }

    return op;
}


/* the command goes to hiredis, in flight from now */
static ngx_int_t
ngx_nebula_redis_submit(ngx_nebula_redis_op_t *op)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    op->deadline = ngx_current_msec + rd->conf->timeout;

    ngx_queue_insert_tail(&rd->pending, &op->queue);
    rd->npending++;

    if (redisAsyncFormattedCommand(rd->ac, ngx_nebula_redis_reply, op,
                                   op->cmd, op->cmd_len)
        != REDIS_OK)
    {
        ngx_queue_remove(&op->queue);
        rd->npending--;
        return NGX_ERROR;
    }

    ngx_nebula_redis_arm_timer();

    return NGX_OK;
}


/* the handshake is done: what waited goes, in the order it came */
static void
ngx_nebula_redis_release_waiting(void)
{
    ngx_queue_t            *q;
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t  *op;

    while (!ngx_queue_empty(&rd->waiting) && rd->ac && !rd->handshake) {
        q = ngx_queue_head(&rd->waiting);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        if (ngx_nebula_redis_submit(op) != NGX_OK) {
            if (op->data) {
                op->handler(op->data, NULL);
            }

            redisFreeCommand(op->cmd);
            ngx_free(op);
        }
    }
}


/* the connection went before its handshake was done: what waited fails */
static void
ngx_nebula_redis_fail_waiting(void)
{
    ngx_queue_t            *q;
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t  *op;

    while (!ngx_queue_empty(&rd->waiting)) {
        q = ngx_queue_head(&rd->waiting);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        if (op->data) {
            op->handler(op->data, NULL);
        }

        redisFreeCommand(op->cmd);
        ngx_free(op);
    }
}


static ngx_nebula_redis_op_t *
ngx_nebula_redis_internal(int argc, const char **argv, const size_t *argvlen,
    char *what)
{
    char  *cmd;
    int    len;

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len <= 0) {
        return NULL;
    }

    return ngx_nebula_redis_send(cmd, len, NGX_NEBULA_SCRIPT_N,
                                 ngx_nebula_redis_internal_reply, what, 1);
}


/* the event hooks hiredis calls; the connection is level-triggered */

static void
ngx_nebula_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = ngx_nebula_redis.conn;

    if (c && !c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_nebula_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = ngx_nebula_redis.conn;

    if (c && c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_nebula_redis_add_write(void *privdata)
{
    ngx_connection_t  *c = ngx_nebula_redis.conn;

    if (c && !c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_nebula_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = ngx_nebula_redis.conn;

    if (c && c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis is about to close the socket: nginx forgets it first */
static void
ngx_nebula_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c = ngx_nebula_redis.conn;

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
    ngx_nebula_redis.conn = NULL;
}


static void
ngx_nebula_redis_read_handler(ngx_event_t *ev)
{
    if (ngx_nebula_redis.ac) {
        redisAsyncHandleRead(ngx_nebula_redis.ac);
    }
}


static void
ngx_nebula_redis_write_handler(ngx_event_t *ev)
{
    ngx_queue_t            *q;
    ngx_nebula_redis_t     *rd = &ngx_nebula_redis;
    ngx_nebula_redis_op_t  *op;

    if (rd->ac == NULL) {
        return;
    }

    redisAsyncHandleWrite(rd->ac);

    if (rd->ac == NULL || !rd->connected) {
        return;
    }

    /*
     * A command's time runs from when it is written, not queued: a worker
     * busy for longer than the timeout between the two (a burst, a slow
     * machine) would otherwise take a healthy Redis for a frozen one.
     * The ones written now are the newest, at the queue's tail.
     */
    for (q = ngx_queue_last(&rd->pending);
         q != ngx_queue_sentinel(&rd->pending);
         q = ngx_queue_prev(q))
    {
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        if (op->written) {
            break;
        }

        op->written = 1;
        op->deadline = ngx_current_msec + rd->conf->timeout;
    }

    ngx_nebula_redis_arm_timer();
}


static void
ngx_nebula_redis_connect(void)
{
    u_char                    db[NGX_INT_T_LEN];
    ngx_uint_t                i;
    const char               *argv[4];
    size_t                    argvlen[4];
    ngx_connection_t         *c;
    redisAsyncContext        *ac;
    ngx_nebula_script_t      *script;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_conf_t  *conf = rd->conf;

    if (rd->ac) {
        return;
    }

    ac = conf->unix_path
         ? redisAsyncConnectUnix((char *) conf->unix_path)
         : redisAsyncConnect((char *) conf->ip, (int) conf->port);

    if (ac == NULL) {
        ngx_nebula_redis_lost("out of memory");
        return;
    }

    if (ac->err) {
        rd->ac = NULL;
        ngx_nebula_redis_lost(ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_nebula_redis_lost("no free worker connection");
        return;
    }

    c->data = rd;
    c->read->handler = ngx_nebula_redis_read_handler;
    c->write->handler = ngx_nebula_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    rd->conn = c;
    rd->ac = ac;
    rd->connected = 0;
    rd->answered = 0;
    rd->handshake = 0;

    ac->ev.data = rd;
    ac->ev.addRead = ngx_nebula_redis_add_read;
    ac->ev.delRead = ngx_nebula_redis_del_read;
    ac->ev.addWrite = ngx_nebula_redis_add_write;
    ac->ev.delWrite = ngx_nebula_redis_del_write;
    ac->ev.cleanup = ngx_nebula_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_nebula_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_nebula_redis_on_disconnect);

    /* the socket is connecting: ask to hear when it is writable */
    ngx_nebula_redis_add_write(rd);

    rd->timer.cancelable = 1;
    ngx_add_timer(&rd->timer, conf->connect_timeout);

    /* queued now, sent once connected, ahead of any request's command */

    if (conf->password.len) {
        i = 0;
        argv[i] = "AUTH";
        argvlen[i++] = 4;

        if (conf->user.len) {
            argv[i] = (const char *) conf->user.data;
            argvlen[i++] = conf->user.len;
        }

        argv[i] = (const char *) conf->password.data;
        argvlen[i++] = conf->password.len;

        if (ngx_nebula_redis_internal(i, argv, argvlen, "AUTH") != NULL) {
            rd->handshake++;
        }
    }

    if (conf->db) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", conf->db) - db;
        if (ngx_nebula_redis_internal(2, argv, argvlen, "SELECT") != NULL) {
            rd->handshake++;
        }
    }

    for (i = 0; i < NGX_NEBULA_SCRIPT_N; i++) {
        script = ngx_nebula_script(i);
        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = (const char *) script->source.data;
        argvlen[2] = script->source.len;

        (void) ngx_nebula_redis_internal(3, argv, argvlen, "SCRIPT LOAD");
    }
}


ngx_int_t
ngx_nebula_redis_init_worker(ngx_cycle_t *cycle, ngx_nebula_redis_conf_t *conf)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    ngx_memzero(rd, sizeof(ngx_nebula_redis_t));

    rd->conf = conf;
    rd->log = cycle->log;
    rd->active = 1;
    rd->backoff = NGX_NEBULA_REDIS_BACKOFF_MIN;
    ngx_queue_init(&rd->pending);
    ngx_queue_init(&rd->waiting);

    rd->timer.handler = ngx_nebula_redis_timer_handler;
    rd->timer.log = cycle->log;
    rd->timer.data = rd;

    rd->reconnect.handler = ngx_nebula_redis_reconnect_handler;
    rd->reconnect.log = cycle->log;
    rd->reconnect.data = rd;
    rd->reconnect.cancelable = 1;

    ngx_nebula_redis_connect();

    return NGX_OK;
}


void
ngx_nebula_redis_exit_worker(ngx_cycle_t *cycle)
{
    redisAsyncContext   *ac;
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (!rd->active) {
        return;
    }

    if (rd->npending) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "nebula: worker exits with %ui redis commands "
                      "unanswered", rd->npending);
    }

    ac = rd->ac;
    rd->ac = NULL;
    rd->active = 0;

    ngx_nebula_redis_fail_waiting();

    if (ac) {
        redisAsyncFree(ac);
    }
}


ngx_int_t
ngx_nebula_redis_ready(void)
{
    return ngx_nebula_redis.ac != NULL && ngx_nebula_redis.connected;
}


/* GET /admin/health: "up", "connecting" or "down", this worker's view */
const char *
ngx_nebula_redis_state(void)
{
    if (ngx_nebula_redis.ac != NULL && ngx_nebula_redis.connected
        && !ngx_nebula_redis.down)
    {
        return "up";
    }

    return ngx_nebula_redis.down ? "down" : "connecting";
}


void
ngx_nebula_redis_cancel(ngx_nebula_redis_op_t *op)
{
    op->data = NULL;
}
