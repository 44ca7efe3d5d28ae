/*
 * Nebula: OpenRouter's generation records.
 *
 * Every request a key was admitted for leaves, when it ends, a record of
 * how it went: its model, its tokens and their cost (as settled), how long
 * it took and how long until its first byte, how it finished, its status.
 * The record goes to Redis as nb:{ID}:g:REQUEST (the key's hash tag: its
 * slot), a JSON document that lives nebula_generation_ttl, sent without a
 * reply awaited and without a request waiting: hiredis writes the records
 * a turn of the event loop brings in one write.  Redis down, it is lost
 * (it is no part of the usage, which settlement keeps).
 *
 * GET /v1/generation?id=REQUEST (nebula generation) reads one back for
 * the key that made it: the record's name comes from the caller's own
 * key, so another key's request is not found.
 */

#include "ngx_nebula_records.h"


/* the id a response gives in x-request-id: 32 hex digits */
#define NGX_NEBULA_GENERATION_ID_LEN  32


static void ngx_nebula_generation_sent(void *data, redisReply *reply);
static ngx_int_t ngx_nebula_generation_answer(ngx_nebula_call_ctx_t *call,
    redisReply *reply);
static ngx_int_t ngx_nebula_generation_found(ngx_nebula_call_ctx_t *call,
    redisReply *reply);


/* how the request finished, as OpenRouter normalizes it; NULL: none */
static const char *
ngx_nebula_generation_finish(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    uint64_t out, ngx_uint_t cancelled)
{
    if (ctx->upstream_failed || ctx->stream_broken
        || r->headers_out.status >= NGX_HTTP_SPECIAL_RESPONSE)
    {
        return "error";
    }

    if (cancelled || ctx->api->embeds) {
        return NULL;
    }

    if (ctx->cut) {
        return "length";
    }

    if (ctx->stream.tool_bytes) {
        return "tool_calls";
    }

    /* the pool stopped at the limit it was sent */
    if (ctx->reserved_out && out >= ctx->reserved_out) {
        return "length";
    }

    return "stop";
}


/*
 * The request's record, from its settlement (ngx_nebula_charge.c): in and
 * out are what it is charged, estimated how.
 */
void
ngx_nebula_generation_record(ngx_nebula_ctx_t *ctx, uint64_t in,
    uint64_t out, ngx_uint_t estimated, ngx_uint_t cancelled)
{
    u_char                  *doc, *p, *last, key[NGX_NEBULA_KEY_ID_LEN + 48],
                             ttl[NGX_TIME_T_LEN], cost[NGX_INT64_LEN + 16];
    size_t                   size;
    ngx_tm_t                 tm;
    ngx_str_t                argv[5];
    ngx_msec_int_t           latency;
    ngx_time_t              *tp;
    const char              *finish;
    ngx_http_request_t      *r;
    ngx_nebula_main_conf_t  *nmcf;

    r = ctx->request;
    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->generation_ttl == 0 || ctx->request_id[0] == '\0'
        || !ngx_nebula_redis_ready())
    {
        return;
    }

    tp = ngx_timeofday();
    latency = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                                + (tp->msec - r->start_msec));
    latency = ngx_max(latency, 0);

    finish = ngx_nebula_generation_finish(r, ctx, out, cancelled);

    /*
     * Written into memory of its own: the request's pool is being
     * destroyed (its cleanup runs this), and r->pool is NULL already
     */
    size = 640 + ctx->model->quoted.len;

    doc = ngx_alloc(size, ngx_cycle->log);
    if (doc == NULL) {
        return;
    }

    last = doc + size;

    ngx_gmtime(ctx->now, &tm);
    *ngx_nebula_decimal12(cost, ctx->cost) = '\0';

    p = ngx_slprintf(doc, last,
                     "{\"id\":\"%*s\",\"model\":%V,\"api_type\":\"%V\","
                     "\"created_at\":\"%4d-%02d-%02dT%02d:%02d:%02dZ\","
                     "\"streamed\":%s,\"cancelled\":%s,\"status\":%ui,"
                     "\"finish_reason\":%s%s%s,"
                     "\"tokens_prompt\":%uL,\"tokens_completion\":%uL,"
                     "\"usage_source\":\"%s\",\"total_cost\":%s,"
                     "\"latency\":%M,",
                     (size_t) NGX_NEBULA_GENERATION_ID_LEN, ctx->request_id,
                     &ctx->model->quoted, &ctx->api->name,
                     tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                     tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                     ctx->stream.format != NEBULA_FORMAT_JSON
                     ? "true" : "false",
                     cancelled ? "true" : "false",
                     r->headers_out.status,
                     finish ? "\"" : "", finish ? finish : "null",
                     finish ? "\"" : "",
                     in, out, estimated ? "estimated" : "reported", cost,
                     (ngx_msec_t) latency);

    if (ctx->first_byte) {
        p = ngx_slprintf(p, last, "\"time_to_first_token\":%M,"
                         "\"generation_time\":%M}",
                         ctx->ttft,
                         (ngx_msec_t) ngx_max(latency - (ngx_msec_int_t)
                                                        ctx->ttft, 0));

    } else {
        p = ngx_slprintf(p, last, "\"time_to_first_token\":null,"
                         "\"generation_time\":null}");
    }

    ngx_str_set(&argv[0], "SET");

    argv[1].data = key;
    argv[1].len = ngx_sprintf(key, "nb:{%s}:g:%*s", ctx->key_id,
                              (size_t) NGX_NEBULA_GENERATION_ID_LEN,
                              ctx->request_id)
                  - key;

    argv[2].data = doc;
    argv[2].len = p - doc;

    ngx_str_set(&argv[3], "EX");
    argv[4].data = ttl;
    argv[4].len = ngx_sprintf(ttl, "%T", nmcf->generation_ttl) - ttl;

    /* best effort: a record Redis does not take is not retried */
    (void) ngx_nebula_redis_command(5, argv, ngx_nebula_generation_sent,
                                    NULL);

    /* the command holds a copy */
    ngx_free(doc);
}


