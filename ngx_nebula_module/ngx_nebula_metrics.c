/*
 * Nebula: the counters behind "nebula metrics;".
 *
 * One shared-memory zone holds them, and every worker adds to them with
 * atomic additions (no lock on the request path): a count is exact
 * however many workers served the requests.  nginx keeps a zone of the
 * same name and size across a reload, as limit_req keeps its, and names
 * keep their slots (found again by name), so counters go on from where
 * they were.  No label names a key or an account: those belong to the
 * admin API, and would grow without bound.
 *
 * Counted only when some location serves the metrics: without one, each
 * call here is a test of a NULL pointer.
 *
 * Gauges (settlements waiting for Redis, leases held) are per process:
 * each worker writes what it holds now in a slot of its own, and gives
 * the slot back on exit, so the sum is what the live workers hold.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_metrics.h"


/* the statuses counted by name; any other by its class */
const char  *ngx_nebula_metrics_status_names[NGX_NEBULA_M_STATUS] = {
    "200", "201", "400", "401", "402", "403", "404", "405", "408", "409",
    "413", "414", "429", "499", "500", "502", "503", "504",
    "1xx", "2xx", "3xx", "4xx", "5xx", "other"
};

/* the error codes of docs/api.md's table; "" is null (no code) */
const char  *ngx_nebula_metrics_code_names[NGX_NEBULA_M_CODES] = {
    "invalid_json", "missing_field", "invalid_value",
    "missing_required_parameter", "context_length_exceeded",
    "request_too_large", "invalid_api_key", "invalid_management_key",
    "model_not_allowed", "account_suspended", "invalid_invite_code",
    "endpoint_forbidden", "model_not_found", "key_not_found",
    "account_not_found", "generation_not_found", "not_found",
    "method_not_allowed", "too_many_keys", "request_timeout",
    "rate_limit_exceeded", "insufficient_quota", "upstream_error",
    "quota_store_unavailable", "service_unavailable", "upstream_timeout",
    "", "other", NULL, NULL, NULL, NULL
};

/* request duration and time to first token, ms; the last is +Inf */
const ngx_msec_t  ngx_nebula_metrics_buckets[NGX_NEBULA_M_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    NGX_MAX_INT_T_VALUE
};

/* a Redis round trip, ms (nginx's clock: 1 is "within a millisecond") */
const ngx_msec_t  ngx_nebula_metrics_redis_buckets[NGX_NEBULA_M_BUCKETS] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, NGX_MAX_INT_T_VALUE
};


static ngx_int_t ngx_nebula_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


/* this worker's: NULL when the metrics are off */
static ngx_nebula_metrics_t    *ngx_nebula_metrics;
static ngx_nebula_m_gauges_t   *ngx_nebula_metrics_gauges;


#define ngx_nebula_m_add(p, v)                                               \
    (void) ngx_atomic_fetch_add((p), (ngx_atomic_int_t) (v))


/* the zone, when a "nebula metrics" location asked for it */
ngx_int_t
ngx_nebula_metrics_conf(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf)
{
    ngx_shm_zone_t        *zone;
    ngx_nebula_metrics_t  *m;

    static ngx_str_t  name = ngx_string("nebula_metrics");

    if (!nmcf->metrics_on) {
        return NGX_OK;
    }

    m = ngx_pcalloc(cf->pool, sizeof(ngx_nebula_metrics_t));
    if (m == NULL) {
        return NGX_ERROR;
    }

    m->nmcf = nmcf;
    m->model_slot = ngx_pcalloc(cf->pool, (nmcf->models.nelts + 1)
                                          * sizeof(ngx_uint_t));
    m->plan_slot = ngx_pcalloc(cf->pool, (nmcf->plans.nelts + 1)
                                         * sizeof(ngx_uint_t));
    m->pool_slot = ngx_pcalloc(cf->pool, (nmcf->pools.nelts + 1)
                                         * sizeof(ngx_uint_t));
    if (m->model_slot == NULL || m->plan_slot == NULL
        || m->pool_slot == NULL)
    {
        return NGX_ERROR;
    }

    /* the same size every time: nginx then keeps the zone on a reload */
    zone = ngx_shared_memory_add(cf, &name,
                                 ngx_align(sizeof(ngx_nebula_metrics_sh_t),
                                           ngx_pagesize)
                                 + 8 * ngx_pagesize,
                                 &ngx_http_nebula_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    if (zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "the \"nebula_metrics\" zone is already in use");
        return NGX_ERROR;
    }

    zone->init = ngx_nebula_metrics_init_zone;
    zone->data = m;
    nmcf->metrics = m;

    return NGX_OK;
}


