/*
 * Nebula: the admin API (nebula admin) and GET /v1/key (nebula key).
 *
 *   POST   /admin/keys          {"plan", "name", "limits"?, "models"?}
 *   GET    /admin/keys
 *   GET    /admin/keys/ID
 *   PATCH  /admin/keys/ID       {"plan"?, "name"?, "limits"?, "models"?,
 *                                "status"?}
 *   DELETE /admin/keys/ID       (revokes: the key stays, for its history)
 *   GET    /admin/usage?period=YYYY-MM
 *
 * Each is one script in Redis; the handler waits for it as the access
 * phase does, and a request that goes away cancels its op.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"

#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>


typedef enum {
    NGX_NEBULA_ADMIN_CREATE = 0,
    NGX_NEBULA_ADMIN_LIST,
    NGX_NEBULA_ADMIN_GET,
    NGX_NEBULA_ADMIN_UPDATE,
    NGX_NEBULA_ADMIN_REVOKE,
    NGX_NEBULA_ADMIN_USAGE,
    NGX_NEBULA_ADMIN_SELF,           /* GET /v1/key */
    NGX_NEBULA_ADMIN_TAGS            /* GET /api/tags */
} ngx_nebula_admin_op_e;


typedef struct {
    ngx_http_request_t       *r;
    ngx_nebula_redis_op_t    *op;
    ngx_nebula_redis_op_t    *list_op;      /* a creation's SADD */
    ngx_uint_t                waiting;      /* a creation's replies to come */
    ngx_int_t                 created;      /* 1: created and listed */
    ngx_uint_t                failed;       /* a creation's reply lost */
    ngx_nebula_admin_op_e     kind;
    ngx_uint_t                then_get;     /* an update answers the key */
    u_char                    id[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    digest[65];
    u_char                    month[8];
    time_t                    now;
    u_char                    secret[NGX_NEBULA_KEY_SECRET_LEN];
    ngx_str_t                 plan;
    ngx_str_t                 name;
} ngx_nebula_admin_ctx_t;


static void ngx_nebula_admin_body_handler(ngx_http_request_t *r);
static void ngx_nebula_admin_reply(void *data, redisReply *reply);
static ngx_int_t ngx_nebula_admin_answer(ngx_http_request_t *r,
    ngx_nebula_admin_ctx_t *actx, redisReply *reply);
static void ngx_nebula_admin_created(void *data, redisReply *reply);
static void ngx_nebula_admin_listed(void *data, redisReply *reply);
static void ngx_nebula_admin_write_models(ngx_http_request_t *r,
    ngx_nebula_json_t *j, redisReply *reply);
static void ngx_nebula_tags_write(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *k);


static ngx_int_t
ngx_nebula_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *message)
{
    return ngx_nebula_send_error(r, status,
                                 status >= 500 ? "api_error"
                                 : status == NGX_HTTP_FORBIDDEN
                                   ? "permission_error"
                                   : "invalid_request_error",
                                 code, param, message);
}


static void
ngx_nebula_admin_cleanup(void *data)
{
    ngx_nebula_admin_ctx_t  *actx = data;

    if (actx->op) {
        ngx_nebula_redis_cancel(actx->op);
        actx->op = NULL;
    }

    if (actx->list_op) {
        ngx_nebula_redis_cancel(actx->list_op);
        actx->list_op = NULL;
    }
}


/*
 * A new key is two commands: KEY_CREATE writes nb:{ID}:key, and a plain
 * SADD puts the ID in nb:keys, sent right after on the same connection.
 * One script may not touch both (two hash slots: Redis Cluster refuses
 * it).  The 201 waits for both replies, in whichever order they come (a
 * NOSCRIPT sends the script again after the SADD).
 */
static ngx_int_t
ngx_nebula_admin_create(ngx_http_request_t *r, ngx_nebula_admin_ctx_t *actx,
    ngx_str_t *argv)
{
    ngx_str_t  cmd[3];

    actx->op = ngx_nebula_redis_eval(NGX_NEBULA_SCRIPT_KEY_CREATE, 1, 10,
                                     argv, ngx_nebula_admin_created, actx);

    if (actx->op) {
        ngx_str_set(&cmd[0], "SADD");
        ngx_str_set(&cmd[1], "nb:keys");
        cmd[2].data = actx->id;
        cmd[2].len = NGX_NEBULA_KEY_ID_LEN;

        actx->list_op = ngx_nebula_redis_command(3, cmd,
                                                 ngx_nebula_admin_listed,
                                                 actx);
        if (actx->list_op == NULL) {
            ngx_nebula_redis_cancel(actx->op);
            actx->op = NULL;
        }
    }

    if (actx->op == NULL) {
        return ngx_nebula_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "quota_store_unavailable", NULL,
                                      "The key store is unavailable; "
                                      "please retry shortly.");
    }

    actx->waiting = 2;
    actx->created = 1;

    return NGX_AGAIN;
}


static void
ngx_nebula_admin_create_done(ngx_nebula_admin_ctx_t *actx, redisReply *reply)
{
    ngx_int_t            rc;
    redisReply           answer;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (reply == NULL) {
        actx->failed = 1;

    } else if (reply->type != REDIS_REPLY_INTEGER) {
        actx->created = 0;
    }

    if (--actx->waiting) {
        return;
    }

    r = actx->r;
    c = r->connection;

    if (actx->failed) {
        rc = ngx_nebula_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "quota_store_unavailable", NULL,
                                    "The key store is unavailable; please "
                                    "retry shortly.");

    } else {
        ngx_memzero(&answer, sizeof(redisReply));
        answer.type = REDIS_REPLY_INTEGER;
        answer.integer = actx->created;
        rc = ngx_nebula_admin_answer(r, actx, &answer);
    }

    if (rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_nebula_admin_created(void *data, redisReply *reply)
{
    ngx_nebula_admin_ctx_t  *actx = data;

    actx->op = NULL;

    /* 0: the ID is taken already (a collision of 64 random bits) */
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer != 1) {
        actx->created = 0;
    }

    ngx_nebula_admin_create_done(actx, reply);
}


