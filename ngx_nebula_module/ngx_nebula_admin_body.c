/*
 * Nebula: the bodies that make or change a key or an account (POST and
 * PATCH /admin/keys, /admin/accounts, /v1/keys), read and checked into the
 * fields they set.  Nothing is sent from here: the APIs
 * (ngx_nebula_admin.c, ngx_nebula_accounts.c) answer a refusal and turn
 * the fields into their scripts' arguments.
 */

#include "ngx_nebula.h"

#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>


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


/* a string of the tree, copied to the pool: the tree is freed before use */
static ngx_int_t
ngx_nebula_admin_str(ngx_pool_t *pool, const char *s, ngx_str_t *str)
{
    str->len = ngx_strlen(s);
    str->data = ngx_pnalloc(pool, str->len + 1);
    if (str->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(str->data, s, str->len + 1);

    return NGX_OK;
}


static ngx_int_t
ngx_nebula_admin_refuse(ngx_nebula_key_fields_t *f, const char *code,
    const char *param, const char *message)
{
    f->code = code;
    f->param = param;
    f->message = message;

    return NGX_DECLINED;
}


/*
 * The body of an API call, in one piece with a NUL after it: NGX_OK, or
 * the status to finalize with (these bodies are small:
 * client_body_buffer_size holds them)
 */
ngx_int_t
ngx_nebula_body_bytes(ngx_http_request_t *r, u_char **body, size_t *len)
{
    u_char       *p;
    size_t        n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (r->request_body == NULL || r->request_body->temp_file) {
        return ngx_nebula_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "request_too_large", NULL,
                                    "The body is too large.");
    }

    n = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        n += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, n + 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *body = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    *p = '\0';
    *len = p - *body;

    return NGX_OK;
}


/*
 * The body of POST /admin/keys (create: 1) or PATCH /admin/keys/ID, len
 * bytes and a NUL after them, into *f: NGX_OK; NGX_DECLINED: refused, as
 * f says; NGX_ERROR: no memory
 */
ngx_int_t
ngx_nebula_admin_body_parse(ngx_http_request_t *r, u_char *body, size_t len,
    ngx_uint_t create, ngx_nebula_key_fields_t *f)
{
    return ngx_nebula_body_parse(r, body, len, NGX_NEBULA_BODY_KEY, create,
                                 f);
}


/*
 * What only an account's body, or only an account key's, may set: its
 * email and first key; its expiry and whether it is disabled
 */
