/*
 * Nebula: the $nebula_* variables, for proxy_pass, proxy_set_header,
 * log_format, map and the like.  Each is empty until the access phase has
 * chosen the model.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"


typedef enum {
    NGX_NEBULA_VAR_MODEL = 0,
    NGX_NEBULA_VAR_UPSTREAM_MODEL,
    NGX_NEBULA_VAR_POOL,
    NGX_NEBULA_VAR_POOL_URL,
    NGX_NEBULA_VAR_POOL_HOST,
    NGX_NEBULA_VAR_POOL_AUTHORIZATION,
    NGX_NEBULA_VAR_PROMPT_ESTIMATE,
    NGX_NEBULA_VAR_KEY_ID,
    NGX_NEBULA_VAR_PLAN,
    NGX_NEBULA_VAR_PROMPT_TOKENS,
    NGX_NEBULA_VAR_COMPLETION_TOKENS,
    NGX_NEBULA_VAR_COST,
    NGX_NEBULA_VAR_USAGE_SOURCE
} ngx_nebula_var_e;


static ngx_int_t ngx_nebula_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_nebula_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_nebula_vars[] = {

    { ngx_string("nebula_model"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_upstream_model"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_UPSTREAM_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_pool"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_POOL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_pool_url"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_POOL_URL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_pool_host"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_POOL_HOST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_pool_authorization"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_POOL_AUTHORIZATION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_prompt_tokens_estimate"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_PROMPT_ESTIMATE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_key_id"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_KEY_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_plan"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_PLAN, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_prompt_tokens"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_PROMPT_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_completion_tokens"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_COMPLETION_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_cost"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_COST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("nebula_usage_source"), NULL, ngx_nebula_variable,
      NGX_NEBULA_VAR_USAGE_SOURCE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    /* cached: one value a request, for x-request-id and the log alike */
    { ngx_string("nebula_request_id"), NULL, ngx_nebula_request_id_variable,
      0, 0, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_nebula_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_nebula_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_nebula_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char              *p;
    uint64_t             in, out;
    ngx_str_t           *s, str;
    ngx_uint_t           estimated;
    ngx_nebula_ctx_t    *ctx;
    ngx_nebula_pool_t   *pool;
    ngx_nebula_model_t  *model;

    pool = ngx_nebula_ps_pool(r);

    if (pool && data >= NGX_NEBULA_VAR_POOL
        && data <= NGX_NEBULA_VAR_POOL_AUTHORIZATION)
    {
        /* a subrequest of GET /api/ps goes to its own pool */
        goto pool;
    }

    /* an error_page redirect forgets module contexts: logs still want it */
    ctx = ngx_nebula_find_ctx(r->main);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == NGX_NEBULA_VAR_KEY_ID || data == NGX_NEBULA_VAR_PLAN) {
        if (data == NGX_NEBULA_VAR_KEY_ID ? ctx->key_id[0] == '\0'
                                          : !ctx->admitted)
        {
            v->not_found = 1;
            return NGX_OK;
        }

        str.data = (data == NGX_NEBULA_VAR_KEY_ID)
                   ? ctx->key_id : (u_char *) ctx->admit.plan;
        str.len = ngx_strlen(str.data);
        s = &str;
        goto found;
    }

    if (ctx->model == NULL || ctx->req == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    model = ctx->model;
    pool = model->pool;

    if (data >= NGX_NEBULA_VAR_PROMPT_TOKENS) {
        /* as far as the request went: final once it is over (log phase) */
        if (!ctx->proxied) {
            v->not_found = 1;
            return NGX_OK;
        }

        estimated = ngx_nebula_usage(ctx, &in, &out);

        if (data == NGX_NEBULA_VAR_USAGE_SOURCE) {
            ngx_str_set(&str, "reported");

            if (estimated) {
                ngx_str_set(&str, "estimated");
            }

            s = &str;
            goto found;
        }

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 16);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;

        switch (data) {
        case NGX_NEBULA_VAR_PROMPT_TOKENS:
            p = ngx_sprintf(p, "%uL", in);
            break;
        case NGX_NEBULA_VAR_COMPLETION_TOKENS:
            p = ngx_sprintf(p, "%uL", out);
            break;
        default: /* NGX_NEBULA_VAR_COST: USD */
            p = ngx_nebula_decimal12(p, ngx_nebula_cost(model, in, out));
        }

        v->len = p - v->data;
        v->valid = 1;
        v->no_cacheable = 1;
        v->not_found = 0;
        return NGX_OK;
    }

    switch (data) {

    case NGX_NEBULA_VAR_MODEL:
        s = &model->name;
        goto found;

    case NGX_NEBULA_VAR_UPSTREAM_MODEL:
        s = &model->upstream_model;
        goto found;

    case NGX_NEBULA_VAR_POOL:
    case NGX_NEBULA_VAR_POOL_URL:
    case NGX_NEBULA_VAR_POOL_HOST:
    case NGX_NEBULA_VAR_POOL_AUTHORIZATION:
        goto pool;

    default: /* NGX_NEBULA_VAR_PROMPT_ESTIMATE */
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->len = ngx_sprintf(p, "%uL", ctx->req->prompt_tokens) - p;
        v->data = p;
        v->valid = 1;
        v->no_cacheable = 1;
        v->not_found = 0;
        return NGX_OK;
    }

pool:

    switch (data) {

    case NGX_NEBULA_VAR_POOL:
        s = &pool->name;
        break;

    case NGX_NEBULA_VAR_POOL_URL:
        s = &pool->url;
        break;

    case NGX_NEBULA_VAR_POOL_HOST:
        s = &pool->host;
        break;

    default: /* NGX_NEBULA_VAR_POOL_AUTHORIZATION */
        /* empty for a local pool: proxy_set_header then drops the header */
        s = &pool->authorization;
    }

found:

    /* an empty string may have no data: nginx copies values with memcpy() */
    v->len = s->len;
    v->data = s->len ? s->data : (u_char *) "";
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * 32 hex digits naming the request: the id its admission and settlement
 * carry in Redis when it was admitted, otherwise one of its own
 * (ngx_nebula_id.c).  Unlike $request_id it asks no CSPRNG a request
 * (RAND_bytes() cost a tenth of a request's instructions).
 */
static ngx_int_t
ngx_nebula_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char            *p;
    ngx_nebula_ctx_t  *ctx;

    p = ngx_pnalloc(r->pool, 32);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx = ngx_nebula_find_ctx(r->main);

    if (ctx && ctx->request_id[0]) {
        ngx_memcpy(p, ctx->request_id, 32);

    } else {
        ngx_nebula_id_next(p);
    }

    v->len = 32;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}
