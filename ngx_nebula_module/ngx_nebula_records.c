/*
 * Nebula: what the APIs the gateway answers from Redis share.
 *
 * A call: one request waiting on Redis's reply to a script, as the access
 * phase waits for ADMIT; a request that goes away cancels its commands,
 * so a reply that comes after touches nothing freed.
 *
 * A key's records, as KEY_GET reads them (nb:{ID}:key, the month's usage
 * nb:{ID}:u:MONTH, its usage per model nb:{ID}:m:MONTH, this minute's
 * requests nb:{ID}:r:MINUTE), and their JSON: the admin API shows a key
 * to the operator, GET /v1/key to its holder, the same fields.
 */

#include "ngx_nebula_records.h"
#include "ngx_nebula_fanout.h"


static void
ngx_nebula_call_cleanup(void *data)
{
    ngx_nebula_call_ctx_t  *call = data;

    if (call->op) {
        ngx_nebula_redis_cancel(call->op);
        call->op = NULL;
    }

    if (call->extra_op) {
        ngx_nebula_redis_cancel(call->extra_op);
        call->extra_op = NULL;
    }
}


/*
 * The call's state, in the module's ctx (the filters read that type), and
 * the cleanup that cancels its commands when the request goes
 */
ngx_nebula_call_ctx_t *
ngx_nebula_call_start(ngx_http_request_t *r, ngx_nebula_call_answer_pt answer)
{
    ngx_nebula_ctx_t       *ctx;
    ngx_pool_cleanup_t     *cln;
    ngx_nebula_call_ctx_t  *call;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_nebula_ctx_t));
    call = ngx_pcalloc(r->pool, sizeof(ngx_nebula_call_ctx_t));
    if (ctx == NULL || call == NULL) {
        return NULL;
    }

    ctx->call = call;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_nebula_call_cleanup;
    cln->data = call;

    call->r = r;
    call->answer = answer;
    call->now = ngx_nebula_now(r);
    *ngx_nebula_month(call->month, call->now) = '\0';

    ngx_http_set_ctx(r, ctx, ngx_http_nebula_module);

    return call;
}


/* the request ends with rc unless it waits on another command */
void
ngx_nebula_call_finish(ngx_nebula_call_ctx_t *call, ngx_int_t rc)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    /* the call lives in the request's pool: read it before finalizing */
    r = call->r;
    c = r->connection;

    if (rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_nebula_call_reply(void *data, redisReply *reply)
{
    ngx_nebula_call_ctx_t  *call = data;

    ngx_int_t  rc;

    call->op = NULL;

    if (reply == NULL) {
        rc = ngx_nebula_call_unavailable(call->r);

    } else {
        rc = call->answer(call, reply);
    }

    ngx_nebula_call_finish(call, rc);
}


/* NGX_AGAIN: sent, the answer comes with its reply; or the 503 sent */
ngx_int_t
ngx_nebula_call_eval(ngx_nebula_call_ctx_t *call, ngx_nebula_script_e script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv)
{
    if (ngx_nebula_redis_cluster() && ngx_nebula_fanout_wanted(script)) {
        /* it reads every account: a cluster's masters each read theirs */
        return ngx_nebula_fanout(call, script, nkeys, argc, argv);
    }

    call->op = ngx_nebula_redis_eval(script, nkeys, argc, argv,
                                     ngx_nebula_call_reply, call);

    if (call->op == NULL) {
        return ngx_nebula_call_unavailable(call->r);
    }

    return NGX_AGAIN;
}


/* a plain command, as ngx_nebula_call_eval() runs a script */
ngx_int_t
ngx_nebula_call_command(ngx_nebula_call_ctx_t *call, ngx_uint_t argc,
    ngx_str_t *argv)
{
    call->op = ngx_nebula_redis_command(argc, argv, ngx_nebula_call_reply,
                                        call);

    if (call->op == NULL) {
        return ngx_nebula_call_unavailable(call->r);
    }

    return NGX_AGAIN;
}


ngx_int_t
ngx_nebula_call_unavailable(ngx_http_request_t *r)
{
    return ngx_nebula_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "quota_store_unavailable", NULL,
                                "The key store is unavailable; please retry "
                                "shortly.");
}


