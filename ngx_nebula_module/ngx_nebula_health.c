/*
 * Nebula: GET /admin/health, what the operator's dashboard shows of the
 * service: Redis (this worker's connection, and a PING's round trip) and
 * each pool's servers as this worker's balancer sees them.  And "nebula
 * health", the load balancer's probe: the same two checks, reduced to
 * whether this worker can admit a request now (200 or 503), with no
 * address in it.
 *
 * The servers' state is nginx's own passive check: a server that failed
 * (an error or a timeout, as proxy_next_upstream counts them) carries its
 * failures until a request to it succeeds; with max_fails it is taken out
 * for fail_timeout.  Without a "zone" in the upstream{} block each worker
 * counts alone, so this is one worker's view: the one that answered.
 * Nothing here sends a request to a pool.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"
#include "ngx_nebula_records.h"


/* answers once the PING's round trip is known (-1: it failed) */
typedef ngx_int_t (*ngx_nebula_health_send_pt)(ngx_http_request_t *r,
    ngx_int_t rtt);


typedef struct {
    ngx_msec_t                  sent;
    ngx_nebula_health_send_pt   send;
} ngx_nebula_health_t;


/* one of two literals (ngx_nebula_json_lit() takes a literal's size) */
static void
ngx_nebula_health_either(ngx_nebula_json_t *j, ngx_uint_t which,
    const char *yes, const char *no)
{
    const char  *s;

    s = which ? yes : no;
    ngx_nebula_json_raw(j, s, ngx_strlen(s));
}


/*
 * Whether the round robin balancer may pick the server now, as it judges
 * when it picks one (ngx_http_upstream_get_peer()).  A pool of one server
 * never counts its failures, so that one is never out for them.
 * max_conns is left out: a server at its limit is busy for a moment, not
 * out.
 */
static ngx_uint_t
ngx_nebula_health_usable(ngx_http_upstream_rr_peer_t *peer, time_t now)
{
    if (peer->down) {
        return 0;
    }

    return !(peer->max_fails && peer->fails >= peer->max_fails
             && now - peer->checked <= (time_t) peer->fail_timeout);
}


static const char *
ngx_nebula_health_peer_state(ngx_http_upstream_rr_peer_t *peer, time_t now)
{
    if (peer->down) {
        return "down";
    }

    if (!ngx_nebula_health_usable(peer, now)) {
        return "unavailable";
    }

    return peer->fails ? "failing" : "up";
}


static void
ngx_nebula_health_peers(ngx_nebula_json_t *j, ngx_http_upstream_rr_peers_t
    *peers, ngx_uint_t backup, ngx_uint_t *first, ngx_uint_t *up,
    ngx_uint_t *total)
{
    time_t                         now;
    const char                    *state;
    ngx_http_upstream_rr_peer_t   *peer;

    now = ngx_time();

    for (peer = peers->peer; peer; peer = peer->next) {

        state = ngx_nebula_health_peer_state(peer, now);

        if (!backup) {
            (*total)++;

            if (state[0] == 'u' && state[1] == 'p') {
                (*up)++;
            }
        }

        if (!*first) {
            ngx_nebula_json_lit(j, ",");
        }

        *first = 0;

        ngx_nebula_json_lit(j, "{\"address\":");
        ngx_nebula_json_str(j, peer->name.data, peer->name.len);
        ngx_nebula_json_lit(j, ",\"state\":\"");
        ngx_nebula_json_raw(j, state, ngx_strlen(state));
        ngx_nebula_json_lit(j, "\",\"backup\":");
        ngx_nebula_health_either(j, backup, "true", "false");
        ngx_nebula_json_lit(j, ",\"fails\":");
        ngx_nebula_json_int(j, (int64_t) peer->fails);
        ngx_nebula_json_lit(j, ",\"max_fails\":");
        ngx_nebula_json_int(j, (int64_t) peer->max_fails);
        ngx_nebula_json_lit(j, ",\"last_failure\":");

        if (peer->fails && peer->accessed) {
            ngx_nebula_json_int(j, (int64_t) peer->accessed);
        } else {
            ngx_nebula_json_lit(j, "null");
        }

        ngx_nebula_json_lit(j, "}");
    }
}


