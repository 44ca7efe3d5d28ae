/*
 * Nebula: shared types of the nginx module.
 */

#ifndef NGX_NEBULA_H
#define NGX_NEBULA_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "nebula_request.h"
#include "nebula_stream.h"
#include "nebula_reply.h"
#include "ngx_nebula_redis.h"
#include "ngx_nebula_api.h"


/* what a location serves, from the "nebula" directive */
typedef enum {
    NGX_NEBULA_API_NONE = 0,
    NGX_NEBULA_API_CHAT,               /* proxied: /v1/chat/completions */
    NGX_NEBULA_API_OLLAMA_CHAT,        /* proxied: /api/chat */
    NGX_NEBULA_API_OLLAMA_GENERATE,    /* proxied: /api/generate */
    NGX_NEBULA_API_EMBEDDINGS,         /* proxied: /v1/embeddings */
    NGX_NEBULA_API_OLLAMA_EMBED,       /* proxied: /api/embed */
    NGX_NEBULA_API_OLLAMA_EMBEDDINGS,  /* proxied: /api/embeddings */
    NGX_NEBULA_API_COMPLETIONS,        /* proxied: /v1/completions */
    NGX_NEBULA_API_OLLAMA_SHOW,        /* proxied: /api/show */
    NGX_NEBULA_API_MESSAGES,           /* proxied: /v1/messages */
    NGX_NEBULA_API_RESPONSES,          /* proxied: /v1/responses */
    NGX_NEBULA_API_OLLAMA_PS,          /* proxied, its pools asked by
                                          subrequests: /api/ps */
    NGX_NEBULA_API_MODELS,             /* content: /v1/models */
    NGX_NEBULA_API_OLLAMA_TAGS,        /* content: /api/tags */
    NGX_NEBULA_API_ERROR,              /* content: error_page target */
    NGX_NEBULA_API_KEY,                /* content: GET /v1/key */
    NGX_NEBULA_API_ADMIN,              /* content: /admin/... */
    NGX_NEBULA_API_OLLAMA_VERSION,     /* content: /api/version */
    NGX_NEBULA_API_OLLAMA_FORBIDDEN,   /* content: /api/pull, ... */
    NGX_NEBULA_API_GENERATION,         /* content: GET /v1/generation */
    NGX_NEBULA_API_ACCOUNT,            /* content: /v1/account, /v1/keys */
    NGX_NEBULA_API_SIGNUP,             /* content: POST /v1/accounts */
    NGX_NEBULA_API_PLANS,              /* content: GET /v1/plans */
    NGX_NEBULA_API_METRICS,            /* content: Prometheus's text */
    NGX_NEBULA_API_HEALTH,             /* content: the balancer's probe */
    NGX_NEBULA_API_N
} ngx_nebula_api_e;


#define NGX_NEBULA_KEY_ID_LEN       16
#define NGX_NEBULA_KEY_SECRET_LEN   46     /* "nb-" and 43 characters: a key
                                              made before accounts */
/* "nb-", the account's tag (16 hex digits), "-" and 43 characters */
#define NGX_NEBULA_ACCOUNT_SECRET_LEN  63

/* an account's management secret: "nbm-", its tag, "-", 43 characters */
#define NGX_NEBULA_MANAGEMENT_PREFIX      "nbm-"
#define NGX_NEBULA_MANAGEMENT_SECRET_LEN  64

/*
 * A reservation's id: the request's (32 hex digits), and for a key of an
 * account "@" and the key's id, so that what it holds is the key's too
 */
#define NGX_NEBULA_RES_ID_LEN       (32 + 1 + NGX_NEBULA_KEY_ID_LEN)

/* a request's cost, in picodollars, is never more: $1,000,000 */
#define NGX_NEBULA_COST_MAX         1000000000000000000ULL

/* how long usage counters live in Redis: a year and a bit */
#define NGX_NEBULA_USAGE_TTL        34560000


#define NGX_NEBULA_MODALITY_TEXT   0x01
#define NGX_NEBULA_MODALITY_IMAGE  0x02