/* the slot of a name: the one it had, else a free one, else "other" */
static ngx_uint_t
ngx_nebula_metrics_slot(ngx_nebula_m_name_t *names, ngx_uint_t n,
    ngx_str_t *name)
{
    ngx_uint_t  i, free;

    if (name->len == 0 || name->len > NGX_NEBULA_M_NAME) {
        return n;
    }

    free = n;

    for (i = 0; i < n; i++) {
        if (names[i].len == name->len
            && ngx_memcmp(names[i].data, name->data, name->len) == 0)
        {
            return i;
        }

        if (names[i].len == 0 && free == n) {
            free = i;
        }
    }

    if (free < n) {
        ngx_memcpy(names[free].data, name->data, name->len);
        names[free].len = (u_char) name->len;
    }

    return free;
}


static ngx_int_t
ngx_nebula_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_uint_t                i;
    ngx_slab_pool_t          *shpool;
    ngx_nebula_pool_t        *pool;
    ngx_nebula_plan_t        *plan;
    ngx_nebula_model_t       *model;
    ngx_nebula_metrics_t     *m, *old;
    ngx_nebula_main_conf_t   *nmcf;

    m = shm_zone->data;
    old = data;
    nmcf = m->nmcf;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (old) {
        /* a reload: the counters go on */
        m->sh = old->sh;

    } else if (shm_zone->shm.exists) {
        m->sh = shpool->data;

    } else {
        m->sh = ngx_slab_calloc(shpool, sizeof(ngx_nebula_metrics_sh_t));
        if (m->sh == NULL) {
            return NGX_ERROR;
        }

        shpool->data = m->sh;
    }

    /* the master alone writes names, while it reads the configuration */
    model = nmcf->models.elts;
    for (i = 0; i < nmcf->models.nelts; i++) {
        m->model_slot[i] = ngx_nebula_metrics_slot(m->sh->model,
                                                   NGX_NEBULA_M_MODELS,
                                                   &model[i].name);
    }

    plan = nmcf->plans.elts;
    for (i = 0; i < nmcf->plans.nelts; i++) {
        m->plan_slot[i] = ngx_nebula_metrics_slot(m->sh->plan,
                                                  NGX_NEBULA_M_PLANS,
                                                  &plan[i].name);
    }

    pool = nmcf->pools.elts;
    for (i = 0; i < nmcf->pools.nelts; i++) {
        m->pool_slot[i] = ngx_nebula_metrics_slot(m->sh->pool,
                                                  NGX_NEBULA_M_POOLS,
                                                  &pool[i].name);
    }

    return NGX_OK;
}


ngx_int_t
ngx_nebula_metrics_init_worker(ngx_cycle_t *cycle,
    ngx_nebula_main_conf_t *nmcf)
{
    ngx_uint_t              i;
    ngx_nebula_m_gauges_t  *g;

    if (nmcf == NULL || nmcf->metrics == NULL) {
        return NGX_OK;
    }

    ngx_nebula_metrics = nmcf->metrics;

    /* a slot for this process's gauges; one a dead process left is free */
    g = ngx_nebula_metrics->sh->gauges;

    for (i = 0; i < NGX_NEBULA_M_WORKERS; i++) {
        if (g[i].pid != 0 && kill((ngx_pid_t) g[i].pid, 0) == -1
            && ngx_errno == NGX_ESRCH)
        {
            /* what a crashed worker held is no longer held */
            if (ngx_atomic_cmp_set(&g[i].pid, g[i].pid, ngx_pid)) {
                g[i].settlements_queued = 0;
                g[i].leases_held = 0;
                ngx_nebula_metrics_gauges = &g[i];
                return NGX_OK;
            }
        }

        if (ngx_atomic_cmp_set(&g[i].pid, 0, ngx_pid)) {
            g[i].settlements_queued = 0;
            g[i].leases_held = 0;
            ngx_nebula_metrics_gauges = &g[i];
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                  "nebula: more than %d processes: this one's gauges are "
                  "not counted", NGX_NEBULA_M_WORKERS);

    return NGX_OK;
}


void
ngx_nebula_metrics_exit_worker(void)
{
    ngx_nebula_m_gauges_t  *g = ngx_nebula_metrics_gauges;

    if (g) {
        g->settlements_queued = 0;
        g->leases_held = 0;
        (void) ngx_atomic_cmp_set(&g->pid, ngx_pid, 0);
        ngx_nebula_metrics_gauges = NULL;
    }

    ngx_nebula_metrics = NULL;
}


static ngx_uint_t
ngx_nebula_metrics_status(ngx_uint_t status)
{
    ngx_uint_t  i;

    static const ngx_uint_t  named[] = {
        200, 201, 400, 401, 402, 403, 404, 405, 408, 409, 413, 414, 429,
        499, 500, 502, 503, 504
    };

    for (i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        if (named[i] == status) {
            return i;
        }
    }

    if (status >= 100 && status < 600) {
        /* "1xx" follows the named ones */
        return sizeof(named) / sizeof(named[0]) + status / 100 - 1;
    }

    return NGX_NEBULA_M_STATUS - 1;
}


static ngx_uint_t
ngx_nebula_metrics_bucket(const ngx_msec_t *bounds, ngx_msec_t v)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_NEBULA_M_BUCKETS - 1; i++) {
        if (v <= bounds[i]) {
            return i;
        }
    }

    return NGX_NEBULA_M_BUCKETS - 1;
}


