/*
 * Nebula: GET of a "nebula metrics" location, the counters in
 * Prometheus's text format (version 0.0.4), read from shared memory.
 *
 * A label set is written once it has counted something (a catalog of
 * five models, four plans and two dozen statuses would otherwise write
 * some five hundred zeros); the pools' failures, Redis's counters and
 * the gauges are written always.  Costs are kept in picodollars and
 * written in USD.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"
#include "ngx_nebula_metrics.h"


typedef struct {
    ngx_nebula_json_t         j;        /* the writer: any text */
    ngx_nebula_metrics_t     *m;
    ngx_nebula_main_conf_t   *nmcf;
} ngx_nebula_mtext_t;


/* a label value, escaped as the format asks (\\, \", \n) */
static void
ngx_nebula_mtext_value(ngx_nebula_mtext_t *t, u_char *p, size_t len)
{
    size_t  i, from;

    from = 0;

    for (i = 0; i < len; i++) {
        if (p[i] == '\\' || p[i] == '"' || p[i] == '\n') {
            ngx_nebula_json_raw(&t->j, (char *) p + from, i - from);
            ngx_nebula_json_raw(&t->j, p[i] == '\n' ? "\\n"
                                       : p[i] == '"' ? "\\\"" : "\\\\", 2);
            from = i + 1;
        }
    }

    ngx_nebula_json_raw(&t->j, (char *) p + from, len - from);
}


static void
ngx_nebula_mtext_str(ngx_nebula_mtext_t *t, const char *s)
{
    ngx_nebula_json_raw(&t->j, s, ngx_strlen(s));
}


static void
ngx_nebula_mtext_head(ngx_nebula_mtext_t *t, const char *name,
    const char *type, const char *help)
{
    ngx_nebula_mtext_str(t, "# HELP ");
    ngx_nebula_mtext_str(t, name);
    ngx_nebula_mtext_str(t, " ");
    ngx_nebula_mtext_str(t, help);
    ngx_nebula_mtext_str(t, "\n# TYPE ");
    ngx_nebula_mtext_str(t, name);
    ngx_nebula_mtext_str(t, " ");
    ngx_nebula_mtext_str(t, type);
    ngx_nebula_mtext_str(t, "\n");
}


/* a slot's name; the last slot is "" (none) for models and plans */
static void
ngx_nebula_mtext_name(ngx_nebula_mtext_t *t, ngx_nebula_m_name_t *names,
    ngx_uint_t n, ngx_uint_t slot)
{
    if (slot < n) {
        ngx_nebula_mtext_value(t, names[slot].data, names[slot].len);
    }
}


/* model="...",pool="..." of a model's slot */
static void
ngx_nebula_mtext_model(ngx_nebula_mtext_t *t, ngx_uint_t ms)
{
    ngx_uint_t           i;
    ngx_nebula_model_t  *model;

    ngx_nebula_mtext_str(t, "model=\"");
    ngx_nebula_mtext_name(t, t->m->sh->model, NGX_NEBULA_M_MODELS, ms);
    ngx_nebula_mtext_str(t, "\",pool=\"");

    /* the pool it is served by in this configuration */
    model = t->nmcf->models.elts;

    for (i = 0; ms < NGX_NEBULA_M_MODELS && i < t->nmcf->models.nelts; i++) {
        if (t->m->model_slot[i] == ms) {
            ngx_nebula_mtext_value(t, model[i].pool_name.data,
                                   model[i].pool_name.len);
            break;
        }
    }

    ngx_nebula_mtext_str(t, "\"");
}


static void
ngx_nebula_mtext_uint(ngx_nebula_mtext_t *t, uint64_t v)
{
    ngx_nebula_json_int(&t->j, (int64_t) v);
    ngx_nebula_mtext_str(t, "\n");
}


/* a sum kept in milliseconds, written in seconds */
static void
ngx_nebula_mtext_seconds(ngx_nebula_mtext_t *t, uint64_t ms)
{
    u_char  buf[NGX_INT64_LEN + 8];

    ngx_nebula_json_raw(&t->j, (char *) buf,
                        ngx_sprintf(buf, "%uL.%03uL\n", ms / 1000, ms % 1000)
                        - buf);
}


