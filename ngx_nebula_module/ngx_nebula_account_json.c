/*
 * Nebula: what the account calls answer (ngx_nebula_accounts.c), as JSON.
 *
 * An account: {"id", "object": "account", "name", "email", "plan",
 * "status", "created_at", "updated_at", "limits", "models", "usage",
 * "remaining", "reset_at"}, and when shown whole its usage by day, by
 * model and by key and its keys' count.  A key of an account: {"id",
 * "object": "key", "label", "name", "status", "disabled", "limits" (its
 * own: null is the account's), "models" (null: all the account's),
 * "expires_at", "created_at", "updated_at", "usage"}.  Times are unix
 * seconds, as OpenAI's created_at; money is USD; tokens are integers.
 */

#include "ngx_nebula_accounts.h"


/* the day of the month (UTC) of now: 1 to 31 */
ngx_uint_t
ngx_nebula_account_days(time_t now)
{
    ngx_tm_t  tm;

    ngx_gmtime(now, &tm);

    return tm.ngx_tm_mday;
}


/* a query's value as typed: %XX decoded, "+" a space */
ngx_int_t
ngx_nebula_account_unescape(ngx_http_request_t *r, ngx_str_t *s)
{
    u_char  *dst, *src, *p;

    dst = ngx_pnalloc(r->pool, s->len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    for (p = s->data; p < s->data + s->len; p++) {
        if (*p == '+') {
            *p = ' ';
        }
    }

    src = s->data;
    p = dst;
    ngx_unescape_uri(&p, &src, s->len, 0);

    s->data = dst;
    s->len = p - dst;

    return NGX_OK;
}


/* a field of a record (HGETALL's list) as a JSON string, or null */
static void
ngx_nebula_account_str(ngx_nebula_json_t *j, const redisReply *list,
    const char *name)
{
    const redisReply  *v;

    v = nebula_reply_field(list, name);

    if (v && v->type == REDIS_REPLY_STRING && v->len) {
        ngx_nebula_json_str(j, (u_char *) v->str, v->len);

    } else {
        ngx_nebula_json_lit(j, "null");
    }
}


/* a field of a record as a JSON integer, or null when it has none */
static void
ngx_nebula_account_int(ngx_nebula_json_t *j, const redisReply *list,
    const char *name)
{
    const redisReply  *v;

    v = nebula_reply_field(list, name);

    if (v && v->type == REDIS_REPLY_STRING && v->len) {
        ngx_nebula_json_int(j, nebula_reply_int(list, name, 0));

    } else {
        ngx_nebula_json_lit(j, "null");
    }
}


/* a space-separated list of models as a JSON array; empty: null or [] */
static void
ngx_nebula_account_models(ngx_nebula_json_t *j, const redisReply *list,
    ngx_uint_t null)
{
    u_char            *p, *last, *s;
    ngx_uint_t         first;
    const redisReply  *v;

    v = nebula_reply_field(list, "models");

    if (v == NULL || v->type != REDIS_REPLY_STRING || v->len == 0) {
        if (null) {
            ngx_nebula_json_lit(j, "null");
        } else {
            ngx_nebula_json_lit(j, "[]");
        }

        return;
    }

    ngx_nebula_json_lit(j, "[");

    p = (u_char *) v->str;
    last = p + v->len;
    first = 1;

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

    ngx_nebula_json_lit(j, "]");
}


/* a per-key field of the month's per-key hash, "KEYID|field" */
static int64_t
ngx_nebula_account_ku(const redisReply *ku, const redisReply *id,
    const char *field)
{
    u_char  name[NGX_NEBULA_KEY_ID_LEN + 16];

    if (id == NULL || id->type != REDIS_REPLY_STRING
        || id->len != NGX_NEBULA_KEY_ID_LEN)
    {
        return 0;
    }

    *ngx_snprintf(name, sizeof(name) - 1, "%*s|%s", (size_t) id->len,
                  id->str, field) = '\0';

    return nebula_reply_int(ku, (char *) name, 0);
}


/* {"period", "input_tokens", "output_tokens", "requests", "cost_usd"} */
static void
ngx_nebula_account_usage(ngx_nebula_json_t *j, u_char *month, int64_t in,
    int64_t out, int64_t req, int64_t cost)
{
    if (month) {
        ngx_nebula_json_lit(j, "{\"period\":");
        ngx_nebula_json_str(j, month, 7);
        ngx_nebula_json_lit(j, ",\"input_tokens\":");

    } else {
        ngx_nebula_json_lit(j, "{\"input_tokens\":");
    }

    ngx_nebula_json_int(j, in);
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_json_int(j, out);
    ngx_nebula_json_lit(j, ",\"requests\":");
    ngx_nebula_json_int(j, req);
    ngx_nebula_json_lit(j, ",\"cost_usd\":");
    ngx_nebula_json_usd(j, (uint64_t) ngx_max(cost, 0));
}


/* {"input_tokens": N|null, "output_tokens", "requests_per_minute"} */
static void
ngx_nebula_account_limits(ngx_nebula_json_t *j, int64_t in, int64_t out,
    int64_t rpm)
{
    int64_t      v[3];
    ngx_uint_t   i;

    static const char  *names[3] = { "{\"input_tokens\":",
                                     ",\"output_tokens\":",
                                     ",\"requests_per_minute\":" };

    v[0] = in;
    v[1] = out;
    v[2] = rpm;

    for (i = 0; i < 3; i++) {
        ngx_nebula_json_raw(j, names[i], ngx_strlen(names[i]));

        if (v[i] > 0 || (i < 2 && v[i] == 0)) {
            ngx_nebula_json_int(j, v[i]);

        } else {
            ngx_nebula_json_lit(j, "null");
        }
    }

    ngx_nebula_json_lit(j, "}");
}


/* a key of the account: k its record, ku the month's per-key hash */
static void
ngx_nebula_account_write_key(ngx_nebula_account_ctx_t *a,
    ngx_nebula_json_t *j, const redisReply *k, const redisReply *ku)
{
    const redisReply  *id, *st;

    id = nebula_reply_field(k, "id");
    st = nebula_reply_field(k, "status");

    ngx_nebula_json_lit(j, "{\"id\":");
    ngx_nebula_account_str(j, k, "id");
    ngx_nebula_json_lit(j, ",\"object\":\"key\",\"label\":\"nb-");
    ngx_nebula_json_raw(j, (char *) a->tag, NGX_NEBULA_KEY_ID_LEN);
    ngx_nebula_json_lit(j, "-...\",\"name\":");
    ngx_nebula_account_str(j, k, "name");
    ngx_nebula_json_lit(j, ",\"status\":");
    ngx_nebula_account_str(j, k, "status");
    ngx_nebula_json_lit(j, ",\"disabled\":");

    if (st && st->type == REDIS_REPLY_STRING && st->len == 6
        && ngx_strncmp(st->str, "active", 6) == 0)
    {
        ngx_nebula_json_lit(j, "false");

    } else {
        ngx_nebula_json_lit(j, "true");
    }

    ngx_nebula_json_lit(j, ",\"limits\":{\"input_tokens\":");
    ngx_nebula_account_int(j, k, "in_limit");
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_account_int(j, k, "out_limit");
    ngx_nebula_json_lit(j, ",\"requests_per_minute\":");
    ngx_nebula_account_int(j, k, "rpm_limit");
    ngx_nebula_json_lit(j, "},\"models\":");
    ngx_nebula_account_models(j, k, 1);
    ngx_nebula_json_lit(j, ",\"expires_at\":");
    ngx_nebula_account_int(j, k, "expires");
    ngx_nebula_json_lit(j, ",\"created_at\":");
    ngx_nebula_account_int(j, k, "created");
    ngx_nebula_json_lit(j, ",\"updated_at\":");
    ngx_nebula_account_int(j, k, "updated");
    ngx_nebula_json_lit(j, ",\"usage\":");
    ngx_nebula_account_usage(j, a->call->month,
                             ngx_nebula_account_ku(ku, id, "in"),
                             ngx_nebula_account_ku(ku, id, "out"),
                             ngx_nebula_account_ku(ku, id, "req"),
                             ngx_nebula_account_ku(ku, id, "cost"));
    ngx_nebula_json_lit(j, "}}");
}


/*
 * An account, its record ac and the month's usage u (NULL: not shown),
 * without its closing brace: a caller shown whole adds to it
 */
static void
ngx_nebula_account_write_head(ngx_nebula_account_ctx_t *a,
    ngx_nebula_json_t *j, const redisReply *ac, const redisReply *u)
{
    u_char              *p;
    int64_t              in, out, rpm, used_in, used_out;
    ngx_tm_t             tm;
    ngx_http_request_t  *r;
    u_char               buf[32];

    r = a->call->r;

    ngx_nebula_record_limits(r, ac, &in, &out, &rpm);

    used_in = nebula_reply_int(u, "in", 0);
    used_out = nebula_reply_int(u, "out", 0);

    ngx_nebula_json_lit(j, "{\"id\":");
    ngx_nebula_account_str(j, ac, "id");
    ngx_nebula_json_lit(j, ",\"object\":\"account\",\"name\":");
    ngx_nebula_account_str(j, ac, "name");
    ngx_nebula_json_lit(j, ",\"email\":");
    ngx_nebula_account_str(j, ac, "email");
    ngx_nebula_json_lit(j, ",\"plan\":");
    ngx_nebula_account_str(j, ac, "plan");
    ngx_nebula_json_lit(j, ",\"status\":");
    ngx_nebula_account_str(j, ac, "status");
    ngx_nebula_json_lit(j, ",\"created_at\":");
    ngx_nebula_account_int(j, ac, "created");
    ngx_nebula_json_lit(j, ",\"updated_at\":");
    ngx_nebula_account_int(j, ac, "updated");
    ngx_nebula_json_lit(j, ",\"limits\":");
    ngx_nebula_account_limits(j, in, out, rpm);
    ngx_nebula_json_lit(j, ",\"models\":");
    ngx_nebula_account_models(j, ac, 0);

    if (u == NULL) {
        /* a change's answer: the usage is GET's */
        return;
    }

    ngx_nebula_json_lit(j, ",\"usage\":");
    ngx_nebula_account_usage(j, a->call->month, used_in, used_out,
                             nebula_reply_int(u, "req", 0),
                             nebula_reply_int(u, "cost", 0));
    ngx_nebula_write_estimated(j, u, "");

    /* in flight now; what leases hold unused is not spent */
    ngx_nebula_json_lit(j, ",\"reserved_input_tokens\":");
    ngx_nebula_json_int(j, nebula_reply_int(u, "rin", 0)
                           - nebula_reply_int(u, "lin", 0));
    ngx_nebula_json_lit(j, ",\"reserved_output_tokens\":");
    ngx_nebula_json_int(j, nebula_reply_int(u, "rout", 0)
                           - nebula_reply_int(u, "lout", 0));
    ngx_nebula_json_lit(j, "},\"remaining\":{\"input_tokens\":");
    ngx_nebula_json_int(j, ngx_max(in - used_in - nebula_reply_int(u, "rin", 0)
                                   + nebula_reply_int(u, "lin", 0), 0));
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_json_int(j, ngx_max(out - used_out
                                   - nebula_reply_int(u, "rout", 0)
                                   + nebula_reply_int(u, "lout", 0), 0));

    /* the first second of the next month, UTC */
    ngx_gmtime(a->call->now, &tm);
    ngx_nebula_json_lit(j, "},\"reset_at\":");
    p = ngx_sprintf(buf, "%4d-%02d-01T00:00:00Z",
                    tm.ngx_tm_year + (tm.ngx_tm_mon == 12),
                    tm.ngx_tm_mon % 12 + 1);
    ngx_nebula_json_str(j, buf, p - buf);
}


/*
 * ACCT_GET's {1, account, usage, per model, per key, minute, keys, days}
 * as the account shown whole
 */
static ngx_int_t
ngx_nebula_account_write_whole(ngx_nebula_account_ctx_t *a,
    ngx_nebula_json_t *j, redisReply *reply)
{
    size_t             i;
    ngx_uint_t         active;
    const redisReply  *ac, *u, *m, *ku, *keys, *days, *k, *d, *st;
    u_char             date[16];

    if (reply->elements != 8
        || reply->element[1]->type != REDIS_REPLY_ARRAY
        || reply->element[6]->type != REDIS_REPLY_ARRAY
        || reply->element[7]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    ac = reply->element[1];
    u = reply->element[2];
    m = reply->element[3];
    ku = reply->element[4];
    keys = reply->element[6];
    days = reply->element[7];

    ngx_nebula_account_write_head(a, j, ac, u);

    ngx_nebula_json_lit(j, ",\"usage_by_day\":[");

    for (i = 0; i < days->elements; i++) {
        d = days->element[i];

        if (i) {
            ngx_nebula_json_lit(j, ",");
        }

        *ngx_sprintf(date, "%s-%02ui", a->call->month, (ngx_uint_t) i + 1)
            = '\0';
        ngx_nebula_json_lit(j, "{\"date\":");
        ngx_nebula_json_str(j, date, 10);
        ngx_nebula_json_lit(j, ",\"usage\":");
        ngx_nebula_account_usage(j, NULL, nebula_reply_int(d, "in", 0),
                                 nebula_reply_int(d, "out", 0),
                                 nebula_reply_int(d, "req", 0),
                                 nebula_reply_int(d, "cost", 0));
        ngx_nebula_json_lit(j, "}}");
    }

    ngx_nebula_json_lit(j, "],\"usage_by_model\":");
    ngx_nebula_write_model_usage(a->call->r, j, m);

    ngx_nebula_json_lit(j, ",\"usage_by_key\":[");
    active = 0;

    for (i = 0; i < keys->elements; i++) {
        k = keys->element[i];

        if (i) {
            ngx_nebula_json_lit(j, ",");
        }

        st = nebula_reply_field(k, "status");
        active += (st && st->type == REDIS_REPLY_STRING && st->len == 6
                   && ngx_strncmp(st->str, "active", 6) == 0);

        ngx_nebula_json_lit(j, "{\"id\":");
        ngx_nebula_account_str(j, k, "id");
        ngx_nebula_json_lit(j, ",\"name\":");
        ngx_nebula_account_str(j, k, "name");
        ngx_nebula_json_lit(j, ",\"status\":");
        ngx_nebula_account_str(j, k, "status");
        ngx_nebula_json_lit(j, ",\"usage\":");
        ngx_nebula_account_usage(j, NULL,
                   ngx_nebula_account_ku(ku, nebula_reply_field(k, "id"),
                                         "in"),
                   ngx_nebula_account_ku(ku, nebula_reply_field(k, "id"),
                                         "out"),
                   ngx_nebula_account_ku(ku, nebula_reply_field(k, "id"),
                                         "req"),
                   ngx_nebula_account_ku(ku, nebula_reply_field(k, "id"),
                                         "cost"));
        ngx_nebula_json_lit(j, "}}");
    }

    ngx_nebula_json_lit(j, "],\"keys\":{\"total\":");
    ngx_nebula_json_int(j, (int64_t) keys->elements);
    ngx_nebula_json_lit(j, ",\"active\":");
    ngx_nebula_json_int(j, (int64_t) active);
    ngx_nebula_json_lit(j, "}}");

    return NGX_OK;
}


/*
 * The account's last requests: each as /v1/generation shows one, and the
 * key that made it
 */
static ngx_int_t
ngx_nebula_account_write_activity(ngx_nebula_account_ctx_t *a,
    ngx_nebula_json_t *j, const redisReply *lines, const redisReply *names)
{
    size_t                        i, k;
    ngx_uint_t                    first;
    const redisReply             *e;
    ngx_nebula_generation_line_t  g;

    ngx_nebula_json_lit(j, "{\"object\":\"list\",\"data\":[");
    first = 1;

    for (i = 0; i < lines->elements; i++) {
        e = lines->element[i];

        if (e->type != REDIS_REPLY_STRING
            || ngx_nebula_generation_parse((u_char *) e->str, e->len, &g)
               != NGX_OK)
        {
            /* a record of before accounts (no key): not this account's */
            continue;
        }

        if (!first) {
            ngx_nebula_json_lit(j, ",");
        }

        first = 0;

        ngx_nebula_generation_write(j, &g);
        ngx_nebula_json_lit(j, ",\"key\":{\"id\":");
        ngx_nebula_json_str(j, g.w[2], g.n[2]);
        ngx_nebula_json_lit(j, ",\"name\":");

        for (k = 0; k + 1 < names->elements; k += 2) {
            if (names->element[k]->type == REDIS_REPLY_STRING
                && names->element[k]->len == g.n[2]
                && ngx_strncmp(names->element[k]->str, g.w[2], g.n[2]) == 0
                && names->element[k + 1]->type == REDIS_REPLY_STRING)
            {
                break;
            }
        }

        if (k + 1 < names->elements && names->element[k + 1]->len) {
            ngx_nebula_json_str(j, (u_char *) names->element[k + 1]->str,
                                names->element[k + 1]->len);
        } else {
            ngx_nebula_json_lit(j, "null");
        }

        ngx_nebula_json_lit(j, "}}");
    }

    ngx_nebula_json_lit(j, "]}");

    return NGX_OK;
}


/* a script's refusals past "no such account": ≥ 2 */
ngx_int_t
ngx_nebula_account_refused(ngx_nebula_account_ctx_t *a, redisReply *reply)
{
    ngx_int_t            st;
    ngx_http_request_t  *r;

    r = a->call->r;
    st = (ngx_int_t) reply->element[0]->integer;

    switch (a->op) {

    case NGX_NEBULA_ACCOUNT_KEY_CREATE:
        if (st == 3) {
            return ngx_nebula_api_error(r, NGX_HTTP_CONFLICT,
                                        "too_many_keys", NULL,
                                        "This account holds the most keys "
                                        "it may (1000, revoked ones "
                                        "included).");
        }

        if (st == 4) {
            /* the new key's id was taken: another secret */
            if (++a->attempts > 3) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return ngx_nebula_account_send(a);
        }

        break;

    case NGX_NEBULA_ACCOUNT_KEY_SHOW:
    case NGX_NEBULA_ACCOUNT_KEY_PATCH:
    case NGX_NEBULA_ACCOUNT_KEY_DELETE:
        if (st == 2) {
            return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND,
                                        "key_not_found", "id",
                                        a->op == NGX_NEBULA_ACCOUNT_KEY_SHOW
                                        ? "This account has no key with "
                                          "this id."
                                        : "This account has no key with this "
                                          "id that is not revoked.");
        }

        break;

    default:
        break;
    }

    if ((st == 2 && a->op == NGX_NEBULA_ACCOUNT_KEY_CREATE)
        || (st == 3 && a->op != NGX_NEBULA_ACCOUNT_KEY_CREATE))
    {
        return ngx_nebula_api_error(r, NGX_HTTP_FORBIDDEN,
                                    "account_suspended", NULL,
                                    "This account is suspended: its keys "
                                    "can be read, not changed.");
    }

    return ngx_nebula_call_bad_reply(r, reply);
}


/*
 * A script's answer {1, ...} as the op's JSON, into a->json and
 * a->status: NGX_OK, or what to finalize with (a reply of none of ours)
 */
ngx_int_t
ngx_nebula_account_write(ngx_nebula_account_ctx_t *a, redisReply *reply)
{
    size_t              i;
    ngx_uint_t          status;
    ngx_nebula_json_t  *jp;
    const redisReply   *list, *e;
    ngx_http_request_t *r;

#define j  (*jp)

    r = a->call->r;
    status = NGX_HTTP_OK;
    jp = &a->json;

    ngx_nebula_json_init(&j, r->pool);

    switch (a->op) {

    case NGX_NEBULA_ACCOUNT_LIST:
        /* {more, {{account, usage}, ...}} */
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
            || reply->element[1]->type != REDIS_REPLY_ARRAY)
        {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        list = reply->element[1];
        ngx_nebula_json_lit(&j, "{\"object\":\"list\",\"data\":[");

        for (i = 0; i < list->elements; i++) {
            e = list->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) {
                return ngx_nebula_call_bad_reply(r, reply);
            }

            if (i) {
                ngx_nebula_json_lit(&j, ",");
            }

            ngx_nebula_account_write_head(a, &j, e->element[0],
                                          e->element[1]);
            ngx_nebula_json_lit(&j, "}");
        }

        ngx_nebula_json_lit(&j, "],\"has_more\":");

        if (reply->element[0]->type == REDIS_REPLY_INTEGER
            && reply->element[0]->integer)
        {
            ngx_nebula_json_lit(&j, "true");
        } else {
            ngx_nebula_json_lit(&j, "false");
        }

        ngx_nebula_json_lit(&j, ",\"last_id\":");

        if (list->elements) {
            ngx_nebula_account_str(&j,
                list->element[list->elements - 1]->element[0], "id");
        } else {
            ngx_nebula_json_lit(&j, "null");
        }

        ngx_nebula_json_lit(&j, "}");
        break;

    case NGX_NEBULA_ACCOUNT_SHOW:
        ngx_nebula_json_lit(&j, "{\"data\":");

        if (ngx_nebula_account_write_whole(a, &j, reply) != NGX_OK) {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        ngx_nebula_json_lit(&j, "}");
        break;

    case NGX_NEBULA_ACCOUNT_PATCH:
    case NGX_NEBULA_ACCOUNT_DELETE:
    case NGX_NEBULA_ACCOUNT_SUSPEND:
    case NGX_NEBULA_ACCOUNT_RESUME:
        /* {1, account}: its usage is shown by GET */
        if (reply->elements != 2) {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        ngx_nebula_json_lit(&j, "{\"data\":");
        ngx_nebula_account_write_head(a, &j, reply->element[1], NULL);
        ngx_nebula_json_lit(&j, "}}");
        break;

    case NGX_NEBULA_ACCOUNT_KEYS:
        /* {1, count, {key, ...}, per key} */
        if (reply->elements != 4
            || reply->element[2]->type != REDIS_REPLY_ARRAY)
        {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        list = reply->element[2];
        ngx_nebula_json_lit(&j, "{\"object\":\"list\",\"data\":[");

        for (i = 0; i < list->elements; i++) {
            if (i) {
                ngx_nebula_json_lit(&j, ",");
            }

            ngx_nebula_account_write_key(a, &j, list->element[i],
                                         reply->element[3]);
        }

        ngx_nebula_json_lit(&j, "],\"total\":");
        ngx_nebula_json_int(&j, reply->element[1]->type == REDIS_REPLY_INTEGER
                                ? reply->element[1]->integer : 0);
        ngx_nebula_json_lit(&j, ",\"offset\":");
        ngx_nebula_json_int(&j, a->offset);
        ngx_nebula_json_lit(&j, ",\"limit\":");
        ngx_nebula_json_int(&j, a->limit);
        ngx_nebula_json_lit(&j, "}");
        break;

    case NGX_NEBULA_ACCOUNT_ACTIVITY:
        /* {1, {line, ...}, {key id, name, ...}} */
        if (reply->elements != 3
            || reply->element[1]->type != REDIS_REPLY_ARRAY
            || reply->element[2]->type != REDIS_REPLY_ARRAY)
        {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        if (ngx_nebula_account_write_activity(a, &j, reply->element[1],
                                              reply->element[2])
            != NGX_OK)
        {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        break;

    case NGX_NEBULA_ACCOUNT_KEY_CREATE:
        /* {1, key}: the secret shown this once */
        if (reply->elements != 2) {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        status = NGX_HTTP_CREATED;
        ngx_nebula_json_lit(&j, "{\"data\":");
        ngx_nebula_account_write_key(a, &j, reply->element[1], NULL);
        ngx_nebula_json_lit(&j, ",\"key\":");
        ngx_nebula_json_str(&j, a->secret, a->secret_len);
        ngx_nebula_json_lit(&j, "}");
        break;

    default: /* KEY_SHOW, KEY_PATCH, KEY_DELETE: {1, key, per key} */
        if (reply->elements != 3) {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        ngx_nebula_json_lit(&j, "{\"data\":");
        ngx_nebula_account_write_key(a, &j, reply->element[1],
                                     reply->element[2]);

        if (a->op == NGX_NEBULA_ACCOUNT_KEY_DELETE) {
            ngx_nebula_json_lit(&j, ",\"deleted\":true");
        }

        ngx_nebula_json_lit(&j, "}");
        break;
    }

    a->http_status = status;

#undef j

    return NGX_OK;
}


/*
 * A new account, made and listed: 201 with its management secret and its
 * first key's, shown this once
 */
ngx_int_t
ngx_nebula_account_write_created(ngx_nebula_account_ctx_t *a)
{
    int64_t              in, out, rpm;
    ngx_nebula_json_t    j;
    ngx_nebula_plan_t   *plan;
    ngx_http_request_t  *r;

    r = a->call->r;

    plan = ngx_nebula_find_plan(ngx_http_get_module_main_conf(r,
                                                    ngx_http_nebula_module),
                                a->f.plan.data, a->f.plan.len);

    in = a->f.limits[0].len ? ngx_atoof(a->f.limits[0].data,
                                        a->f.limits[0].len)
         : plan ? (int64_t) plan->input_tokens : 0;
    out = a->f.limits[1].len ? ngx_atoof(a->f.limits[1].data,
                                         a->f.limits[1].len)
          : plan ? (int64_t) plan->output_tokens : 0;
    rpm = a->f.limits[2].len ? ngx_atoof(a->f.limits[2].data,
                                         a->f.limits[2].len)
          : plan ? (int64_t) plan->requests_per_minute : 0;

    ngx_nebula_json_init(&j, r->pool);

    ngx_nebula_json_lit(&j, "{\"data\":{\"id\":");
    ngx_nebula_json_str(&j, a->tag, NGX_NEBULA_KEY_ID_LEN);
    ngx_nebula_json_lit(&j, ",\"object\":\"account\",\"name\":");

    if (a->f.name.len) {
        ngx_nebula_json_str(&j, a->f.name.data, a->f.name.len);
    } else {
        ngx_nebula_json_lit(&j, "null");
    }

    ngx_nebula_json_lit(&j, ",\"email\":");

    if (a->f.email.len) {
        ngx_nebula_json_str(&j, a->f.email.data, a->f.email.len);
    } else {
        ngx_nebula_json_lit(&j, "null");
    }

    ngx_nebula_json_lit(&j, ",\"plan\":");
    ngx_nebula_json_str(&j, a->f.plan.data, a->f.plan.len);
    ngx_nebula_json_lit(&j, ",\"status\":\"active\",\"created_at\":");
    ngx_nebula_json_raw(&j, (char *) a->now.data, a->now.len);
    ngx_nebula_json_lit(&j, ",\"limits\":");
    ngx_nebula_account_limits(&j, in, out, rpm);
    ngx_nebula_json_lit(&j, "},\"management_key\":");
    ngx_nebula_json_str(&j, a->msecret, a->msecret_len);

    if (a->f.first_key) {
        ngx_nebula_json_lit(&j, ",\"key\":{\"id\":");
        ngx_nebula_json_str(&j, a->key_id, NGX_NEBULA_KEY_ID_LEN);
        ngx_nebula_json_lit(&j, ",\"name\":");
        ngx_nebula_json_str(&j, a->f.key_name.data, a->f.key_name.len);
        ngx_nebula_json_lit(&j, ",\"key\":");
        ngx_nebula_json_str(&j, a->secret, a->secret_len);
        ngx_nebula_json_lit(&j, "}");
    }

    ngx_nebula_json_lit(&j, "}");

    return ngx_nebula_json_send(r, &j, NGX_HTTP_CREATED);
}


/*
 * What a key of an account may still use, and its limits, from
 * KEY_GET_OF's reply, as ADMIT has it: the smaller of what its own cap
 * leaves and what the account has left, per input, output and minute
 */
void
ngx_nebula_account_key_admit(ngx_http_request_t *r, const redisReply *reply,
    nebula_admit_t *a)
{
    int64_t            cap, left, n;
    ngx_uint_t         i;
    const redisReply  *k, *ac, *u, *ku, *id;

    static const char  *limit[2] = { "in_limit", "out_limit" };
    static const char  *used[2] = { "in", "out" };
    static const char  *res[2] = { "rin", "rout" };
    static const char  *lease[2] = { "lin", "lout" };

    k = reply->element[0];
    ac = reply->element[1];
    u = reply->element[2];
    ku = reply->element[4];
    id = nebula_reply_field(k, "id");

    ngx_memzero(a, sizeof(nebula_admit_t));
    a->status = NEBULA_ADMIT_OK;

    ngx_nebula_record_limits(r, ac, &a->in_limit, &a->out_limit, &a->rpm);

    for (i = 0; i < 2; i++) {
        left = (i ? a->out_limit : a->in_limit)
               - nebula_reply_int(u, used[i], 0)
               - nebula_reply_int(u, res[i], 0)
               + nebula_reply_int(u, lease[i], 0);

        cap = nebula_reply_int(k, limit[i], -1);

        if (cap >= 0) {
            n = cap - ngx_nebula_account_ku(ku, id, used[i])
                - ngx_nebula_account_ku(ku, id, res[i])
                + ngx_nebula_account_ku(ku, id, lease[i]);

            if (n < left) {
                left = n;

                if (i) {
                    a->out_limit = cap;
                } else {
                    a->in_limit = cap;
                }
            }
        }

        if (i) {
            a->out_left = left;
        } else {
            a->in_left = left;
        }
    }

    /* the minute: the account's count, and the key's own */
    a->rpm_left = -1;

    if (a->rpm > 0) {
        a->rpm_left = ngx_max(a->rpm
                              - (reply->element[5]->type
                                 == REDIS_REPLY_INTEGER
                                 ? reply->element[5]->integer : 0), 0);
    }

    cap = nebula_reply_int(k, "rpm_limit", 0);

    if (cap > 0) {
        n = ngx_max(cap - (reply->element[6]->type == REDIS_REPLY_INTEGER
                           ? reply->element[6]->integer : 0), 0);

        if (a->rpm_left < 0 || n < a->rpm_left) {
            a->rpm = cap;
            a->rpm_left = n;
        }
    }

    if (a->rpm_left < 0) {
        a->rpm = 0;
        a->rpm_left = 0;
    }
}


/*
 * GET /v1/key of a key of an account: the key, its own usage, what it may
 * still use (the tighter of its cap and its account's quota), and its
 * account
 */
void
ngx_nebula_account_write_own(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *reply, u_char *month, time_t now)
{
    u_char            *p;
    ngx_tm_t           tm;
    nebula_admit_t     a;
    const redisReply  *k, *ac, *u, *ku, *id;
    u_char             buf[32];

    k = reply->element[0];
    ac = reply->element[1];
    u = reply->element[2];
    ku = reply->element[4];
    id = nebula_reply_field(k, "id");

    ngx_nebula_account_key_admit(r, reply, &a);

    ngx_nebula_json_lit(j, "{\"id\":");
    ngx_nebula_account_str(j, k, "id");
    ngx_nebula_json_lit(j, ",\"name\":");
    ngx_nebula_account_str(j, k, "name");
    ngx_nebula_json_lit(j, ",\"plan\":");
    ngx_nebula_account_str(j, ac, "plan");
    ngx_nebula_json_lit(j, ",\"limits\":");
    ngx_nebula_account_limits(j, a.in_limit, a.out_limit, a.rpm);
    ngx_nebula_json_lit(j, ",\"models\":");
    ngx_nebula_account_models(j, k, 1);
    ngx_nebula_json_lit(j, ",\"expires_at\":");
    ngx_nebula_account_int(j, k, "expires");
    ngx_nebula_json_lit(j, ",\"usage\":");
    ngx_nebula_account_usage(j, month, ngx_nebula_account_ku(ku, id, "in"),
                             ngx_nebula_account_ku(ku, id, "out"),
                             ngx_nebula_account_ku(ku, id, "req"),
                             ngx_nebula_account_ku(ku, id, "cost"));
    ngx_nebula_json_lit(j, "},\"remaining\":{\"input_tokens\":");
    ngx_nebula_json_int(j, ngx_max(a.in_left, 0));
    ngx_nebula_json_lit(j, ",\"output_tokens\":");
    ngx_nebula_json_int(j, ngx_max(a.out_left, 0));

    /* the first second of the next month, UTC */
    ngx_gmtime(now, &tm);
    ngx_nebula_json_lit(j, "},\"reset_at\":");
    p = ngx_sprintf(buf, "%4d-%02d-01T00:00:00Z",
                    tm.ngx_tm_year + (tm.ngx_tm_mon == 12),
                    tm.ngx_tm_mon % 12 + 1);
    ngx_nebula_json_str(j, buf, p - buf);

    ngx_nebula_json_lit(j, ",\"account\":{\"id\":");
    ngx_nebula_account_str(j, ac, "id");
    ngx_nebula_json_lit(j, ",\"name\":");
    ngx_nebula_account_str(j, ac, "name");
    ngx_nebula_json_lit(j, ",\"status\":");
    ngx_nebula_account_str(j, ac, "status");
    ngx_nebula_json_lit(j, ",\"usage\":");
    ngx_nebula_account_usage(j, month, nebula_reply_int(u, "in", 0),
                             nebula_reply_int(u, "out", 0),
                             nebula_reply_int(u, "req", 0),
                             nebula_reply_int(u, "cost", 0));
    ngx_nebula_json_lit(j, "}}");

    if (reply->element[3]->type == REDIS_REPLY_ARRAY
        && reply->element[3]->elements >= 2)
    {
        /* the account's, by model: a key's own is not kept by model */
        ngx_nebula_json_lit(j, ",\"account_usage_by_model\":");
        ngx_nebula_write_model_usage(r, j, reply->element[3]);
    }

    ngx_nebula_json_lit(j, "}");
}
