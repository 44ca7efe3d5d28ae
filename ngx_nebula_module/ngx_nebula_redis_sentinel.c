/*
 * Nebula: a master that Redis Sentinel names.
 *
 * The worker asks a sentinel (SENTINEL get-master-addr-by-name), connects
 * to the address it gives, and checks with ROLE, in the handshake, that
 * it is a master still: a sentinel may answer with the old address for a
 * moment after a failover.  When the connection goes, or the master
 * answers READONLY (demoted, and still taking connections), the worker
 * asks again, each sentinel in turn, with the connection's backoff: the
 * master it finds next is the replica the sentinels promoted.
 *
 * Sentinels are asked on demand, over connections kept for the next time;
 * a sentinel that fails is passed over for the next one.
 */

#include "ngx_nebula_redis_int.h"


static void ngx_nebula_redis_sentinel_discover(void);
static void ngx_nebula_redis_sentinel_ask(void);


static void
ngx_nebula_redis_sentinel_discover_handler(ngx_event_t *ev)
{
    ngx_nebula_redis_sentinel_discover();
}


static void
ngx_nebula_redis_sentinel_again(ngx_msec_t delay)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (ngx_exiting || ngx_terminate || ngx_quit || rd->discover.timer_set) {
        return;
    }

    ngx_add_timer(&rd->discover, delay);
}


void
ngx_nebula_redis_sentinel_start(void)
{
    ngx_uint_t                i;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_addr_t  *a;

    /* the master's node: its address is what the sentinels say */
    rd->data = ngx_nebula_redis_node((u_char *) "", 0, 0);
    if (rd->data == NULL) {
        return;
    }

    rd->data->name = rd->conf->master;

    a = rd->conf->seeds->elts;

    for (i = 0; i < rd->conf->seeds->nelts; i++) {
        (void) ngx_nebula_redis_node(a[i].ip, a[i].port, 1);
    }

    rd->discover.handler = ngx_nebula_redis_sentinel_discover_handler;
    rd->discover.log = rd->log;
    rd->discover.data = rd;
    rd->discover.cancelable = 1;
    rd->discover_backoff = NGX_NEBULA_REDIS_BACKOFF_MIN;

    ngx_nebula_redis_sentinel_discover();
}


/*
 * The master's replicas no longer take its writes (a WAIT came back
 * short): a failover may be under way, the sentinels asked whether they
 * name another master now.  A master demoted by SENTINEL FAILOVER takes
 * writes until the sentinels reconfigure it, up to ten seconds later;
 * they name the new one at once.
 */
void
ngx_nebula_redis_sentinel_check(void)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (rd->sentinel == NULL && rd->data && rd->data->ac) {
        ngx_nebula_redis_sentinel_ask();
    }
}


/* the next sentinel in turn is asked where the master is */
static void
ngx_nebula_redis_sentinel_discover(void)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (rd->sentinel || rd->data == NULL || rd->data->ac) {
        return;     /* asked already, or connected */
    }

    ngx_nebula_redis_sentinel_ask();
}


static void
ngx_nebula_redis_sentinel_ask(void)
{
    ngx_uint_t                i;
    const char               *argv[3];
    size_t                    argvlen[3];
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *s;

    /* nodes[0] is the master's; the sentinels follow */
    i = 1 + rd->next_sentinel++ % (rd->nnodes - 1);
    s = rd->nodes[i];

    if (s->ac == NULL) {
        ngx_nebula_redis_node_connect(s);
    }

    argv[0] = "SENTINEL";
    argvlen[0] = 8;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = 23;
    argv[2] = (const char *) rd->conf->master.data;
    argvlen[2] = rd->conf->master.len;

    if (s->ac == NULL
        || ngx_nebula_redis_node_internal(s, 3, argv, argvlen, "SENTINEL", 0)
           == NULL)
    {
        ngx_nebula_redis_sentinel_again(rd->discover_backoff);
        rd->discover_backoff = ngx_min(rd->discover_backoff * 2,
                                       NGX_NEBULA_REDIS_BACKOFF_MAX);
        return;
    }

    rd->sentinel = s;
}


void
ngx_nebula_redis_sentinel_reply(ngx_nebula_redis_node_t *s,
    ngx_nebula_redis_op_t *op, redisReply *reply)
{
    size_t                    len;
    ngx_int_t                 port;
    redisReply               *ip, *p;
    ngx_nebula_redis_t       *rd = &ngx_nebula_redis;
    ngx_nebula_redis_node_t  *d = rd->data;

    if (rd->sentinel == s) {
        rd->sentinel = NULL;
    }

    port = NGX_ERROR;
    ip = NULL;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        ip = reply->element[0];
        p = reply->element[1];
        port = ngx_atoi((u_char *) p->str, p->len);
    }

    if (ip == NULL || ip->len == 0 || ip->len > NGX_SOCKADDR_STRLEN
        || port < 1 || port > 65535)
    {
        /* nil: this sentinel does not know the name; an error: refused */
        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "nebula: redis sentinel \"%V\" does not name a master "
                      "\"%V\"%s%s", &s->name, &rd->conf->master,
                      reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");

        ngx_nebula_redis_sentinel_again(rd->discover_backoff);
        rd->discover_backoff = ngx_min(rd->discover_backoff * 2,
                                       NGX_NEBULA_REDIS_BACKOFF_MAX);

        /* what waited for an answer fails now, as with no connection */
        if (d->ac == NULL) {
            ngx_nebula_redis_fail_waiting(d);
        }

        return;
    }

    s->down = 0;
    rd->discover_backoff = NGX_NEBULA_REDIS_BACKOFF_MIN;

    len = ip->len;

    if (d->ac) {
        if (d->port == port && ngx_strlen(d->ip) == len
            && ngx_strncmp(d->ip, ip->str, len) == 0)
        {
            return;     /* still the master (a check) */
        }

        /* a failover: the new master, now, not when the old one says */
        ngx_nebula_redis_node_lost(d, "the sentinels name another master");

        if (d->ac) {
            return;
        }
    }

    ngx_memcpy(d->ip, ip->str, len);
    d->ip[len] = '\0';
    d->port = port;

    /* messages say which master, and where it is now */
    d->name.data = d->name_buf;
    d->name.len = ngx_snprintf(d->name_buf, sizeof(d->name_buf), "%V@%s:%i",
                               &rd->conf->master, d->ip, port)
                  - d->name_buf;

    ngx_nebula_redis_node_connect(d);
}


/* a sentinel failed: the next one; the master failed: ask again */
void
ngx_nebula_redis_sentinel_lost(ngx_nebula_redis_node_t *n)
{
    ngx_nebula_redis_t  *rd = &ngx_nebula_redis;

    if (n->sentinel) {
        if (rd->sentinel == n) {
            rd->sentinel = NULL;
            ngx_nebula_redis_sentinel_again(rd->discover_backoff);
            rd->discover_backoff = ngx_min(rd->discover_backoff * 2,
                                           NGX_NEBULA_REDIS_BACKOFF_MAX);

            if (rd->data->ac == NULL) {
                ngx_nebula_redis_fail_waiting(rd->data);
            }
        }

        return;
    }

    /* the master may have moved: the sentinels know where, after a while */
    ngx_nebula_redis_sentinel_again(n->backoff);
    n->backoff = ngx_min(n->backoff * 2, NGX_NEBULA_REDIS_BACKOFF_MAX);
}
