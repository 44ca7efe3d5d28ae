/*
 * Nebula: accounts and their keys, as the operator manages them (the
 * admin API, nebula admin) and as an account's holder does, with the
 * account's management secret (nebula account), as OpenRouter's
 * provisioning keys do.
 *
 *   POST   /admin/accounts             {name, plan, email?, limits?,
 *                                       models?, key?}
 *   GET    /admin/accounts             ?plan=&status=&name=&limit=&after=
 *   GET    /admin/accounts/A
 *   PATCH  /admin/accounts/A           {name?, plan?, email?, limits?,
 *                                       models?, status?}
 *   DELETE /admin/accounts/A
 *   POST   /admin/accounts/A/suspend, /admin/accounts/A/resume
 *   GET    /admin/accounts/A/keys,     POST /admin/accounts/A/keys
 *   GET, PATCH, DELETE /admin/accounts/A/keys/K
 *
 *   GET    /admin/accounts/A/activity  ?limit=&key=&model=
 *
 *   POST   /v1/accounts                {name?, email?, invite_code?}: a new
 *                                       account of the plan nebula_signup
 *                                       names, its management key and a
 *                                       first key (nebula signup)
 *
 *   GET    /v1/account                 the holder's account, its usage
 *   GET    /v1/activity                its last requests
 *   GET    /v1/keys,                   POST /v1/keys
 *   GET, PATCH, DELETE /v1/keys/K
 *
 * The holder's calls are the admin's on the account its secret names,
 * less what only an operator does (its plan, its status); each is one
 * script in the account's slot, which checks the secret's digest first
 * (ngx_nebula_scripts_accounts.c).  This file routes a call, checks who
 * makes it and what it sends, and answers; its script and arguments are
 * in ngx_nebula_account_calls.c, its JSON in ngx_nebula_account_json.c.
 */

#include "ngx_nebula_accounts.h"


/*
 * How long a change's answer waits: the change feed is read every 250 ms
 * on a tick of 125 (ngx_nebula_lease.c), and the read takes a round trip
 */
#define NGX_NEBULA_ACCOUNT_IN_EFFECT  500

/* a page of a listing: by default, and at most */
#define NGX_NEBULA_ACCOUNT_PAGE      100
#define NGX_NEBULA_ACCOUNT_PAGE_MAX  1000


static ngx_int_t ngx_nebula_account_answer(ngx_nebula_call_ctx_t *call,
    redisReply *reply);
static void ngx_nebula_account_in_effect(ngx_event_t *ev);
static void ngx_nebula_account_cleanup(void *data);
static void ngx_nebula_account_body_handler(ngx_http_request_t *r);


static ngx_int_t
ngx_nebula_account_not_found(ngx_nebula_account_ctx_t *a)
{
    if (a->holder) {
        /* the account is gone: its secret is no more */
        return ngx_nebula_api_error(a->call->r, NGX_HTTP_UNAUTHORIZED,
                                    "invalid_management_key", NULL,
                                    "Incorrect management key provided.");
    }

    return ngx_nebula_api_error(a->call->r, NGX_HTTP_NOT_FOUND,
                                "account_not_found", "id",
                                "No account has this id.");
}


/* 16 lower-case hex digits at p, into id: NGX_OK */
static ngx_int_t
ngx_nebula_account_id(u_char *p, u_char *last, u_char *id)
{
    ngx_uint_t  i;

    if (last - p != NGX_NEBULA_KEY_ID_LEN) {
        return NGX_DECLINED;
    }

    for (i = 0; i < NGX_NEBULA_KEY_ID_LEN; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) {
            return NGX_DECLINED;
        }
    }

    ngx_memcpy(id, p, NGX_NEBULA_KEY_ID_LEN);
    id[NGX_NEBULA_KEY_ID_LEN] = '\0';

    return NGX_OK;
}


/*
 * "keys", "keys/K" (p to last) into the op, as the method says: NGX_OK,
 * NGX_HTTP_NOT_FOUND or NGX_HTTP_NOT_ALLOWED
 */