static void
ngx_nebula_admin_listed(void *data, redisReply *reply)
{
    ngx_nebula_admin_ctx_t  *actx = data;

    actx->list_op = NULL;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, actx->r->connection->log, 0,
                      "nebula: redis refused to list a new key: %s",
                      reply->str);
    }

    ngx_nebula_admin_create_done(actx, reply);
}


static ngx_int_t
ngx_nebula_admin_eval(ngx_http_request_t *r, ngx_nebula_admin_ctx_t *actx,
    ngx_nebula_script_e script, ngx_uint_t nkeys, ngx_uint_t argc,
    ngx_str_t *argv)
{
    actx->op = ngx_nebula_redis_eval(script, nkeys, argc, argv,
                                     ngx_nebula_admin_reply, actx);

    if (actx->op == NULL) {
        return ngx_nebula_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "quota_store_unavailable", NULL,
                                      "The key store is unavailable; "
                                      "please retry shortly.");
    }

    return NGX_AGAIN;
}


static ngx_str_t *
ngx_nebula_key_name(ngx_pool_t *pool, const char *fmt, u_char *id,
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


/* KEY_GET for one key: its record, the month's usage, per model */
static ngx_int_t
ngx_nebula_admin_get(ngx_http_request_t *r, ngx_nebula_admin_ctx_t *actx)
{
    u_char     minute[NGX_TIME_T_LEN + 1];
    ngx_str_t  argv[4], *k;

    k = ngx_nebula_key_name(r->pool, "nb:{%s}:key%s", actx->id,
                            (u_char *) "");
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[0] = *k;

    k = ngx_nebula_key_name(r->pool, "nb:{%s}:u:%s", actx->id, actx->month);
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[1] = *k;

    k = ngx_nebula_key_name(r->pool, "nb:{%s}:m:%s", actx->id, actx->month);
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[2] = *k;

    *ngx_sprintf(minute, "%T", actx->now / 60) = '\0';
    k = ngx_nebula_key_name(r->pool, "nb:{%s}:r:%s", actx->id, minute);
    if (k == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    argv[3] = *k;

    return ngx_nebula_admin_eval(r, actx, NGX_NEBULA_SCRIPT_KEY_GET, 4, 4,
                                 argv);
}


static ngx_nebula_plan_t *
ngx_nebula_find_plan(ngx_nebula_main_conf_t *nmcf, u_char *name, size_t len)
{
    ngx_uint_t          i;
    ngx_nebula_plan_t  *plan;

    plan = nmcf->plans.elts;

    for (i = 0; i < nmcf->plans.nelts; i++) {
        if (plan[i].name.len == len
            && ngx_strncmp(plan[i].name.data, name, len) == 0)
        {
            return &plan[i];
        }
    }

    return NULL;
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


/* a key's limits and what is left, from KEY_GET's reply, as ADMIT says */
static void
ngx_nebula_key_limits(ngx_http_request_t *r, redisReply *reply, time_t now,
    nebula_admit_t *a)
{
    int64_t                  used;
    const redisReply        *k, *u, *v;
    ngx_nebula_plan_t       *plan;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    k = reply->element[0];
    u = reply->element[1];

    v = nebula_reply_field(k, "plan");
    plan = (v && v->type == REDIS_REPLY_STRING)
           ? ngx_nebula_find_plan(nmcf, (u_char *) v->str, v->len) : NULL;

    ngx_memzero(a, sizeof(nebula_admit_t));
    a->status = NEBULA_ADMIT_OK;

    a->in_limit = nebula_reply_int(k, "in_limit",
                                   plan ? (int64_t) plan->input_tokens : 0);
    a->out_limit = nebula_reply_int(k, "out_limit",
                                    plan ? (int64_t) plan->output_tokens : 0);
    a->rpm = nebula_reply_int(k, "rpm_limit",
                              plan ? (int64_t) plan->requests_per_minute : 0);

    a->in_left = a->in_limit - nebula_reply_int(u, "in", 0)
                 - nebula_reply_int(u, "rin", 0);
    a->out_left = a->out_limit - nebula_reply_int(u, "out", 0)
                  - nebula_reply_int(u, "rout", 0);

    used = reply->element[3]->type == REDIS_REPLY_INTEGER
           ? reply->element[3]->integer : 0;
    a->rpm_left = ngx_max(a->rpm - used, 0);

    (void) now;
}


/*
 * The requests whose usage the pool did not report and the tokens the
 * gateway counted for them (est_req, est_in, est_out of the SETTLE
 * script): billing tells them from the pool's own counts.
 */
static void
ngx_nebula_admin_write_est_counts(ngx_nebula_json_t *j, int64_t *v)
{
    ngx_nebula_json_lit(j, ",\"estimated_requests\":");
    ngx_nebula_json_int(j, v[0]);
    ngx_nebula_json_lit(j, ",\"estimated_input_tokens\":");
    ngx_nebula_json_int(j, v[1]);
    ngx_nebula_json_lit(j, ",\"estimated_output_tokens\":");
    ngx_nebula_json_int(j, v[2]);
}


/* "MODEL|est_req": nebula_model keeps names under NEBULA_MODEL_NAME_MAX */
#define NGX_NEBULA_ADMIN_FIELD_MAX  (NEBULA_MODEL_NAME_MAX + 16)


/* the same from a usage hash; prefix is "MODEL|" in a model hash */
static void
ngx_nebula_admin_write_estimated(ngx_nebula_json_t *j, const redisReply *h,
    const char *prefix)
{
    int64_t      v[3];
    ngx_uint_t   i;
    u_char       name[NGX_NEBULA_ADMIN_FIELD_MAX];

    static const char  *field[3] = { "est_req", "est_in", "est_out" };

    for (i = 0; i < 3; i++) {
        v[i] = 0;

        if (ngx_strlen(prefix) + ngx_strlen(field[i]) < sizeof(name)) {
            *ngx_sprintf(name, "%s%s", prefix, field[i]) = '\0';
            v[i] = nebula_reply_int(h, (char *) name, 0);
        }
    }

    ngx_nebula_admin_write_est_counts(j, v);
}


/* one key as the admin API and /v1/key show it */
static void
ngx_nebula_admin_write_key(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *k, const redisReply *u, const redisReply *m,
    u_char *month, time_t now, ngx_uint_t self)
{
    u_char                  *p, *last, *s;
    int64_t                  in_limit, out_limit, rpm, in_used, out_used;
    int64_t                  rin, rout;
    ngx_tm_t                 tm;
    ngx_uint_t               first;
    const redisReply        *v;
    ngx_nebula_plan_t       *plan;
    ngx_nebula_main_conf_t  *nmcf;
    u_char                   buf[32];
    size_t                   i;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    v = nebula_reply_field(k, "plan");
    plan = (v && v->type == REDIS_REPLY_STRING)
           ? ngx_nebula_find_plan(nmcf, (u_char *) v->str, v->len) : NULL;

    in_limit = nebula_reply_int(k, "in_limit",
                                plan ? (int64_t) plan->input_tokens : 0);
    out_limit = nebula_reply_int(k, "out_limit",
                                 plan ? (int64_t) plan->output_tokens : 0);
    rpm = nebula_reply_int(k, "rpm_limit",
                           plan ? (int64_t) plan->requests_per_minute : 0);

    in_used = nebula_reply_int(u, "in", 0);
    out_used = nebula_reply_int(u, "out", 0);
    rin = nebula_reply_int(u, "rin", 0);
    rout = nebula_reply_int(u, "rout", 0);

    ngx_nebula_json_lit(j, "{\"id\":");
    ngx_nebula_json_field_str(j, k, "id");
    ngx_nebula_json_lit(j, ",\"name\":");
    ngx_nebula_json_field_str(j, k, "name");
    ngx_nebula_json_lit(j, ",\"plan\":");
    ngx_nebula_json_field_str(j, k, "plan");

    if (!self) {
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

        while (p < last) {
            while (p < last && *p == ' ') {
                p++;
            }

            s = p;

            while (p < last && *p != ' ') {
                p++;
            }

            if (p > s) {
                if (!first) {
                    ngx_nebula_json_lit(j, ",");
                }

                first = 0;
                ngx_nebula_json_str(j, s, p - s);
            }
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
    ngx_nebula_admin_write_estimated(j, u, "");

    if (!self) {
        ngx_nebula_json_lit(j, ",\"reserved_input_tokens\":");
        ngx_nebula_json_int(j, rin);
        ngx_nebula_json_lit(j, ",\"reserved_output_tokens\":");
        ngx_nebula_json_int(j, rout);
    }

    ngx_nebula_json_lit(j, "},\"remaining\":{\"input_tokens\":");
    ngx_nebula_json_int(j, ngx_max(in_limit - in_used - rin, 0));
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_json_int(j, ngx_max(out_limit - out_used - rout, 0));
    ngx_nebula_json_lit(j, "}");

    if (self) {
        /* the first second of the next month, UTC */
        ngx_gmtime(now, &tm);
        ngx_nebula_json_lit(j, ",\"reset_at\":");
        p = ngx_sprintf(buf, "%4d-%02d-01T00:00:00Z",
                        tm.ngx_tm_year + (tm.ngx_tm_mon == 12),
                        tm.ngx_tm_mon % 12 + 1);
        ngx_nebula_json_str(j, buf, p - buf);
    }

    if (m && m->type == REDIS_REPLY_ARRAY && m->elements >= 2) {
        /* "MODEL|in", "MODEL|out", ...: grouped by model */
        ngx_nebula_json_lit(j, ",\"usage_by_model\":{");
        first = 1;

        for (i = 0; i + 1 < m->elements; i += 2) {
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
            ngx_nebula_json_usd(j,
                                (uint64_t) nebula_reply_int(m, (char *) p, 0));
            *ngx_cpymem(last, "|", 1) = '\0';
            ngx_nebula_admin_write_estimated(j, m, (char *) p);
            ngx_nebula_json_lit(j, "}");
        }

        ngx_nebula_json_lit(j, "}");
    }

    ngx_nebula_json_lit(j, "}");
}


static ngx_int_t
ngx_nebula_admin_answer(ngx_http_request_t *r, ngx_nebula_admin_ctx_t *actx,
    redisReply *reply)
{
    size_t                   i;
    redisReply              *e;
    ngx_nebula_json_t        j;
    const redisReply        *u;
    uint64_t                 tin, tout, treq, tcost;
    int64_t                  est[3];
    ngx_uint_t               first;
    nebula_admit_t           a;

    ngx_nebula_json_init(&j, r->pool);

    switch (actx->kind) {

    case NGX_NEBULA_ADMIN_CREATE:
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer != 1) {
            break;
        }

        ngx_nebula_json_lit(&j, "{\"id\":");
        ngx_nebula_json_str(&j, actx->id, NGX_NEBULA_KEY_ID_LEN);
        ngx_nebula_json_lit(&j, ",\"key\":");
        ngx_nebula_json_str(&j, actx->secret, NGX_NEBULA_KEY_SECRET_LEN);
        ngx_nebula_json_lit(&j, ",\"plan\":");
        ngx_nebula_json_str(&j, actx->plan.data, actx->plan.len);
        ngx_nebula_json_lit(&j, ",\"name\":");
        ngx_nebula_json_str(&j, actx->name.data, actx->name.len);
        ngx_nebula_json_lit(&j, ",\"created\":");
        ngx_nebula_json_int(&j, actx->now);
        ngx_nebula_json_lit(&j, "}");

        return ngx_nebula_json_send(r, &j, NGX_HTTP_CREATED);

    case NGX_NEBULA_ADMIN_UPDATE:
    case NGX_NEBULA_ADMIN_REVOKE:
        if (reply->type != REDIS_REPLY_INTEGER) {
            break;
        }

        if (reply->integer == 0) {
            return ngx_nebula_admin_error(r, NGX_HTTP_NOT_FOUND,
                                          "key_not_found", "id",
                                          "No key has this id.");
        }

        actx->kind = NGX_NEBULA_ADMIN_GET;
        return ngx_nebula_admin_get(r, actx);

    case NGX_NEBULA_ADMIN_GET:
    case NGX_NEBULA_ADMIN_SELF:
    case NGX_NEBULA_ADMIN_TAGS:
        if (reply->type != REDIS_REPLY_ARRAY) {
            break;
        }

        if (reply->elements == 0) {
            goto unknown;
        }

        if (reply->elements != 4) {
            break;
        }

        if (actx->kind != NGX_NEBULA_ADMIN_GET) {
            e = (redisReply *) nebula_reply_field(reply->element[0], "digest");
            if (e == NULL || e->type != REDIS_REPLY_STRING || e->len != 64
                || ngx_strncmp(e->str, actx->digest, 64) != 0)
            {
                goto unknown;
            }

            e = (redisReply *) nebula_reply_field(reply->element[0], "status");
            if (e == NULL || e->type != REDIS_REPLY_STRING || e->len != 6
                || ngx_strncmp(e->str, "active", 6) != 0)
            {
                return ngx_nebula_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                              "invalid_api_key", NULL,
                                              "This API key has been "
                                              "revoked.");
            }

            /* an authenticated answer: the limits, as on every one */
            ngx_nebula_key_limits(r, reply, actx->now, &a);

            if (ngx_nebula_ratelimit_headers(r, &a, actx->now) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (actx->kind == NGX_NEBULA_ADMIN_TAGS) {
                ngx_nebula_tags_write(r, &j, reply->element[0]);
                return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
            }

            ngx_nebula_json_lit(&j, "{\"data\":");
        }

        ngx_nebula_admin_write_key(r, &j, reply->element[0],
                                   reply->element[1], reply->element[2],
                                   actx->month, actx->now,
                                   actx->kind == NGX_NEBULA_ADMIN_SELF);

        if (actx->kind == NGX_NEBULA_ADMIN_SELF) {
            ngx_nebula_json_lit(&j, "}");
        }

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

            ngx_nebula_admin_write_key(r, &j, e->element[0], e->element[1],
                                       NULL, actx->month, actx->now, 0);
        }

        ngx_nebula_json_lit(&j, "]}");

        return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);

    case NGX_NEBULA_ADMIN_USAGE:
        if (reply->type != REDIS_REPLY_ARRAY) {
            break;
        }

        ngx_nebula_json_lit(&j, "{\"period\":");
        ngx_nebula_json_str(&j, actx->month, 7);
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
            ngx_nebula_admin_write_estimated(&j, u, "");
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
        ngx_nebula_admin_write_est_counts(&j, est);
        ngx_nebula_json_lit(&j, "}}");

        return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "nebula: unexpected reply from an admin script%s%s",
                  reply->type == REDIS_REPLY_ERROR ? ": " : "",
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "");

    return ngx_nebula_admin_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL,
                                  NULL, "The key store answered oddly.");

unknown:

    if (actx->kind != NGX_NEBULA_ADMIN_GET) {
        return ngx_nebula_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                      "invalid_api_key", NULL,
                                      "Incorrect API key provided.");
    }

    return ngx_nebula_admin_error(r, NGX_HTTP_NOT_FOUND, "key_not_found",
                                  "id", "No key has this id.");
}


