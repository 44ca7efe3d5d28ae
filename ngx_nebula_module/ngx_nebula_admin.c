/*
 * Nebula: the operator's admin API (nebula admin).
 *
 *   POST   /admin/keys          {"plan", "name", "limits"?, "models"?}
 *   GET    /admin/keys
 *   GET    /admin/keys/ID
 *   PATCH  /admin/keys/ID       {"plan"?, "name"?, "limits"?, "models"?,
 *                                "status"?}
 *   DELETE /admin/keys/ID       (revokes: the key stays, for its history)
 *   GET    /admin/usage?period=YYYY-MM
 *
 * Each is one script in Redis, sent as a call (ngx_nebula_records.c; the
 * listing and the usage on a Redis Cluster: one a master,
 * ngx_nebula_fanout.c); the bodies are read in ngx_nebula_admin_body.c.
 */

#include "ngx_nebula_accounts.h"


typedef enum {
    NGX_NEBULA_ADMIN_CREATE = 0,
    NGX_NEBULA_ADMIN_LIST,
    NGX_NEBULA_ADMIN_GET,
    NGX_NEBULA_ADMIN_UPDATE,
    NGX_NEBULA_ADMIN_REVOKE,
    NGX_NEBULA_ADMIN_USAGE
} ngx_nebula_admin_op_e;


/* an admin call's own state, its call's data */
typedef struct {
    ngx_nebula_admin_op_e     kind;
    ngx_uint_t                waiting;      /* a creation's replies to come */
    ngx_int_t                 created;      /* 1: created and listed */
    ngx_uint_t                failed;       /* a creation's reply lost */
    u_char                    secret[NGX_NEBULA_KEY_SECRET_LEN];
    ngx_str_t                 plan;
    ngx_str_t                 name;
} ngx_nebula_admin_ctx_t;


static ngx_int_t ngx_nebula_admin_answer(ngx_nebula_call_ctx_t *call,
    redisReply *reply);
static void ngx_nebula_admin_created(void *data, redisReply *reply);
static void ngx_nebula_admin_listed(void *data, redisReply *reply);
static void ngx_nebula_admin_write_models(ngx_http_request_t *r,
    ngx_nebula_json_t *j, redisReply *reply);


static ngx_int_t
ngx_nebula_admin_not_found(ngx_http_request_t *r)
{
    return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "key_not_found", "id",
                                "No key has this id.");
}


/*
 * A new key is two commands: KEY_CREATE writes nb:{ID}:key, and a plain
 * SADD puts the ID in nb:keys, sent right after on the same connection.
 * One script may not touch both (two hash slots: Redis Cluster refuses
 * it).  The 201 waits for both replies, in whichever order they come (a
 * NOSCRIPT sends the script again after the SADD).
 */