/* a reply none of the scripts gives: a broken or foreign Redis */
ngx_int_t
ngx_nebula_call_bad_reply(ngx_http_request_t *r, redisReply *reply)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "nebula: unexpected reply from an admin script%s%s",
                  reply->type == REDIS_REPLY_ERROR ? ": " : "",
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "");

    return ngx_nebula_api_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL,
                                NULL, "The key store answered oddly.");
}


/* a record's name in Redis, "nb:{ID}:...", in the pool */
ngx_str_t *
ngx_nebula_record_name(ngx_pool_t *pool, const char *fmt, u_char *id,
    u_char *month)
{
    ngx_str_t  *s;

    s = ngx_palloc(pool, sizeof(ngx_str_t));
    if (s == NULL) {
        return NULL;
    }

    s->data = ngx_pnalloc(pool, 64);
    if (s->data == NULL) {
        return NULL;
    }

    s->len = ngx_sprintf(s->data, fmt, id, month) - s->data;

    return s;
}


/*
 * KEY_GET_OF for a key of an account (call->tag, call->id): its record,
 * its account's, the account's month, per model, per key, and the
 * minute's counts
 */
static ngx_int_t
ngx_nebula_record_get_of(ngx_nebula_call_ctx_t *call)
{
    ngx_str_t            argv[7];
    ngx_uint_t           i;
    ngx_http_request_t  *r;

    r = call->r;

    for (i = 0; i < 7; i++) {
        argv[i].data = ngx_pnalloc(r->pool, 96);
        if (argv[i].data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    argv[0].len = ngx_sprintf(argv[0].data, "nb:{%s}:k:%s", call->tag,
                              call->id) - argv[0].data;
    argv[1].len = ngx_sprintf(argv[1].data, "nb:{%s}:acct", call->tag)
                  - argv[1].data;
    argv[2].len = ngx_sprintf(argv[2].data, "nb:{%s}:u:%s", call->tag,
                              call->month) - argv[2].data;
    argv[3].len = ngx_sprintf(argv[3].data, "nb:{%s}:m:%s", call->tag,
                              call->month) - argv[3].data;
    argv[4].len = ngx_sprintf(argv[4].data, "nb:{%s}:ku:%s", call->tag,
                              call->month) - argv[4].data;
    argv[5].len = ngx_sprintf(argv[5].data, "nb:{%s}:r:%T", call->tag,
                              call->now / 60) - argv[5].data;
    argv[6].len = ngx_sprintf(argv[6].data, "nb:{%s}:kr:%s:%T", call->tag,
                              call->id, call->now / 60) - argv[6].data;

    return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_GET_OF, 7, 7,
                                argv);
}


/* KEY_GET for call->id: its record, the month's usage, per model */
ngx_int_t
ngx_nebula_record_get(ngx_nebula_call_ctx_t *call)
{
    u_char               minute[NGX_TIME_T_LEN + 1];
    ngx_str_t            argv[4], *k;
    ngx_http_request_t  *r;

    r = call->r;

    if (call->tag[0] && ngx_strcmp(call->tag, call->id) != 0) {
        return ngx_nebula_record_get_of(call);
    }

    k = ngx_nebula_record_name(r->pool, "nb:{%s}:key%s", call->id,
                               (u_char *) "");
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[0] = *k;

    k = ngx_nebula_record_name(r->pool, "nb:{%s}:u:%s", call->id,
                               call->month);
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[1] = *k;

    k = ngx_nebula_record_name(r->pool, "nb:{%s}:m:%s", call->id,
                               call->month);
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[2] = *k;

    *ngx_sprintf(minute, "%T", call->now / 60) = '\0';
    k = ngx_nebula_record_name(r->pool, "nb:{%s}:r:%s", call->id, minute);
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[3] = *k;

    return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_GET, 4, 4, argv);
}