/* each pool, its servers and their state */
static void
ngx_nebula_health_pools(ngx_nebula_json_t *j, ngx_nebula_main_conf_t *nmcf,
    ngx_uint_t *degraded)
{
    ngx_uint_t                      i, first, up, total;
    ngx_nebula_pool_t              *pool;
    ngx_http_upstream_rr_peers_t   *peers;

    pool = nmcf->pools.elts;

    for (i = 0; i < nmcf->pools.nelts; i++) {
        if (i) {
            ngx_nebula_json_lit(j, ",");
        }

        ngx_nebula_json_lit(j, "{\"name\":");
        ngx_nebula_json_str(j, pool[i].name.data, pool[i].name.len);
        ngx_nebula_health_either(j, pool[i].https, ",\"scheme\":\"https\"",
                                 ",\"scheme\":\"http\"");
        ngx_nebula_json_lit(j, ",\"servers\":[");

        first = 1;
        up = 0;
        total = 0;

        /* every balancer nginx has keeps round robin's peers here */
        peers = pool[i].upstream ? pool[i].upstream->peer.data : NULL;

        if (peers) {
            ngx_http_upstream_rr_peers_rlock(peers);
            ngx_nebula_health_peers(j, peers, 0, &first, &up, &total);
            ngx_http_upstream_rr_peers_unlock(peers);

            if (peers->next) {
                ngx_http_upstream_rr_peers_rlock(peers->next);
                ngx_nebula_health_peers(j, peers->next, 1, &first, &up,
                                        &total);
                ngx_http_upstream_rr_peers_unlock(peers->next);
            }
        }

        ngx_nebula_json_lit(j, "],\"servers_up\":");
        ngx_nebula_json_int(j, (int64_t) up);
        ngx_nebula_json_lit(j, ",\"servers_total\":");
        ngx_nebula_json_int(j, (int64_t) total);
        ngx_nebula_json_lit(j, "}");

        if (up < total) {
            *degraded = 1;
        }
    }
}


static ngx_int_t
ngx_nebula_health_send(ngx_http_request_t *r, ngx_int_t rtt)
{
    const char              *state;
    ngx_uint_t               degraded;
    ngx_nebula_json_t        j;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    degraded = 0;

    ngx_nebula_json_init(&j, r->pool);
    ngx_nebula_json_lit(&j, "{\"object\":\"health\",\"time\":");
    ngx_nebula_json_int(&j, (int64_t) ngx_time());
    ngx_nebula_json_lit(&j, ",\"pid\":");
    ngx_nebula_json_int(&j, (int64_t) ngx_pid);

    ngx_nebula_json_lit(&j, ",\"redis\":{\"address\":");
    ngx_nebula_json_str(&j, nmcf->redis->name.data, nmcf->redis->name.len);
    ngx_nebula_json_lit(&j, ",\"state\":\"");

    if (rtt >= 0) {
        ngx_nebula_json_lit(&j, "up\",\"round_trip_ms\":");
        ngx_nebula_json_int(&j, (int64_t) rtt);

    } else {
        /* connected, yet the PING failed: Redis answers with errors */
        state = ngx_nebula_redis_state();
        if (ngx_strcmp(state, "up") == 0) {
            state = "error";
        }

        ngx_nebula_json_raw(&j, state, ngx_strlen(state));
        ngx_nebula_json_lit(&j, "\",\"round_trip_ms\":null");
    }

    ngx_nebula_json_lit(&j, ",\"failure_mode\":");
    ngx_nebula_health_either(&j, nmcf->failure_open, "\"open\"", "\"closed\"");
    ngx_nebula_json_lit(&j, "},\"pools\":[");
    ngx_nebula_health_pools(&j, nmcf, &degraded);
    ngx_nebula_json_lit(&j, "],\"status\":");

    if (rtt < 0) {
        ngx_nebula_json_lit(&j, "\"unavailable\"}");

    } else {
        ngx_nebula_health_either(&j, degraded, "\"degraded\"}", "\"ok\"}");
    }

    return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
}


static void
ngx_nebula_health_reply(void *data, redisReply *reply)
{
    ngx_int_t               rtt;
    ngx_nebula_health_t    *h;
    ngx_nebula_call_ctx_t  *call = data;

    call->op = NULL;
    h = call->data;

    rtt = -1;

    if (reply != NULL && reply->type == REDIS_REPLY_STATUS) {
        rtt = (ngx_int_t) (ngx_current_msec - h->sent);
    }

    ngx_nebula_call_finish(call, h->send(call->r, rtt));
}


/*
 * A PING on this worker's connection; send() answers with its round trip,
 * at once when there is no connection (NULL from the command: said, not
 * waited for), else when the reply comes or nebula_redis_timeout passes
 */
static ngx_int_t
ngx_nebula_health_ping(ngx_http_request_t *r, ngx_nebula_health_send_pt send)
{
    ngx_str_t               ping;
    ngx_nebula_health_t    *h;
    ngx_nebula_call_ctx_t  *call;

    call = ngx_nebula_call_start(r, NULL);
    h = ngx_pcalloc(r->pool, sizeof(ngx_nebula_health_t));
    if (call == NULL || h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->data = h;
    h->sent = ngx_current_msec;
    h->send = send;

    ngx_str_set(&ping, "PING");

    call->op = ngx_nebula_redis_command(1, &ping, ngx_nebula_health_reply,
                                        call);

    if (call->op == NULL) {
        return send(r, -1);
    }

    r->main->count++;
    return NGX_DONE;
}


ngx_int_t
ngx_nebula_health_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    return ngx_nebula_health_ping(r, ngx_nebula_health_send);
}