static void
ngx_nebula_admin_reply(void *data, redisReply *reply)
{
    ngx_nebula_admin_ctx_t  *actx = data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = actx->r;
    c = r->connection;
    actx->op = NULL;

    if (reply == NULL) {
        rc = ngx_nebula_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "quota_store_unavailable", NULL,
                                    "The key store is unavailable; please "
                                    "retry shortly.");

    } else {
        rc = ngx_nebula_admin_answer(r, actx, reply);
    }

    if (rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
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
        ngx_nebula_admin_write_est_counts(j, &v[4]);
        ngx_nebula_json_lit(j, "}");
    }

    ngx_nebula_json_lit(j, "]");
}


/*
 * An admin body is read twice.  yajl_tree_parse() turns comments on, and
 * yajl_tree_free() goes down its tree one call a level, so a body some
 * 300,000 levels deep runs a worker off its stack.  No scan of the bytes
 * can tell how deep a body is without lexing it as yajl does (a quote in
 * a comment hid the rest of the body from the one that was here), so
 * yajl's own parser reads it first, comments off (its default, and JSON's:
 * RFC 8259 has none), counting the levels and stopping past the limit.
 * Only a body it accepts whole goes to yajl_tree_parse(), which then sees
 * no comment and no level deeper.
 */
#define NGX_NEBULA_ADMIN_MAX_DEPTH  8