/*
 * KEY_GET's reply: NGX_OK, the key's four records; NGX_DECLINED, no key
 * has the id; NGX_ERROR, not a reply of KEY_GET
 */
ngx_int_t
ngx_nebula_record_found(redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY) {
        return NGX_ERROR;
    }

    if (reply->elements == 0) {
        return NGX_DECLINED;
    }

    return (reply->elements == 4
            || (reply->elements == NGX_NEBULA_RECORD_ACCOUNT_KEY
                && reply->element[1]->type == REDIS_REPLY_ARRAY))
           ? NGX_OK : NGX_ERROR;
}


/* the plan a key's record names, if this nginx.conf declares it */
ngx_nebula_plan_t *
ngx_nebula_record_plan(ngx_http_request_t *r, const redisReply *k)
{
    const redisReply        *v;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    v = nebula_reply_field(k, "plan");

    return (v && v->type == REDIS_REPLY_STRING)
           ? ngx_nebula_find_plan(nmcf, (u_char *) v->str, v->len) : NULL;
}


/*
 * A key's limits (or an account's: the same fields): its own, else its
 * plan's (0 without a plan)
 */
void
ngx_nebula_record_limits(ngx_http_request_t *r, const redisReply *k,
    int64_t *in, int64_t *out, int64_t *rpm)
{
    ngx_nebula_plan_t  *plan;

    plan = ngx_nebula_record_plan(r, k);

    *in = nebula_reply_int(k, "in_limit",
                           plan ? (int64_t) plan->input_tokens : 0);
    *out = nebula_reply_int(k, "out_limit",
                            plan ? (int64_t) plan->output_tokens : 0);
    *rpm = nebula_reply_int(k, "rpm_limit",
                            plan ? (int64_t) plan->requests_per_minute : 0);
}


/*
 * The next of a key's own models, a string of names separated by spaces:
 * its first byte and *len, or NULL past the last
 */
static u_char *
ngx_nebula_record_next_model(u_char **pos, u_char *last, size_t *len)
{
    u_char  *p, *s;

    p = *pos;

    while (p < last && *p == ' ') {
        p++;
    }

    s = p;

    while (p < last && *p != ' ') {
        p++;
    }

    *pos = p;
    *len = p - s;

    return (p > s) ? s : NULL;
}


