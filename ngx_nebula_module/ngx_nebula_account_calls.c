/*
 * Nebula: what each account call asks of Redis (ngx_nebula_accounts.c
 * routes and answers them): its script, the names of the account's
 * records it touches, all under the account's tag, and its arguments;
 * and the secrets a new account or key is given.
 */

#include "ngx_nebula_accounts.h"


/* the most keys an account may hold, revoked ones included */
#define NGX_NEBULA_ACCOUNT_MAX_KEYS_S  "1000"


/* a name of the account's in Redis, "nb:{A}..." */
static ngx_int_t
ngx_nebula_account_name(ngx_nebula_account_ctx_t *a, ngx_str_t *s,
    const char *fmt, u_char *arg)
{
    s->data = ngx_pnalloc(a->call->r->pool, 96);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    s->len = ngx_snprintf(s->data, 96, fmt, a->tag, arg) - s->data;

    return NGX_OK;
}


/* field, value into argv at *n; a value with a NULL data is not set */
static void
ngx_nebula_account_field(ngx_str_t *argv, ngx_uint_t *n, const char *field,
    ngx_str_t *value)
{
    if (value->data == NULL) {
        return;
    }

    argv[*n].data = (u_char *) field;
    argv[*n].len = ngx_strlen(field);
    argv[*n + 1] = *value;
    *n += 2;
}


/* a key's fields of the body, as KEY_EDIT's field, value pairs */
static void
ngx_nebula_account_key_fields(ngx_nebula_key_fields_t *f, ngx_str_t *argv,
    ngx_uint_t *n)
{
    ngx_nebula_account_field(argv, n, "name", &f->name);
    ngx_nebula_account_field(argv, n, "in_limit", &f->limits[0]);
    ngx_nebula_account_field(argv, n, "out_limit", &f->limits[1]);
    ngx_nebula_account_field(argv, n, "rpm_limit", &f->limits[2]);
    ngx_nebula_account_field(argv, n, "expires", &f->expires);

    if (f->models_named) {
        if (f->models.data == NULL) {
            ngx_str_set(&f->models, "");
        }

        ngx_nebula_account_field(argv, n, "models", &f->models);
    }

    if (f->disabled >= 0) {
        if (f->disabled) {
            ngx_str_set(&f->status, "disabled");
        } else {
            ngx_str_set(&f->status, "active");
        }

        ngx_nebula_account_field(argv, n, "status", &f->status);
    }
}


/* how long generation records are kept: an activity's oldest */
static time_t
ngx_nebula_account_ttl(ngx_nebula_account_ctx_t *a)
{
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(a->call->r, ngx_http_nebula_module);

    return nmcf->generation_ttl;
}