static int
ngx_nebula_admin_scan_open(void *ctx)
{
    ngx_uint_t  *depth = ctx;

    /* 0 stops yajl_parse() there: yajl_status_client_canceled */
    return ++*depth <= NGX_NEBULA_ADMIN_MAX_DEPTH;
}


static int
ngx_nebula_admin_scan_close(void *ctx)
{
    ngx_uint_t  *depth = ctx;

    (*depth)--;

    return 1;
}


static yajl_callbacks  ngx_nebula_admin_scan_callbacks = {
    NULL, NULL, NULL, NULL, NULL, NULL,
    ngx_nebula_admin_scan_open, NULL, ngx_nebula_admin_scan_close,
    ngx_nebula_admin_scan_open, ngx_nebula_admin_scan_close
};


/*
 * NGX_OK: one JSON value, no deeper than the limit; NGX_DECLINED: deeper;
 * NGX_ABORT: not JSON (a comment included); NGX_ERROR: no memory
 */
static ngx_int_t
ngx_nebula_admin_scan(u_char *body, size_t len)
{
    ngx_uint_t   depth;
    yajl_status  st;
    yajl_handle  h;

    depth = 0;

    h = yajl_alloc(&ngx_nebula_admin_scan_callbacks, NULL, &depth);
    if (h == NULL) {
        return NGX_ERROR;
    }

    st = yajl_parse(h, body, len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }

    yajl_free(h);

    switch (st) {
    case yajl_status_ok:
        return NGX_OK;
    case yajl_status_client_canceled:
        return NGX_DECLINED;
    default:
        return NGX_ABORT;
    }
}