/* the slots of a request's model and plan ([MODELS], [PLANS]: none) */
static void
ngx_nebula_metrics_labels(ngx_nebula_ctx_t *ctx, ngx_uint_t *ms,
    ngx_uint_t *ps)
{
    size_t                   len;
    ngx_nebula_plan_t       *plan;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_nebula_metrics->nmcf;

    *ms = NGX_NEBULA_M_MODELS;
    *ps = NGX_NEBULA_M_PLANS;

    if (ctx == NULL) {
        return;
    }

    if (ctx->model) {
        *ms = ngx_nebula_metrics->model_slot[
                  ctx->model - (ngx_nebula_model_t *) nmcf->models.elts];
    }

    if (ctx->admitted && ctx->admit.plan[0]) {
        len = ngx_strlen(ctx->admit.plan);
        plan = ngx_nebula_find_plan(nmcf, (u_char *) ctx->admit.plan, len);

        if (plan) {
            *ps = ngx_nebula_metrics->plan_slot[
                      plan - (ngx_nebula_plan_t *) nmcf->plans.elts];
        }
    }
}


/*
 * The log phase: a request to a model's API (or one nginx refused on its
 * way to one, answered by the error location), its status, how long it
 * took, how soon its first byte went out, and what its pool failed.
 */
ngx_int_t
ngx_nebula_metrics_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                  ms, ps, st, i, pool;
    ngx_msec_t                  ms_total;
    ngx_time_t                 *tp;
    ngx_nebula_ctx_t           *ctx;
    ngx_nebula_loc_conf_t      *nlcf;
    ngx_nebula_metrics_sh_t    *sh;
    ngx_http_upstream_state_t  *state;

    if (ngx_nebula_metrics == NULL || r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_nebula_find_ctx(r);

    if (ctx == NULL || ctx->api == NULL || ctx->api->handler != NULL) {
        nlcf = ngx_http_get_module_loc_conf(r, ngx_http_nebula_module);

        if (nlcf->api != NGX_NEBULA_API_ERROR) {
            return NGX_OK;
        }

        ctx = NULL;
    }

    sh = ngx_nebula_metrics->sh;

    ngx_nebula_metrics_labels(ctx, &ms, &ps);
    st = ngx_nebula_metrics_status(r->err_status ? r->err_status
                                                 : r->headers_out.status);

    ngx_nebula_m_add(&sh->requests[ms][ps][st], 1);

    /* as $request_time: r->start_msec is the millisecond of a second */
    tp = ngx_timeofday();
    ms_total = (ngx_msec_t) ngx_max((ngx_msec_int_t)
                                    ((tp->sec - r->start_sec) * 1000
                                     + (tp->msec - r->start_msec)), 0);
    ngx_nebula_m_add(&sh->duration[ms][ngx_nebula_metrics_bucket(
                         ngx_nebula_metrics_buckets, ms_total)], 1);
    ngx_nebula_m_add(&sh->duration_ms[ms], ms_total);

    if (ctx == NULL || ctx->model == NULL) {
        return NGX_OK;
    }

    if (ctx->first_byte) {
        ngx_nebula_m_add(&sh->ttft[ms][ngx_nebula_metrics_bucket(
                             ngx_nebula_metrics_buckets, ctx->ttft)], 1);
        ngx_nebula_m_add(&sh->ttft_ms[ms], ctx->ttft);
    }

    /* each try proxy_pass made: a failure as proxy_next_upstream sees it */
    if (r->upstream_states && ctx->model->pool) {
        pool = ngx_nebula_metrics->pool_slot[
                   ctx->model->pool
                   - (ngx_nebula_pool_t *) ngx_nebula_metrics->nmcf
                                              ->pools.elts];
        state = r->upstream_states->elts;

        for (i = 0; i < r->upstream_states->nelts; i++) {
            if (state[i].status == NGX_HTTP_GATEWAY_TIME_OUT) {
                ngx_nebula_m_add(&sh->pool_timeouts[pool], 1);

            } else if (state[i].status == NGX_HTTP_BAD_GATEWAY
                       || (state[i].status == 0 && state[i].peer))
            {
                ngx_nebula_m_add(&sh->pool_errors[pool], 1);
            }
        }
    }

    return NGX_OK;
}