static ngx_int_t
ngx_nebula_account_route_keys(ngx_http_request_t *r,
    ngx_nebula_account_ctx_t *a, u_char *p, u_char *last)
{
    if (p == last || (last - p == 1 && *p == '/')) {
        switch (r->method) {
        case NGX_HTTP_GET:
        case NGX_HTTP_HEAD:
            a->op = NGX_NEBULA_ACCOUNT_KEYS;
            return NGX_OK;
        case NGX_HTTP_POST:
            a->op = NGX_NEBULA_ACCOUNT_KEY_CREATE;
            return NGX_OK;
        default:
            return NGX_HTTP_NOT_ALLOWED;
        }
    }

    if (*p != '/' || ngx_nebula_account_id(p + 1, last, a->key_id) != NGX_OK)
    {
        return NGX_HTTP_NOT_FOUND;
    }

    switch (r->method) {
    case NGX_HTTP_GET:
    case NGX_HTTP_HEAD:
        a->op = NGX_NEBULA_ACCOUNT_KEY_SHOW;
        return NGX_OK;
    case NGX_HTTP_PATCH:
        a->op = NGX_NEBULA_ACCOUNT_KEY_PATCH;
        return NGX_OK;
    case NGX_HTTP_DELETE:
        a->op = NGX_NEBULA_ACCOUNT_KEY_DELETE;
        return NGX_OK;
    default:
        return NGX_HTTP_NOT_ALLOWED;
    }
}


/* the admin's path after "/admin/accounts" */
static ngx_int_t
ngx_nebula_account_route_admin(ngx_http_request_t *r,
    ngx_nebula_account_ctx_t *a, u_char *p, u_char *last)
{
    u_char  *s;

    if (p == last || (last - p == 1 && *p == '/')) {
        switch (r->method) {
        case NGX_HTTP_GET:
        case NGX_HTTP_HEAD:
            a->op = NGX_NEBULA_ACCOUNT_LIST;
            return NGX_OK;
        case NGX_HTTP_POST:
            a->op = NGX_NEBULA_ACCOUNT_CREATE;
            return NGX_OK;
        default:
            return NGX_HTTP_NOT_ALLOWED;
        }
    }

    if (*p++ != '/') {
        return NGX_HTTP_NOT_FOUND;
    }

    s = ngx_strlchr(p, last, '/');

    if (ngx_nebula_account_id(p, s ? s : last, a->tag) != NGX_OK) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (s == NULL) {
        switch (r->method) {
        case NGX_HTTP_GET:
        case NGX_HTTP_HEAD:
            a->op = NGX_NEBULA_ACCOUNT_SHOW;
            return NGX_OK;
        case NGX_HTTP_PATCH:
            a->op = NGX_NEBULA_ACCOUNT_PATCH;
            return NGX_OK;
        case NGX_HTTP_DELETE:
            a->op = NGX_NEBULA_ACCOUNT_DELETE;
            return NGX_OK;
        default:
            return NGX_HTTP_NOT_ALLOWED;
        }
    }

    p = s + 1;

    if ((last - p == 7 && ngx_strncmp(p, "suspend", 7) == 0)
        || (last - p == 6 && ngx_strncmp(p, "resume", 6) == 0))
    {
        if (r->method != NGX_HTTP_POST) {
            return NGX_HTTP_NOT_ALLOWED;
        }

        a->op = (*p == 's') ? NGX_NEBULA_ACCOUNT_SUSPEND
                            : NGX_NEBULA_ACCOUNT_RESUME;
        return NGX_OK;
    }

    if (last - p >= 4 && ngx_strncmp(p, "keys", 4) == 0) {
        return ngx_nebula_account_route_keys(r, a, p + 4, last);
    }

    if (last - p == 8 && ngx_strncmp(p, "activity", 8) == 0) {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            return NGX_HTTP_NOT_ALLOWED;
        }

        a->op = NGX_NEBULA_ACCOUNT_ACTIVITY;
        return NGX_OK;
    }

    return NGX_HTTP_NOT_FOUND;
}


/* the holder's path: /v1/account, /v1/keys, /v1/keys/K */
static ngx_int_t
ngx_nebula_account_route_holder(ngx_http_request_t *r,
    ngx_nebula_account_ctx_t *a)
{
    u_char  *p, *last, *s;

    p = r->uri.data;
    last = p + r->uri.len;

    while (last > p && last[-1] == '/') {
        last--;
    }

    if ((last - p >= 8 && ngx_strncmp(last - 8, "/account", 8) == 0)
        || (last - p >= 9 && ngx_strncmp(last - 9, "/activity", 9) == 0))
    {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            return NGX_HTTP_NOT_ALLOWED;
        }

        a->op = (last[-1] == 't') ? NGX_NEBULA_ACCOUNT_SHOW
                                  : NGX_NEBULA_ACCOUNT_ACTIVITY;
        return NGX_OK;
    }

    /* ".../keys" or ".../keys/K" */
    for (s = last - 1; s > p && *s != '/'; s--) { /* void */ }

    if (last - s == 5 && ngx_strncmp(s, "/keys", 5) == 0) {
        return ngx_nebula_account_route_keys(r, a, last, last);
    }

    if (s - p >= 5 && ngx_strncmp(s - 5, "/keys", 5) == 0) {
        return ngx_nebula_account_route_keys(r, a, s, last);
    }

    return NGX_HTTP_NOT_FOUND;
}