static ngx_int_t
ngx_nebula_admin_create(ngx_nebula_call_ctx_t *call,
    ngx_nebula_key_fields_t *f)
{
    ngx_str_t                argv[10], cmd[3], secret, *s;
    ngx_http_request_t      *r;
    ngx_nebula_admin_ctx_t  *actx;

    r = call->r;
    actx = call->data;

    secret.data = actx->secret;
    secret.len = ngx_nebula_key_generate(actx->secret, NULL);

    if (secret.len == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_nebula_key_digest(&secret, call->digest, call->id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the record's name: the id the digest gave */
    s = ngx_nebula_record_name(r->pool, "nb:{%s}:key%s", call->id,
                               (u_char *) "");
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = *s;

    actx->plan = f->plan;

    if (f->name.data) {
        actx->name = f->name;

    } else {
        ngx_str_set(&actx->name, "");
    }

    argv[1].data = call->id;
    argv[1].len = NGX_NEBULA_KEY_ID_LEN;
    argv[2].data = call->digest;
    argv[2].len = 64;
    argv[3] = actx->name;
    argv[4] = actx->plan;
    argv[5].data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (argv[5].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[5].len = ngx_sprintf(argv[5].data, "%T", call->now) - argv[5].data;
    argv[6] = f->limits[0];
    argv[7] = f->limits[1];
    argv[8] = f->limits[2];
    argv[9] = f->models;

    call->op = ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_KEY_CREATE, 1, 10,
                                     argv, ngx_nebula_admin_created, call);

    if (call->op) {
        ngx_str_set(&cmd[0], "SADD");
        ngx_str_set(&cmd[1], "nb:keys");
        cmd[2].data = call->id;
        cmd[2].len = NGX_NEBULA_KEY_ID_LEN;

        call->extra_op = ngx_nebula_redis_command(3, cmd,
                                                  ngx_nebula_admin_listed,
                                                  call);
        if (call->extra_op == NULL) {
            ngx_nebula_redis_cancel(call->op);
            call->op = NULL;
        }
    }

    if (call->op == NULL) {
        return ngx_nebula_call_unavailable(r);
    }

    actx->waiting = 2;
    actx->created = 1;

    return NGX_AGAIN;
}


static void
ngx_nebula_admin_create_done(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    ngx_int_t                rc;
    redisReply               answer;
    ngx_nebula_admin_ctx_t  *actx;

    actx = call->data;

    if (reply == NULL) {
        actx->failed = 1;

    } else if (reply->type != REDIS_REPLY_INTEGER) {
        actx->created = 0;
    }

    if (--actx->waiting) {
        return;
    }

    if (actx->failed) {
        rc = ngx_nebula_call_unavailable(call->r);

    } else {
        ngx_memzero(&answer, sizeof(redisReply));
        answer.type = REDIS_REPLY_INTEGER;
        answer.integer = actx->created;
        rc = ngx_nebula_admin_answer(call, &answer);
    }

    ngx_nebula_call_finish(call, rc);
}


static void
ngx_nebula_admin_created(void *data, redisReply *reply)
{
    ngx_nebula_call_ctx_t  *call = data;

    ngx_nebula_admin_ctx_t  *actx;

    actx = call->data;
    call->op = NULL;

    /* 0: the ID is taken already (a collision of 64 random bits) */
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer != 1) {
        actx->created = 0;
    }

    ngx_nebula_admin_create_done(call, reply);
}


static void
ngx_nebula_admin_listed(void *data, redisReply *reply)
{
    ngx_nebula_call_ctx_t  *call = data;

    call->extra_op = NULL;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, call->r->connection->log, 0,
                      "nebula: redis refused to list a new key: %s",
                      reply->str);
    }

    ngx_nebula_admin_create_done(call, reply);
}


/* PATCH: only what the body names changes */
static ngx_int_t
ngx_nebula_admin_update(ngx_nebula_call_ctx_t *call,
    ngx_nebula_key_fields_t *f)
{
    ngx_int_t    rc;
    ngx_uint_t   n, i;
    ngx_str_t    argv[16], *s;

    static const char  *fields[3] = { "in_limit", "out_limit", "rpm_limit" };

    s = ngx_nebula_record_name(call->r->pool, "nb:{%s}:key%s", call->id,
                               (u_char *) "");
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = *s;
    n = 1;

    if (f->plan.data) {
        ngx_str_set(&argv[n], "plan");
        argv[n + 1] = f->plan;
        n += 2;
    }

    if (f->name.data) {
        ngx_str_set(&argv[n], "name");
        argv[n + 1] = f->name;
        n += 2;
    }

    for (i = 0; i < 3; i++) {
        if (f->limits[i].data == NULL) {
            /* a limit the body does not name stays as it is */
            continue;
        }

        argv[n].data = (u_char *) fields[i];
        argv[n].len = ngx_strlen(fields[i]);
        argv[n + 1] = f->limits[i];
        n += 2;
    }

    if (f->models_named) {
        ngx_str_set(&argv[n], "models");
        argv[n + 1] = f->models;
        n += 2;
    }

    if (f->status.data) {
        ngx_str_set(&argv[n], "status");
        argv[n + 1] = f->status;
        n += 2;
    }

    rc = ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_UPDATE, 1, n,
                              argv);

    if (rc == NGX_AGAIN) {
        /* the workers close their leases of it (ngx_nebula_lease.c) */
        ngx_nebula_lease_recall(call->id);
    }

    return rc;
}