/* a histogram of one label set: cumulative buckets, sum, count */
static void
ngx_nebula_mtext_histogram(ngx_nebula_mtext_t *t, const char *name,
    ngx_uint_t ms, ngx_atomic_t *buckets, ngx_atomic_t *sum,
    const ngx_msec_t *bounds)
{
    u_char      buf[64];
    uint64_t    total;
    ngx_uint_t  i;

    total = 0;

    for (i = 0; i < NGX_NEBULA_M_BUCKETS; i++) {
        total += buckets[i];

        ngx_nebula_mtext_str(t, name);
        ngx_nebula_mtext_str(t, "_bucket{");

        if (ms != (ngx_uint_t) -1) {
            ngx_nebula_mtext_model(t, ms);
            ngx_nebula_mtext_str(t, ",");
        }

        if (i == NGX_NEBULA_M_BUCKETS - 1) {
            ngx_nebula_mtext_str(t, "le=\"+Inf\"} ");

        } else {
            ngx_nebula_json_raw(&t->j, (char *) buf,
                                ngx_sprintf(buf, "le=\"%M.%03M\"} ",
                                            bounds[i] / 1000,
                                            bounds[i] % 1000)
                                - buf);
        }

        ngx_nebula_mtext_uint(t, total);
    }

    ngx_nebula_mtext_str(t, name);
    ngx_nebula_mtext_str(t, "_sum");

    if (ms != (ngx_uint_t) -1) {
        ngx_nebula_mtext_str(t, "{");
        ngx_nebula_mtext_model(t, ms);
        ngx_nebula_mtext_str(t, "}");
    }

    ngx_nebula_mtext_str(t, " ");
    ngx_nebula_mtext_seconds(t, *sum);

    ngx_nebula_mtext_str(t, name);
    ngx_nebula_mtext_str(t, "_count");

    if (ms != (ngx_uint_t) -1) {
        ngx_nebula_mtext_str(t, "{");
        ngx_nebula_mtext_model(t, ms);
        ngx_nebula_mtext_str(t, "}");
    }

    ngx_nebula_mtext_str(t, " ");
    ngx_nebula_mtext_uint(t, total);
}


static uint64_t
ngx_nebula_mtext_total(ngx_atomic_t *a, ngx_uint_t n)
{
    uint64_t    total;
    ngx_uint_t  i;

    total = 0;

    for (i = 0; i < n; i++) {
        total += a[i];
    }

    return total;
}


static void
ngx_nebula_mtext_requests(ngx_nebula_mtext_t *t)
{
    ngx_uint_t                m, p, s;
    ngx_nebula_metrics_sh_t  *sh = t->m->sh;

    ngx_nebula_mtext_head(t, "nebula_requests_total", "counter",
                          "Requests to the model APIs, by model, pool, "
                          "plan and status (plan \"\": not admitted).");

    for (m = 0; m <= NGX_NEBULA_M_MODELS; m++) {
        for (p = 0; p <= NGX_NEBULA_M_PLANS; p++) {
            for (s = 0; s < NGX_NEBULA_M_STATUS; s++) {
                if (sh->requests[m][p][s] == 0) {
                    continue;
                }

                ngx_nebula_mtext_str(t, "nebula_requests_total{");
                ngx_nebula_mtext_model(t, m);
                ngx_nebula_mtext_str(t, ",plan=\"");
                ngx_nebula_mtext_name(t, sh->plan, NGX_NEBULA_M_PLANS, p);
                ngx_nebula_mtext_str(t, "\",status=\"");
                ngx_nebula_mtext_str(t, ngx_nebula_metrics_status_names[s]);
                ngx_nebula_mtext_str(t, "\"} ");
                ngx_nebula_mtext_uint(t, sh->requests[m][p][s]);
            }
        }
    }
}