static void
ngx_nebula_generation_sent(void *data, redisReply *reply)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "nebula: a generation record was refused: %*s",
                      (size_t) reply->len, reply->str);
    }
}


/* GET /v1/generation?id=REQUEST: the caller's own request, as it went */
ngx_int_t
ngx_nebula_generation_handler(ngx_http_request_t *r)
{
    ngx_str_t                id;
    ngx_uint_t               i;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL || nmcf->generation_ttl == 0) {
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    "Generation records are not kept "
                                    "here.");
    }

    if (ngx_http_arg(r, (u_char *) "id", 2, &id) != NGX_OK || id.len == 0) {
        return ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST,
                                    "missing_required_parameter", "id",
                                    "Missing required parameter: 'id' (the "
                                    "x-request-id of a response).");
    }

    for (i = 0; i < id.len; i++) {
        if (!((id.data[i] >= '0' && id.data[i] <= '9')
              || (id.data[i] >= 'a' && id.data[i] <= 'f')))
        {
            break;
        }
    }

    if (id.len != NGX_NEBULA_GENERATION_ID_LEN || i != id.len) {
        return ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "id",
                                    "Invalid 'id': a generation id is the "
                                    "32 hex digits of a response's "
                                    "x-request-id.");
    }

    return ngx_nebula_own_key_lookup(r, ngx_nebula_generation_answer);
}


static ngx_int_t
ngx_nebula_generation_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   id, argv[2];

    if (ngx_nebula_own_key_check(call, reply, &rc) != NGX_OK) {
        return rc;
    }

    (void) ngx_http_arg(call->r, (u_char *) "id", 2, &id);

    p = ngx_pnalloc(call->r->pool,
                    NGX_NEBULA_KEY_ID_LEN + 16 + NGX_NEBULA_GENERATION_ID_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&argv[0], "GET");
    argv[1].data = p;
    argv[1].len = ngx_sprintf(p, "nb:{%s}:g:%V", call->id, &id) - p;

    call->answer = ngx_nebula_generation_found;

    return ngx_nebula_call_command(call, 2, argv);
}


static ngx_int_t
ngx_nebula_generation_found(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    ngx_nebula_json_t  j;

    if (reply->type == REDIS_REPLY_NIL) {
        return ngx_nebula_api_error(call->r, NGX_HTTP_NOT_FOUND,
                                    "generation_not_found", "id",
                                    "No generation with this id: it was "
                                    "made with another key, or has expired.");
    }

    if (reply->type != REDIS_REPLY_STRING) {
        return ngx_nebula_call_bad_reply(call->r, reply);
    }

    ngx_nebula_json_init(&j, call->r->pool);
    ngx_nebula_json_lit(&j, "{\"data\":");
    ngx_nebula_json_raw(&j, reply->str, reply->len);
    ngx_nebula_json_lit(&j, "}");

    return ngx_nebula_json_send(call->r, &j, NGX_HTTP_OK);
}