/*
 * The holder's management secret: its account's tag and its digest.
 * NGX_OK; NGX_DECLINED: refused, *rc what to finalize with.
 */
static ngx_int_t
ngx_nebula_account_holder_auth(ngx_http_request_t *r,
    ngx_nebula_account_ctx_t *a, ngx_int_t *rc)
{
    ngx_str_t  secret;
    u_char     id[NGX_NEBULA_KEY_ID_LEN + 1];

    if (ngx_nebula_key_from_request(r, &secret) != NGX_OK) {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                   "invalid_management_key", NULL,
                                   "This endpoint needs the account's "
                                   "management key: \"Authorization: "
                                   "Bearer nbm-...\".");
        return NGX_DECLINED;
    }

    if (!ngx_nebula_key_management_tag(&secret, a->tag)) {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                   "invalid_management_key", NULL,
                                   ngx_nebula_key_well_formed(&secret)
                                   ? "An API key cannot manage keys: use "
                                     "the account's management key "
                                     "(nbm-...)."
                                   : "Incorrect management key provided.");
        return NGX_DECLINED;
    }

    if (ngx_nebula_key_digest(&secret, a->mdigest, id) != NGX_OK) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DECLINED;
    }

    a->auth.data = a->mdigest;
    a->auth.len = 64;

    return NGX_OK;
}


/* ?offset=&limit= and the like: a number, or dflt; -1 when invalid */
static ngx_int_t
ngx_nebula_account_arg_int(ngx_http_request_t *r, char *name,
    ngx_int_t dflt, ngx_int_t max)
{
    ngx_int_t  n;
    ngx_str_t  v;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &v) != NGX_OK) {
        return dflt;
    }

    n = ngx_atoi(v.data, v.len);

    return (n == NGX_ERROR || n > max) ? -1 : n;
}


/* a listing's query, into a: NGX_OK; NGX_DECLINED, *rc the refusal */
static ngx_int_t
ngx_nebula_account_query(ngx_http_request_t *r, ngx_nebula_account_ctx_t *a,
    ngx_int_t *rc)
{
    ngx_str_t  v;

    a->limit = ngx_nebula_account_arg_int(r, "limit",
                                          NGX_NEBULA_ACCOUNT_PAGE,
                                          NGX_NEBULA_ACCOUNT_PAGE_MAX);
    if (a->limit < 1) {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                   "limit", "'limit' is 1 to 1000.");
        return NGX_DECLINED;
    }

    if (a->op == NGX_NEBULA_ACCOUNT_ACTIVITY) {
        if (ngx_http_arg(r, (u_char *) "key", 3, &a->key) == NGX_OK
            && (a->key.len != NGX_NEBULA_KEY_ID_LEN
                || ngx_strlchr(a->key.data, a->key.data + a->key.len, ' ')))
        {
            *rc = ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_value", "key",
                                       "'key' is a key's id.");
            return NGX_DECLINED;
        }

        if (ngx_http_arg(r, (u_char *) "model", 5, &a->model) == NGX_OK
            && ngx_nebula_account_unescape(r, &a->model) != NGX_OK)
        {
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    if (a->op == NGX_NEBULA_ACCOUNT_KEYS) {
        a->offset = ngx_nebula_account_arg_int(r, "offset", 0, 1000000);
        if (a->offset < 0) {
            *rc = ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_value", "offset",
                                       "'offset' is a number of keys.");
            return NGX_DECLINED;
        }

        a->revoked = ngx_http_arg(r, (u_char *) "include_revoked", 15, &v)
                         == NGX_OK
                     && v.len == 4 && ngx_strncmp(v.data, "true", 4) == 0;
        return NGX_OK;
    }

    /* the admin's listing of accounts */
    if (ngx_http_arg(r, (u_char *) "after", 5, &a->after) == NGX_OK
        && a->after.len != NGX_NEBULA_KEY_ID_LEN)
    {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                   "after", "'after' is an account's id.");
        return NGX_DECLINED;
    }

    if (ngx_http_arg(r, (u_char *) "status", 6, &a->status) == NGX_OK
        && !(a->status.len == 6
             && ngx_strncmp(a->status.data, "active", 6) == 0)
        && !(a->status.len == 9
             && ngx_strncmp(a->status.data, "suspended", 9) == 0)
        && !(a->status.len == 7
             && ngx_strncmp(a->status.data, "deleted", 7) == 0))
    {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                   "status", "'status' is active, "
                                   "suspended or deleted.");
        return NGX_DECLINED;
    }

    (void) ngx_http_arg(r, (u_char *) "plan", 4, &a->plan);

    if (ngx_http_arg(r, (u_char *) "name", 4, &a->name) == NGX_OK) {
        /* as it was typed: %20 and + are spaces */
        if (ngx_nebula_account_unescape(r, &a->name) != NGX_OK) {
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* a call of the admin's, on /admin/accounts...: p to last after it */
ngx_int_t
ngx_nebula_accounts_admin(ngx_http_request_t *r, u_char *p, u_char *last)
{
    return ngx_nebula_account_start(r, 0, p, last);
}


/* nebula account: the holder's calls, behind the management secret */
ngx_int_t
ngx_nebula_account_handler(ngx_http_request_t *r)
{
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL) {
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    "Accounts are not enabled: they need "
                                    "nebula_redis.");
    }

    return ngx_nebula_account_start(r, 1, NULL, NULL);
}