/* where a directive stood, for errors found once the http{} block is read */
typedef struct {
    u_char                   *file;
    ngx_uint_t                line;
} ngx_nebula_conf_pos_t;


typedef struct {
    ngx_str_t                 name;            /* the upstream{} block */
    ngx_str_t                 url;             /* for proxy_pass */
    ngx_str_t                 host;            /* the Host header to send */
    ngx_str_t                 authorization;   /* "Bearer ..." or empty */
    ngx_http_upstream_srv_conf_t  *upstream;   /* its upstream{} block */
    unsigned                  https:1;
    unsigned                  declared:1;      /* by nebula_pool */
    ngx_nebula_conf_pos_t     pos;
} ngx_nebula_pool_t;


typedef struct {
    ngx_str_t                 name;            /* public */
    ngx_str_t                 quoted;          /* as a JSON string */
    ngx_str_t                 upstream_model;
    ngx_str_t                 upstream_quoted;
    ngx_str_t                 pool_name;
    ngx_nebula_pool_t        *pool;
    uint64_t                  context;         /* tokens */
    uint64_t                  max_output;      /* the longest answer */
    uint64_t                  input_price;     /* micro-USD per 1M tokens */
    uint64_t                  output_price;
    ngx_uint_t                modalities;
    ngx_str_t                 group;
    ngx_uint_t                group_index;
    ngx_str_t                 owned_by;
    ngx_str_t                 description;     /* its use, in words */
    time_t                    created;
    ngx_str_t                 keep_alive;      /* native requests get it */
    uint64_t                  choices;         /* the most n it honours */
    unsigned                  private:1;       /* reached through keys only */
    unsigned                  embedding:1;     /* kind=embedding: embeds,
                                                  generates nothing */
    ngx_str_t                 tags_entry;      /* its /api/tags object */
    ngx_str_t                 models_entry;    /* its /v1/models object */
    ngx_nebula_conf_pos_t     pos;
} ngx_nebula_model_t;


typedef struct {
    ngx_str_t                 name;
    uint64_t                  input_tokens;    /* a month */
    uint64_t                  output_tokens;
    uint64_t                  requests_per_minute;    /* 0: no limit */
    ngx_array_t               group_names;     /* of ngx_str_t */
    uint64_t                  groups;          /* bit i: groups[i] */

    /* what a page of plans shows (GET /v1/plans) */
    ngx_str_t                 title;
    uint64_t                  price;           /* micro-USD a month */
    ngx_array_t               perks;           /* of ngx_str_t */
    ngx_uint_t                popular;
    ngx_nebula_conf_pos_t     pos;
} ngx_nebula_plan_t;


/* what the workers share */
typedef struct {
    ngx_atomic_t              redis_outage;    /* logged, not yet over */
} ngx_nebula_shctx_t;


typedef struct {
    ngx_array_t               models;          /* ngx_nebula_model_t */
    ngx_array_t               plans;           /* ngx_nebula_plan_t */
    ngx_array_t               pools;           /* ngx_nebula_pool_t */
    ngx_array_t               groups;          /* ngx_str_t */
    ngx_hash_t                models_hash;
    ngx_str_t                 models_json;     /* GET /v1/models */

    ngx_nebula_redis_conf_t  *redis;           /* NULL: keys not checked */
    ngx_shm_zone_t           *shm_zone;
    ngx_msec_t                redis_timeout;
    ngx_msec_t                redis_connect_timeout;
    ngx_int_t                 redis_wait;      /* replicas WAIT asks for */
    ngx_msec_t                redis_wait_timeout;
    ngx_msec_t                reservation_timeout;
    ngx_uint_t                failure_open;    /* serve unmetered */
    ngx_str_t                 admin_token;
    ngx_flag_t                test_clock;
    ngx_flag_t                lease;           /* nebula_lease */
    time_t                    generation_ttl;  /* 0: no records */
    ngx_array_t              *pass_options;    /* ngx_str_t: more options
                                                  a pool gets */
    const char              **pass_names;      /* the same, NULL-ended */
    ngx_str_t                 plans_table;     /* ARGV of the ADMIT script */
    ngx_str_t                 plans_json;      /* GET /v1/plans */
    ngx_str_t                 signup_plan;     /* nebula_signup: "", off */
    ngx_str_t                 signup_invite;
    struct ngx_nebula_metrics_s  *metrics;     /* NULL: not counted */
    ngx_uint_t                metrics_on;      /* a "nebula metrics"
                                                  location asks for them */
} ngx_nebula_main_conf_t;