/* whether a key's record lists a model among its own */
ngx_uint_t
ngx_nebula_record_lists(const redisReply *k, ngx_str_t *name)
{
    u_char            *p, *last, *s;
    size_t             len;
    const redisReply  *v;

    v = nebula_reply_field(k, "models");

    if (v == NULL || v->type != REDIS_REPLY_STRING) {
        return 0;
    }

    p = (u_char *) v->str;
    last = p + v->len;

    while ((s = ngx_nebula_record_next_model(&p, last, &len)) != NULL) {
        if (len == name->len && ngx_strncmp(s, name->data, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * Whose plan and private models a key of KEY_GET's reply has: its
 * account's (a key of an account: KEY_GET_OF's reply), or its own (a key
 * made before accounts)
 */
static const redisReply *
ngx_nebula_record_owner(const redisReply *reply)
{
    return (reply->elements == NGX_NEBULA_RECORD_ACCOUNT_KEY)
           ? reply->element[1] : reply->element[0];
}


/* the groups of the key's plan (reply: KEY_GET's; NULL: every group) */
uint64_t
ngx_nebula_record_groups(ngx_http_request_t *r, const redisReply *reply)
{
    ngx_nebula_plan_t  *plan;

    if (reply == NULL) {
        return (uint64_t) -1;
    }

    plan = ngx_nebula_record_plan(r, ngx_nebula_record_owner(reply));

    return plan ? plan->groups : 0;
}


/*
 * Whether the key of KEY_GET's reply (NULL: none checked) reaches a
 * model: its plan's groups, or its (account's) private models; a key of
 * an account that lists models reaches those of them only, as ADMIT has it
 */
ngx_uint_t
ngx_nebula_record_reaches(const redisReply *reply, uint64_t groups,
    ngx_nebula_model_t *model)
{
    const redisReply  *narrow;

    if (reply == NULL) {
        return !model->private;
    }

    if ((model->private
         || !(groups & ((uint64_t) 1 << model->group_index)))
        && !ngx_nebula_record_lists(ngx_nebula_record_owner(reply),
                                    &model->name))
    {
        return 0;
    }

    if (reply->elements != NGX_NEBULA_RECORD_ACCOUNT_KEY) {
        return 1;
    }

    narrow = nebula_reply_field(reply->element[0], "models");

    return narrow == NULL || narrow->type != REDIS_REPLY_STRING
           || narrow->len == 0
           || ngx_nebula_record_lists(reply->element[0], &model->name);
}


/* a key's limits and what is left, from KEY_GET's reply, as ADMIT says */
static void
ngx_nebula_record_admit(ngx_http_request_t *r, redisReply *reply,
    nebula_admit_t *a)
{
    int64_t            used;
    const redisReply  *k, *u;

    k = reply->element[0];
    u = reply->element[1];

    if (reply->elements == NGX_NEBULA_RECORD_ACCOUNT_KEY) {
        ngx_nebula_account_key_admit(r, reply, a);
        return;
    }

    ngx_memzero(a, sizeof(nebula_admit_t));
    a->status = NEBULA_ADMIT_OK;

    ngx_nebula_record_limits(r, k, &a->in_limit, &a->out_limit, &a->rpm);

    /* what leases hold unused is not spent (lin, lout: their blocks) */
    a->in_left = a->in_limit - nebula_reply_int(u, "in", 0)
                 - nebula_reply_int(u, "rin", 0)
                 + nebula_reply_int(u, "lin", 0);
    a->out_left = a->out_limit - nebula_reply_int(u, "out", 0)
                  - nebula_reply_int(u, "rout", 0)
                  + nebula_reply_int(u, "lout", 0);

    used = reply->element[3]->type == REDIS_REPLY_INTEGER
           ? reply->element[3]->integer : 0;
    a->rpm_left = ngx_max(a->rpm - used, 0);
}


/*
 * The caller's own key, read with KEY_GET from the id its secret's digest
 * gives; answer writes what the endpoint shows of it
 */
ngx_int_t
ngx_nebula_own_key_lookup(ngx_http_request_t *r,
    ngx_nebula_call_answer_pt answer)
{
    ngx_int_t               rc;
    ngx_str_t               secret;
    ngx_nebula_call_ctx_t  *call;

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    if (ngx_nebula_key_from_request(r, &secret) != NGX_OK
        || !ngx_nebula_key_well_formed(&secret))
    {
        return ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                    "invalid_api_key", NULL,
                                    "Missing or incorrect API key.");
    }

    call = ngx_nebula_call_start(r, answer);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_nebula_key_digest(&secret, call->digest, call->id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    (void) ngx_nebula_key_tag(&secret, call->id, call->tag);

    rc = ngx_nebula_record_get(call);

    if (rc != NGX_AGAIN) {
        return rc;
    }

    r->main->count++;
    return NGX_DONE;
}


/*
 * KEY_GET's reply to an own key lookup.  NGX_OK: the key is the caller's
 * (the digest matches, not a collision of ids) and active, and the
 * response has the rate-limit headers, as every authenticated one.
 * NGX_DECLINED: it is not; *rc is the refusal to finalize with.
 */
ngx_int_t
ngx_nebula_own_key_check(ngx_nebula_call_ctx_t *call, redisReply *reply,
    ngx_int_t *rc)
{
    redisReply          *e;
    nebula_admit_t       a;
    ngx_http_request_t  *r;

    r = call->r;

    switch (ngx_nebula_record_found(reply)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        goto unknown;

    default:
        *rc = ngx_nebula_call_bad_reply(r, reply);
        return NGX_DECLINED;
    }

    e = (redisReply *) nebula_reply_field(reply->element[0], "digest");
    if (e == NULL || e->type != REDIS_REPLY_STRING || e->len != 64
        || ngx_strncmp(e->str, call->digest, 64) != 0)
    {
        goto unknown;
    }

    e = (redisReply *) nebula_reply_field(reply->element[0], "status");
    if (e == NULL || e->type != REDIS_REPLY_STRING || e->len != 6
        || ngx_strncmp(e->str, "active", 6) != 0)
    {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                   "invalid_api_key", NULL,
                                   (e && e->type == REDIS_REPLY_STRING
                                    && e->len == 8
                                    && ngx_strncmp(e->str, "disabled", 8)
                                       == 0)
                                   ? "This API key is disabled."
                                   : "This API key has been revoked.");
        return NGX_DECLINED;
    }

    /* a suspended account's keys are refused, as ADMIT refuses them */
    if (reply->elements == NGX_NEBULA_RECORD_ACCOUNT_KEY) {
        e = (redisReply *) nebula_reply_field(reply->element[1], "status");

        if (e == NULL || e->type != REDIS_REPLY_STRING || e->len != 6
            || ngx_strncmp(e->str, "active", 6) != 0)
        {
            *rc = (e && e->type == REDIS_REPLY_STRING && e->len == 9
                   && ngx_strncmp(e->str, "suspended", 9) == 0)
                  ? ngx_nebula_api_error(r, NGX_HTTP_FORBIDDEN,
                                         "account_suspended", NULL,
                                         "This API key's account is "
                                         "suspended.")
                  : ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                         "invalid_api_key", NULL,
                                         "Incorrect API key provided.");
            return NGX_DECLINED;
        }
    }

    /* a key of an account may expire, as ADMIT has it */
    if (nebula_reply_int(reply->element[0], "expires", INT64_MAX)
        <= (int64_t) call->now)
    {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                   "invalid_api_key", NULL,
                                   "This API key has expired.");
        return NGX_DECLINED;
    }

    ngx_nebula_record_admit(r, reply, &a);

    if (ngx_nebula_ratelimit_headers(r, &a, call->now) != NGX_OK) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DECLINED;
    }

    return NGX_OK;

