/*
 * Nebula: admission and settlement against the monthly quotas in Redis.
 *
 * Admission is one EVALSHA of the ADMIT script (ngx_nebula_scripts.c): the
 * key, its status, the plan's models, the per-minute limit, the month's
 * remaining tokens and the reservation, atomically.  The request waits in
 * the access phase, suspended; the reply resumes it.
 *
 * Settlement runs when the request's pool is destroyed, a point every
 * request reaches exactly once, whatever its ending and even after an
 * internal redirect to error_page: the reservation is replaced by the
 * real usage.  A settlement Redis could not take is kept and sent again
 * once Redis is back; the SETTLE script's marker makes a repeat harmless.
 */

#include "ngx_nebula.h"


/* the state of an admission in flight; it outlives a request that leaves */
struct ngx_nebula_admission_s {
    ngx_http_request_t       *r;            /* NULL once the request is gone */
    ngx_nebula_ctx_t         *ctx;
    u_char                    key_id[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    month[8];
    u_char                    request_id[33];
    uint64_t                  prompt;
    ngx_nebula_lease_t       *lease;        /* a grant asked with it */
};


/* a settlement to send, or to send again */
typedef struct {
    ngx_queue_t               queue;
    ngx_uint_t                attempts;      /* refused as "not now" */
    ngx_str_t                 argv[18];
    ngx_uint_t                argc;
    u_char                    data[1];       /* the strings, in a row */
} ngx_nebula_settlement_t;


#define NGX_NEBULA_SETTLE_QUEUE_MAX  100000
#define NGX_NEBULA_SETTLE_ATTEMPTS   20

/* how long a worker that shuts down waits for Redis to take them */
#define NGX_NEBULA_SETTLE_EXIT_WAIT  60000


typedef struct {
    ngx_queue_t               retry;
    ngx_uint_t                nretry;
    ngx_uint_t                dropped;
    ngx_log_t                *log;
    ngx_event_t               flush;
    ngx_msec_t                exit_deadline;
    unsigned                  exit_wait:1;
} ngx_nebula_settle_queue_t;


static ngx_nebula_settle_queue_t  ngx_nebula_settle_queue;


static void ngx_nebula_admit_reply(void *data, redisReply *reply);
static void ngx_nebula_admission_cleanup(void *data);
static void ngx_nebula_settle_cleanup(void *data);
static void ngx_nebula_settle_send(ngx_nebula_settlement_t *s);
static ngx_int_t ngx_nebula_settle_register(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);


/* "\nfree 100000 20000 20 basic\n..." for the ADMIT script, built once */
ngx_int_t
ngx_nebula_quota_init(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf)
{
    u_char             *p;
    size_t              len;
    ngx_str_t          *g;
    ngx_uint_t          i, j;
    ngx_nebula_plan_t  *plan;

    plan = nmcf->plans.elts;
    len = 1;

    for (i = 0; i < nmcf->plans.nelts; i++) {
        len += plan[i].name.len + 3 * NGX_INT64_LEN + 5;
        g = plan[i].group_names.elts;

        for (j = 0; j < plan[i].group_names.nelts; j++) {
            len += g[j].len + 1;
        }
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    nmcf->plans_table.data = p;
    *p++ = '\n';

    for (i = 0; i < nmcf->plans.nelts; i++) {
        p = ngx_sprintf(p, "%V %uL %uL %uL", &plan[i].name,
                        plan[i].input_tokens, plan[i].output_tokens,
                        plan[i].requests_per_minute);
        g = plan[i].group_names.elts;

        for (j = 0; j < plan[i].group_names.nelts; j++) {
            p = ngx_sprintf(p, " %V", &g[j]);
        }

        *p++ = '\n';
    }

    nmcf->plans_table.len = p - nmcf->plans_table.data;

    return NGX_OK;
}


/*
 * Now, or the time a test says it is: with nebula_test_clock on, the
 * X-Nebula-Test-Time header (Unix seconds) moves the clock, so a test can
 * step into the next month.
 */
time_t
ngx_nebula_now(ngx_http_request_t *r)
{
    ngx_int_t                n;
    ngx_table_elt_t         *h;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (!nmcf->test_clock) {
        return ngx_time();
    }

    h = ngx_nebula_header(r, "x-nebula-test-time",
                          sizeof("x-nebula-test-time") - 1);

    if (h) {
        n = ngx_atoi(h->value.data, h->value.len);

        /* up to 9999-12-31: months and days keep their width */
        if (n != NGX_ERROR && n <= 253402300799LL) {
            return (time_t) n;
        }
    }

    return ngx_time();
}



/*
 * The month a request falls in, its name and its end, worked out once a
 * month a worker (ngx_gmtime() and timegm() a request were a tenth of the
 * module's own instructions); any other time (the test clock, a late
 * settlement) is worked out and becomes the one kept.
 */
static time_t  ngx_nebula_month_start;
static time_t  ngx_nebula_month_end;
static u_char  ngx_nebula_month_name[8];


static void
ngx_nebula_month_cache(time_t now)
{
    ngx_tm_t   tm;
    struct tm  t;

    if (now >= ngx_nebula_month_start && now < ngx_nebula_month_end) {
        return;
    }

    ngx_gmtime(now, &tm);

    (void) ngx_sprintf(ngx_nebula_month_name, "%4d-%02d", tm.ngx_tm_year,
                       tm.ngx_tm_mon);

    ngx_memzero(&t, sizeof(struct tm));
    t.tm_year = tm.ngx_tm_year - 1900;
    t.tm_mon = tm.ngx_tm_mon - 1;
    t.tm_mday = 1;
    ngx_nebula_month_start = timegm(&t);

    t.tm_year += (tm.ngx_tm_mon == 12);
    t.tm_mon = tm.ngx_tm_mon % 12;
    ngx_nebula_month_end = timegm(&t);
}

u_char *
ngx_nebula_month(u_char *p, time_t now)
{
    ngx_nebula_month_cache(now);

    return ngx_cpymem(p, ngx_nebula_month_name, 7);
}


static u_char *
ngx_nebula_day(u_char *p, time_t now)
{
    ngx_tm_t  tm;

    ngx_gmtime(now, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02d", tm.ngx_tm_year, tm.ngx_tm_mon,
                       tm.ngx_tm_mday);
}


/* seconds from now to the first second of the next month, UTC */
static time_t
ngx_nebula_month_left(time_t now)
{
    ngx_nebula_month_cache(now);

    return ngx_nebula_month_end - now;
}


/* "6d3h12m5s", as OpenAI writes its reset durations */
static u_char *
ngx_nebula_duration(u_char *p, time_t s)
{
    time_t  d, h, m;

    d = s / 86400;
    h = s % 86400 / 3600;
    m = s % 3600 / 60;
    s = s % 60;

    if (d) {
        return ngx_sprintf(p, "%Td%Th%Tm%Ts", d, h, m, s);
    }

    if (h) {
        return ngx_sprintf(p, "%Th%Tm%Ts", h, m, s);
    }

    if (m) {
        return ngx_sprintf(p, "%Tm%Ts", m, s);
    }

    return ngx_sprintf(p, "%Ts", s);
}


static ngx_table_elt_t *
ngx_nebula_push_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = len;

    return h;
}


/* digits by hand: ngx_sprintf() reads its format for every number */
static ngx_int_t
ngx_nebula_add_number(ngx_http_request_t *r, const char *name, size_t len,
    int64_t v)
{
    u_char            digits[NGX_INT64_LEN], *d, *p;
    uint64_t          n;
    ngx_table_elt_t  *h;

    h = ngx_nebula_push_header(r, name, len);
    if (h == NULL) {
        return NGX_ERROR;
    }

    n = (v < 0) ? 0 : (uint64_t) v;
    d = digits + sizeof(digits);

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    p = ngx_pnalloc(r->pool, digits + sizeof(digits) - d);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h->value.data = p;
    h->value.len = ngx_cpymem(p, d, digits + sizeof(digits) - d) - p;

    return NGX_OK;
}


#define ngx_nebula_number(r, name, v)                                         \
    ngx_nebula_add_number(r, name, sizeof(name) - 1, v)


/* the contract's x-ratelimit-* headers, from what the admission said */
ngx_int_t
ngx_nebula_ratelimit_headers(ngx_http_request_t *r, nebula_admit_t *a,
    time_t now)
{
    ngx_table_elt_t  *h;

    /* the month's reset, written once a second a worker */
    static time_t     reset_at = -1;
    static u_char     reset[NGX_TIME_T_LEN * 4 + 4];
    static size_t     reset_len;

    if (a->rpm > 0) {
        if (ngx_nebula_number(r, "x-ratelimit-limit-requests", a->rpm)
            != NGX_OK
            || ngx_nebula_number(r, "x-ratelimit-remaining-requests",
                                 a->rpm_left)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (a->status == NEBULA_ADMIT_RATE_LIMITED
        && ngx_nebula_number(r, "retry-after", a->retry_after) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* on refusals too: every authenticated response carries them */

    if (ngx_nebula_number(r, "x-ratelimit-limit-input-tokens",
                          a->in_limit) != NGX_OK
        || ngx_nebula_number(r, "x-ratelimit-remaining-input-tokens",
                             a->in_left) != NGX_OK
        || ngx_nebula_number(r, "x-ratelimit-limit-output-tokens",
                             a->out_limit) != NGX_OK
        || ngx_nebula_number(r, "x-ratelimit-remaining-output-tokens",
                             a->out_left) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (now != reset_at) {
        reset_len = ngx_nebula_duration(reset, ngx_nebula_month_left(now))
                    - reset;
        reset_at = now;
    }

    h = ngx_nebula_push_header(r, "x-ratelimit-reset-tokens",
                               sizeof("x-ratelimit-reset-tokens") - 1);
    if (h == NULL) {
        return NGX_ERROR;
    }

    /* copied: the worker's own changes in a later second */
    h->value.data = ngx_pnalloc(r->pool, reset_len);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->value.len = ngx_cpymem(h->value.data, reset, reset_len)
                   - h->value.data;

    return NGX_OK;
}


/*
 * Sends the ADMIT script.  NGX_AGAIN: the request waits for the reply;
 * NGX_DECLINED: Redis cannot be asked now.
 */
ngx_int_t
ngx_nebula_admit(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    int64_t                  want, cap, out, lease_in, lease_out, choices;
    nebula_admit_t           a;
    ngx_str_t                argv[19];
    ngx_pool_cleanup_t      *cln;
    ngx_nebula_model_t      *model = ctx->model;
    nebula_request_t        *req = ctx->req;
    ngx_nebula_main_conf_t  *nmcf;
    ngx_nebula_admission_t  *adm;
    u_char                   keys[5][64], nums[9][NGX_INT64_LEN];

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    ctx->now = ngx_nebula_now(r);

    adm = ngx_alloc(sizeof(ngx_nebula_admission_t), r->connection->log);
    if (adm == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(adm, sizeof(ngx_nebula_admission_t));
    adm->r = r;
    adm->ctx = ctx;
    adm->prompt = req->prompt_tokens;
    ngx_memcpy(adm->key_id, ctx->key_id, sizeof(adm->key_id));
    *ngx_nebula_month(adm->month, ctx->now) = '\0';

    /* an id names the settlement, so it is applied once */
    ngx_nebula_id_next(adm->request_id);
    adm->request_id[32] = '\0';

    want = req->max_tokens > 0 ? req->max_tokens
           : req->max_completion_tokens > 0 ? req->max_completion_tokens
           : req->num_predict > 0 ? req->num_predict : 0;

    if (req->max_tokens > 0 && req->max_completion_tokens > 0) {
        want = ngx_min(req->max_tokens, req->max_completion_tokens);
    }

    /*
     * No answer is longer than the model's longest, nor than what is left
     * of its context: that is what a request that names no max_tokens
     * reserves, and is asked for.
     */
    cap = (int64_t) model->context - (int64_t) req->prompt_tokens;
    cap = ngx_min(cap, (int64_t) model->max_output);
    if (cap < 1) {
        cap = 1;
    }

    /* n choices (a model that honours them): n times the output */
    choices = ngx_max(ngx_max(req->n, req->best_of), 1);
    want *= choices;
    cap *= choices;

    /*
     * What Redis would reserve for it, its month's remainder aside: a
     * lease that covers that much admits it here and now.
     */
    out = (want > 0 && want < cap) ? want : cap;

    if (nmcf->lease) {
        /* first: once admitted from a lease, its request must settle */
        if (ngx_nebula_settle_register(r, ctx) != NGX_OK) {
            ngx_free(adm);
            return NGX_ERROR;
        }

        if (ngx_nebula_lease_admit(ctx, (int64_t) req->prompt_tokens, out,
                                   adm->request_id)
            == NGX_OK)
        {
            ngx_free(adm);

            if (ngx_nebula_ratelimit_headers(r, &ctx->admit, ctx->now)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            return NGX_OK;
        }
    }

    adm->lease = ngx_nebula_lease_want(ctx, (int64_t) req->prompt_tokens,
                                       out, &lease_in, &lease_out);

    argv[0].data = keys[0];
    argv[0].len = ngx_sprintf(keys[0], "nb:{%s}:key", ctx->key_id) - keys[0];
    argv[1].data = keys[1];
    argv[1].len = ngx_sprintf(keys[1], "nb:{%s}:u:%s", ctx->key_id,
                              adm->month) - keys[1];
    argv[2].data = keys[2];
    argv[2].len = ngx_sprintf(keys[2], "nb:{%s}:r:%T", ctx->key_id,
                              ctx->now / 60) - keys[2];

    argv[3].data = keys[3];
    argv[3].len = ngx_sprintf(keys[3], "nb:{%s}:res:%s", ctx->key_id,
                              adm->month) - keys[3];
    argv[4].data = keys[4];
    argv[4].len = ngx_sprintf(keys[4], "nb:{%s}:exp:%s", ctx->key_id,
                              adm->month) - keys[4];

    argv[5].data = ctx->digest;
    argv[5].len = 64;
    argv[6] = model->name;
    argv[7] = model->private ? (ngx_str_t) ngx_null_string : model->group;
    argv[8] = nmcf->plans_table;

    argv[9].data = nums[0];
    argv[9].len = ngx_sprintf(nums[0], "%uL", req->prompt_tokens) - nums[0];
    argv[10].data = nums[1];
    argv[10].len = ngx_sprintf(nums[1], "%L", want) - nums[1];
    argv[11].data = nums[2];
    argv[11].len = ngx_sprintf(nums[2], "%L", cap) - nums[2];
    argv[12].data = nums[3];
    argv[12].len = ngx_sprintf(nums[3], "%T", 60 - ctx->now % 60) - nums[3];
    argv[13].data = nums[4];
    argv[13].len = ngx_sprintf(nums[4], "%d", NGX_NEBULA_USAGE_TTL)
                   - nums[4];
    argv[14].data = nums[5];
    argv[14].len = ngx_sprintf(nums[5], "%T", ctx->now) - nums[5];
    argv[15].data = nums[6];
    argv[15].len = ngx_sprintf(nums[6], "%M",
                               nmcf->reservation_timeout / 1000) - nums[6];
    argv[16].data = adm->request_id;
    argv[16].len = 32;
    argv[17].data = nums[7];
    argv[17].len = ngx_sprintf(nums[7], "%L", lease_in) - nums[7];
    argv[18].data = nums[8];
    argv[18].len = ngx_sprintf(nums[8], "%L", lease_out) - nums[8];

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        if (adm->lease) {
            a.status = NEBULA_ADMIT_BAD_REPLY;
            ngx_nebula_lease_resolve(adm->lease, NULL, &a);
        }

        ngx_free(adm);
        return NGX_ERROR;
    }

    if (ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_ADMIT, 5, 19, argv,
                              ngx_nebula_admit_reply, adm)
        == NULL)
    {
        if (adm->lease) {
            a.status = NEBULA_ADMIT_BAD_REPLY;
            ngx_nebula_lease_resolve(adm->lease, NULL, &a);
        }

        ngx_free(adm);
        return NGX_DECLINED;
    }

    ctx->adm = adm;
    cln->handler = ngx_nebula_admission_cleanup;
    cln->data = ctx;

    /* a client that leaves while Redis answers ends the request */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_AGAIN;
}


/* the request is going away while its admission is in flight */
static void
ngx_nebula_admission_cleanup(void *data)
{
    ngx_nebula_ctx_t  *ctx = data;

    if (ctx->adm) {
        ctx->adm->r = NULL;
        ctx->adm = NULL;
    }
}


/*
 * What a settlement does (its last argument): 0 only gives the reservation
 * back; NGX_NEBULA_SETTLE_COUNT adds the usage and counts the request, and
 * the EST bits say which of its counts are the gateway's own, so the
 * record says it was estimated.
 */
#define NGX_NEBULA_SETTLE_COUNT    0x01
#define NGX_NEBULA_SETTLE_EST_IN   0x02
#define NGX_NEBULA_SETTLE_EST_OUT  0x04


static ngx_nebula_settlement_t *
ngx_nebula_settlement(ngx_log_t *log, u_char *key_id, u_char *month,
    time_t now, u_char *request_id, ngx_str_t *model, uint64_t rin,
    uint64_t rout, uint64_t in, uint64_t out, uint64_t cost,
    ngx_uint_t flags)
{
    u_char                   *p;
    ngx_nebula_settlement_t  *s;

    s = ngx_alloc(sizeof(ngx_nebula_settlement_t) + 512 + model->len, log);
    if (s == NULL) {
        return NULL;
    }

    p = s->data;
    s->argc = 15;
    s->attempts = 0;

#define ngx_nebula_arg(i, fmt, ...)                                          \
    s->argv[i].data = p;                                                      \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                     \
    s->argv[i].len = p - s->argv[i].data

    ngx_nebula_arg(0, "nb:{%s}:u:%s", key_id, month);
    ngx_nebula_arg(1, "nb:{%s}:m:%s", key_id, month);
    s->argv[2].data = p;
    p = ngx_sprintf(p, "nb:{%s}:d:", key_id);
    p = ngx_nebula_day(p, now);
    s->argv[2].len = p - s->argv[2].data;
    ngx_nebula_arg(3, "nb:{%s}:res:%s", key_id, month);
    ngx_nebula_arg(4, "nb:{%s}:exp:%s", key_id, month);
    ngx_nebula_arg(5, "%uL", rin);
    ngx_nebula_arg(6, "%uL", rout);
    ngx_nebula_arg(7, "%uL", in);
    ngx_nebula_arg(8, "%uL", out);
    ngx_nebula_arg(9, "%uL", cost);
    ngx_nebula_arg(10, "%V", model);
    ngx_nebula_arg(11, "%d", NGX_NEBULA_USAGE_TTL);
    ngx_nebula_arg(12, "%s:%uL:%uL", request_id, rin, rout);
    ngx_nebula_arg(13, "%d", (flags & NGX_NEBULA_SETTLE_COUNT) ? 1 : 0);

    /* the SETTLE script's own encoding: 1 the input, 2 the output */
    ngx_nebula_arg(14, "%d", ((flags & NGX_NEBULA_SETTLE_EST_IN) ? 1 : 0)
                             | ((flags & NGX_NEBULA_SETTLE_EST_OUT) ? 2 : 0));

#undef ngx_nebula_arg

    return s;
}


/*
 * A lease closes: its block goes back and its requests' usage is recorded,
 * in one SETTLE; the counts of requests and of what was estimated are
 * given as they add up, not as flags of one request.
 */
void
ngx_nebula_settle_lease(ngx_log_t *log, u_char *key_id, u_char *month,
    time_t now, u_char *lease_id, ngx_str_t *model, uint64_t block_in,
    uint64_t block_out, uint64_t in, uint64_t out, uint64_t cost,
    uint64_t requests, uint64_t est_requests, uint64_t est_in,
    uint64_t est_out)
{
    u_char                   *p;
    uint64_t                  val[4];
    ngx_uint_t                i;
    ngx_nebula_settlement_t  *s;

    /* the request count, and the estimated counts as they add up */
    static const ngx_uint_t   arg[4] = { 13, 15, 16, 17 };

    val[0] = requests;
    val[1] = est_requests;
    val[2] = est_in;
    val[3] = est_out;

    s = ngx_nebula_settlement(log, key_id, month, now, lease_id, model,
                              block_in, block_out, in, out, cost, 0);
    if (s == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "nebula: no memory to settle a lease of key %s",
                      key_id);
        return;
    }

    /* the strings of a settlement leave room for these (512 bytes) */
    p = s->argv[s->argc - 1].data + s->argv[s->argc - 1].len;

    for (i = 0; i < 4; i++) {
        s->argv[arg[i]].data = p;
        p = ngx_sprintf(p, "%uL", val[i]);
        s->argv[arg[i]].len = p - s->argv[arg[i]].data;
    }

    s->argc = 18;

    ngx_nebula_settle_send(s);
}


/*
 * A private model, to a key that does not list it (or no key at all):
 * refused exactly as a model that does not exist, the same status, words
 * and headers (none), so that nobody learns of a customer's model.
 */
static void
ngx_nebula_private_unknown(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    u_char  msg[2 * NEBULA_MESSAGE_MAX];   /* as ngx_nebula_process_body */

    *ngx_snprintf(msg, sizeof(msg) - 1,
                  "The model '%V' does not exist. See GET /v1/models for "
                  "the models served here.", &ctx->model->name) = '\0';

    ngx_nebula_refused(r, ctx, NGX_HTTP_NOT_FOUND, "invalid_request_error",
                       "model_not_found", "model", (char *) msg);
}


static void
ngx_nebula_admit_reply(void *data, redisReply *reply)
{
    ngx_nebula_admission_t  *adm = data;

    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_nebula_ctx_t        *ctx;
    nebula_admit_t           a;
    ngx_nebula_main_conf_t  *nmcf;
    ngx_nebula_settlement_t *s;
    ngx_str_t                model = ngx_string("-");
    u_char                   msg[NEBULA_MESSAGE_MAX];
    u_char                   lease_id[34];

    (void) nebula_admit_parse(reply, &a);

    r = adm->r;

    if (adm->lease) {
        if (r && a.status == NEBULA_ADMIT_OK) {
            /* the lease is named after the request that brought it */
            ngx_memcpy(adm->ctx->request_id, adm->request_id,
                       sizeof(adm->request_id));
            ngx_memcpy(adm->ctx->month, adm->month, sizeof(adm->month));
        }

        /* the grant asked with it: opened, or forgotten */
        ngx_nebula_lease_resolve(adm->lease, r ? adm->ctx : NULL, &a);
        adm->lease = NULL;
    }

    if (r == NULL) {
        /* the client left: give back what was reserved for it */
        if (a.status == NEBULA_ADMIT_OK) {
            s = ngx_nebula_settlement(ngx_cycle->log, adm->key_id,
                                      adm->month, ngx_time(),
                                      adm->request_id, &model, adm->prompt,
                                      a.reserved_out, 0, 0, 0, 0);
            if (s) {
                ngx_nebula_settle_send(s);
            }

            if (a.lease_in > 0) {
                /* and the lease granted with it, unused */
                lease_id[0] = 'L';
                ngx_memcpy(&lease_id[1], adm->request_id,
                           sizeof(adm->request_id));
                ngx_nebula_settle_lease(ngx_cycle->log, adm->key_id,
                                        adm->month, ngx_time(), lease_id,
                                        &model, a.lease_in, a.lease_out,
                                        0, 0, 0, 0, 0, 0, 0);
            }
        }

        ngx_free(adm);
        return;
    }

    ctx = adm->ctx;
    ctx->adm = NULL;
    c = r->connection;

    r->read_event_handler = ngx_http_block_reading;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (reply && a.status == NEBULA_ADMIT_BAD_REPLY) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "nebula: unexpected reply from the admission script%s%s",
                      reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    }

    ctx->admit = a;

    switch (a.status) {

    case NEBULA_ADMIT_OK:
        ctx->admitted = 1;
        ctx->reserved_in = adm->prompt;
        ctx->reserved_out = a.reserved_out;
        ngx_memcpy(ctx->request_id, adm->request_id, sizeof(ctx->request_id));
        ngx_memcpy(ctx->month, adm->month, sizeof(ctx->month));
        ngx_free(adm);

        /* kept alive in Redis for as long as the request lives */
        ngx_nebula_hold_add(&ctx->hold, ctx->key_id, ctx->month,
                            ctx->request_id, ctx->reserved_in,
                            ctx->reserved_out, ctx->now, 0);

        if (a.lease_in > 0) {
            /* the block is this worker's to use: remaining, as it says */
            a.in_left += a.lease_in;
            a.out_left += a.lease_out;
            ctx->admit = a;
        }

        if (ngx_nebula_settle_register(r, ctx) != NGX_OK
            || ngx_nebula_ratelimit_headers(r, &a, ctx->now) != NGX_OK)
        {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            break;
        }

        ngx_nebula_proceed(r, ctx);
        break;

    case NEBULA_ADMIT_UNKNOWN_KEY:
    case NEBULA_ADMIT_REVOKED:
        ngx_free(adm);

        if (ctx->model->private) {
            /* as an unknown model is refused, before any key is looked at */
            ngx_nebula_private_unknown(r, ctx);
            break;
        }

        ngx_nebula_refused(r, ctx, NGX_HTTP_UNAUTHORIZED,
                           "invalid_request_error", "invalid_api_key", NULL,
                           a.status == NEBULA_ADMIT_REVOKED
                           ? "This API key has been revoked."
                           : "Incorrect API key provided.");
        break;

    case NEBULA_ADMIT_MODEL_NOT_ALLOWED:
        ngx_free(adm);

        if (ctx->model->private) {
            /* nobody learns of a customer's model from a refusal */
            ngx_nebula_private_unknown(r, ctx);
            break;
        }

        (void) ngx_nebula_ratelimit_headers(r, &a, ctx->now);
        *ngx_snprintf(msg, sizeof(msg) - 1,
                      "Your plan (%s) does not include the model '%V'.",
                      a.plan, &ctx->model->name) = '\0';
        ngx_nebula_refused(r, ctx, NGX_HTTP_FORBIDDEN, "permission_error",
                           "model_not_allowed", "model", (char *) msg);
        break;

    case NEBULA_ADMIT_RATE_LIMITED:
        ngx_free(adm);
        (void) ngx_nebula_ratelimit_headers(r, &a, ctx->now);
        *ngx_snprintf(msg, sizeof(msg) - 1,
                      "Rate limit reached: %L requests per minute. "
                      "Retry in %L s.", a.rpm, a.retry_after) = '\0';
        ngx_nebula_refused(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                           "rate_limit_error", "rate_limit_exceeded", NULL,
                           (char *) msg);
        break;

    case NEBULA_ADMIT_NO_QUOTA:
        ngx_free(adm);
        (void) ngx_nebula_ratelimit_headers(r, &a, ctx->now);
        ngx_nebula_refused(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                           "insufficient_quota", "insufficient_quota", NULL,
                           "You exceeded your monthly token quota; it "
                           "resets at the start of next month (UTC).");
        break;

    case NEBULA_ADMIT_UNKNOWN_PLAN:
        ngx_free(adm);
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "nebula: key %s has plan \"%s\", which this "
                      "configuration does not declare", ctx->key_id, a.plan);

        if (ctx->model->private) {
            ngx_nebula_private_unknown(r, ctx);
            break;
        }
        ngx_nebula_refused(r, ctx, NGX_HTTP_FORBIDDEN, "permission_error",
                           "model_not_allowed", "model",
                           "Your key's plan is not served here.");
        break;

    default: /* no reply, or not one of the script's */
        ngx_free(adm);

        if (nmcf->failure_open) {
            ctx->unmetered = 1;
            ngx_nebula_proceed(r, ctx);
            break;
        }

        ngx_nebula_refused(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE, "api_error",
                           "quota_store_unavailable", NULL,
                           "The quota store is unavailable; please retry "
                           "shortly.");
        break;
    }

    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_nebula_settle_register(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_nebula_settle_cleanup;
    cln->data = ctx;

    return NGX_OK;
}


/*
 * Whether the client went away once the pool had its request: the pool
 * has read the prompt by then, whatever the client saw.  Not a pool that
 * failed (its 5xx, a refused or timed out connection): that the client
 * then left changes nothing.
 */
static ngx_uint_t
ngx_nebula_client_left(ngx_nebula_ctx_t *ctx)
{
    ngx_http_request_t  *r = ctx->request;

    if (r == NULL || !ctx->proxied || ctx->upstream_failed
        || r->upstream == NULL || !r->upstream->request_sent)
    {
        return 0;
    }

    return r->connection->error
           || r->headers_out.status == NGX_HTTP_CLIENT_CLOSED_REQUEST;
}


/* picodollars; saturated, far beyond any real request, never wrapped */
uint64_t
ngx_nebula_cost(ngx_nebula_model_t *model, uint64_t in, uint64_t out)
{
    uint64_t  a, b;

    if (__builtin_mul_overflow(in, model->input_price, &a)
        || __builtin_mul_overflow(out, model->output_price, &b)
        || __builtin_add_overflow(a, b, &a)
        || a > NGX_NEBULA_COST_MAX)
    {
        return NGX_NEBULA_COST_MAX;
    }

    return a;
}


/*
 * The usage of a request as far as it went.  Reported counts are used as
 * they are, within bounds.  Without them the output is what was streamed
 * (a chunk a token of text, a tool call by its bytes) and the prompt our
 * estimate.  Returns which counts are estimated (NGX_NEBULA_SETTLE_EST_*),
 * 0 when none is.
 *
 * A request that failed before its first token is charged nothing, as
 * OpenAI and OpenRouter bill no failed request: bytes without a token (an
 * SSE comment, a chunk with the role only, an empty line) do not make the
 * pool's work billable, only a token or the pool's own usage does.  But a
 * client that leaves once the pool has its request pays the prompt the
 * pool read (its count when it sent one), and what was streamed.
 *
 * A 2xx whose body the filter could not read (compressed, of a type it
 * does not know) is charged its reservation: the most it could have cost.
 *
 * Bounds: no more output than was reserved (the pool was asked for no
 * more), no more prompt than the model's context or our estimate, the
 * larger (the pool reads no more): a pool that reports more is
 * believed no further (ctx->over_in, ctx->over_out, logged at settlement).
 */
ngx_uint_t
ngx_nebula_usage(ngx_nebula_ctx_t *ctx, uint64_t *in, uint64_t *out)
{
    uint64_t          max_in;
    ngx_uint_t        estimated, left;
    nebula_stream_t  *st = &ctx->stream;

    estimated = 0;
    *in = 0;
    *out = 0;

    if (ctx->unreadable) {
        *in = ctx->reserved_in;
        *out = ctx->reserved_out;
        return NGX_NEBULA_SETTLE_EST_IN | NGX_NEBULA_SETTLE_EST_OUT;
    }

    left = ngx_nebula_client_left(ctx);

    if (!ctx->filtering && !left) {
        /* no body we could read: the pool answered nothing to charge */
        return 0;
    }

    if (st->has_completion) {
        *out = st->completion_tokens;

    } else {
        /* a chunk a token of text, a tool call by its bytes */
        *out = nebula_stream_output_estimate(st);

        if (*out) {
            estimated |= NGX_NEBULA_SETTLE_EST_OUT;
        }
    }

    if (st->has_prompt
        && (st->prompt_tokens > 0 || ctx->req->prompt_tokens == 0))
    {
        *in = st->prompt_tokens;

    } else if (*out > 0 || st->has_completion || st->has_prompt || left) {
        /* Ollama leaves the count out, or 0, when the prompt was cached */
        *in = ctx->req->prompt_tokens;
        estimated |= NGX_NEBULA_SETTLE_EST_IN;
    }

    if (ctx->admitted && *out > ctx->reserved_out) {
        *out = ctx->reserved_out;

        /* a stream cut there is logged as such (ngx_nebula_cut) */
        ctx->over_out = !ctx->cut;
    }

    max_in = ngx_max(ctx->model->context, ctx->req->prompt_tokens);

    if (*in > max_in) {
        *in = max_in;
        ctx->over_in = 1;
    }

    return estimated;
}


/* the request is over, however it ended: its usage replaces its reservation */
static void
ngx_nebula_settle_cleanup(void *data)
{
    ngx_nebula_ctx_t  *ctx = data;

    uint64_t                  in, out;
    ngx_uint_t                estimated, flags;
    ngx_nebula_model_t       *model = ctx->model;
    ngx_nebula_settlement_t  *s;

    if (!ctx->admitted || ctx->settled) {
        return;
    }

    ctx->settled = 1;

    ngx_nebula_hold_remove(&ctx->hold);

    if (ctx->refused && !ctx->proxied) {
        /* refused once admitted (a private model's checks): given back */
        estimated = 0;
        in = 0;
        out = 0;
        flags = 0;

    } else {
        estimated = ngx_nebula_usage(ctx, &in, &out);
        flags = NGX_NEBULA_SETTLE_COUNT | estimated;
    }

    if (ctx->over_in || ctx->over_out) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "nebula: pool \"%V\" reported more %s than it could "
                      "have used for model \"%V\" (at most %uL input, %uL "
                      "output): charged the bound",
                      &model->pool->name,
                      ctx->over_in ? (ctx->over_out ? "input and output"
                                                    : "input")
                                   : "output",
                      &model->name, in, out);
    }

    ctx->estimated = estimated ? 1 : 0;
    ctx->prompt_tokens = in;
    ctx->completion_tokens = out;
    ctx->cost = ngx_nebula_cost(model, in, out);

    if (ctx->lease) {
        /* settled with the lease's other requests, when it closes */
        ngx_nebula_lease_settle(ctx, in, out, ctx->cost,
                                estimated & NGX_NEBULA_SETTLE_EST_IN,
                                estimated & NGX_NEBULA_SETTLE_EST_OUT,
                                flags & NGX_NEBULA_SETTLE_COUNT);
        return;
    }

    /* the record says which counts were estimated, as the access log does */
    s = ngx_nebula_settlement(ngx_cycle->log, ctx->key_id, ctx->month,
                              ctx->now, ctx->request_id, &model->name,
                              ctx->reserved_in, ctx->reserved_out, in, out,
                              ctx->cost, flags);
    if (s == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "nebula: no memory to settle a request of key %s",
                      ctx->key_id);
        return;
    }