/*
 * nebula signup: POST /v1/accounts, self-service, when nebula_signup opens
 * it (off by default); nginx's limit_req throttles it (examples/)
 */
ngx_int_t
ngx_nebula_signup_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_nebula_call_ctx_t     *call;
    ngx_nebula_main_conf_t    *nmcf;
    ngx_nebula_account_ctx_t  *a;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL || nmcf->signup_plan.len == 0) {
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    "Sign-up is not open here: ask the "
                                    "operator for an account.");
    }

    if (r->method != NGX_HTTP_POST) {
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_ALLOWED,
                                    "method_not_allowed", NULL,
                                    "This endpoint takes POST only.");
    }

    call = ngx_nebula_call_start(r, ngx_nebula_account_answer);
    a = ngx_pcalloc(r->pool, sizeof(ngx_nebula_account_ctx_t));
    if (call == NULL || a == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->data = a;
    a->call = call;
    a->op = NGX_NEBULA_ACCOUNT_SIGNUP;
    ngx_str_set(&a->auth, "");

    rc = ngx_http_read_client_request_body(r,
                                           ngx_nebula_account_body_handler);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * A holder names models as a client does: a private model (a customer's
 * own) is unknown to them, as it is to a client (docs/api.md): refused as
 * any unknown name.  The operator narrows a key to one.  NGX_OK, or *rc
 * the refusal.
 */
static ngx_int_t
ngx_nebula_account_private(ngx_nebula_account_ctx_t *a, ngx_int_t *rc)
{
    u_char                  *p, *last, *s;
    ngx_nebula_model_t      *model;
    ngx_nebula_main_conf_t  *nmcf;

    if (a->f.models.data == NULL) {
        return NGX_OK;
    }

    nmcf = ngx_http_get_module_main_conf(a->call->r, ngx_http_nebula_module);

    p = a->f.models.data;
    last = p + a->f.models.len;

    while (p < last) {
        s = p;

        while (p < last && *p != ' ') {
            p++;
        }

        model = ngx_nebula_find_model(nmcf, s, p - s);

        if (model && model->private) {
            *ngx_snprintf(a->f.text, sizeof(a->f.text) - 1,
                          "Unknown model '%*s': models must be in the "
                          "catalog.", (size_t) (p - s), s) = '\0';
            *rc = ngx_nebula_api_error(a->call->r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_value", "models",
                                       (char *) a->f.text);
            return NGX_DECLINED;
        }

        p++;
    }

    return NGX_OK;
}


/*
 * A sign-up's body checked, its invite code too: the account it makes,
 * of the plan nginx.conf names, with a first key.  NGX_OK, or *rc the
 * refusal.
 */
static ngx_int_t
ngx_nebula_account_signup(ngx_nebula_account_ctx_t *a, ngx_int_t *rc)
{
    ngx_http_request_t      *r;
    ngx_nebula_main_conf_t  *nmcf;

    r = a->call->r;
    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->signup_invite.len
        && (a->f.invite.data == NULL
            || !ngx_nebula_secret_equal(&a->f.invite, &nmcf->signup_invite)))
    {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_FORBIDDEN,
                                   "invalid_invite_code", "invite_code",
                                   a->f.invite.data
                                   ? "This invite code is not valid."
                                   : "Sign-up here needs an invite code: "
                                     "\"invite_code\".");
        return NGX_DECLINED;
    }

    a->f.plan = nmcf->signup_plan;
    a->f.first_key = 1;
    ngx_str_set(&a->f.key_name, "default");

    return NGX_OK;
}


