/*
 * Nebula: admission against the monthly quotas in Redis.
 *
 * It decides; the access step acts (ngx_nebula_access.c).  A request is
 * admitted from its worker's lease of the key, when one covers it
 * (ngx_nebula_lease.c: a cache of admissions, consulted first), or by
 * one EVALSHA of the ADMIT script (ngx_nebula_scripts.c): the key, its
 * status, the plan's models, the per-minute limit, the month's remaining
 * tokens and the reservation, atomically.  The request waits in the
 * precontent phase, suspended; the reply sets ctx->verdict (proceed, or
 * refuse with what the client is told) and runs the request's phases
 * again.  While Redis cannot be asked, nebula_redis_failure decides.
 *
 * An admitted request is charged when it ends (ngx_nebula_charge.c), its
 * reservation kept alive meanwhile (ngx_nebula_hold.c).
 */

#include "ngx_nebula.h"


/* the state of an admission in flight; it outlives a request that leaves */
struct ngx_nebula_admission_s {
    ngx_http_request_t       *r;            /* NULL once the request is gone */
    ngx_nebula_ctx_t         *ctx;
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    month[8];
    u_char                    request_id[33];
    u_char                    res_id[NGX_NEBULA_RES_ID_LEN + 1];
    uint64_t                  prompt;
    ngx_nebula_lease_t       *lease;        /* a grant asked with it */
};


static void ngx_nebula_admit_reply(void *data, redisReply *reply);
static void ngx_nebula_admission_cleanup(void *data);


/* "\nfree 100000 20000 20 basic\n..." for the ADMIT script, built once */
ngx_int_t
ngx_nebula_admission_init(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf)
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


/* the request goes on; headers: the x-ratelimit-* of its admission */
static void
ngx_nebula_proceed_verdict(ngx_nebula_ctx_t *ctx, ngx_uint_t headers)
{
    ctx->verdict.action = NGX_NEBULA_VERDICT_PROCEED;
    ctx->verdict.headers = headers ? 1 : 0;
}


static void
ngx_nebula_refuse_verdict(ngx_nebula_ctx_t *ctx, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *message, ngx_uint_t headers)
{
    ngx_nebula_verdict_t  *v = &ctx->verdict;

    v->action = NGX_NEBULA_VERDICT_REFUSE;
    v->status = status;
    v->type = type;
    v->code = code;
    v->param = param;
    v->message = message;
    v->headers = headers ? 1 : 0;
}


/*
 * Redis cannot be asked, or did not answer: nebula_redis_failure decides,
 * closed (503) or open (served unmetered).
 */
static void
ngx_nebula_store_away(ngx_nebula_ctx_t *ctx, ngx_nebula_main_conf_t *nmcf)
{
    if (nmcf->failure_open) {
        ctx->unmetered = 1;
        ngx_nebula_proceed_verdict(ctx, 0);
        return;
    }

    ngx_nebula_refuse_verdict(ctx, NGX_HTTP_SERVICE_UNAVAILABLE, "api_error",
                              "quota_store_unavailable", NULL,
                              "The quota store is unavailable; please retry "
                              "shortly.", 0);
}


/*
 * A private model, to a key that does not list it (or no key at all):
 * refused exactly as a model that does not exist, the same status, words
 * and headers (none), so that nobody learns of a customer's model.
 */
static void
ngx_nebula_private_unknown(ngx_nebula_ctx_t *ctx)
{
    char  *msg;

    msg = ngx_nebula_unknown_model(ctx->request->pool, ctx->model->name.data,
                                   ctx->model->name.len);
    if (msg == NULL) {
        ctx->verdict.action = NGX_NEBULA_VERDICT_FAIL;
        return;
    }

    ngx_nebula_refuse_verdict(ctx, NGX_HTTP_NOT_FOUND,
                              "invalid_request_error", "model_not_found",
                              "model", msg, 0);
}


/*
 * Admits the request, or asks Redis to.  NGX_OK: ctx->verdict is set now
 * (a lease admitted it; or Redis cannot be asked now, and the failure
 * mode decided).  NGX_AGAIN: the ADMIT script is sent; its answer sets the
 * verdict and runs the request's phases again, where the access step acts
 * on it.  NGX_ERROR: no memory.
 */