static void
ngx_nebula_mtext_usage(ngx_nebula_mtext_t *t)
{
    u_char                    buf[64];
    ngx_uint_t                m, p, k;
    ngx_atomic_t             *v;
    ngx_nebula_metrics_sh_t  *sh = t->m->sh;

    static const char  *names[3] = {
        "nebula_input_tokens_total", "nebula_output_tokens_total",
        "nebula_cost_usd_total"
    };
    static const char  *help[3] = {
        "Input tokens settled, by model and plan.",
        "Output tokens settled, by model and plan.",
        "What the settled tokens cost at the catalog's prices, in USD."
    };

    for (k = 0; k < 3; k++) {
        ngx_nebula_mtext_head(t, names[k], "counter", help[k]);

        for (m = 0; m <= NGX_NEBULA_M_MODELS; m++) {
            for (p = 0; p <= NGX_NEBULA_M_PLANS; p++) {
                v = k == 0 ? &sh->input[m][p]
                    : k == 1 ? &sh->output[m][p] : &sh->cost[m][p];

                /* nothing served or settled under these labels */
                if (*v == 0
                    && ngx_nebula_mtext_total(sh->requests[m][p],
                                              NGX_NEBULA_M_STATUS) == 0)
                {
                    continue;
                }

                ngx_nebula_mtext_str(t, names[k]);
                ngx_nebula_mtext_str(t, "{");
                ngx_nebula_mtext_model(t, m);
                ngx_nebula_mtext_str(t, ",plan=\"");
                ngx_nebula_mtext_name(t, sh->plan, NGX_NEBULA_M_PLANS, p);
                ngx_nebula_mtext_str(t, "\"} ");

                if (k < 2) {
                    ngx_nebula_mtext_uint(t, *v);

                } else {
                    /* picodollars: 12 decimals */
                    ngx_nebula_json_raw(&t->j, (char *) buf,
                                        ngx_sprintf(buf, "%uL.%012uL\n",
                                                    (uint64_t) *v
                                                    / 1000000000000ULL,
                                                    (uint64_t) *v
                                                    % 1000000000000ULL)
                                        - buf);
                }
            }
        }
    }

    ngx_nebula_mtext_head(t, "nebula_estimated_requests_total", "counter",
                          "Requests whose usage the pool did not report, "
                          "estimated and charged, by model.");

    for (m = 0; m <= NGX_NEBULA_M_MODELS; m++) {
        if (sh->estimated[m]) {
            ngx_nebula_mtext_str(t, "nebula_estimated_requests_total{");
            ngx_nebula_mtext_model(t, m);
            ngx_nebula_mtext_str(t, "} ");
            ngx_nebula_mtext_uint(t, sh->estimated[m]);
        }
    }
}


static void
ngx_nebula_mtext_latency(ngx_nebula_mtext_t *t)
{
    ngx_uint_t                m;
    ngx_nebula_metrics_sh_t  *sh = t->m->sh;

    ngx_nebula_mtext_head(t, "nebula_request_duration_seconds", "histogram",
                          "From the request's first byte to its last "
                          "answered, by model.");

    for (m = 0; m <= NGX_NEBULA_M_MODELS; m++) {
        if (ngx_nebula_mtext_total(sh->duration[m], NGX_NEBULA_M_BUCKETS)) {
            ngx_nebula_mtext_histogram(t, "nebula_request_duration_seconds",
                                       m, sh->duration[m],
                                       &sh->duration_ms[m],
                                       ngx_nebula_metrics_buckets);
        }
    }

    ngx_nebula_mtext_head(t, "nebula_time_to_first_token_seconds",
                          "histogram",
                          "From the request's first byte to the first byte "
                          "of its answer the pool sent, by model.");

    for (m = 0; m <= NGX_NEBULA_M_MODELS; m++) {
        if (ngx_nebula_mtext_total(sh->ttft[m], NGX_NEBULA_M_BUCKETS)) {
            ngx_nebula_mtext_histogram(t, "nebula_time_to_first_token_seconds",
                                       m, sh->ttft[m], &sh->ttft_ms[m],
                                       ngx_nebula_metrics_buckets);
        }
    }
}