/*
 * Limits in a body, {"input_tokens": N|null, ...}, as the values of the
 * record's fields: a limit the object names gets its number, or "" for
 * null (the plan's: KEY_UPDATE deletes the field); one it does not name
 * keeps a NULL data, and a PATCH leaves that field as it is, as a JSON
 * merge patch (RFC 7396) would.  NGX_DECLINED: an invalid or unknown
 * limit, named in *bad; NGX_ERROR: no memory.
 */
static ngx_int_t
ngx_nebula_admin_limits(ngx_http_request_t *r, yajl_val limits,
    ngx_str_t *out, const char **bad)
{
    u_char      *p;
    ngx_uint_t   i;
    yajl_val     v;

    static const char  *names[3] = { "input_tokens", "output_tokens",
                                     "requests_per_minute" };

    for (i = 0; i < 3; i++) {
        const char  *path[2] = { names[i], NULL };

        ngx_str_null(&out[i]);

        v = yajl_tree_get(limits, path, yajl_t_any);

        if (v == NULL) {
            continue;
        }

        if (YAJL_IS_NULL(v)) {
            ngx_str_set(&out[i], "");
            continue;
        }

        if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0
            || YAJL_GET_INTEGER(v) > 1000000000000000LL)
        {
            *bad = names[i];
            return NGX_DECLINED;
        }

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        out[i].data = p;
        out[i].len = ngx_sprintf(p, "%L", (int64_t) YAJL_GET_INTEGER(v)) - p;
    }

    /* keys in the object that are none of ours */
    for (i = 0; i < limits->u.object.len; i++) {
        if (ngx_strcmp(limits->u.object.keys[i], names[0]) != 0
            && ngx_strcmp(limits->u.object.keys[i], names[1]) != 0
            && ngx_strcmp(limits->u.object.keys[i], names[2]) != 0)
        {
            *bad = limits->u.object.keys[i];
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/*
 * Models in a body, ["name", ...], into one space-separated string.
 * NGX_DECLINED: a model not in the catalog, in *bad; NGX_ABORT: an
 * element that is not a string; NGX_ERROR: no memory.
 */
static ngx_int_t
ngx_nebula_admin_models(ngx_http_request_t *r, yajl_val models,
    ngx_str_t *out, const char **bad)
{
    u_char                  *p;
    size_t                   len, n;
    ngx_uint_t               i;
    yajl_val                 v;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    len = 0;

    for (i = 0; i < models->u.array.len; i++) {
        v = models->u.array.values[i];

        if (!YAJL_IS_STRING(v)) {
            return NGX_ABORT;
        }

        n = ngx_strlen(v->u.string);

        if (ngx_nebula_find_model(nmcf, (u_char *) v->u.string, n) == NULL) {
            *bad = v->u.string;
            return NGX_DECLINED;
        }

        len += n + 1;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    for (i = 0; i < models->u.array.len; i++) {
        if (i) {
            *p++ = ' ';
        }

        v = models->u.array.values[i];
        p = ngx_cpymem(p, v->u.string, ngx_strlen(v->u.string));
    }

    out->len = p - out->data;

    return NGX_OK;
}


static ngx_str_t *
ngx_nebula_admin_str(ngx_pool_t *pool, const char *s)
{
    ngx_str_t  *str;

    str = ngx_palloc(pool, sizeof(ngx_str_t));
    if (str == NULL) {
        return NULL;
    }

    str->len = ngx_strlen(s);
    str->data = ngx_pnalloc(pool, str->len + 1);
    if (str->data == NULL) {
        return NULL;
    }

    ngx_memcpy(str->data, s, str->len + 1);

    return str;
}


/*
 * POST /admin/keys and PATCH /admin/keys/ID, once their body is read;
 * body has len bytes and a NUL after them
 */
static ngx_int_t
ngx_nebula_admin_write(ngx_http_request_t *r, ngx_nebula_admin_ctx_t *actx,
    u_char *body, size_t len)
{
    char                     err[128];
    const char              *bad;
    ngx_int_t                rc;
    ngx_uint_t               n, i, create;
    ngx_str_t                argv[16], limits[3], models, *s;
    yajl_val                 root, plan, name, lim, mod, status;
    ngx_nebula_main_conf_t  *nmcf;
    u_char                   msg[256];

    static const char  *p_plan[] = { "plan", NULL };
    static const char  *p_name[] = { "name", NULL };
    static const char  *p_limits[] = { "limits", NULL };
    static const char  *p_models[] = { "models", NULL };
    static const char  *p_status[] = { "status", NULL };
    static const char  *fields[3] = { "in_limit", "out_limit", "rpm_limit" };

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);
    create = (actx->kind == NGX_NEBULA_ADMIN_CREATE);

    rc = ngx_nebula_admin_scan(body, len);

    switch (rc) {
    case NGX_OK:
        break;
    case NGX_DECLINED:
        return ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "The body nests too deep.");
    case NGX_ABORT:
        return ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "The body must be one JSON "
                                      "object, without comments.");
    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* yajl_tree_parse() reads up to a NUL; the scan refuses one in JSON */
    if (ngx_strlen(body) != len) {
        return ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "The body must be a JSON object.");
    }

    root = yajl_tree_parse((char *) body, err, sizeof(err));

    if (root == NULL) {
        /* what the scan accepted is JSON: yajl ran out of memory */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "nebula: yajl_tree_parse() failed on an admin body: %s",
                      err);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!YAJL_IS_OBJECT(root)) {
        yajl_tree_free(root);
        return ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_json",
                                      NULL, "The body must be a JSON object.");
    }

    plan = yajl_tree_get(root, p_plan, yajl_t_any);
    name = yajl_tree_get(root, p_name, yajl_t_any);
    lim = yajl_tree_get(root, p_limits, yajl_t_any);
    mod = yajl_tree_get(root, p_models, yajl_t_any);
    status = yajl_tree_get(root, p_status, yajl_t_any);

    rc = NGX_OK;
    bad = NULL;

    if (plan == NULL && create) {
        rc = ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "missing_field",
                                    "plan", "Missing required parameter: "
                                    "'plan'.");
        goto done;
    }

    if (plan && (!YAJL_IS_STRING(plan)
                 || ngx_nebula_find_plan(nmcf, (u_char *) plan->u.string,
                                         ngx_strlen(plan->u.string))
                    == NULL))
    {
        rc = ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "plan", "Unknown plan: see the "
                                    "nebula_plan lines of nginx.conf.");
        goto done;
    }

    if (name && (!YAJL_IS_STRING(name) || ngx_strlen(name->u.string) > 100)) {
        rc = ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "name", "'name' must be a string of at "
                                    "most 100 bytes.");
        goto done;
    }

    for (i = 0; i < 3; i++) {
        ngx_str_null(&limits[i]);
    }

    if (lim && YAJL_IS_NULL(lim)) {
        /* "limits": null removes the member: every limit is the plan's */
        for (i = 0; i < 3; i++) {
            ngx_str_set(&limits[i], "");
        }

    } else if (lim) {
        rc = YAJL_IS_OBJECT(lim) ? ngx_nebula_admin_limits(r, lim, limits,
                                                           &bad)
                                 : NGX_DECLINED;

        if (rc == NGX_ERROR) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }

        if (rc != NGX_OK) {
            *ngx_snprintf(msg, sizeof(msg) - 1, "Invalid limit '%s': a "
                          "non-negative integer, or null for the plan's.",
                          bad ? bad : "limits") = '\0';
            rc = ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                        "invalid_value", "limits",
                                        (char *) msg);
            goto done;
        }
    }

    ngx_str_null(&models);

    if (mod && !YAJL_IS_NULL(mod)) {
        rc = YAJL_IS_ARRAY(mod)
             ? ngx_nebula_admin_models(r, mod, &models, &bad) : NGX_ABORT;

        if (rc == NGX_ERROR) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }

        if (rc != NGX_OK) {
            *ngx_snprintf(msg, sizeof(msg) - 1, rc == NGX_DECLINED
                          ? "Unknown model '%s': models must be in the "
                            "catalog."
                          : "'models' must be an array of model names.%s",
                          rc == NGX_DECLINED ? bad : "") = '\0';
            rc = ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                        "invalid_value", "models",
                                        (char *) msg);
            goto done;
        }
    }

    if (status && !(YAJL_IS_STRING(status)
                     && (ngx_strcmp(status->u.string, "active") == 0
                         || ngx_strcmp(status->u.string, "revoked") == 0)))
    {
        rc = ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "status", "'status' is \"active\" or "
                                    "\"revoked\".");
        goto done;
    }

    if (create && status) {
        rc = ngx_nebula_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "status", "A new key is active.");
        goto done;
    }

    /* from here on a NULL is an allocation that failed */
    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (create) {
        if (ngx_nebula_key_generate(actx->secret) != NGX_OK) {
            goto done;
        }

        {
            ngx_str_t  secret = { NGX_NEBULA_KEY_SECRET_LEN, actx->secret };

            if (ngx_nebula_key_digest(&secret, actx->digest, actx->id)
                != NGX_OK)
            {
                goto done;
            }
        }

        /* the record's name: the id the digest gave */
        s = ngx_nebula_key_name(r->pool, "nb:{%s}:key%s", actx->id,
                                (u_char *) "");
        if (s == NULL) {
            goto done;
        }

        argv[0] = *s;

        s = ngx_nebula_admin_str(r->pool, plan->u.string);
        if (s == NULL) {
            goto done;
        }
        actx->plan = *s;

        s = ngx_nebula_admin_str(r->pool, name ? name->u.string : "");
        if (s == NULL) {
            goto done;
        }
        actx->name = *s;

        argv[1].data = actx->id;
        argv[1].len = NGX_NEBULA_KEY_ID_LEN;
        argv[2].data = actx->digest;
        argv[2].len = 64;
        argv[3] = actx->name;
        argv[4] = actx->plan;
        argv[5].data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (argv[5].data == NULL) {
            goto done;
        }
        argv[5].len = ngx_sprintf(argv[5].data, "%T", actx->now)
                      - argv[5].data;
        argv[6] = limits[0];
        argv[7] = limits[1];
        argv[8] = limits[2];
        argv[9] = models;

        rc = ngx_nebula_admin_create(r, actx, argv);
        goto done;
    }

    /* PATCH: only what the body names changes */

    s = ngx_nebula_key_name(r->pool, "nb:{%s}:key%s", actx->id,
                            (u_char *) "");
    if (s == NULL) {
        goto done;
    }

    argv[0] = *s;
    n = 1;

    if (plan) {
        s = ngx_nebula_admin_str(r->pool, plan->u.string);
        if (s == NULL) {
            goto done;
        }

        ngx_str_set(&argv[n], "plan");
        argv[n + 1] = *s;
        n += 2;
    }

    if (name) {
        s = ngx_nebula_admin_str(r->pool, name->u.string);
        if (s == NULL) {
            goto done;
        }

        ngx_str_set(&argv[n], "name");
        argv[n + 1] = *s;
        n += 2;
    }

    for (i = 0; i < 3; i++) {
        if (limits[i].data == NULL) {
            /* a limit the body does not name stays as it is */
            continue;
        }

        argv[n].data = (u_char *) fields[i];
        argv[n].len = ngx_strlen(fields[i]);
        argv[n + 1] = limits[i];
        n += 2;
    }

    if (mod) {
        ngx_str_set(&argv[n], "models");
        argv[n + 1] = models;
        n += 2;
    }

    if (status) {
        s = ngx_nebula_admin_str(r->pool, status->u.string);
        if (s == NULL) {
            goto done;
        }

        ngx_str_set(&argv[n], "status");
        argv[n + 1] = *s;
        n += 2;
    }

    rc = ngx_nebula_admin_eval(r, actx, NGX_NEBULA_SCRIPT_KEY_UPDATE, 1, n,
                               argv);