typedef struct {
    ngx_uint_t                api;             /* ngx_nebula_api_e */
} ngx_nebula_loc_conf_t;


/*
 * A reservation this worker holds in Redis, its expiry pushed ahead while
 * its request (or lease) lives (ngx_nebula_hold.c).
 */
typedef struct {
    ngx_queue_t               queue;
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    month[8];
    u_char                    member[NGX_NEBULA_RES_ID_LEN + 64];  /*
                                                  "[L]ID[.GEN]:IN:OUT" */
    size_t                    member_len;
    time_t                    offset;          /* its clock - the real one */
    time_t                    extra;           /* seconds past the timeout */
    unsigned                  held:1;
} ngx_nebula_hold_t;


/*
 * What the body of POST or PATCH /admin/keys sets on a key, checked
 * (ngx_nebula_admin_body.c).  A string with a NULL data is not in the
 * body: a PATCH leaves that field as it is.
 */
typedef struct {
    ngx_str_t                 plan;
    ngx_str_t                 name;
    ngx_str_t                 limits[3];       /* input_tokens, output_tokens,
                                                  requests_per_minute; "":
                                                  null, the plan's */
    ngx_str_t                 models;          /* names, space-separated */
    ngx_str_t                 status;
    ngx_str_t                 email;           /* an account's */
    ngx_str_t                 expires;         /* a key's: unix time; "":
                                                  never */
    ngx_str_t                 key_name;        /* a new account's first
                                                  key */
    ngx_str_t                 invite;          /* a sign-up's code */
    ngx_int_t                 disabled;        /* a key's: -1 not named */
    unsigned                  models_named:1;  /* "models" in the body, as
                                                  null too */
    unsigned                  first_key:1;     /* "key" in a new account's
                                                  body */

    /* a refusal, 400: what to say */
    const char               *code;
    const char               *param;
    const char               *message;
    u_char                    text[256];       /* a message made for it */
} ngx_nebula_key_fields_t;


typedef struct ngx_nebula_admission_s  ngx_nebula_admission_t;


/* what admission decided, for the access step to act on */
typedef enum {
    NGX_NEBULA_VERDICT_NONE = 0,     /* not yet: Redis is asked */
    NGX_NEBULA_VERDICT_PROCEED,      /* admitted, or served unmetered */
    NGX_NEBULA_VERDICT_REFUSE,       /* refused as the fields below say */
    NGX_NEBULA_VERDICT_FAIL          /* no memory: 500 */
} ngx_nebula_verdict_e;

typedef struct {
    ngx_nebula_verdict_e      action;
    ngx_uint_t                status;
    const char               *type;
    const char               *code;
    const char               *param;
    const char               *message;        /* NUL-terminated */
    unsigned                  headers:1;       /* x-ratelimit-* with it */
} ngx_nebula_verdict_t;
typedef struct ngx_nebula_lease_s  ngx_nebula_lease_t;
typedef struct ngx_nebula_call_ctx_s  ngx_nebula_call_ctx_t;
typedef struct ngx_nebula_metrics_s  ngx_nebula_metrics_t;
typedef struct ngx_nebula_ps_s  ngx_nebula_ps_t;
typedef struct ngx_nebula_ps_pool_s  ngx_nebula_ps_pool_t;