static void
ngx_nebula_mtext_errors_and_pools(ngx_nebula_mtext_t *t)
{
    ngx_uint_t                i;
    ngx_nebula_pool_t        *pool;
    ngx_nebula_metrics_sh_t  *sh = t->m->sh;

    ngx_nebula_mtext_head(t, "nebula_errors_total", "counter",
                          "Errors answered, by code (\"\": none).");

    for (i = 0; ngx_nebula_metrics_code_names[i]; i++) {
        if (sh->errors[i]) {
            ngx_nebula_mtext_str(t, "nebula_errors_total{code=\"");
            ngx_nebula_mtext_str(t, ngx_nebula_metrics_code_names[i]);
            ngx_nebula_mtext_str(t, "\"} ");
            ngx_nebula_mtext_uint(t, sh->errors[i]);
        }
    }

    ngx_nebula_mtext_head(t, "nebula_pool_failures_total", "counter",
                          "Tries a pool failed: an error (refused, closed, "
                          "5xx) or a timeout.");

    pool = t->nmcf->pools.elts;

    for (i = 0; i < t->nmcf->pools.nelts; i++) {
        ngx_nebula_mtext_str(t, "nebula_pool_failures_total{pool=\"");
        ngx_nebula_mtext_value(t, pool[i].name.data, pool[i].name.len);
        ngx_nebula_mtext_str(t, "\",kind=\"error\"} ");
        ngx_nebula_mtext_uint(t, sh->pool_errors[t->m->pool_slot[i]]);

        ngx_nebula_mtext_str(t, "nebula_pool_failures_total{pool=\"");
        ngx_nebula_mtext_value(t, pool[i].name.data, pool[i].name.len);
        ngx_nebula_mtext_str(t, "\",kind=\"timeout\"} ");
        ngx_nebula_mtext_uint(t, sh->pool_timeouts[t->m->pool_slot[i]]);
    }
}


static void
ngx_nebula_mtext_redis(ngx_nebula_mtext_t *t)
{
    uint64_t                  queued, leases, workers;
    ngx_uint_t                i;
    ngx_nebula_metrics_sh_t  *sh = t->m->sh;

    ngx_nebula_mtext_head(t, "nebula_redis_round_trip_seconds", "histogram",
                          "A command's round trip to Redis, from sent to "
                          "answered.");
    ngx_nebula_mtext_histogram(t, "nebula_redis_round_trip_seconds",
                               (ngx_uint_t) -1, sh->redis_rtt,
                               &sh->redis_rtt_ms,
                               ngx_nebula_metrics_redis_buckets);

    ngx_nebula_mtext_head(t, "nebula_redis_outages_total", "counter",
                          "Times Redis became unavailable (logged once an "
                          "outage).");
    ngx_nebula_mtext_str(t, "nebula_redis_outages_total ");
    ngx_nebula_mtext_uint(t, sh->redis_outages);

    ngx_nebula_mtext_head(t, "nebula_redis_reconnects_total", "counter",
                          "Times a worker connected to Redis again after "
                          "losing it.");
    ngx_nebula_mtext_str(t, "nebula_redis_reconnects_total ");
    ngx_nebula_mtext_uint(t, sh->redis_reconnects);

    queued = 0;
    leases = 0;
    workers = 0;

    for (i = 0; i < NGX_NEBULA_M_WORKERS; i++) {
        if (sh->gauges[i].pid) {
            workers++;
            queued += sh->gauges[i].settlements_queued;
            leases += sh->gauges[i].leases_held;
        }
    }

    ngx_nebula_mtext_head(t, "nebula_settlements_queued", "gauge",
                          "Settlements the workers hold until Redis "
                          "answers.");
    ngx_nebula_mtext_str(t, "nebula_settlements_queued ");
    ngx_nebula_mtext_uint(t, queued);

    ngx_nebula_mtext_head(t, "nebula_leases_held", "gauge",
                          "Quota leases the workers hold.");
    ngx_nebula_mtext_str(t, "nebula_leases_held ");
    ngx_nebula_mtext_uint(t, leases);

    ngx_nebula_mtext_head(t, "nebula_workers", "gauge",
                          "Worker processes counting (old ones of a "
                          "reload until they exit).");
    ngx_nebula_mtext_str(t, "nebula_workers ");
    ngx_nebula_mtext_uint(t, workers);
}


ngx_int_t
ngx_nebula_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_nebula_mtext_t       t;
    ngx_nebula_main_conf_t  *nmcf;

    static ngx_str_t  type = ngx_string("text/plain; version=0.0.4; "
                                        "charset=utf-8");

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->metrics == NULL || nmcf->metrics->sh == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t.m = nmcf->metrics;
    t.nmcf = nmcf;
    ngx_nebula_json_init(&t.j, r->pool);

    ngx_nebula_mtext_requests(&t);
    ngx_nebula_mtext_usage(&t);
    ngx_nebula_mtext_latency(&t);
    ngx_nebula_mtext_errors_and_pools(&t);
    ngx_nebula_mtext_redis(&t);

    return ngx_nebula_json_send_as(r, &t.j, NGX_HTTP_OK, &type);
}