done:

    yajl_tree_free(root);

    return rc;
}


static void
ngx_nebula_admin_body_handler(ngx_http_request_t *r)
{
    u_char                  *body;
    size_t                   len;
    ngx_int_t                rc;
    ngx_buf_t               *b;
    ngx_chain_t             *cl;
    ngx_nebula_ctx_t        *ctx;
    ngx_nebula_admin_ctx_t  *actx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);
    actx = ctx->admin;

    if (r->request_body == NULL || r->request_body->temp_file) {
        /* admin bodies are small: client_body_buffer_size holds them */
        ngx_http_finalize_request(r,
            ngx_nebula_admin_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "request_too_large", NULL,
                                   "The body is too large."));
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    body = ngx_pnalloc(r->pool, len + 1);
    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        ngx_memcpy(body + len, b->pos, b->last - b->pos);
        len += b->last - b->pos;
    }

    body[len] = '\0';

    rc = ngx_nebula_admin_write(r, actx, body, len);

    if (rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }
}


/* the path after /admin/: "keys", "keys/ID" or "usage" */
static ngx_int_t
ngx_nebula_admin_route(ngx_http_request_t *r, ngx_nebula_admin_ctx_t *actx)
{
    u_char     *p, *last;
    ngx_str_t   period;
    size_t      i;

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

            ngx_memcpy(actx->month, period.data, 7);
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

            ngx_memcpy(actx->id, p, NGX_NEBULA_KEY_ID_LEN);
            actx->id[NGX_NEBULA_KEY_ID_LEN] = '\0';

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


static ngx_nebula_admin_ctx_t *
ngx_nebula_admin_ctx(ngx_http_request_t *r)
{
    ngx_nebula_ctx_t        *ctx;
    ngx_pool_cleanup_t      *cln;
    ngx_nebula_admin_ctx_t  *actx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_nebula_ctx_t));
    actx = ngx_pcalloc(r->pool, sizeof(ngx_nebula_admin_ctx_t));
    if (ctx == NULL || actx == NULL) {
        return NULL;
    }

    /* the module's ctx type throughout: the filters read it */
    ctx->admin = actx;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_nebula_admin_cleanup;
    cln->data = actx;

    actx->r = r;
    actx->now = ngx_nebula_now(r);
    *ngx_nebula_month(actx->month, actx->now) = '\0';

    ngx_http_set_ctx(r, ctx, ngx_http_nebula_module);

    return actx;
}