static ngx_int_t
ngx_nebula_admin_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    size_t                   i;
    redisReply              *e;
    ngx_nebula_json_t        j;
    const redisReply        *u;
    uint64_t                 tin, tout, treq, tcost;
    int64_t                  est[3];
    ngx_uint_t               first;
    ngx_http_request_t      *r;
    ngx_nebula_admin_ctx_t  *actx;

    r = call->r;
    actx = call->data;

    ngx_nebula_json_init(&j, r->pool);

    switch (actx->kind) {

    case NGX_NEBULA_ADMIN_CREATE:
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
            break;
        }

        ngx_nebula_json_lit(&j, "{\"id\":");
        ngx_nebula_json_str(&j, call->id, NGX_NEBULA_KEY_ID_LEN);
        ngx_nebula_json_lit(&j, ",\"key\":");
        ngx_nebula_json_str(&j, actx->secret, NGX_NEBULA_KEY_SECRET_LEN);
        ngx_nebula_json_lit(&j, ",\"plan\":");
        ngx_nebula_json_str(&j, actx->plan.data, actx->plan.len);
        ngx_nebula_json_lit(&j, ",\"name\":");
        ngx_nebula_json_str(&j, actx->name.data, actx->name.len);
        ngx_nebula_json_lit(&j, ",\"created\":");
        ngx_nebula_json_int(&j, call->now);
        ngx_nebula_json_lit(&j, "}");

        return ngx_nebula_json_send(r, &j, NGX_HTTP_CREATED);

    case NGX_NEBULA_ADMIN_UPDATE:
    case NGX_NEBULA_ADMIN_REVOKE:
        if (reply->type != REDIS_REPLY_INTEGER) {
            break;
        }

        if (reply->integer == 0) {
            return ngx_nebula_admin_not_found(r);
        }

        /* the answer is the key as GET shows it */
        actx->kind = NGX_NEBULA_ADMIN_GET;
        return ngx_nebula_record_get(call);

    case NGX_NEBULA_ADMIN_GET:

        switch (ngx_nebula_record_found(reply)) {

        case NGX_OK:
            break;

        case NGX_DECLINED:
            return ngx_nebula_admin_not_found(r);

        default:
            return ngx_nebula_call_bad_reply(r, reply);
        }

        ngx_nebula_write_key(r, &j, reply->element[0], reply->element[1],
                             reply->element[2], call->month, call->now, 0);

        return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);

    case NGX_NEBULA_ADMIN_LIST:
        if (reply->type != REDIS_REPLY_ARRAY) {
            break;
        }

        ngx_nebula_json_lit(&j, "{\"object\":\"list\",\"data\":[");
        first = 1;

        for (i = 0; i < reply->elements; i++) {
            e = reply->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) {
                continue;
            }

            /* not j.pos[-1]: a writer whose first buffer failed has none */
            if (!first) {
                ngx_nebula_json_lit(&j, ",");
            }

            first = 0;

            ngx_nebula_write_key(r, &j, e->element[0], e->element[1], NULL,
                                 call->month, call->now, 0);
        }

        ngx_nebula_json_lit(&j, "]}");

        return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);

    case NGX_NEBULA_ADMIN_USAGE:
        if (reply->type != REDIS_REPLY_ARRAY) {
            break;
        }

        ngx_nebula_json_lit(&j, "{\"period\":");
        ngx_nebula_json_str(&j, call->month, 7);
        ngx_nebula_json_lit(&j, ",\"keys\":[");
        first = 1;

        tin = tout = treq = tcost = 0;
        ngx_memzero(est, sizeof(est));

        for (i = 0; i < reply->elements; i++) {
            e = reply->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 3
                || e->element[0]->type != REDIS_REPLY_STRING)
            {
                continue;
            }

            u = e->element[1];

            if (!first) {
                ngx_nebula_json_lit(&j, ",");
            }

            first = 0;

            ngx_nebula_json_lit(&j, "{\"id\":");
            ngx_nebula_json_str(&j, (u_char *) e->element[0]->str,
                                e->element[0]->len);
            ngx_nebula_json_lit(&j, ",\"input_tokens\":");
            ngx_nebula_json_int(&j, nebula_reply_int(u, "in", 0));
            ngx_nebula_json_lit(&j, ",\"output_tokens\":");
            ngx_nebula_json_int(&j, nebula_reply_int(u, "out", 0));
            ngx_nebula_json_lit(&j, ",\"requests\":");
            ngx_nebula_json_int(&j, nebula_reply_int(u, "req", 0));
            ngx_nebula_json_lit(&j, ",\"cost_usd\":");
            ngx_nebula_json_usd(&j, (uint64_t) nebula_reply_int(u, "cost", 0));
            ngx_nebula_write_estimated(&j, u, "");
            ngx_nebula_json_lit(&j, "}");

            tin += nebula_reply_int(u, "in", 0);
            tout += nebula_reply_int(u, "out", 0);
            treq += nebula_reply_int(u, "req", 0);
            tcost += nebula_reply_int(u, "cost", 0);
            est[0] += nebula_reply_int(u, "est_req", 0);
            est[1] += nebula_reply_int(u, "est_in", 0);
            est[2] += nebula_reply_int(u, "est_out", 0);
        }

        ngx_nebula_json_lit(&j, "],\"models\":");
        ngx_nebula_admin_write_models(r, &j, reply);
        ngx_nebula_json_lit(&j, ",\"total\":{\"input_tokens\":");
        ngx_nebula_json_int(&j, tin);
        ngx_nebula_json_lit(&j, ",\"output_tokens\":");
        ngx_nebula_json_int(&j, tout);
        ngx_nebula_json_lit(&j, ",\"requests\":");
        ngx_nebula_json_int(&j, treq);
        ngx_nebula_json_lit(&j, ",\"cost_usd\":");
        ngx_nebula_json_usd(&j, tcost);
        ngx_nebula_write_estimated_counts(&j, est);
        ngx_nebula_json_lit(&j, "}}");

        return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
    }

    return ngx_nebula_call_bad_reply(r, reply);
}


