/*
 * Nebula: the key holder's API, behind the key itself.
 *
 *   GET /v1/key     (nebula key) the caller's key, its limits and usage,
 *                   as OpenRouter's /api/v1/key
 */

#include "ngx_nebula_records.h"


static ngx_int_t
ngx_nebula_holder_key_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    ngx_int_t           rc;
    ngx_nebula_json_t   j;

    if (ngx_nebula_own_key_check(call, reply, &rc) != NGX_OK) {
        return rc;
    }

    ngx_nebula_json_init(&j, call->r->pool);

    ngx_nebula_json_lit(&j, "{\"data\":");

    if (reply->elements == NGX_NEBULA_RECORD_ACCOUNT_KEY) {
        ngx_nebula_account_write_own(call->r, &j, reply, call->month,
                                     call->now);

    } else {
        ngx_nebula_write_key(call->r, &j, reply->element[0],
                             reply->element[1], reply->element[2],
                             call->month, call->now, 1);
    }

    ngx_nebula_json_lit(&j, "}");

    return ngx_nebula_json_send(call->r, &j, NGX_HTTP_OK);
}


/* GET /v1/key: the caller's own key, usage and limits */
ngx_int_t
ngx_nebula_holder_key_handler(ngx_http_request_t *r)
{
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL) {
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    "Keys are not enabled: they need "
                                    "nebula_redis.");
    }

    return ngx_nebula_own_key_lookup(r, ngx_nebula_holder_key_answer);
}