/* a request's usage as it is settled: tokens and cost, model and plan */
void
ngx_nebula_metrics_usage(ngx_nebula_ctx_t *ctx, uint64_t in, uint64_t out,
    uint64_t cost, ngx_uint_t estimated)
{
    ngx_uint_t                ms, ps;
    ngx_nebula_metrics_sh_t  *sh;

    if (ngx_nebula_metrics == NULL) {
        return;
    }

    sh = ngx_nebula_metrics->sh;
    ngx_nebula_metrics_labels(ctx, &ms, &ps);

    ngx_nebula_m_add(&sh->input[ms][ps], in);
    ngx_nebula_m_add(&sh->output[ms][ps], out);
    ngx_nebula_m_add(&sh->cost[ms][ps], cost);

    if (estimated) {
        ngx_nebula_m_add(&sh->estimated[ms], 1);
    }
}


/* an error answered, by its code */
void
ngx_nebula_metrics_error(const char *code)
{
    ngx_uint_t  i;

    if (ngx_nebula_metrics == NULL) {
        return;
    }

    if (code == NULL) {
        code = "";
    }

    for (i = 0; ngx_nebula_metrics_code_names[i]; i++) {
        if (ngx_strcmp(ngx_nebula_metrics_code_names[i], code) == 0) {
            break;
        }

        if (ngx_strcmp(ngx_nebula_metrics_code_names[i], "other") == 0) {
            /* "other" is the last of the names */
            break;
        }
    }

    ngx_nebula_m_add(&ngx_nebula_metrics->sh->errors[i], 1);
}


void
ngx_nebula_metrics_redis_reply(ngx_msec_t rtt)
{
    ngx_nebula_metrics_sh_t  *sh;

    if (ngx_nebula_metrics == NULL) {
        return;
    }

    sh = ngx_nebula_metrics->sh;

    ngx_nebula_m_add(&sh->redis_rtt[ngx_nebula_metrics_bucket(
                         ngx_nebula_metrics_redis_buckets, rtt)], 1);
    ngx_nebula_m_add(&sh->redis_rtt_ms, rtt);
}


/* an outage begins: counted once, by the worker that logs it */
void
ngx_nebula_metrics_redis_outage(void)
{
    if (ngx_nebula_metrics) {
        ngx_nebula_m_add(&ngx_nebula_metrics->sh->redis_outages, 1);
    }
}


/* a worker connected again after it lost Redis */
void
ngx_nebula_metrics_redis_reconnect(void)
{
    if (ngx_nebula_metrics) {
        ngx_nebula_m_add(&ngx_nebula_metrics->sh->redis_reconnects, 1);
    }
}


/* how many settlements this worker holds for Redis now */
void
ngx_nebula_metrics_settlements_queued(ngx_uint_t n)
{
    if (ngx_nebula_metrics_gauges) {
        ngx_nebula_metrics_gauges->settlements_queued = n;
    }
}


/* how many quota leases this worker holds now */
void
ngx_nebula_metrics_leases_held(ngx_uint_t n)
{
    if (ngx_nebula_metrics_gauges) {
        ngx_nebula_metrics_gauges->leases_held = n;
    }
}