unknown:

    *rc = ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED, "invalid_api_key",
                               NULL, "Incorrect API key provided.");
    return NGX_DECLINED;
}


static void
ngx_nebula_json_field_str(ngx_nebula_json_t *j, const redisReply *list,
    const char *name)
{
    const redisReply  *v;

    v = nebula_reply_field(list, name);

    if (v && v->type == REDIS_REPLY_STRING) {
        ngx_nebula_json_str(j, (u_char *) v->str, v->len);

    } else {
        ngx_nebula_json_lit(j, "null");
    }
}


/*
 * The requests whose usage the pool did not report and the tokens the
 * gateway counted for them (est_req, est_in, est_out of the SETTLE
 * script): billing tells them from the pool's own counts.
 */
void
ngx_nebula_write_estimated_counts(ngx_nebula_json_t *j, int64_t *v)
{
    ngx_nebula_json_lit(j, ",\"estimated_requests\":");
    ngx_nebula_json_int(j, v[0]);
    ngx_nebula_json_lit(j, ",\"estimated_input_tokens\":");
    ngx_nebula_json_int(j, v[1]);
    ngx_nebula_json_lit(j, ",\"estimated_output_tokens\":");
    ngx_nebula_json_int(j, v[2]);
}


/* "MODEL|est_req": nebula_model keeps names under NEBULA_MODEL_NAME_MAX */
#define NGX_NEBULA_RECORD_FIELD_MAX  (NEBULA_MODEL_NAME_MAX + 16)