    ngx_nebula_settle_send(s);
}


static void
ngx_nebula_settle_retry(ngx_nebula_settlement_t *s)
{
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (q->nretry >= NGX_NEBULA_SETTLE_QUEUE_MAX) {
        if (q->dropped++ == 0) {
            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "nebula: %d settlements wait for redis already: "
                          "dropping more", NGX_NEBULA_SETTLE_QUEUE_MAX);
        }

        ngx_free(s);
        return;
    }

    ngx_queue_insert_tail(&q->retry, &s->queue);
    q->nretry++;

    if (!q->flush.timer_set) {
        ngx_add_timer(&q->flush, 500);
    }
}


/* errors that say "not now" rather than "never" */
static ngx_uint_t
ngx_nebula_redis_transient(redisReply *reply)
{
    static const char  *transient[] = { "BUSY", "READONLY", "LOADING", "OOM",
                                        "NOSCRIPT", "MASTERDOWN", "TRYAGAIN",
                                        "CLUSTERDOWN", "NOREPLICAS", NULL };
    ngx_uint_t          i;

    for (i = 0; transient[i]; i++) {
        if (ngx_strncmp(reply->str, transient[i], ngx_strlen(transient[i]))
            == 0)
        {
            return 1;
        }
    }

    return 0;
}