ngx_int_t
ngx_nebula_account_start(ngx_http_request_t *r, ngx_uint_t holder,
    u_char *p, u_char *last)
{
    ngx_int_t                  rc;
    ngx_pool_cleanup_t        *cln;
    ngx_nebula_call_ctx_t     *call;
    ngx_nebula_account_ctx_t  *a;

    call = ngx_nebula_call_start(r, ngx_nebula_account_answer);
    a = ngx_pcalloc(r->pool, sizeof(ngx_nebula_account_ctx_t));
    if (call == NULL || a == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_nebula_account_cleanup;
    cln->data = a;

    call->data = a;
    a->call = call;
    a->holder = holder;
    ngx_str_set(&a->auth, "");

    rc = holder ? ngx_nebula_account_route_holder(r, a)
                : ngx_nebula_account_route_admin(r, a, p, last);

    switch (rc) {
    case NGX_OK:
        break;
    case NGX_HTTP_NOT_ALLOWED:
        return ngx_nebula_api_error(r, rc, "method_not_allowed", NULL,
                                    "This method is not allowed here.");
    default:
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    holder ? "No such endpoint."
                                           : "No such admin endpoint.");
    }

    if (holder && ngx_nebula_account_holder_auth(r, a, &rc) != NGX_OK) {
        return rc;
    }

    if ((a->op == NGX_NEBULA_ACCOUNT_LIST || a->op == NGX_NEBULA_ACCOUNT_KEYS
         || a->op == NGX_NEBULA_ACCOUNT_ACTIVITY)
        && ngx_nebula_account_query(r, a, &rc) != NGX_OK)
    {
        return rc;
    }

    if (a->op == NGX_NEBULA_ACCOUNT_CREATE
        || a->op == NGX_NEBULA_ACCOUNT_PATCH
        || a->op == NGX_NEBULA_ACCOUNT_KEY_CREATE
        || a->op == NGX_NEBULA_ACCOUNT_KEY_PATCH)
    {
        rc = ngx_http_read_client_request_body(r,
                                             ngx_nebula_account_body_handler);
        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_nebula_account_send(a);

    if (rc != NGX_AGAIN) {
        return rc;
    }

    r->main->count++;
    return NGX_DONE;
}


static void
ngx_nebula_account_body_handler(ngx_http_request_t *r)
{
    u_char                    *body;
    size_t                     len;
    ngx_int_t                  rc;
    ngx_nebula_ctx_t          *ctx;
    ngx_nebula_account_ctx_t  *a;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);
    a = ctx->call->data;

    rc = ngx_nebula_body_bytes(r, &body, &len);

    if (rc == NGX_OK) {
        rc = ngx_nebula_body_parse(r, body, len,
                                   (a->op == NGX_NEBULA_ACCOUNT_CREATE
                                    || a->op == NGX_NEBULA_ACCOUNT_PATCH)
                                   ? NGX_NEBULA_BODY_ACCOUNT
                                   : (a->op == NGX_NEBULA_ACCOUNT_SIGNUP)
                                   ? NGX_NEBULA_BODY_SIGNUP
                                   : NGX_NEBULA_BODY_ACCOUNT_KEY,
                                   a->op == NGX_NEBULA_ACCOUNT_CREATE
                                   || a->op == NGX_NEBULA_ACCOUNT_SIGNUP
                                   || a->op == NGX_NEBULA_ACCOUNT_KEY_CREATE,
                                   &a->f);

        switch (rc) {
        case NGX_OK:
            if (a->op == NGX_NEBULA_ACCOUNT_SIGNUP
                && ngx_nebula_account_signup(a, &rc) != NGX_OK)
            {
                break;
            }

            if (a->holder && ngx_nebula_account_private(a, &rc) != NGX_OK) {
                break;
            }

            rc = ngx_nebula_account_send(a);
            break;
        case NGX_DECLINED:
            rc = ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST, a->f.code,
                                      a->f.param, a->f.message);
            break;
        default:
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (rc != NGX_AGAIN) {
        ngx_http_finalize_request(r, rc);
    }
}


/* the scripts' first element: -1, 0, 1, ... (-100: no such reply) */
#define NGX_NEBULA_ACCOUNT_BAD  -100

static ngx_int_t
ngx_nebula_account_status(redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        return NGX_NEBULA_ACCOUNT_BAD;
    }

    return (ngx_int_t) reply->element[0]->integer;
}