/* the op's script: NGX_AGAIN, its answer comes; else what to finalize */
ngx_int_t
ngx_nebula_account_send(ngx_nebula_account_ctx_t *a)
{
    u_char                 *p;
    ngx_str_t               argv[48], secret;
    ngx_uint_t              n, k, i, day;
    ngx_nebula_call_ctx_t  *call;
    u_char                  minute[NGX_TIME_T_LEN + 1];

    call = a->call;
    argv[0].len = 0;

    if (ngx_nebula_account_name(a, &argv[0], "nb:{%s}:acct%s", (u_char *) "")
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->now = ngx_nebula_now(call->r);
    *ngx_nebula_month(call->month, call->now) = '\0';
    a->now.data = a->now_buf;
    a->now.len = ngx_sprintf(a->now_buf, "%T", call->now) - a->now_buf;

    switch (a->op) {

    case NGX_NEBULA_ACCOUNT_CREATE:
    case NGX_NEBULA_ACCOUNT_SIGNUP:
        return ngx_nebula_account_create(a);

    case NGX_NEBULA_ACCOUNT_LIST:
        ngx_str_set(&argv[0], "nb:accounts");
        argv[1].data = call->month;
        argv[1].len = 7;
        argv[2] = a->after;
        argv[3].data = a->limit_buf;
        argv[3].len = ngx_sprintf(a->limit_buf, "%i", a->limit)
                      - a->limit_buf;
        argv[4] = a->plan;
        argv[5] = a->status;
        argv[6] = a->name;

        return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_ACCT_LIST, 1, 7,
                                    argv);

    case NGX_NEBULA_ACCOUNT_SHOW:
        if (ngx_nebula_account_name(a, &argv[1], "nb:{%s}:keys%s",
                                    (u_char *) "") != NGX_OK
            || ngx_nebula_account_name(a, &argv[2], "nb:{%s}:u:%s",
                                       call->month) != NGX_OK
            || ngx_nebula_account_name(a, &argv[3], "nb:{%s}:m:%s",
                                       call->month) != NGX_OK
            || ngx_nebula_account_name(a, &argv[4], "nb:{%s}:ku:%s",
                                       call->month) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *ngx_sprintf(minute, "%T", call->now / 60) = '\0';

        if (ngx_nebula_account_name(a, &argv[5], "nb:{%s}:r:%s", minute)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the month's days so far: usage by day */
        day = ngx_nebula_account_days(call->now);
        k = 6;

        for (i = 1; i <= day; i++) {
            p = ngx_pnalloc(call->r->pool, 96);
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            argv[k].data = p;
            argv[k].len = ngx_sprintf(p, "nb:{%s}:d:%s-%02ui", a->tag,
                                      call->month, i) - p;
            k++;
        }

        argv[k++] = a->auth;

        return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_ACCT_GET, k - 1,
                                    k, argv);

    case NGX_NEBULA_ACCOUNT_PATCH:
    case NGX_NEBULA_ACCOUNT_DELETE:
    case NGX_NEBULA_ACCOUNT_SUSPEND:
    case NGX_NEBULA_ACCOUNT_RESUME:
        if (ngx_nebula_account_name(a, &argv[1], "nb:{%s}:keys%s",
                                    (u_char *) "") != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[2] = a->auth;
        argv[3] = a->now;
        n = 4;

        if (a->op == NGX_NEBULA_ACCOUNT_PATCH) {
            ngx_nebula_account_field(argv, &n, "name", &a->f.name);
            ngx_nebula_account_field(argv, &n, "email", &a->f.email);
            ngx_nebula_account_field(argv, &n, "plan", &a->f.plan);
            ngx_nebula_account_field(argv, &n, "in_limit", &a->f.limits[0]);
            ngx_nebula_account_field(argv, &n, "out_limit", &a->f.limits[1]);
            ngx_nebula_account_field(argv, &n, "rpm_limit", &a->f.limits[2]);
            ngx_nebula_account_field(argv, &n, "status", &a->f.status);

            if (a->f.models_named) {
                if (a->f.models.data == NULL) {
                    ngx_str_set(&a->f.models, "");
                }

                ngx_nebula_account_field(argv, &n, "models", &a->f.models);
            }

        } else {
            ngx_str_set(&argv[n], "status");
            n++;

            if (a->op == NGX_NEBULA_ACCOUNT_DELETE) {
                ngx_str_set(&argv[n], "deleted");
            } else if (a->op == NGX_NEBULA_ACCOUNT_SUSPEND) {
                ngx_str_set(&argv[n], "suspended");
            } else {
                ngx_str_set(&argv[n], "active");
            }

            n++;
        }

        return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_ACCT_EDIT, 2,
                                    n - 0, argv);

    case NGX_NEBULA_ACCOUNT_ACTIVITY:
        if (ngx_nebula_account_name(a, &argv[1], "nb:{%s}:g%s",
                                    (u_char *) "") != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[2] = a->auth;
        argv[3].data = a->limit_buf;
        argv[3].len = ngx_sprintf(a->limit_buf, "%i", a->limit)
                      - a->limit_buf;
        argv[4] = a->key;
        argv[5] = a->model;
        argv[6].data = a->offset_buf;
        argv[6].len = ngx_sprintf(a->offset_buf, "%T",
                                  ngx_time() - ngx_nebula_account_ttl(a))
                      - a->offset_buf;

        return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_ACTIVITY, 2, 7,
                                    argv);

    case NGX_NEBULA_ACCOUNT_KEYS:
        if (ngx_nebula_account_name(a, &argv[1], "nb:{%s}:keys%s",
                                    (u_char *) "") != NGX_OK
            || ngx_nebula_account_name(a, &argv[2], "nb:{%s}:ku:%s",
                                       call->month) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[3] = a->auth;
        argv[4].data = a->offset_buf;
        argv[4].len = ngx_sprintf(a->offset_buf, "%i", a->offset)
                      - a->offset_buf;
        argv[5].data = a->limit_buf;
        argv[5].len = ngx_sprintf(a->limit_buf, "%i", a->limit)
                      - a->limit_buf;

        if (a->revoked) {
            ngx_str_set(&argv[6], "1");
        } else {
            ngx_str_set(&argv[6], "0");
        }

        return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_LIST_OF, 3, 7,
                                    argv);

    case NGX_NEBULA_ACCOUNT_KEY_CREATE:
        secret.data = a->secret;
        secret.len = ngx_nebula_key_generate(a->secret, a->tag);

        if (secret.len == 0
            || ngx_nebula_key_digest(&secret, a->digest, a->key_id) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        a->secret_len = secret.len;

        if (ngx_nebula_account_name(a, &argv[1], "nb:{%s}:keys%s",
                                    (u_char *) "") != NGX_OK
            || ngx_nebula_account_name(a, &argv[2], "nb:{%s}:k:%s",
                                       a->key_id) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[3] = a->auth;
        argv[4].data = (u_char *) NGX_NEBULA_ACCOUNT_MAX_KEYS_S;
        argv[4].len = sizeof(NGX_NEBULA_ACCOUNT_MAX_KEYS_S) - 1;
        argv[5].data = a->key_id;
        argv[5].len = NGX_NEBULA_KEY_ID_LEN;
        argv[6].data = a->digest;
        argv[6].len = 64;

        if (a->f.name.data) {
            argv[7] = a->f.name;
        } else {
            ngx_str_set(&argv[7], "");
        }

        argv[8] = a->now;

#define ngx_nebula_or_empty(s)  ((s).data ? (s) : (ngx_str_t) ngx_string(""))

        argv[9] = ngx_nebula_or_empty(a->f.expires);
        argv[10] = ngx_nebula_or_empty(a->f.limits[0]);
        argv[11] = ngx_nebula_or_empty(a->f.limits[1]);
        argv[12] = ngx_nebula_or_empty(a->f.limits[2]);
        argv[13] = ngx_nebula_or_empty(a->f.models);

#undef ngx_nebula_or_empty

        return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_ADD, 3, 14,
                                    argv);

    default: /* KEY_SHOW, KEY_PATCH, KEY_DELETE */
        if (ngx_nebula_account_name(a, &argv[1], "nb:{%s}:k:%s", a->key_id)
            != NGX_OK
            || ngx_nebula_account_name(a, &argv[2], "nb:{%s}:ku:%s",
                                       call->month) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[3] = a->auth;

        if (a->op == NGX_NEBULA_ACCOUNT_KEY_SHOW) {
            return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_OF, 3, 4,
                                        argv);
        }

        argv[4] = a->now;
        n = 5;

        if (a->op == NGX_NEBULA_ACCOUNT_KEY_DELETE) {
            ngx_str_set(&argv[5], "status");
            ngx_str_set(&argv[6], "revoked");
            n = 7;

        } else {
            ngx_nebula_account_key_fields(&a->f, argv, &n);
        }

        return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_KEY_EDIT, 3, n,
                                    argv);
    }
}


/*
 * A new account: its tag, its management secret and, if asked, its first
 * key, in one script in its slot; then listed in nb:accounts (another
 * slot: a plain ZADD).  A tag drawn twice (two in 2^64) is drawn again.
 */
ngx_int_t
ngx_nebula_account_create(ngx_nebula_account_ctx_t *a)
{
    ngx_str_t               argv[16], secret;
    ngx_nebula_call_ctx_t  *call;
    u_char                  kid[NGX_NEBULA_KEY_ID_LEN + 1];

    call = a->call;

    if (ngx_nebula_key_new_tag(a->tag) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    secret.data = a->msecret;
    secret.len = ngx_nebula_key_generate_management(a->msecret, a->tag);

    if (secret.len == 0
        || ngx_nebula_key_digest(&secret, a->mdigest, kid) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    a->msecret_len = secret.len;

    if (ngx_nebula_account_name(a, &argv[0], "nb:{%s}:acct%s", (u_char *) "")
        != NGX_OK
        || ngx_nebula_account_name(a, &argv[1], "nb:{%s}:keys%s",
                                   (u_char *) "") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[2] = argv[0];

    if (a->f.first_key) {
        secret.data = a->secret;
        secret.len = ngx_nebula_key_generate(a->secret, a->tag);

        if (secret.len == 0
            || ngx_nebula_key_digest(&secret, a->digest, a->key_id)
               != NGX_OK
            || ngx_nebula_account_name(a, &argv[2], "nb:{%s}:k:%s",
                                       a->key_id) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        a->secret_len = secret.len;
    }

#define ngx_nebula_or_empty(s)  ((s).data ? (s) : (ngx_str_t) ngx_string(""))

    argv[3].data = a->tag;
    argv[3].len = NGX_NEBULA_KEY_ID_LEN;
    argv[4] = ngx_nebula_or_empty(a->f.name);
    argv[5] = ngx_nebula_or_empty(a->f.email);
    argv[6] = a->f.plan;
    argv[7] = a->now;
    argv[8].data = a->mdigest;
    argv[8].len = 64;
    argv[9] = ngx_nebula_or_empty(a->f.limits[0]);
    argv[10] = ngx_nebula_or_empty(a->f.limits[1]);
    argv[11] = ngx_nebula_or_empty(a->f.limits[2]);
    argv[12] = ngx_nebula_or_empty(a->f.models);

#undef ngx_nebula_or_empty

    if (a->f.first_key) {
        argv[13].data = a->key_id;
        argv[13].len = NGX_NEBULA_KEY_ID_LEN;
        argv[14].data = a->digest;
        argv[14].len = 64;
        argv[15] = a->f.key_name;

    } else {
        ngx_str_set(&argv[13], "");
        ngx_str_set(&argv[14], "");
        ngx_str_set(&argv[15], "");
    }

    return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_ACCT_CREATE, 3, 16,
                                argv);
}