/* the state of one request */
typedef struct {
    ngx_http_request_t       *request;         /* its own, for its ending */
    ngx_nebula_api_t         *api;             /* what its location serves */
    ngx_nebula_model_t       *model;
    nebula_request_t         *req;
    ngx_nebula_call_ctx_t    *call;            /* an API call waiting on
                                                  Redis: admin, /v1/key,
                                                  /api/tags */
    ngx_nebula_ps_t          *ps;              /* GET /api/ps: its pools */
    u_char                   *body;            /* as the client sent it */
    size_t                    body_len;

    /* the key, the admission and the settlement */
    ngx_str_t                 secret;
    u_char                    key_id[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN + 1];  /* its
                                                  account's: the hash tag
                                                  of its data in Redis */
    u_char                    digest[65];
    time_t                    now;
    ngx_nebula_admission_t   *adm;             /* while Redis answers */
    ngx_nebula_verdict_t      verdict;
    ngx_nebula_lease_t       *lease;           /* admitted from it */
    nebula_admit_t            admit;
    ngx_nebula_hold_t         hold;            /* its reservation, alive */
    uint64_t                  reserved_in;
    uint64_t                  reserved_out;
    uint64_t                  prompt_tokens;   /* settled */
    uint64_t                  completion_tokens;
    uint64_t                  cost;            /* picodollars */
    ngx_msec_t                ttft;            /* to the first byte out */
    u_char                    request_id[33];
    u_char                    res_id[NGX_NEBULA_RES_ID_LEN + 1];  /* its
                                                  reservation's */
    u_char                    month[8];

    /* the response filter */
    nebula_stream_t           stream;
    ngx_chain_t              *free;
    ngx_chain_t              *free_mem;        /* event buffers, to reuse */
    ngx_chain_t              *busy;
    ngx_chain_t              *event;           /* strip mode: held events */
    size_t                    event_start;     /* where the open one starts */
    void                    (*upstream_finalize)(ngx_http_request_t *r,
                                                 ngx_int_t rc);
    off_t                     held_length;     /* the upstream's length */
    uint64_t                  limit;           /* output it may stream */

    unsigned                  body_done:1;     /* validated and rewritten */
    unsigned                  refused:1;       /* an error was sent */
    unsigned                  proxied:1;       /* handed to proxy_pass */
    unsigned                  filtering:1;
    unsigned                  strip_usage:1;   /* drop the usage chunk */
    unsigned                  cost_usage:1;    /* "cost" in the usage:
                                                  usage.include */
    unsigned                  holding:1;       /* documents held whole */
    unsigned                  limit_hold:1;    /* past its reservation */
    unsigned                  cut:1;           /* there, and ended */
    unsigned                  usage_stripped:1;
    unsigned                  event_passing:1; /* too big to hold */
    unsigned                  header_held:1;   /* until the body is read */
    unsigned                  stream_broken:1; /* ended before its end */
    unsigned                  closing:1;       /* its error event is out */
    unsigned                  admitted:1;      /* a reservation is held */
    unsigned                  settled:1;
    unsigned                  unmetered:1;     /* Redis down, mode open */
    unsigned                  estimated:1;     /* usage not reported */
    unsigned                  output_seen:1;   /* the pool answered 2xx */
    unsigned                  upstream_failed:1; /* its 5xx replaced */
    unsigned                  unreadable:1;    /* a 2xx we cannot meter */
    unsigned                  over_in:1;       /* the pool said more than */
    unsigned                  over_out:1;      /* it could have used */
    unsigned                  first_byte:1;    /* ttft is known */
    unsigned                  whole:1;         /* its answer held whole,
                                                  header too, to be
                                                  rewritten (/api/show) */
} ngx_nebula_ctx_t;


extern ngx_module_t  ngx_http_nebula_module;


/* ngx_nebula_catalog.c */
char *ngx_nebula_model_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_nebula_plan_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_nebula_pool_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_nebula_catalog_init(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf);
ngx_nebula_model_t *ngx_nebula_find_model(ngx_nebula_main_conf_t *nmcf,
    u_char *name, size_t len);
ngx_nebula_plan_t *ngx_nebula_find_plan(ngx_nebula_main_conf_t *nmcf,
    u_char *name, size_t len);

/* ngx_nebula_listing.c */
ngx_int_t ngx_nebula_build_listings(ngx_conf_t *cf,
    ngx_nebula_main_conf_t *nmcf);
