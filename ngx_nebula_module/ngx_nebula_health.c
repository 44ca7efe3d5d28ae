/*
 * Nebula: GET /admin/health, what the operator's dashboard shows of the
 * service: Redis (this worker's connection, and a PING's round trip) and
 * each pool's servers as this worker's balancer sees them.
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


typedef struct {
    ngx_msec_t  sent;
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

        if (peer->down) {
            state = "down";

        } else if (peer->max_fails && peer->fails >= peer->max_fails
                   && now - peer->checked <= (time_t) peer->fail_timeout)
        {
            state = "unavailable";

        } else if (peer->fails) {
            state = "failing";

        } else {
            state = "up";
        }

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

    ngx_nebula_call_finish(call, ngx_nebula_health_send(call->r, rtt));
}


ngx_int_t
ngx_nebula_health_handler(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_str_t               ping;
    ngx_nebula_health_t    *h;
    ngx_nebula_call_ctx_t  *call;

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    call = ngx_nebula_call_start(r, NULL);
    h = ngx_pcalloc(r->pool, sizeof(ngx_nebula_health_t));
    if (call == NULL || h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->data = h;
    h->sent = ngx_current_msec;

    ngx_str_set(&ping, "PING");

    call->op = ngx_nebula_redis_command(1, &ping, ngx_nebula_health_reply,
                                        call);

    if (call->op == NULL) {
        /* no connection now: said at once, not waited for */
        return ngx_nebula_health_send(r, -1);
    }

    r->main->count++;
    return NGX_DONE;
}