ngx_int_t
ngx_nebula_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t                token, argv[2], *k;
    ngx_nebula_admin_ctx_t  *actx;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->admin_token.len == 0 || nmcf->redis == NULL) {
        return ngx_nebula_admin_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                      "The admin API is not enabled: it "
                                      "needs nebula_admin_token and "
                                      "nebula_redis.");
    }

    if (r->headers_in.authorization == NULL
        || r->headers_in.authorization->value.len < 8
        || ngx_strncasecmp(r->headers_in.authorization->value.data,
                           (u_char *) "Bearer ", 7) != 0)
    {
        return ngx_nebula_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                      "invalid_api_key", NULL,
                                      "The admin API needs \"Authorization: "
                                      "Bearer <admin token>\".");
    }

    token.data = r->headers_in.authorization->value.data + 7;
    token.len = r->headers_in.authorization->value.len - 7;

    if (!ngx_nebula_secret_equal(&token, &nmcf->admin_token)) {
        return ngx_nebula_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                      "invalid_api_key", NULL,
                                      "Incorrect admin token.");
    }

    actx = ngx_nebula_admin_ctx(r);
    if (actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_nebula_admin_route(r, actx);

    switch (rc) {
    case NGX_OK:
        break;
    case NGX_HTTP_NOT_ALLOWED:
        return ngx_nebula_admin_error(r, rc, "method_not_allowed", NULL,
                                      "This method is not allowed here.");
    case NGX_HTTP_BAD_REQUEST:
        return ngx_nebula_admin_error(r, rc, "invalid_value", "period",
                                      "'period' is YYYY-MM.");
    default:
        return ngx_nebula_admin_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                      NULL, "No such admin endpoint.");
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
        rc = ngx_nebula_admin_get(r, actx);
        break;

    case NGX_NEBULA_ADMIN_REVOKE:
        k = ngx_nebula_key_name(r->pool, "nb:{%s}:key%s", actx->id,
                                (u_char *) "");
        if (k == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        {
            ngx_str_t  av[3];

            av[0] = *k;
            ngx_str_set(&av[1], "status");
            ngx_str_set(&av[2], "revoked");

            rc = ngx_nebula_admin_eval(r, actx, NGX_NEBULA_SCRIPT_KEY_UPDATE,
                                       1, 3, av);
        }
        break;

    default: /* LIST, USAGE */
        ngx_str_set(&argv[0], "nb:keys");
        argv[1].data = actx->month;
        argv[1].len = 7;

        rc = ngx_nebula_admin_eval(r, actx,
                                   actx->kind == NGX_NEBULA_ADMIN_LIST
                                   ? NGX_NEBULA_SCRIPT_KEY_LIST
                                   : NGX_NEBULA_SCRIPT_USAGE,
                                   1, 2, argv);
        break;
    }

    if (rc != NGX_AGAIN) {
        return rc;
    }

    r->main->count++;
    return NGX_DONE;
}