ngx_int_t ngx_nebula_listing_handler(ngx_http_request_t *r);

/* ngx_nebula_ollama.c */
ngx_int_t ngx_nebula_ollama_version_handler(ngx_http_request_t *r);
ngx_int_t ngx_nebula_ollama_forbidden_handler(ngx_http_request_t *r);

/* ngx_nebula_generation.c */
void ngx_nebula_generation_init_worker(ngx_cycle_t *cycle, time_t ttl,
    ngx_uint_t redis);
void ngx_nebula_generation_exit_worker(ngx_cycle_t *cycle);
void ngx_nebula_generation_record(ngx_nebula_ctx_t *ctx, uint64_t in,
    uint64_t out, ngx_uint_t estimated, ngx_uint_t cancelled);
ngx_int_t ngx_nebula_generation_handler(ngx_http_request_t *r);

/* ngx_nebula_ps.c */
ngx_int_t ngx_nebula_ps_handler(ngx_http_request_t *r);
ngx_nebula_ps_pool_t *ngx_nebula_ps_subrequest(ngx_http_request_t *r);
ngx_nebula_pool_t *ngx_nebula_ps_pool(ngx_http_request_t *r);
void ngx_nebula_ps_header_filter(ngx_http_request_t *r,
    ngx_nebula_ps_pool_t *pp);
ngx_int_t ngx_nebula_ps_body_filter(ngx_http_request_t *r,
    ngx_nebula_ps_pool_t *pp, ngx_chain_t *in);

/* ngx_nebula_error.c */
ngx_nebula_errors_e ngx_nebula_error_shape(ngx_http_request_t *r);
ngx_buf_t *ngx_nebula_error_body(ngx_pool_t *pool, ngx_nebula_errors_e shape,
    ngx_uint_t status, const char *type, const char *code, const char *param,
    u_char *message, size_t mlen);
ngx_int_t ngx_nebula_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *message);
ngx_int_t ngx_nebula_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *message);
ngx_int_t ngx_nebula_get_only(ngx_http_request_t *r, ngx_int_t *rc);
ngx_int_t ngx_nebula_error_handler(ngx_http_request_t *r);
char *ngx_nebula_unknown_model(ngx_pool_t *pool, u_char *name, size_t len);

/* ngx_nebula_access.c */
ngx_int_t ngx_nebula_access_handler(ngx_http_request_t *r);
ngx_nebula_ctx_t *ngx_nebula_get_ctx(ngx_http_request_t *r);
ngx_nebula_ctx_t *ngx_nebula_find_ctx(ngx_http_request_t *r);

/* ngx_nebula_rewrite.c */
uint64_t ngx_nebula_choices(nebula_request_t *req);
ngx_int_t ngx_nebula_rewrite_body(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);

/* ngx_nebula_filter.c */
ngx_int_t ngx_nebula_filter_init(ngx_conf_t *cf);

/* ngx_nebula_relay.c */

/* an SSE event larger than this is no usage chunk: it passes as it comes */
#define NGX_NEBULA_EVENT_HOLD_MAX  65536

/* a JSON answer held whole for its cost ("usage": {"include": true}) */
#define NGX_NEBULA_COST_HOLD_MAX   (4 * 1024 * 1024)

ngx_int_t ngx_nebula_relay_buf(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_buf_t *ib, ngx_chain_t ***ll);
ngx_int_t ngx_nebula_end_buf(ngx_http_request_t *r, ngx_buf_t *ib,
    ngx_chain_t ***ll);
ngx_int_t ngx_nebula_stream_error(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, ngx_chain_t ***ll);
ngx_int_t ngx_nebula_event_append(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, u_char *p, size_t n);
ngx_int_t ngx_nebula_event_split(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, ngx_chain_t ***ll, ngx_buf_t **sent);
ngx_buf_t *ngx_nebula_event_send(ngx_nebula_ctx_t *ctx, ngx_chain_t ***ll);
ngx_int_t ngx_nebula_cost_whole(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t ***ll);