/* /admin/usage's per-model totals, summed over the keys */
static void
ngx_nebula_admin_write_models(ngx_http_request_t *r, ngx_nebula_json_t *j,
    redisReply *reply)
{
    u_char                  *p;
    size_t                   i, k, len;
    int64_t                  v[7];
    ngx_uint_t               n, first;
    redisReply              *e, *m, *f;
    ngx_nebula_model_t      *model;
    ngx_nebula_main_conf_t  *nmcf;

    static const char  *suffix[7] = { "|in", "|out", "|req", "|cost",
                                      "|est_req", "|est_in", "|est_out" };

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);
    model = nmcf->models.elts;
    first = 1;

    ngx_nebula_json_lit(j, "[");

    /* the catalog is small: one pass over the keys per model */
    for (n = 0; n < nmcf->models.nelts; n++) {
        ngx_memzero(v, sizeof(v));

        for (i = 0; i < reply->elements; i++) {
            e = reply->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 3) {
                continue;
            }

            m = e->element[2];

            if (m->type != REDIS_REPLY_ARRAY) {
                continue;
            }

            for (k = 0; k + 1 < m->elements; k += 2) {
                f = m->element[k];

                if (f->type != REDIS_REPLY_STRING
                    || f->len <= model[n].name.len
                    || ngx_strncmp(f->str, model[n].name.data,
                                   model[n].name.len) != 0)
                {
                    continue;
                }

                p = (u_char *) f->str + model[n].name.len;
                len = f->len - model[n].name.len;

                for (ngx_uint_t s = 0; s < 7; s++) {
                    if (len == ngx_strlen(suffix[s])
                        && ngx_strncmp(p, suffix[s], len) == 0)
                    {
                        v[s] += m->element[k + 1]->type == REDIS_REPLY_STRING
                                ? ngx_atoof((u_char *) m->element[k + 1]->str,
                                            m->element[k + 1]->len)
                                : 0;
                    }
                }
            }
        }

        if (v[2] == 0) {
            continue;
        }

        if (!first) {
            ngx_nebula_json_lit(j, ",");
        }

        first = 0;

        ngx_nebula_json_lit(j, "{\"model\":");
        ngx_nebula_json_str(j, model[n].name.data, model[n].name.len);
        ngx_nebula_json_lit(j, ",\"input_tokens\":");
        ngx_nebula_json_int(j, v[0]);
        ngx_nebula_json_lit(j, ",\"output_tokens\":");
        ngx_nebula_json_int(j, v[1]);
        ngx_nebula_json_lit(j, ",\"requests\":");
        ngx_nebula_json_int(j, v[2]);
        ngx_nebula_json_lit(j, ",\"cost_usd\":");
        ngx_nebula_json_usd(j, (uint64_t) v[3]);
        ngx_nebula_write_estimated_counts(j, &v[4]);
        ngx_nebula_json_lit(j, "}");
    }

    ngx_nebula_json_lit(j, "]");
}


/*
 * POST /admin/keys and PATCH /admin/keys/ID, once their body is read;
 * body has len bytes and a NUL after them
 */
