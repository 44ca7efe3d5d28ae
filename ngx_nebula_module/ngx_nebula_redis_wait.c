/*
 * Nebula: nebula_redis_wait.  The admissions and settlements a worker
 * sends a node in one turn of its event loop are followed by one WAIT;
 * their replies, copied, are held until it answers (docs/scaling.md).
 */

#include "ngx_nebula_redis_int.h"
#include "ngx_nebula_metrics.h"


/*
 * A reply kept past its callback: in the pool, or (no pool) in hiredis's
 * layout, for freeReplyObject()
 */
redisReply *
ngx_nebula_redis_copy(ngx_pool_t *pool, const redisReply *r)
{
    size_t       j;
    redisReply  *c;

    c = pool ? ngx_pcalloc(pool, sizeof(redisReply))
             : calloc(1, sizeof(redisReply));
    if (c == NULL) {
        return NULL;
    }

    c->type = r->type;
    c->integer = r->integer;

    switch (r->type) {

    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        c->str = pool ? ngx_pnalloc(pool, r->len + 1) : malloc(r->len + 1);
        if (c->str == NULL) {
            goto failed;
        }

        if (r->len) {
            ngx_memcpy(c->str, r->str, r->len);
        }

        c->str[r->len] = '\0';
        c->len = r->len;
        break;

    case REDIS_REPLY_ARRAY:
        if (r->elements == 0) {
            break;
        }

        c->element = pool ? ngx_pcalloc(pool, r->elements * sizeof(redisReply *))
                          : calloc(r->elements, sizeof(redisReply *));
        if (c->element == NULL) {
            goto failed;
        }

        c->elements = r->elements;

        for (j = 0; j < r->elements; j++) {
            c->element[j] = ngx_nebula_redis_copy(pool, r->element[j]);
            if (c->element[j] == NULL) {
                goto failed;
            }
        }

        break;
    }

    return c;

failed:

    if (pool == NULL) {
        freeReplyObject(c);
    }

    return NULL;
}


/*
 * The admissions and settlements sent in one turn of the event loop are
 * followed by one WAIT: their replies are held until it answers, so that
 * what a request was told is on a replica too (nebula_redis_wait).
 */
void
ngx_nebula_redis_wait_handler(ngx_event_t *ev)
{
    u_char                    num[NGX_INT_T_LEN], ms[NGX_INT_T_LEN];
    size_t                    argvlen[3];
    const char               *argv[3];
    ngx_queue_t              *q;
    ngx_nebula_redis_op_t    *op, *w;
    ngx_nebula_redis_node_t  *n = ev->data;
    ngx_nebula_redis_conf_t  *conf = ngx_nebula_redis.conf;

    if (n->ac == NULL || n->unwaited == 0) {
        n->unwaited = 0;
        return;
    }

    n->unwaited = 0;

    argv[0] = "WAIT";
    argvlen[0] = 4;
    argv[1] = (const char *) num;
    argvlen[1] = ngx_sprintf(num, "%i", conf->wait) - num;
    argv[2] = (const char *) ms;
    argvlen[2] = ngx_sprintf(ms, "%M", conf->wait_timeout) - ms;

    w = ngx_nebula_redis_node_internal(n, 3, argv, argvlen, "WAIT", 0);
    if (w == NULL) {
        return;     /* each is answered as it comes */
    }

    ngx_queue_init(&w->held_ops);

    for (q = ngx_queue_head(&n->pending);
         q != ngx_queue_sentinel(&n->pending);
         q = ngx_queue_next(q))
    {
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        if (op->durable && op->wait == NULL) {
            op->wait = w;
        }
    }
}


/*
 * The WAIT answered, or failed.  When as many replicas as asked have the
 * writes, the replies it held go to their callers.  When fewer do (a
 * replica down, or lagging; or this master no longer one: a failover
 * under way promoted its replica), what the writes did may be lost with
 * this master: each caller hears of a failure, as of a connection lost
 * after its command was sent.  A settlement goes again (where it had
 * stood, a repeat, harmless), an admission gets the failure mode (a
 * reservation it made lapses with nebula_reservation_timeout).  Said
 * once, until the replicas keep up again.
 */
void
ngx_nebula_redis_waited(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *w, redisReply *reply)
{
    ngx_uint_t                short_;
    ngx_queue_t              *q;
    ngx_nebula_redis_op_t    *op;
    ngx_nebula_redis_conf_t  *conf = ngx_nebula_redis.conf;

    short_ = (reply == NULL || reply->type != REDIS_REPLY_INTEGER
              || reply->integer < conf->wait);

    if (reply && short_ && !n->wait_short) {
        n->wait_short = 1;
        ngx_nebula_metrics_redis_outage();
        ngx_log_error(NGX_LOG_ERR, ngx_nebula_redis.log, 0,
                      "nebula: redis at \"%V\": WAIT %i answered %s%i "
                      "within %M ms; admissions and settlements fail "
                      "until its replicas keep up", &n->name, conf->wait,
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "",
                      reply->type == REDIS_REPLY_INTEGER
                      ? (ngx_int_t) reply->integer : 0,
                      conf->wait_timeout);

    }

    if (short_ && reply && conf->mode == NGX_NEBULA_REDIS_SENTINEL) {
        /* demoted, perhaps: the sentinels may name another master */
        ngx_nebula_redis_sentinel_check();

    } else if (!short_ && n->wait_short) {
        n->wait_short = 0;
        ngx_log_error(NGX_LOG_NOTICE, ngx_nebula_redis.log, 0,
                      "nebula: redis at \"%V\": its replicas keep up again",
                      &n->name);
    }

    while (!ngx_queue_empty(&w->held_ops)) {
        q = ngx_queue_head(&w->held_ops);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_nebula_redis_op_t, queue);

        if (op->data) {
            op->handler(op->data, short_ ? NULL : op->held);
        }

        freeReplyObject(op->held);
        redisFreeCommand(op->cmd);
        ngx_free(op);
    }
}