ngx_int_t
ngx_nebula_admit(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    int64_t                  want, cap, out, lease_in, lease_out, choices;
    ngx_uint_t               i, account;
    nebula_admit_t           a;
    ngx_str_t                argv[23];
    ngx_pool_cleanup_t      *cln;
    ngx_nebula_model_t      *model = ctx->model;
    nebula_request_t        *req = ctx->req;
    ngx_nebula_main_conf_t  *nmcf;
    ngx_nebula_admission_t  *adm;
    u_char                   keys[8][80], nums[9][NGX_INT64_LEN];
    u_char                   id[33];

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    ctx->now = ngx_nebula_now(r);

    /* an id names the settlement, so it is applied once */
    ngx_nebula_id_next(id);
    id[32] = '\0';

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

    if (ctx->api->limit == NGX_NEBULA_LIMIT_NONE) {
        /*
         * No output (embeddings, /api/show): none reserved, and none
         * needed left (cap -1)
         */
        want = 0;
        cap = -1;
        out = 0;
    }

    /*
     * The request's settlement (and its hold's removal) when its pool
     * goes, whoever admits it: registered once, before anything is held
     */
    if (ngx_nebula_charge_register(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (nmcf->lease) {
        /* the lease is a cache of admissions: consulted first */

        if (ngx_nebula_lease_admit(ctx, (int64_t) req->prompt_tokens, out,
                                   id)
            == NGX_OK)
        {
            ngx_nebula_proceed_verdict(ctx, 1);
            return NGX_OK;
        }
    }

    /* Redis is asked: what its answer needs outlives the request */
    adm = ngx_alloc(sizeof(ngx_nebula_admission_t), r->connection->log);
    if (adm == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(adm, sizeof(ngx_nebula_admission_t));
    adm->r = r;
    adm->ctx = ctx;
    adm->prompt = req->prompt_tokens;
    ngx_memcpy(adm->tag, ctx->tag, sizeof(adm->tag));
    *ngx_nebula_month(adm->month, ctx->now) = '\0';
    ngx_memcpy(adm->request_id, id, sizeof(adm->request_id));
    ngx_nebula_res_id(adm->res_id, id, ctx->key_id, ctx->tag);

    adm->lease = ngx_nebula_lease_want(ctx, (int64_t) req->prompt_tokens,
                                       out, &lease_in, &lease_out);

    /*
     * The key's record (a key made before accounts: nb:{ID}:key), then
     * its account's, and the key's own usage: all under the account's tag
     */
    account = ngx_strcmp(ctx->key_id, ctx->tag) != 0;

    if (account) {
        argv[0].len = ngx_sprintf(keys[0], "nb:{%s}:k:%s", ctx->tag,
                                  ctx->key_id) - keys[0];
    } else {
        argv[0].len = ngx_sprintf(keys[0], "nb:{%s}:key", ctx->tag)
                      - keys[0];
    }

    argv[1].len = ngx_sprintf(keys[1], "nb:{%s}:u:%s", ctx->tag,
                              adm->month) - keys[1];
    argv[2].len = ngx_sprintf(keys[2], "nb:{%s}:r:%T", ctx->tag,
                              ctx->now / 60) - keys[2];
    argv[3].len = ngx_sprintf(keys[3], "nb:{%s}:res:%s", ctx->tag,
                              adm->month) - keys[3];
    argv[4].len = ngx_sprintf(keys[4], "nb:{%s}:exp:%s", ctx->tag,
                              adm->month) - keys[4];
    argv[5].len = ngx_sprintf(keys[5], "nb:{%s}:acct", ctx->tag) - keys[5];
    argv[6].len = ngx_sprintf(keys[6], "nb:{%s}:ku:%s", ctx->tag,
                              adm->month) - keys[6];
    argv[7].len = ngx_sprintf(keys[7], "nb:{%s}:kr:%s:%T", ctx->tag,
                              account ? ctx->key_id : (u_char *) "",
                              ctx->now / 60) - keys[7];

    for (i = 0; i < 8; i++) {
        argv[i].data = keys[i];
    }

    argv[8].data = ctx->digest;
    argv[8].len = 64;
    argv[9] = model->name;
    argv[10] = model->private ? (ngx_str_t) ngx_null_string : model->group;
    argv[11] = nmcf->plans_table;

    argv[12].data = nums[0];
    argv[12].len = ngx_sprintf(nums[0], "%uL", req->prompt_tokens) - nums[0];
    argv[13].data = nums[1];
    argv[13].len = ngx_sprintf(nums[1], "%L", want) - nums[1];
    argv[14].data = nums[2];
    argv[14].len = ngx_sprintf(nums[2], "%L", cap) - nums[2];
    argv[15].data = nums[3];
    argv[15].len = ngx_sprintf(nums[3], "%T", 60 - ctx->now % 60) - nums[3];
    argv[16].data = nums[4];
    argv[16].len = ngx_sprintf(nums[4], "%d", NGX_NEBULA_USAGE_TTL)
                   - nums[4];
    argv[17].data = nums[5];
    argv[17].len = ngx_sprintf(nums[5], "%T", ctx->now) - nums[5];
    argv[18].data = nums[6];
    argv[18].len = ngx_sprintf(nums[6], "%M",
                               nmcf->reservation_timeout / 1000) - nums[6];
    argv[19].data = adm->res_id;
    argv[19].len = ngx_strlen(adm->res_id);
    argv[20].data = nums[7];
    argv[20].len = ngx_sprintf(nums[7], "%L", lease_in) - nums[7];
    argv[21].data = nums[8];
    argv[21].len = ngx_sprintf(nums[8], "%L", lease_out) - nums[8];
    argv[22].data = ctx->key_id;
    argv[22].len = account ? NGX_NEBULA_KEY_ID_LEN : 0;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        if (adm->lease) {
            a.status = NEBULA_ADMIT_BAD_REPLY;
            ngx_nebula_lease_resolve(adm->lease, NULL, &a);
        }

        ngx_free(adm);
        return NGX_ERROR;
    }

    /* the account's last settlement, if it waits, is taken first */
    ngx_nebula_settle_before(ctx->tag);

    if (ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_ADMIT, 8, 23, argv,
                              ngx_nebula_admit_reply, adm)
        == NULL)
    {
        if (adm->lease) {
            a.status = NEBULA_ADMIT_BAD_REPLY;
            ngx_nebula_lease_resolve(adm->lease, NULL, &a);
        }

        ngx_free(adm);
        ngx_nebula_store_away(ctx, nmcf);
        return NGX_OK;
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


static void
ngx_nebula_admit_reply(void *data, redisReply *reply)
{
    ngx_nebula_admission_t  *adm = data;

    u_char                  *msg;
    ngx_uint_t               level;
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_nebula_ctx_t        *ctx;
    nebula_admit_t           a;
    ngx_nebula_verdict_t    *v;
    ngx_nebula_main_conf_t  *nmcf;
    ngx_str_t                model = ngx_string("-");
    u_char                   lease_id[NGX_NEBULA_RES_ID_LEN + 2];

    (void) nebula_admit_parse(reply, &a);

    r = adm->r;

    if (adm->lease) {
        if (r && a.status == NEBULA_ADMIT_OK) {
            /* the lease is named after the request that brought it */
            ngx_memcpy(adm->ctx->request_id, adm->request_id,
                       sizeof(adm->request_id));
            ngx_memcpy(adm->ctx->res_id, adm->res_id, sizeof(adm->res_id));
            ngx_memcpy(adm->ctx->month, adm->month, sizeof(adm->month));
        }

        /* the grant asked with it: opened, or forgotten */
        ngx_nebula_lease_resolve(adm->lease, r ? adm->ctx : NULL, &a);
        adm->lease = NULL;
    }

    if (r == NULL) {
        /* the client left: give back what was reserved for it */
        if (a.status == NEBULA_ADMIT_OK) {
            ngx_nebula_settle_request(ngx_cycle->log, adm->tag,
                                      adm->month, ngx_time(),
                                      adm->res_id, &model, adm->prompt,
                                      a.reserved_out, 0, 0, 0,
                                      NGX_NEBULA_SETTLE_NOW);

            if (a.lease_in > 0) {
                /* and the lease granted with it, unused */
                lease_id[0] = 'L';
                ngx_memcpy(&lease_id[1], adm->res_id, sizeof(adm->res_id));
                ngx_nebula_settle_lease(ngx_cycle->log, adm->tag,
                                        adm->month, ngx_time(), lease_id,
                                        &model, a.lease_in, a.lease_out,
                                        0, 0, 0, 0, 0, 0, 0, NULL, 0);
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
        /* "not now" (a failover, a slot moving) is no error of ours */
        level = (reply->type == REDIS_REPLY_ERROR
                 && ngx_nebula_redis_transient(reply))
                ? NGX_LOG_WARN : NGX_LOG_ERR;

        ngx_log_error(level, c->log, 0,
                      "nebula: unexpected reply from the admission script%s%s",
                      reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    }

    ctx->admit = a;
    v = &ctx->verdict;

    switch (a.status) {

    case NEBULA_ADMIT_OK:
        ctx->admitted = 1;
        ctx->reserved_in = adm->prompt;
        ctx->reserved_out = a.reserved_out;
        ngx_memcpy(ctx->request_id, adm->request_id, sizeof(ctx->request_id));
        ngx_memcpy(ctx->res_id, adm->res_id, sizeof(ctx->res_id));
        ngx_memcpy(ctx->month, adm->month, sizeof(ctx->month));
        ngx_free(adm);

        /* kept alive in Redis for as long as the request lives */
        ngx_nebula_hold_add(&ctx->hold, ctx->tag, ctx->month,
                            ctx->res_id, ctx->reserved_in,
                            ctx->reserved_out, ctx->now, 0);

        ngx_nebula_proceed_verdict(ctx, 1);
        break;

    case NEBULA_ADMIT_UNKNOWN_KEY:
    case NEBULA_ADMIT_REVOKED:
        ngx_free(adm);

        if (ctx->model->private) {
            /* as an unknown model is refused, before any key is looked at */
            ngx_nebula_private_unknown(ctx);
            break;
        }

        ngx_nebula_refuse_verdict(ctx, NGX_HTTP_UNAUTHORIZED,
                                  "invalid_request_error", "invalid_api_key",
                                  NULL,
                                  a.status == NEBULA_ADMIT_UNKNOWN_KEY
                                  ? "Incorrect API key provided."
                                  : ngx_strcmp(a.detail, "expired") == 0
                                  ? "This API key has expired."
                                  : ngx_strcmp(a.detail, "disabled") == 0
                                  ? "This API key is disabled."
                                  : "This API key has been revoked.", 0);
        break;

    case NEBULA_ADMIT_SUSPENDED:
        ngx_free(adm);

        if (ctx->model->private) {
            ngx_nebula_private_unknown(ctx);
            break;
        }

        ngx_nebula_refuse_verdict(ctx, NGX_HTTP_FORBIDDEN, "permission_error",
                                  "account_suspended", NULL,
                                  "This API key's account is suspended.", 0);
        break;

    case NEBULA_ADMIT_MODEL_NOT_ALLOWED:
        ngx_free(adm);

        if (ctx->model->private) {
            /* nobody learns of a customer's model from a refusal */
            ngx_nebula_private_unknown(ctx);
            break;
        }

        msg = ngx_pnalloc(r->pool, NEBULA_MESSAGE_MAX);
        if (msg == NULL) {
            v->action = NGX_NEBULA_VERDICT_FAIL;
            break;
        }

        *ngx_snprintf(msg, NEBULA_MESSAGE_MAX - 1,
                      "Your plan (%s) does not include the model '%V'.",
                      a.plan, &ctx->model->name) = '\0';
        ngx_nebula_refuse_verdict(ctx, NGX_HTTP_FORBIDDEN, "permission_error",
                                  "model_not_allowed", "model",
                                  (char *) msg, 1);
        break;

    case NEBULA_ADMIT_RATE_LIMITED:
        ngx_free(adm);

        msg = ngx_pnalloc(r->pool, NEBULA_MESSAGE_MAX);
        if (msg == NULL) {
            v->action = NGX_NEBULA_VERDICT_FAIL;
            break;
        }

        *ngx_snprintf(msg, NEBULA_MESSAGE_MAX - 1,
                      "Rate limit reached%s: %L requests per minute. "
                      "Retry in %L s.",
                      ngx_strcmp(a.detail, "key") == 0 ? " for this key" : "",
                      a.rpm, a.retry_after) = '\0';
        ngx_nebula_refuse_verdict(ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                  "rate_limit_error", "rate_limit_exceeded",
                                  NULL, (char *) msg, 1);
        break;

    case NEBULA_ADMIT_NO_QUOTA:
        if (a.leased) {
            /* what leases sit on unused comes back within a second */
            ngx_nebula_lease_recall(adm->tag);
        }

        ngx_free(adm);
        ngx_nebula_refuse_verdict(ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                                  "insufficient_quota", "insufficient_quota",
                                  NULL,
                                  ngx_strcmp(a.detail, "key") == 0
                                  ? "This key exceeded its own monthly token "
                                    "limit; it resets at the start of next "
                                    "month (UTC)."
                                  : "You exceeded your monthly token quota; "
                                    "it resets at the start of next month "
                                    "(UTC).",
                                  1);
        break;

    case NEBULA_ADMIT_UNKNOWN_PLAN:
        ngx_free(adm);
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "nebula: key %s has plan \"%s\", which this "
                      "configuration does not declare", ctx->key_id, a.plan);

        if (ctx->model->private) {
            ngx_nebula_private_unknown(ctx);
            break;
        }

        ngx_nebula_refuse_verdict(ctx, NGX_HTTP_FORBIDDEN, "permission_error",
                                  "model_not_allowed", "model",
                                  "Your key's plan is not served here.", 0);
        break;

    default: /* no reply, or not one of the script's */
        ngx_free(adm);
        ngx_nebula_store_away(ctx, nmcf);
        break;
    }

    /* the access step acts on the verdict (ngx_nebula_access_handler) */
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);

    ngx_http_run_posted_requests(c);
}