/* ngx_nebula_key.c */
ngx_table_elt_t *ngx_nebula_header(ngx_http_request_t *r, const char *name,
    size_t len);
ngx_int_t ngx_nebula_key_from_request(ngx_http_request_t *r,
    ngx_str_t *secret);
ngx_int_t ngx_nebula_key_well_formed(ngx_str_t *secret);
u_char *ngx_nebula_hex(u_char *dst, const u_char *src, size_t len);
ngx_int_t ngx_nebula_key_digest(ngx_str_t *secret, u_char *digest,
    u_char *id);
size_t ngx_nebula_key_generate(u_char *out, u_char *tag);
ngx_uint_t ngx_nebula_key_tag(ngx_str_t *secret, u_char *id, u_char *tag);
ngx_int_t ngx_nebula_key_new_tag(u_char *tag);
size_t ngx_nebula_key_generate_management(u_char *out, u_char *tag);
ngx_uint_t ngx_nebula_key_management_tag(ngx_str_t *secret, u_char *tag);
void ngx_nebula_res_id(u_char *res, u_char *request_id, u_char *key_id,
    u_char *tag);
ngx_int_t ngx_nebula_secret_equal(ngx_str_t *a, ngx_str_t *b);
void ngx_nebula_hide_headers(ngx_http_request_t *r);

/* ngx_nebula_clock.c */
time_t ngx_nebula_now(ngx_http_request_t *r);
u_char *ngx_nebula_month(u_char *p, time_t now);
u_char *ngx_nebula_day(u_char *p, time_t now);
time_t ngx_nebula_month_left(time_t now);
u_char *ngx_nebula_duration(u_char *p, time_t s);

/* ngx_nebula_ratelimit.c */
ngx_int_t ngx_nebula_ratelimit_headers(ngx_http_request_t *r,
    nebula_admit_t *a, time_t now);

/* ngx_nebula_admission.c */
ngx_int_t ngx_nebula_admission_init(ngx_conf_t *cf,
    ngx_nebula_main_conf_t *nmcf);
ngx_int_t ngx_nebula_admit(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx);

/* ngx_nebula_charge.c */
ngx_int_t ngx_nebula_charge_register(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);
ngx_uint_t ngx_nebula_usage(ngx_nebula_ctx_t *ctx, uint64_t *in,
    uint64_t *out);
uint64_t ngx_nebula_cost(ngx_nebula_model_t *model, uint64_t in,
    uint64_t out);

/*
 * ngx_nebula_settle.c.  What a settlement does (its flags): 0 only gives
 * the reservation back; NGX_NEBULA_SETTLE_COUNT adds the usage and counts
 * the request, and the EST bits say which of its counts are the gateway's
 * own, so the record says it was estimated.
 */
#define NGX_NEBULA_SETTLE_COUNT    0x01
#define NGX_NEBULA_SETTLE_EST_IN   0x02
#define NGX_NEBULA_SETTLE_EST_OUT  0x04
/* sent now, not with the next batch: the key has little left */
#define NGX_NEBULA_SETTLE_NOW      0x08

void ngx_nebula_settle_init_worker(ngx_cycle_t *cycle);
void ngx_nebula_settle_before(u_char *tag);
void ngx_nebula_settle_exit_worker(ngx_cycle_t *cycle);
void ngx_nebula_settle_request(ngx_log_t *log, u_char *tag, u_char *month,
    time_t now, u_char *res_id, ngx_str_t *model, uint64_t rin,
    uint64_t rout, uint64_t in, uint64_t out, uint64_t cost,
    ngx_uint_t flags);
void ngx_nebula_settle_lease(ngx_log_t *log, u_char *tag, u_char *month,
    time_t now, u_char *lease_id, ngx_str_t *model, uint64_t block_in,
    uint64_t block_out, uint64_t in, uint64_t out, uint64_t cost,
    uint64_t requests, uint64_t est_requests, uint64_t est_in,
    uint64_t est_out, ngx_str_t *next, time_t next_score);

