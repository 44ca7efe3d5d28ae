/*
 * Nebula: the counters behind "nebula metrics;" (Prometheus), in shared
 * memory, as every worker adds to them.
 */

#ifndef NGX_NEBULA_METRICS_H
#define NGX_NEBULA_METRICS_H

#include "ngx_nebula.h"


/*
 * Slots for names: a catalog of more models (plans, pools) than this
 * counts the rest under "other".  A name keeps its slot across reloads,
 * so its counters go on where they were.
 */
#define NGX_NEBULA_M_MODELS    64
#define NGX_NEBULA_M_PLANS     16
#define NGX_NEBULA_M_POOLS     16
#define NGX_NEBULA_M_NAME      127

/* statuses counted by name, the rest by class (ngx_nebula_metrics.c) */
#define NGX_NEBULA_M_STATUS    24
#define NGX_NEBULA_M_CODES     32
#define NGX_NEBULA_M_BUCKETS   12      /* the last is +Inf */
#define NGX_NEBULA_M_WORKERS   256     /* processes that hold gauges */


typedef struct {
    u_char                    len;             /* 0: free */
    u_char                    data[NGX_NEBULA_M_NAME];
} ngx_nebula_m_name_t;


/* a process's gauges: what it holds now */
typedef struct {
    ngx_atomic_t              pid;             /* 0: free */
    ngx_atomic_t              settlements_queued;
    ngx_atomic_t              leases_held;
} ngx_nebula_m_gauges_t;


typedef struct {
    ngx_nebula_m_name_t       model[NGX_NEBULA_M_MODELS];
    ngx_nebula_m_name_t       plan[NGX_NEBULA_M_PLANS];
    ngx_nebula_m_name_t       pool[NGX_NEBULA_M_POOLS];

    /* [..._MODELS] and [..._PLANS]: none (or other) */
    ngx_atomic_t              requests[NGX_NEBULA_M_MODELS + 1]
                                      [NGX_NEBULA_M_PLANS + 1]
                                      [NGX_NEBULA_M_STATUS];
    ngx_atomic_t              input[NGX_NEBULA_M_MODELS + 1]
                                   [NGX_NEBULA_M_PLANS + 1];
    ngx_atomic_t              output[NGX_NEBULA_M_MODELS + 1]
                                    [NGX_NEBULA_M_PLANS + 1];
    ngx_atomic_t              cost[NGX_NEBULA_M_MODELS + 1]    /* picodollars */
                                  [NGX_NEBULA_M_PLANS + 1];
    ngx_atomic_t              estimated[NGX_NEBULA_M_MODELS + 1];

    /* histograms: a count a bucket (not cumulative), the sum in ms */
    ngx_atomic_t              duration[NGX_NEBULA_M_MODELS + 1]
                                      [NGX_NEBULA_M_BUCKETS];
    ngx_atomic_t              duration_ms[NGX_NEBULA_M_MODELS + 1];
    ngx_atomic_t              ttft[NGX_NEBULA_M_MODELS + 1]
                                  [NGX_NEBULA_M_BUCKETS];
    ngx_atomic_t              ttft_ms[NGX_NEBULA_M_MODELS + 1];

    ngx_atomic_t              errors[NGX_NEBULA_M_CODES];
    ngx_atomic_t              pool_errors[NGX_NEBULA_M_POOLS + 1];
    ngx_atomic_t              pool_timeouts[NGX_NEBULA_M_POOLS + 1];

    ngx_atomic_t              redis_rtt[NGX_NEBULA_M_BUCKETS];
    ngx_atomic_t              redis_rtt_ms;
    ngx_atomic_t              redis_outages;
    ngx_atomic_t              redis_reconnects;

    ngx_nebula_m_gauges_t     gauges[NGX_NEBULA_M_WORKERS];
} ngx_nebula_metrics_sh_t;


/* this cycle's view: where each name of the catalog counts */
struct ngx_nebula_metrics_s {
    ngx_nebula_metrics_sh_t  *sh;
    ngx_nebula_main_conf_t   *nmcf;
    ngx_uint_t               *model_slot;      /* by catalog index */
    ngx_uint_t               *plan_slot;
    ngx_uint_t               *pool_slot;
};


/* the label values, by index, as the exposition writes them */
extern const char  *ngx_nebula_metrics_status_names[NGX_NEBULA_M_STATUS];
extern const char  *ngx_nebula_metrics_code_names[NGX_NEBULA_M_CODES];
extern const ngx_msec_t  ngx_nebula_metrics_buckets[NGX_NEBULA_M_BUCKETS];
extern const ngx_msec_t  ngx_nebula_metrics_redis_buckets[NGX_NEBULA_M_BUCKETS];

ngx_int_t ngx_nebula_metrics_conf(ngx_conf_t *cf,
    ngx_nebula_main_conf_t *nmcf);
ngx_int_t ngx_nebula_metrics_init_worker(ngx_cycle_t *cycle,
    ngx_nebula_main_conf_t *nmcf);
void ngx_nebula_metrics_exit_worker(void);

/* the counting, each a no-op when no location serves the metrics */
ngx_int_t ngx_nebula_metrics_log_handler(ngx_http_request_t *r);
void ngx_nebula_metrics_usage(ngx_nebula_ctx_t *ctx, uint64_t in,
    uint64_t out, uint64_t cost, ngx_uint_t estimated);
void ngx_nebula_metrics_error(const char *code);
void ngx_nebula_metrics_redis_reply(ngx_msec_t rtt);
void ngx_nebula_metrics_redis_outage(void);
void ngx_nebula_metrics_redis_reconnect(void);
void ngx_nebula_metrics_settlements_queued(ngx_uint_t n);
void ngx_nebula_metrics_leases_held(ngx_uint_t n);

#endif /* NGX_NEBULA_METRICS_H */