static void
ngx_nebula_settle_reply(void *data, redisReply *reply)
{
    ngx_nebula_settlement_t  *s = data;

    if (reply == NULL) {
        /* Redis went away: maybe applied, maybe not; the marker knows */
        ngx_nebula_settle_retry(s);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        if (ngx_nebula_redis_transient(reply)
            && ++s->attempts < NGX_NEBULA_SETTLE_ATTEMPTS)
        {
            ngx_nebula_settle_retry(s);
            return;
        }

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "nebula: redis refused a settlement: %s", reply->str);
    }

    ngx_free(s);
}


static void
ngx_nebula_settle_send(ngx_nebula_settlement_t *s)
{
    if (ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_SETTLE, 5, s->argc, s->argv,
                              ngx_nebula_settle_reply, s)
        == NULL)
    {
        ngx_nebula_settle_retry(s);
    }
}


static void
ngx_nebula_settle_flush(ngx_event_t *ev)
{
    ngx_queue_t                *h;
    ngx_nebula_settlement_t    *s;
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (!ngx_nebula_redis_ready()) {
        if (ngx_exiting && !ngx_queue_empty(&q->retry)) {

            /*
             * A worker that shuts down while Redis is away (a reload or
             * a binary upgrade during an outage) keeps its settlements
             * and reconnects for them, for up to a minute; this timer
             * keeps the worker alive until then.
             */
            if (!q->exit_wait) {
                q->exit_wait = 1;
                q->exit_deadline = ngx_current_msec
                                   + NGX_NEBULA_SETTLE_EXIT_WAIT;
            }

            if ((ngx_msec_int_t) (q->exit_deadline - ngx_current_msec) > 0) {
                ngx_nebula_redis_reconnect_exiting();
                ngx_add_timer(&q->flush, 500);
                return;
            }

            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "nebula: worker exits with %ui settlements that "
                          "redis did not take", q->nretry);

            while (!ngx_queue_empty(&q->retry)) {
                h = ngx_queue_head(&q->retry);
                ngx_queue_remove(h);
                ngx_free(ngx_queue_data(h, ngx_nebula_settlement_t, queue));
            }

            q->nretry = 0;
            return;
        }

        if (!ngx_queue_empty(&q->retry)) {
            ngx_add_timer(&q->flush, 500);
        }

        return;
    }

    if (q->dropped) {
        ngx_log_error(NGX_LOG_ERR, q->log, 0,
                      "nebula: %ui settlements were dropped while redis "
                      "was away", q->dropped);
        q->dropped = 0;
    }

    while (!ngx_queue_empty(&q->retry)) {
        h = ngx_queue_head(&q->retry);
        ngx_queue_remove(h);
        q->nretry--;

        s = ngx_queue_data(h, ngx_nebula_settlement_t, queue);

        if (ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_SETTLE, 5, s->argc,
                                  s->argv, ngx_nebula_settle_reply, s)
            == NULL)
        {
            ngx_queue_insert_head(&q->retry, h);
            q->nretry++;
            ngx_add_timer(&q->flush, 500);
            return;
        }
    }
}


void
ngx_nebula_settle_init_worker(ngx_cycle_t *cycle)
{
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    ngx_memzero(q, sizeof(ngx_nebula_settle_queue_t));
    ngx_queue_init(&q->retry);
    q->log = cycle->log;
    q->flush.handler = ngx_nebula_settle_flush;
    q->flush.log = cycle->log;
    q->flush.data = q;

    /* settlements that wait keep a worker that shuts down alive a while */
    q->flush.cancelable = 0;
}


/*
 * The worker exits: what still waits for Redis goes with it (a fast
 * shutdown; redisAsyncFree() has just given the settlements in flight
 * back to the queue), so that nothing is left allocated.
 */
void
ngx_nebula_settle_exit_worker(ngx_cycle_t *cycle)
{
    ngx_queue_t                *h;
    ngx_nebula_settle_queue_t  *q = &ngx_nebula_settle_queue;

    if (q->log == NULL) {
        return;
    }

    while (!ngx_queue_empty(&q->retry)) {
        h = ngx_queue_head(&q->retry);
        ngx_queue_remove(h);
        ngx_free(ngx_queue_data(h, ngx_nebula_settlement_t, queue));
    }

    q->nretry = 0;
}