static ngx_int_t
ngx_nebula_account_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    ngx_int_t                  st, rc;
    ngx_str_t                  argv[4];
    ngx_http_request_t        *r;
    ngx_nebula_account_ctx_t  *a;

    r = call->r;
    a = call->data;

    if (a->listing) {
        /* nb:accounts took the new account: it is made */
        return ngx_nebula_account_write_created(a);
    }

    st = (a->op == NGX_NEBULA_ACCOUNT_LIST) ? 1
                                             : ngx_nebula_account_status(reply);

    switch (st) {

    case NGX_NEBULA_ACCOUNT_BAD:
        return ngx_nebula_call_bad_reply(r, reply);

    case -1:
        return ngx_nebula_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                    "invalid_management_key", NULL,
                                    "Incorrect management key provided.");

    case 0:
        if (a->op == NGX_NEBULA_ACCOUNT_CREATE
            || a->op == NGX_NEBULA_ACCOUNT_SIGNUP)
        {
            /* the tag was taken: another */
            if (++a->attempts > 3) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return ngx_nebula_account_create(a);
        }

        return ngx_nebula_account_not_found(a);

    case 1:
        break;

    default:
        return ngx_nebula_account_refused(a, reply);
    }

    switch (a->op) {

    case NGX_NEBULA_ACCOUNT_CREATE:
    case NGX_NEBULA_ACCOUNT_SIGNUP:
        /* listed, for the admin's listing: another slot, a command */
        a->listing = 1;
        ngx_str_set(&argv[0], "ZADD");
        ngx_str_set(&argv[1], "nb:accounts");
        argv[2] = a->now;
        argv[3].data = a->tag;
        argv[3].len = NGX_NEBULA_KEY_ID_LEN;

        return ngx_nebula_call_command(call, 4, argv);

    default:
        break;
    }

    rc = ngx_nebula_account_write(a, reply);

    /* a reply it could not read was answered there, with a 500 */
    if (rc != NGX_OK || r->header_sent) {
        return rc;
    }

    switch (a->op) {

    case NGX_NEBULA_ACCOUNT_PATCH:
    case NGX_NEBULA_ACCOUNT_DELETE:
    case NGX_NEBULA_ACCOUNT_SUSPEND:
    case NGX_NEBULA_ACCOUNT_RESUME:
    case NGX_NEBULA_ACCOUNT_KEY_PATCH:
    case NGX_NEBULA_ACCOUNT_KEY_DELETE:
        /*
         * Every worker closes its leases of the account's keys when it
         * reads the change feed (every NGX_NEBULA_LEASE_POLL ms, on a
         * tick of half that): the answer waits until they have, so that
         * the change holds for the caller's next request, on any edge
         */
        ngx_nebula_lease_recall(a->tag);

        a->in_effect.handler = ngx_nebula_account_in_effect;
        a->in_effect.data = a;
        a->in_effect.log = r->connection->log;
        ngx_add_timer(&a->in_effect, NGX_NEBULA_ACCOUNT_IN_EFFECT);

        return NGX_AGAIN;

    default:
        return ngx_nebula_json_send(r, &a->json, a->http_status);
    }
}


/* a change holds everywhere now: its answer goes */
static void
ngx_nebula_account_in_effect(ngx_event_t *ev)
{
    ngx_nebula_account_ctx_t  *a = ev->data;

    ngx_http_request_t  *r;

    r = a->call->r;

    ngx_nebula_call_finish(a->call,
                           ngx_nebula_json_send(r, &a->json, a->http_status));
}


/* the request goes (its client left) before its change's answer */
static void
ngx_nebula_account_cleanup(void *data)
{
    ngx_nebula_account_ctx_t  *a = data;

    if (a->in_effect.timer_set) {
        ngx_del_timer(&a->in_effect);
    }
}