static ngx_int_t
ngx_nebula_admin_write(ngx_nebula_call_ctx_t *call, u_char *body, size_t len)
{
    ngx_uint_t               create;
    ngx_nebula_key_fields_t  f;
    ngx_nebula_admin_ctx_t  *actx;

    actx = call->data;
    create = (actx->kind == NGX_NEBULA_ADMIN_CREATE);

    switch (ngx_nebula_admin_body_parse(call->r, body, len, create, &f)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        return ngx_nebula_api_error(call->r, NGX_HTTP_BAD_REQUEST, f.code,
                                    f.param, f.message);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return create ? ngx_nebula_admin_create(call, &f)
                  : ngx_nebula_admin_update(call, &f);
}


static void
ngx_nebula_admin_body_handler(ngx_http_request_t *r)
{
    u_char            *body;
    size_t             len;
    ngx_int_t          rc;
    ngx_nebula_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);

    rc = ngx_nebula_body_bytes(r, &body, &len);

    if (rc == NGX_OK) {
        rc = ngx_nebula_admin_write(ctx->call, body, len);
    }

    if (rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }
}


/* the path after /admin/: "keys", "keys/ID" or "usage" */
static ngx_int_t
ngx_nebula_admin_route(ngx_http_request_t *r, ngx_nebula_call_ctx_t *call)
{
    u_char                  *p, *last;
    ngx_str_t                period;
    size_t                   i;
    ngx_nebula_admin_ctx_t  *actx;

    actx = call->data;

    p = r->uri.data;
    last = p + r->uri.len;

    if (r->uri.len < 7 || ngx_strncmp(p, "/admin/", 7) != 0) {
        return NGX_HTTP_NOT_FOUND;
    }

    p += 7;

    if (last - p == 5 && ngx_strncmp(p, "usage", 5) == 0) {
        if (r->method != NGX_HTTP_GET) {
            return NGX_HTTP_NOT_ALLOWED;
        }

        actx->kind = NGX_NEBULA_ADMIN_USAGE;

        if (ngx_http_arg(r, (u_char *) "period", 6, &period) == NGX_OK) {
            if (period.len != 7 || period.data[4] != '-') {
                return NGX_HTTP_BAD_REQUEST;
            }

            for (i = 0; i < 7; i++) {
                if (i != 4 && !(period.data[i] >= '0'
                                && period.data[i] <= '9'))
                {
                    return NGX_HTTP_BAD_REQUEST;
                }
            }

            ngx_memcpy(call->month, period.data, 7);
        }

        return NGX_OK;
    }

    if (last - p >= 4 && ngx_strncmp(p, "keys", 4) == 0) {
        p += 4;

        if (p == last || (last - p == 1 && *p == '/')) {
            if (r->method == NGX_HTTP_GET) {
                actx->kind = NGX_NEBULA_ADMIN_LIST;
                return NGX_OK;
            }

            if (r->method == NGX_HTTP_POST) {
                actx->kind = NGX_NEBULA_ADMIN_CREATE;
                return NGX_OK;
            }

            return NGX_HTTP_NOT_ALLOWED;
        }

        if (*p == '/' && last - p == 1 + NGX_NEBULA_KEY_ID_LEN) {
            p++;

            for (i = 0; i < NGX_NEBULA_KEY_ID_LEN; i++) {
                if (!((p[i] >= '0' && p[i] <= '9')
                      || (p[i] >= 'a' && p[i] <= 'f')))
                {
                    return NGX_HTTP_NOT_FOUND;
                }
            }

            ngx_memcpy(call->id, p, NGX_NEBULA_KEY_ID_LEN);
            call->id[NGX_NEBULA_KEY_ID_LEN] = '\0';

            switch (r->method) {
            case NGX_HTTP_GET:
                actx->kind = NGX_NEBULA_ADMIN_GET;
                return NGX_OK;
            case NGX_HTTP_PATCH:
                actx->kind = NGX_NEBULA_ADMIN_UPDATE;
                return NGX_OK;
            case NGX_HTTP_DELETE:
                actx->kind = NGX_NEBULA_ADMIN_REVOKE;
                return NGX_OK;
            default:
                return NGX_HTTP_NOT_ALLOWED;
            }
        }
    }

    return NGX_HTTP_NOT_FOUND;
}