/* ngx_nebula_lease.c */
void ngx_nebula_lease_init_worker(ngx_cycle_t *cycle, ngx_flag_t enabled);
void ngx_nebula_lease_exit_worker(ngx_cycle_t *cycle);
void ngx_nebula_lease_recall(u_char *tag);
ngx_nebula_lease_t *ngx_nebula_lease_want(ngx_nebula_ctx_t *ctx, int64_t in,
    int64_t out, int64_t *want_in, int64_t *want_out);
ngx_int_t ngx_nebula_lease_admit(ngx_nebula_ctx_t *ctx, int64_t prompt,
    int64_t out, u_char *request_id);
void ngx_nebula_lease_resolve(ngx_nebula_lease_t *l, ngx_nebula_ctx_t *ctx,
    nebula_admit_t *a);
void ngx_nebula_lease_settle(ngx_nebula_ctx_t *ctx, uint64_t in,
    uint64_t out, uint64_t cost, ngx_uint_t est_in, ngx_uint_t est_out,
    ngx_uint_t count);

/* ngx_nebula_admin.c */
ngx_int_t ngx_nebula_admin_handler(ngx_http_request_t *r);

/* ngx_nebula_health.c: GET /admin/health; "nebula health", 200 or 503 */
ngx_int_t ngx_nebula_health_handler(ngx_http_request_t *r);
ngx_int_t ngx_nebula_health_probe_handler(ngx_http_request_t *r);

/* ngx_nebula_metrics_text.c: GET of a "nebula metrics" location */
ngx_int_t ngx_nebula_metrics_handler(ngx_http_request_t *r);

/* ngx_nebula_admin_body.c: what a body may set */
typedef enum {
    NGX_NEBULA_BODY_KEY = 0,         /* a key made before accounts */
    NGX_NEBULA_BODY_ACCOUNT,         /* an account (the admin's) */
    NGX_NEBULA_BODY_ACCOUNT_KEY,     /* a key of an account */
    NGX_NEBULA_BODY_SIGNUP           /* a new account, by its holder */
} ngx_nebula_body_e;

ngx_int_t ngx_nebula_admin_body_parse(ngx_http_request_t *r, u_char *body,
    size_t len, ngx_uint_t create, ngx_nebula_key_fields_t *f);
ngx_int_t ngx_nebula_body_bytes(ngx_http_request_t *r, u_char **body,
    size_t *len);
ngx_int_t ngx_nebula_body_parse(ngx_http_request_t *r, u_char *body,
    size_t len, ngx_nebula_body_e kind, ngx_uint_t create,
    ngx_nebula_key_fields_t *f);

/* ngx_nebula_holder.c */
ngx_int_t ngx_nebula_holder_key_handler(ngx_http_request_t *r);

/* ngx_nebula_plans.c */
ngx_int_t ngx_nebula_plans_build(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf);
ngx_int_t ngx_nebula_plans_handler(ngx_http_request_t *r);

/* ngx_nebula_accounts.c */
ngx_int_t ngx_nebula_account_handler(ngx_http_request_t *r);
ngx_int_t ngx_nebula_signup_handler(ngx_http_request_t *r);

/* ngx_nebula_hold.c */
void ngx_nebula_hold_init_worker(ngx_cycle_t *cycle, ngx_msec_t timeout);
void ngx_nebula_hold_add(ngx_nebula_hold_t *h, u_char *tag, u_char *month,
    u_char *id, uint64_t in, uint64_t out, time_t clock, time_t extra);
void ngx_nebula_hold_remove(ngx_nebula_hold_t *h);
time_t ngx_nebula_hold_score(ngx_nebula_hold_t *h);
void ngx_nebula_hold_exit_worker(ngx_cycle_t *cycle);

/* ngx_nebula_id.c */
ngx_int_t ngx_nebula_id_init(ngx_cycle_t *cycle);
void ngx_nebula_id_next(u_char *out);

/* ngx_nebula_variables.c */
ngx_int_t ngx_nebula_add_variables(ngx_conf_t *cf);

#endif /* NGX_NEBULA_H */