/* the same from a usage hash; prefix is "MODEL|" in a model hash */
void
ngx_nebula_write_estimated(ngx_nebula_json_t *j, const redisReply *h,
    const char *prefix)
{
    int64_t      v[3];
    ngx_uint_t   i;
    u_char       name[NGX_NEBULA_RECORD_FIELD_MAX];

    static const char  *field[3] = { "est_req", "est_in", "est_out" };

    for (i = 0; i < 3; i++) {
        v[i] = 0;

        if (ngx_strlen(prefix) + ngx_strlen(field[i]) < sizeof(name)) {
            *ngx_sprintf(name, "%s%s", prefix, field[i]) = '\0';
            v[i] = nebula_reply_int(h, (char *) name, 0);
        }
    }

    ngx_nebula_write_estimated_counts(j, v);
}


/*
 * A month's usage per model ("MODEL|in", "MODEL|out", ... of one hash) as
 * {"MODEL": {input_tokens, output_tokens, requests, cost_usd, ...}}
 */
void
ngx_nebula_write_model_usage(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *m)
{
    u_char            *p, *last;
    size_t             i;
    ngx_uint_t         first;
    const redisReply  *v;

    ngx_nebula_json_lit(j, "{");
    first = 1;

    for (i = 0; m && m->type == REDIS_REPLY_ARRAY && i + 1 < m->elements;
         i += 2)
    {
        v = m->element[i];

        if (v->type != REDIS_REPLY_STRING || v->len < 4
            || ngx_strncmp(v->str + v->len - 3, "|in", 3) != 0)
        {
            continue;
        }

        if (!first) {
            ngx_nebula_json_lit(j, ",");
        }

        first = 0;

        ngx_nebula_json_str(j, (u_char *) v->str, v->len - 3);
        ngx_nebula_json_lit(j, ":{\"input_tokens\":");

        p = ngx_pnalloc(r->pool, v->len + 8);
        if (p == NULL) {
            j->failed = 1;
            return;
        }

        last = ngx_cpymem(p, v->str, v->len - 3);

        *ngx_cpymem(last, "|in", 3) = '\0';
        ngx_nebula_json_int(j, nebula_reply_int(m, (char *) p, 0));
        ngx_nebula_json_lit(j, ",\"output_tokens\":");
        *ngx_cpymem(last, "|out", 4) = '\0';
        ngx_nebula_json_int(j, nebula_reply_int(m, (char *) p, 0));
        ngx_nebula_json_lit(j, ",\"requests\":");
        *ngx_cpymem(last, "|req", 4) = '\0';
        ngx_nebula_json_int(j, nebula_reply_int(m, (char *) p, 0));
        ngx_nebula_json_lit(j, ",\"cost_usd\":");
        *ngx_cpymem(last, "|cost", 5) = '\0';
        ngx_nebula_json_usd(j, (uint64_t) nebula_reply_int(m, (char *) p, 0));
        *ngx_cpymem(last, "|", 1) = '\0';
        ngx_nebula_write_estimated(j, m, (char *) p);
        ngx_nebula_json_lit(j, "}");
    }

    ngx_nebula_json_lit(j, "}");
}


/*
 * One key: k its record, u the month's usage, m the usage per model (NULL:
 * not shown).  The operator sees its status, creation and reservations;
 * its holder (holder: 1) sees when the month's quota resets instead.
 */