/* whether a key's record lists a model among its own */
static ngx_uint_t
ngx_nebula_key_lists(const redisReply *k, ngx_str_t *name)
{
    u_char            *p, *last, *s;
    const redisReply  *v;

    v = nebula_reply_field(k, "models");

    if (v == NULL || v->type != REDIS_REPLY_STRING) {
        return 0;
    }

    p = (u_char *) v->str;
    last = p + v->len;

    while (p < last) {
        s = p;

        while (p < last && *p != ' ') {
            p++;
        }

        if ((size_t) (p - s) == name->len
            && ngx_strncmp(s, name->data, name->len) == 0)
        {
            return 1;
        }

        p++;
    }

    return 0;
}


/* Ollama's model list, of the models a key reaches (all without keys) */
static void
ngx_nebula_tags_write(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *k)
{
    uint64_t                 groups;
    ngx_uint_t               i, first, ok;
    const redisReply        *v;
    ngx_nebula_plan_t       *plan;
    ngx_nebula_model_t      *model;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    groups = (uint64_t) -1;

    if (k) {
        v = nebula_reply_field(k, "plan");
        plan = (v && v->type == REDIS_REPLY_STRING)
               ? ngx_nebula_find_plan(nmcf, (u_char *) v->str, v->len) : NULL;
        groups = plan ? plan->groups : 0;
    }

    model = nmcf->models.elts;
    first = 1;

    ngx_nebula_json_lit(j, "{\"models\":[");

    for (i = 0; i < nmcf->models.nelts; i++) {
        ok = !model[i].private
             && (groups & ((uint64_t) 1 << model[i].group_index));

        if (!ok && k) {
            ok = ngx_nebula_key_lists(k, &model[i].name);
        }

        if (!ok) {
            continue;
        }

        if (!first) {
            ngx_nebula_json_lit(j, ",");
        }

        first = 0;
        ngx_nebula_json_raw(j, (char *) model[i].tags_entry.data,
                            model[i].tags_entry.len);
    }

    ngx_nebula_json_lit(j, "]}");
}


/*
 * The caller's own key, read with KEY_GET: GET /v1/key answers it, GET
 * /api/tags the models it reaches.
 */
static ngx_int_t
ngx_nebula_self_lookup(ngx_http_request_t *r, ngx_nebula_admin_op_e kind)
{
    ngx_int_t                rc;
    ngx_str_t                secret;
    ngx_nebula_admin_ctx_t  *actx;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_nebula_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                      "method_not_allowed", NULL,
                                      "This endpoint takes GET only.");
    }

    if (ngx_nebula_key_from_request(r, &secret) != NGX_OK
        || !ngx_nebula_key_well_formed(&secret))
    {
        return ngx_nebula_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                      "invalid_api_key", NULL,
                                      "Missing or incorrect API key.");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    actx = ngx_nebula_admin_ctx(r);
    if (actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actx->kind = kind;

    if (ngx_nebula_key_digest(&secret, actx->digest, actx->id) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_nebula_admin_get(r, actx);

    if (rc != NGX_AGAIN) {
        return rc;
    }

    r->main->count++;
    return NGX_DONE;
}


/* GET /api/tags: the models the caller's key reaches */
ngx_int_t
ngx_nebula_tags_handler(ngx_http_request_t *r)
{
    ngx_nebula_json_t        j;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL) {
        ngx_nebula_json_init(&j, r->pool);
        ngx_nebula_tags_write(r, &j, NULL);
        return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
    }

    return ngx_nebula_self_lookup(r, NGX_NEBULA_ADMIN_TAGS);
}


/* GET /v1/key: the caller's own key, usage and limits */
ngx_int_t
ngx_nebula_key_handler(ngx_http_request_t *r)
{
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL) {
        return ngx_nebula_admin_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                      "Keys are not enabled: they need "
                                      "nebula_redis.");
    }

    return ngx_nebula_self_lookup(r, NGX_NEBULA_ADMIN_SELF);
}