static ngx_int_t
ngx_nebula_body_account_fields(ngx_http_request_t *r, yajl_val root,
    ngx_nebula_body_e kind, ngx_uint_t create, ngx_nebula_key_fields_t *f)
{
    size_t       n;
    yajl_val     email, key, kname, exp, dis, inv;

    static const char  *p_email[] = { "email", NULL };
    static const char  *p_key[] = { "key", NULL };
    static const char  *p_kname[] = { "name", NULL };
    static const char  *p_expires[] = { "expires_at", NULL };
    static const char  *p_disabled[] = { "disabled", NULL };
    static const char  *p_invite[] = { "invite_code", NULL };

    f->disabled = -1;

    if (kind == NGX_NEBULA_BODY_SIGNUP) {
        inv = yajl_tree_get(root, p_invite, yajl_t_any);

        if (inv && (!YAJL_IS_STRING(inv)
                    || ngx_strlen(inv->u.string) > 200))
        {
            return ngx_nebula_admin_refuse(f, "invalid_value",
                                           "invite_code",
                                           "'invite_code' must be a "
                                           "string.");
        }

        if (inv && ngx_nebula_admin_str(r->pool, inv->u.string, &f->invite)
                   != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (kind == NGX_NEBULA_BODY_ACCOUNT || kind == NGX_NEBULA_BODY_SIGNUP) {
        email = yajl_tree_get(root, p_email, yajl_t_any);

        if (email && YAJL_IS_NULL(email)) {
            ngx_str_set(&f->email, "");

        } else if (email) {
            n = YAJL_IS_STRING(email) ? ngx_strlen(email->u.string) : 0;

            if (n < 3 || n > 254 || strchr(email->u.string, '@') == NULL
                || strpbrk(email->u.string, " \t\r\n\"<>") != NULL)
            {
                return ngx_nebula_admin_refuse(f, "invalid_value", "email",
                                               "'email' must be an email "
                                               "address.");
            }

            if (ngx_nebula_admin_str(r->pool, email->u.string, &f->email)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        key = (kind == NGX_NEBULA_BODY_ACCOUNT)
              ? yajl_tree_get(root, p_key, yajl_t_any) : NULL;

        if (key && create && (YAJL_IS_TRUE(key) || YAJL_IS_OBJECT(key))) {
            f->first_key = 1;
            ngx_str_set(&f->key_name, "");
            kname = YAJL_IS_OBJECT(key)
                    ? yajl_tree_get(key, p_kname, yajl_t_any) : NULL;

            if (kname && (!YAJL_IS_STRING(kname)
                          || ngx_strlen(kname->u.string) > 100))
            {
                return ngx_nebula_admin_refuse(f, "invalid_value", "key",
                                               "'key.name' must be a string "
                                               "of at most 100 bytes.");
            }

            if (kname && ngx_nebula_admin_str(r->pool, kname->u.string,
                                              &f->key_name)
                         != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (key && !YAJL_IS_FALSE(key) && !YAJL_IS_NULL(key)) {
            return ngx_nebula_admin_refuse(f, "invalid_value", "key",
                                           create
                                           ? "'key' is true, or an object "
                                             "with the first key's name."
                                           : "Keys are made with POST "
                                             "/admin/accounts/ID/keys.");
        }

        return NGX_OK;
    }

    exp = yajl_tree_get(root, p_expires, yajl_t_any);

    if (exp && YAJL_IS_NULL(exp)) {
        ngx_str_set(&f->expires, "");

    } else if (exp) {
        if (!YAJL_IS_INTEGER(exp)
            || YAJL_GET_INTEGER(exp) <= (long long) ngx_nebula_now(r)
            || YAJL_GET_INTEGER(exp) > 32503680000LL)
        {
            return ngx_nebula_admin_refuse(f, "invalid_value", "expires_at",
                                           "'expires_at' is a time to come, "
                                           "in seconds since 1970 (UTC), or "
                                           "null for never.");
        }

        f->expires.data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (f->expires.data == NULL) {
            return NGX_ERROR;
        }

        f->expires.len = ngx_sprintf(f->expires.data, "%L",
                                     (int64_t) YAJL_GET_INTEGER(exp))
                         - f->expires.data;
    }

    dis = yajl_tree_get(root, p_disabled, yajl_t_any);

    if (dis) {
        if (!YAJL_IS_TRUE(dis) && !YAJL_IS_FALSE(dis)) {
            return ngx_nebula_admin_refuse(f, "invalid_value", "disabled",
                                           "'disabled' is true or false.");
        }

        f->disabled = YAJL_IS_TRUE(dis);
    }

    return NGX_OK;
}


/*
 * The body of a key or an account (kind) to make (create: 1) or change,
 * len bytes and a NUL after them, into *f: NGX_OK; NGX_DECLINED: refused,
 * as f says; NGX_ERROR: no memory
 */
ngx_int_t
ngx_nebula_body_parse(ngx_http_request_t *r, u_char *body, size_t len,
    ngx_nebula_body_e kind, ngx_uint_t create, ngx_nebula_key_fields_t *f)
{
    char                     err[128];
    const char              *bad;
    ngx_int_t                rc;
    ngx_uint_t               i;
    yajl_val                 root, plan, name, lim, mod, status;
    ngx_nebula_main_conf_t  *nmcf;

    static const char  *p_plan[] = { "plan", NULL };
    static const char  *p_name[] = { "name", NULL };
    static const char  *p_limits[] = { "limits", NULL };
    static const char  *p_models[] = { "models", NULL };
    static const char  *p_status[] = { "status", NULL };

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    ngx_memzero(f, sizeof(ngx_nebula_key_fields_t));
    f->disabled = -1;

    rc = ngx_nebula_admin_scan(body, len);

    switch (rc) {
    case NGX_OK:
        break;
    case NGX_DECLINED:
        return ngx_nebula_admin_refuse(f, "invalid_json", NULL,
                                       "The body nests too deep.");
    case NGX_ABORT:
        return ngx_nebula_admin_refuse(f, "invalid_json", NULL,
                                       "The body must be one JSON object, "
                                       "without comments.");
    default:
        return NGX_ERROR;
    }

    /* yajl_tree_parse() reads up to a NUL; the scan refuses one in JSON */
    if (ngx_strlen(body) != len) {
        return ngx_nebula_admin_refuse(f, "invalid_json", NULL,
                                       "The body must be a JSON object.");
    }

    root = yajl_tree_parse((char *) body, err, sizeof(err));

    if (root == NULL) {
        /* what the scan accepted is JSON: yajl ran out of memory */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "nebula: yajl_tree_parse() failed on an admin body: %s",
                      err);
        return NGX_ERROR;
    }

    if (!YAJL_IS_OBJECT(root)) {
        yajl_tree_free(root);
        return ngx_nebula_admin_refuse(f, "invalid_json", NULL,
                                       "The body must be a JSON object.");
    }

    plan = yajl_tree_get(root, p_plan, yajl_t_any);
    name = yajl_tree_get(root, p_name, yajl_t_any);
    lim = yajl_tree_get(root, p_limits, yajl_t_any);
    mod = yajl_tree_get(root, p_models, yajl_t_any);
    status = yajl_tree_get(root, p_status, yajl_t_any);

    bad = NULL;

    if (kind == NGX_NEBULA_BODY_SIGNUP && (plan || status || lim || mod)) {
        rc = ngx_nebula_admin_refuse(f, "invalid_value",
                                     plan ? "plan" : status ? "status"
                                     : lim ? "limits" : "models",
                                     "A sign-up sets name, email and "
                                     "invite_code only: its plan is the "
                                     "service's.");
        goto done;
    }

    if (kind == NGX_NEBULA_BODY_ACCOUNT_KEY && (plan || status)) {
        rc = ngx_nebula_admin_refuse(f, "invalid_value",
                                     plan ? "plan" : "status",
                                     plan ? "A key's plan is its account's."
                                          : "A key is disabled with "
                                            "\"disabled\": true, and "
                                            "revoked with DELETE.");
        goto done;
    }

    if (kind != NGX_NEBULA_BODY_KEY) {
        rc = ngx_nebula_body_account_fields(r, root, kind, create, f);
        if (rc != NGX_OK) {
            goto done;
        }
    }

    if (plan == NULL && create && kind != NGX_NEBULA_BODY_ACCOUNT_KEY
        && kind != NGX_NEBULA_BODY_SIGNUP)
    {
        rc = ngx_nebula_admin_refuse(f, "missing_field", "plan",
                                     "Missing required parameter: 'plan'.");
        goto done;
    }

    if (plan && (!YAJL_IS_STRING(plan)
                 || ngx_nebula_find_plan(nmcf, (u_char *) plan->u.string,
                                         ngx_strlen(plan->u.string))
                    == NULL))
    {
        rc = ngx_nebula_admin_refuse(f, "invalid_value", "plan",
                                     "Unknown plan: see the nebula_plan "
                                     "lines of nginx.conf.");
        goto done;
    }

    if (name && (!YAJL_IS_STRING(name) || ngx_strlen(name->u.string) > 100)) {
        rc = ngx_nebula_admin_refuse(f, "invalid_value", "name",
                                     "'name' must be a string of at most "
                                     "100 bytes.");
        goto done;
    }

    if (lim && YAJL_IS_NULL(lim)) {
        /* "limits": null removes the member: every limit is the plan's */
        for (i = 0; i < 3; i++) {
            ngx_str_set(&f->limits[i], "");
        }

    } else if (lim) {
        rc = YAJL_IS_OBJECT(lim) ? ngx_nebula_admin_limits(r, lim, f->limits,
                                                           &bad)
                                 : NGX_DECLINED;

        if (rc == NGX_ERROR) {
            goto done;
        }

        if (rc != NGX_OK) {
            /* bad is in the tree: the message is made before it goes */
            *ngx_snprintf(f->text, sizeof(f->text) - 1, "Invalid limit "
                          "'%s': a non-negative integer, or null for the "
                          "plan's.", bad ? bad : "limits") = '\0';
            rc = ngx_nebula_admin_refuse(f, "invalid_value", "limits",
                                         (char *) f->text);
            goto done;
        }
    }

    if (mod && !YAJL_IS_NULL(mod)) {
        rc = YAJL_IS_ARRAY(mod)
             ? ngx_nebula_admin_models(r, mod, &f->models, &bad) : NGX_ABORT;

        if (rc == NGX_ERROR) {
            goto done;
        }

        if (rc != NGX_OK) {
            *ngx_snprintf(f->text, sizeof(f->text) - 1, rc == NGX_DECLINED
                          ? "Unknown model '%s': models must be in the "
                            "catalog."
                          : "'models' must be an array of model names.%s",
                          rc == NGX_DECLINED ? bad : "") = '\0';
            rc = ngx_nebula_admin_refuse(f, "invalid_value", "models",
                                         (char *) f->text);
            goto done;
        }
    }

    f->models_named = (mod != NULL);

    if (status && !(YAJL_IS_STRING(status)
                     && (ngx_strcmp(status->u.string, "active") == 0
                         || ngx_strcmp(status->u.string,
                                       (kind == NGX_NEBULA_BODY_ACCOUNT
                                        ? "suspended" : "revoked"))
                            == 0)))
    {
        rc = ngx_nebula_admin_refuse(f, "invalid_value", "status",
                                     kind == NGX_NEBULA_BODY_ACCOUNT
                                     ? "'status' is \"active\" or "
                                       "\"suspended\"."
                                     : "'status' is \"active\" or "
                                       "\"revoked\".");
        goto done;
    }

    if (create && status) {
        rc = ngx_nebula_admin_refuse(f, "invalid_value", "status",
                                     kind == NGX_NEBULA_BODY_ACCOUNT
                                     ? "A new account is active."
                                     : "A new key is active.");
        goto done;
    }

    rc = NGX_ERROR;

    if (plan && ngx_nebula_admin_str(r->pool, plan->u.string, &f->plan)
                != NGX_OK)
    {
        goto done;
    }

    if (name && ngx_nebula_admin_str(r->pool, name->u.string, &f->name)
                != NGX_OK)
    {
        goto done;
    }

    if (status && ngx_nebula_admin_str(r->pool, status->u.string, &f->status)
                  != NGX_OK)
    {
        goto done;
    }

    rc = NGX_OK;

done:

    yajl_tree_free(root);

    return rc;
}