void
ngx_nebula_write_key(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *k, const redisReply *u, const redisReply *m,
    u_char *month, time_t now, ngx_uint_t holder)
{
    u_char            *p, *last, *s;
    int64_t            in_limit, out_limit, rpm, in_used, out_used;
    int64_t            rin, rout, lin, lout;
    ngx_tm_t           tm;
    ngx_uint_t         first;
    const redisReply  *v;
    u_char             buf[32];
    size_t             len;

    ngx_nebula_record_limits(r, k, &in_limit, &out_limit, &rpm);

    in_used = nebula_reply_int(u, "in", 0);
    out_used = nebula_reply_int(u, "out", 0);
    rin = nebula_reply_int(u, "rin", 0);
    rout = nebula_reply_int(u, "rout", 0);
    lin = nebula_reply_int(u, "lin", 0);
    lout = nebula_reply_int(u, "lout", 0);

    ngx_nebula_json_lit(j, "{\"id\":");
    ngx_nebula_json_field_str(j, k, "id");
    ngx_nebula_json_lit(j, ",\"name\":");
    ngx_nebula_json_field_str(j, k, "name");
    ngx_nebula_json_lit(j, ",\"plan\":");
    ngx_nebula_json_field_str(j, k, "plan");

    if (!holder) {
        ngx_nebula_json_lit(j, ",\"status\":");
        ngx_nebula_json_field_str(j, k, "status");
        ngx_nebula_json_lit(j, ",\"created\":");
        ngx_nebula_json_int(j, nebula_reply_int(k, "created", 0));
    }

    ngx_nebula_json_lit(j, ",\"limits\":{\"input_tokens\":");
    ngx_nebula_json_int(j, in_limit);
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_json_int(j, out_limit);
    ngx_nebula_json_lit(j, ",\"requests_per_minute\":");

    if (rpm > 0) {
        ngx_nebula_json_int(j, rpm);

    } else {
        ngx_nebula_json_lit(j, "null");
    }

    ngx_nebula_json_lit(j, "},\"models\":[");

    v = nebula_reply_field(k, "models");
    first = 1;

    if (v && v->type == REDIS_REPLY_STRING) {
        p = (u_char *) v->str;
        last = p + v->len;

        while ((s = ngx_nebula_record_next_model(&p, last, &len)) != NULL) {
            if (!first) {
                ngx_nebula_json_lit(j, ",");
            }

            first = 0;
            ngx_nebula_json_str(j, s, len);
        }
    }

    ngx_nebula_json_lit(j, "],\"usage\":{\"period\":");
    ngx_nebula_json_str(j, month, 7);
    ngx_nebula_json_lit(j, ",\"input_tokens\":");
    ngx_nebula_json_int(j, in_used);
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_json_int(j, out_used);
    ngx_nebula_json_lit(j, ",\"requests\":");
    ngx_nebula_json_int(j, nebula_reply_int(u, "req", 0));
    ngx_nebula_json_lit(j, ",\"cost_usd\":");
    ngx_nebula_json_usd(j, (uint64_t) nebula_reply_int(u, "cost", 0));
    ngx_nebula_write_estimated(j, u, "");

    if (!holder) {
        /* requests in flight; leases' blocks, held unused or not */
        ngx_nebula_json_lit(j, ",\"reserved_input_tokens\":");
        ngx_nebula_json_int(j, rin - lin);
        ngx_nebula_json_lit(j, ",\"reserved_output_tokens\":");
        ngx_nebula_json_int(j, rout - lout);
        ngx_nebula_json_lit(j, ",\"leased_input_tokens\":");
        ngx_nebula_json_int(j, lin);
        ngx_nebula_json_lit(j, ",\"leased_output_tokens\":");
        ngx_nebula_json_int(j, lout);
    }

    /* what leases hold unused is not spent */
    ngx_nebula_json_lit(j, "},\"remaining\":{\"input_tokens\":");
    ngx_nebula_json_int(j, ngx_max(in_limit - in_used - rin + lin, 0));
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_json_int(j, ngx_max(out_limit - out_used - rout + lout, 0));
    ngx_nebula_json_lit(j, "}");

    if (holder) {
        /* the first second of the next month, UTC */
        ngx_gmtime(now, &tm);
        ngx_nebula_json_lit(j, ",\"reset_at\":");
        p = ngx_sprintf(buf, "%4d-%02d-01T00:00:00Z",
                        tm.ngx_tm_year + (tm.ngx_tm_mon == 12),
                        tm.ngx_tm_mon % 12 + 1);
        ngx_nebula_json_str(j, buf, p - buf);
    }

    if (m && m->type == REDIS_REPLY_ARRAY && m->elements >= 2) {
        ngx_nebula_json_lit(j, ",\"usage_by_model\":");
        ngx_nebula_write_model_usage(r, j, m);
    }

    ngx_nebula_json_lit(j, "}");
}