/* a pool's servers, backups too, that the balancer may pick and may not */
static void
ngx_nebula_health_count(ngx_nebula_pool_t *pool, ngx_uint_t *up,
    ngx_uint_t *down)
{
    time_t                          now;
    ngx_http_upstream_rr_peer_t    *peer;
    ngx_http_upstream_rr_peers_t   *peers;

    *up = 0;
    *down = 0;

    now = ngx_time();

    for (peers = pool->upstream ? pool->upstream->peer.data : NULL;
         peers;
         peers = peers->next)
    {
        ngx_http_upstream_rr_peers_rlock(peers);

        for (peer = peers->peer; peer; peer = peer->next) {
            if (ngx_nebula_health_usable(peer, now)) {
                (*up)++;

            } else {
                (*down)++;
            }
        }

        ngx_http_upstream_rr_peers_unlock(peers);
    }
}


/*
 * The probe's answer.  200 when this worker can admit a request now:
 * Redis answered the PING (or nebula_redis_failure open serves without
 * it, or there is no Redis to ask), and a pool has a server the balancer
 * may pick; else 503.  "degraded" is a 200 that is not whole: unmetered,
 * or a pool with no server to pick.
 */
static ngx_int_t
ngx_nebula_health_probe_send(ngx_http_request_t *r, ngx_int_t rtt)
{
    ngx_uint_t               i, n, *up, *down, serving, pool_out, redis_ok,
                             code;
    const char              *state, *status;
    ngx_table_elt_t         *h;
    ngx_nebula_json_t        j;
    ngx_nebula_pool_t       *pool;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    pool = nmcf->pools.elts;
    n = nmcf->pools.nelts;

    up = ngx_palloc(r->pool, 2 * n * sizeof(ngx_uint_t));
    if (up == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    down = up + n;

    serving = 0;
    pool_out = 0;

    for (i = 0; i < n; i++) {
        ngx_nebula_health_count(&pool[i], &up[i], &down[i]);

        if (up[i]) {
            serving = 1;

        } else {
            pool_out = 1;
        }
    }

    if (nmcf->redis == NULL) {
        state = "none";
        redis_ok = 1;

    } else if (rtt >= 0) {
        /* a cluster with a master down: the other slots are served */
        state = ngx_nebula_redis_state();
        if (ngx_strcmp(state, "partial") != 0) {
            state = "up";
        }

        redis_ok = 1;

    } else {
        state = ngx_nebula_redis_state();

        /* connected, yet the PING failed: Redis answers with errors */
        if (ngx_strcmp(state, "up") == 0) {
            state = "error";
        }

        redis_ok = 0;
    }

    code = NGX_HTTP_OK;

    if (!serving || !(redis_ok || nmcf->failure_open)) {
        status = "unavailable";
        code = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else if (!redis_ok || pool_out || state[0] == 'p') {
        status = "degraded";

    } else {
        status = "ok";
    }

    ngx_nebula_json_init(&j, r->pool);
    ngx_nebula_json_lit(&j, "{\"status\":\"");
    ngx_nebula_json_raw(&j, status, ngx_strlen(status));
    ngx_nebula_json_lit(&j, "\",\"redis\":{\"state\":\"");
    ngx_nebula_json_raw(&j, state, ngx_strlen(state));
    ngx_nebula_json_lit(&j, "\",\"round_trip_ms\":");

    if (rtt >= 0) {
        ngx_nebula_json_int(&j, (int64_t) rtt);

    } else {
        ngx_nebula_json_lit(&j, "null");
    }

    ngx_nebula_json_lit(&j, "},\"pools\":[");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_nebula_json_lit(&j, ",");
        }

        ngx_nebula_json_lit(&j, "{\"name\":");
        ngx_nebula_json_str(&j, pool[i].name.data, pool[i].name.len);
        ngx_nebula_json_lit(&j, ",\"up\":");
        ngx_nebula_json_int(&j, (int64_t) up[i]);
        ngx_nebula_json_lit(&j, ",\"down\":");
        ngx_nebula_json_int(&j, (int64_t) down[i]);
        ngx_nebula_json_lit(&j, "}");
    }

    ngx_nebula_json_lit(&j, "]}");

    /* a cache between the balancer and here must not answer for us */
    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

    return ngx_nebula_json_send(r, &j, code);
}


/*
 * "nebula health": no key, no token.  A Redis this worker is not
 * connected to is not waited for (a probe gets its answer at once);
 * one it is connected to is asked, as GET /admin/health asks it, so a
 * frozen Redis is found within nebula_redis_timeout.
 */
ngx_int_t
ngx_nebula_health_probe_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_nebula_main_conf_t  *nmcf;

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL
        || (ngx_strcmp(ngx_nebula_redis_state(), "up") != 0
            && ngx_strcmp(ngx_nebula_redis_state(), "partial") != 0))
    {
        return ngx_nebula_health_probe_send(r, -1);
    }

    return ngx_nebula_health_ping(r, ngx_nebula_health_probe_send);
}