ngx_int_t
ngx_nebula_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t                token, argv[3], *k;
    ngx_nebula_call_ctx_t   *call;
    ngx_nebula_admin_ctx_t  *actx;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->admin_token.len == 0 || nmcf->redis == NULL) {
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    "The admin API is not enabled: it needs "
                                    "nebula_admin_token and nebula_redis.");
    }

    if (r->headers_in.authorization == NULL
        || r->headers_in.authorization->value.len < 8
        || ngx_strncasecmp(r->headers_in.authorization->value.data,
                           (u_char *) "Bearer ", 7) != 0)
    {
        return ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                    "invalid_api_key", NULL,
                                    "The admin API needs \"Authorization: "
                                    "Bearer <admin token>\".");
    }

    token.data = r->headers_in.authorization->value.data + 7;
    token.len = r->headers_in.authorization->value.len - 7;

    if (!ngx_nebula_secret_equal(&token, &nmcf->admin_token)) {
        return ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                    "invalid_api_key", NULL,
                                    "Incorrect admin token.");
    }

    if (r->uri.len == 13
        && ngx_strncmp(r->uri.data, "/admin/health", 13) == 0)
    {
        return ngx_nebula_health_handler(r);
    }

    if (r->uri.len >= 15
        && ngx_strncmp(r->uri.data, "/admin/accounts", 15) == 0)
    {
        return ngx_nebula_accounts_admin(r, r->uri.data + 15,
                                         r->uri.data + r->uri.len);
    }

    /* the usage report: as CSV, or grouped as asked */
    if ((r->uri.len == 16
         && ngx_strncmp(r->uri.data, "/admin/usage.csv", 16) == 0)
        || (r->uri.len == 12
            && ngx_strncmp(r->uri.data, "/admin/usage", 12) == 0
            && ngx_http_arg(r, (u_char *) "group_by", 8, &token) == NGX_OK))
    {
        return ngx_nebula_usage_report(r, r->uri.len == 16);
    }

    call = ngx_nebula_call_start(r, ngx_nebula_admin_answer);
    actx = ngx_pcalloc(r->pool, sizeof(ngx_nebula_admin_ctx_t));
    if (call == NULL || actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->data = actx;

    rc = ngx_nebula_admin_route(r, call);

    switch (rc) {
    case NGX_OK:
        break;
    case NGX_HTTP_NOT_ALLOWED:
        return ngx_nebula_api_error(r, rc, "method_not_allowed", NULL,
                                    "This method is not allowed here.");
    case NGX_HTTP_BAD_REQUEST:
        return ngx_nebula_api_error(r, rc, "invalid_value", "period",
                                    "'period' is YYYY-MM.");
    default:
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    "No such admin endpoint.");
    }

    if (actx->kind == NGX_NEBULA_ADMIN_CREATE
        || actx->kind == NGX_NEBULA_ADMIN_UPDATE)
    {
        rc = ngx_http_read_client_request_body(r,
                                               ngx_nebula_admin_body_handler);
        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    switch (actx->kind) {

    case NGX_NEBULA_ADMIN_GET:
        rc = ngx_nebula_record_get(call);
        break;

    case NGX_NEBULA_ADMIN_REVOKE:
        k = ngx_nebula_record_name(r->pool, "nb:{%s}:key%s", call->id,
                                   (u_char *) "");
        if (k == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[0] = *k;
        ngx_str_set(&argv[1], "status");
        ngx_str_set(&argv[2], "revoked");

        rc = ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_UPDATE, 1, 3,
                                  argv);

        if (rc == NGX_AGAIN) {
            /* the workers close their leases of it (ngx_nebula_lease.c) */
            ngx_nebula_lease_recall(call->id);
        }

        break;

    case NGX_NEBULA_ADMIN_USAGE:
        ngx_str_set(&argv[0], "nb:keys");
        ngx_str_set(&argv[1], "nb:accounts");
        argv[2].data = call->month;
        argv[2].len = 7;

        rc = ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_USAGE, 2, 3, argv);
        break;

    default: /* LIST */
        ngx_str_set(&argv[0], "nb:keys");
        argv[1].data = call->month;
        argv[1].len = 7;

        rc = ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_LIST, 1, 2,
                                  argv);
        break;
    }

    if (rc != NGX_AGAIN) {
        return rc;
    }

    r->main->count++;
    return NGX_DONE;
}
