/*
 * Nebula: a proxied request before its content handler (the precontent
 * phase, after nginx's own access checks).
 *
 * The key is looked for first (no key, no body read: 401 at once).  Then
 * the body is read without blocking (nginx spills a large one to a temp
 * file), parsed and validated, and the model looked up in the catalog.
 * With keys on, the request waits here, suspended, for the admission
 * Redis decides (ngx_nebula_quota.c).  At last the body is rewritten for
 * the upstream (its model name, max_tokens clamped to the reservation)
 * and proxy_pass carries it to the model's pool ($nebula_pool_url).
 */

#include "ngx_nebula.h"


static void ngx_nebula_body_handler(ngx_http_request_t *r);
static void ngx_nebula_ctx_cleanup(void *data);
static ngx_int_t ngx_nebula_process_body(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);
static u_char *ngx_nebula_flatten_body(ngx_http_request_t *r, size_t *len);
static ngx_int_t ngx_nebula_check_model(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);
static uint64_t ngx_nebula_choices(nebula_request_t *req);
static ngx_int_t ngx_nebula_rewrite_body(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);


/*
 * The ctx is also found through a pool cleanup of its own, as the realip
 * module finds its: an internal redirect zeroes r->ctx, not the pool.
 */
static ngx_nebula_ctx_t *
ngx_nebula_create_ctx(ngx_http_request_t *r)
{
    ngx_nebula_ctx_t    *ctx;
    ngx_pool_cleanup_t  *cln;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_nebula_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_nebula_ctx_cleanup;
    cln->data = ctx;

    ctx->request = r;

    ngx_http_set_ctx(r, ctx, ngx_http_nebula_module);

    return ctx;
}


static void
ngx_nebula_ctx_cleanup(void *data)
{
    /* only a marker: see ngx_nebula_get_ctx */
}


/* the request's ctx, even after an internal redirect, without restoring it */
ngx_nebula_ctx_t *
ngx_nebula_find_ctx(ngx_http_request_t *r)
{
    ngx_nebula_ctx_t    *ctx;
    ngx_pool_cleanup_t  *cln;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);

    if (ctx || !(r->internal || r->filter_finalize)) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_nebula_ctx_cleanup) {
            return cln->data;
        }
    }

    return NULL;
}


ngx_nebula_ctx_t *
ngx_nebula_get_ctx(ngx_http_request_t *r)
{
    ngx_nebula_ctx_t  *ctx;

    ctx = ngx_nebula_find_ctx(r);

    if (ctx) {
        ngx_http_set_ctx(r, ctx, ngx_http_nebula_module);
    }

    return ctx;
}


ngx_int_t
ngx_nebula_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_nebula_ctx_t        *ctx;
    ngx_nebula_loc_conf_t   *nlcf;
    ngx_nebula_main_conf_t  *nmcf;

    nlcf = ngx_http_get_module_loc_conf(r, ngx_http_nebula_module);

    if (nlcf->api != NGX_NEBULA_API_CHAT
        && nlcf->api != NGX_NEBULA_API_OLLAMA_CHAT
        && nlcf->api != NGX_NEBULA_API_OLLAMA_GENERATE)
    {
        return NGX_DECLINED;
    }

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_nebula_get_ctx(r);

    if (ctx != NULL) {
        /*
         * Re-entered: once the body has been read and handled, or after
         * an internal redirect (which forgets module contexts) into
         * another location of ours, where it must not be admitted twice.
         */
        return ctx->body_done ? NGX_DECLINED : NGX_AGAIN;
    }

    if (r->method != NGX_HTTP_POST) {
        ngx_http_finalize_request(r,
            ngx_nebula_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                  "invalid_request_error",
                                  "method_not_allowed", NULL,
                                  "This endpoint takes POST only."));
        return NGX_DONE;
    }

    ctx = ngx_nebula_create_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis) {
        if (ngx_nebula_key_from_request(r, &ctx->secret) != NGX_OK) {
            ngx_http_finalize_request(r,
                ngx_nebula_send_error(r, NGX_HTTP_UNAUTHORIZED,
                    "invalid_request_error", "invalid_api_key", NULL,
                    "You didn't provide an API key. Send it as "
                    "\"Authorization: Bearer nb-...\"."));
            return NGX_DONE;
        }

        if (!ngx_nebula_key_well_formed(&ctx->secret)
            || ngx_nebula_key_digest(&ctx->secret, ctx->digest, ctx->key_id)
               != NGX_OK)
        {
            ngx_http_finalize_request(r,
                ngx_nebula_send_error(r, NGX_HTTP_UNAUTHORIZED,
                    "invalid_request_error", "invalid_api_key", NULL,
                    "Incorrect API key provided."));
            return NGX_DONE;
        }
    }

    rc = ngx_http_read_client_request_body(r, ngx_nebula_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        /* 413 and the like: error_page turns them into JSON */
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static void
ngx_nebula_body_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_nebula_ctx_t        *ctx;
    ngx_nebula_main_conf_t  *nmcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);

    rc = ngx_nebula_process_body(r, ctx);

    if (rc != NGX_OK || ctx->refused) {
        ngx_http_finalize_request(r, rc);
        return;
    }

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis) {
        rc = ngx_nebula_admit(r, ctx);

        if (rc == NGX_AGAIN) {
            return;     /* Redis decides; ngx_nebula_quota.c goes on */
        }

        if (rc == NGX_OK) {
            /* admitted from a lease (ngx_nebula_lease.c), Redis not asked */
            ngx_nebula_proceed(r, ctx);
            return;
        }

        if (rc != NGX_DECLINED) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        /* Redis cannot be asked now: the failure mode decides */

        if (!nmcf->failure_open) {
            ngx_nebula_refused(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                               "api_error", "quota_store_unavailable", NULL,
                               "The quota store is unavailable; "
                               "please retry shortly.");
            return;
        }

        ctx->unmetered = 1;
    }

    ngx_nebula_proceed(r, ctx);
}


/* the request passes: its body is rewritten and proxy_pass carries it */
void
ngx_nebula_proceed(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->model->private) {
        /*
         * Admitted: the key lists the model.  A refusal now gives the
         * reservation back, uncounted (ngx_nebula_settle_cleanup).
         */
        rc = ngx_nebula_check_model(r, ctx);

        if (rc != NGX_OK || ctx->refused) {
            ngx_http_finalize_request(r, rc);
            return;
        }
    }

    if (ctx->admitted && ctx->reserved_out < ngx_nebula_choices(ctx->req)) {
        /* less output left than a token a choice: given back, refused */
        ngx_nebula_refused(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                           "insufficient_quota", "insufficient_quota", NULL,
                           "You exceeded your monthly token quota; it "
                           "resets at the start of next month (UTC).");
        return;
    }

    if (ngx_nebula_rewrite_body(r, ctx) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_nebula_hide_headers(r);

    ctx->body_done = 1;
    ctx->proxied = 1;

    /* the body is kept for proxy_pass, as the mirror module keeps it */
    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/* a refusal decided after the body was read: sent, and the request ends */
void
ngx_nebula_refused(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_uint_t status, const char *type, const char *code, const char *param,
    const char *message)
{
    ctx->refused = 1;

    ngx_http_finalize_request(r,
        ngx_nebula_send_error(r, status, type, code, param, message));
}


/* sends a refusal; ngx_nebula_body_handler then finalizes with its result */
static ngx_int_t
ngx_nebula_refuse(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_uint_t status, const char *type, const char *code, const char *param,
    const char *message)
{
    ctx->refused = 1;

    return ngx_nebula_send_error(r, status, type, code, param, message);
}


/* returns NGX_OK to proxy the request, or what finalizes it */
static ngx_int_t
ngx_nebula_process_body(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    u_char                  *body, *p;
    size_t                   len;
    nebula_api_e             api;
    nebula_request_t        *req;
    ngx_nebula_model_t      *model;
    ngx_nebula_loc_conf_t   *nlcf;
    ngx_nebula_main_conf_t  *nmcf;
    nebula_request_policy_t  policy;
    u_char                   message[2 * NEBULA_MESSAGE_MAX];

    if (r->request_body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    nlcf = ngx_http_get_module_loc_conf(r, ngx_http_nebula_module);
    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    body = ngx_nebula_flatten_body(r, &len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    req = ngx_palloc(r->pool, sizeof(nebula_request_t));
    if (req == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->req = req;

    api = (nlcf->api == NGX_NEBULA_API_CHAT) ? NEBULA_API_CHAT
          : (nlcf->api == NGX_NEBULA_API_OLLAMA_CHAT) ? NEBULA_API_OLLAMA_CHAT
          : NEBULA_API_OLLAMA_GENERATE;

    policy.pass_options = nmcf->pass_names;

    if (nebula_request_parse_policy(req, api, body, len, &policy)
        != NEBULA_REQ_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "nebula: refused request: %s: %s",
                      nebula_req_error_code(req->error), req->message);

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_request_error",
                                     nebula_req_error_code(req->error),
                                     req->param, req->message);
    }

    model = ngx_nebula_find_model(nmcf, (u_char *) req->model,
                                  req->model_len);

    /* a private model exists only for the keys that list it (admission) */
    if (model == NULL || (model->private && nmcf->redis == NULL)) {
        p = ngx_snprintf(message, sizeof(message) - 1,
                         "The model '%s' does not exist. "
                         "See GET /v1/models for the models served here.",
                         req->model);
        *p = '\0';

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_NOT_FOUND,
                                     "invalid_request_error",
                                     "model_not_found", "model",
                                     (char *) message);
    }

    ctx->model = model;
    ctx->body = body;
    ctx->body_len = len;

    /*
     * A private model exists only for the keys that list it: what the
     * request holds is checked against it once admission says the key
     * does (ngx_nebula_proceed), or a refusal would tell anyone that it
     * exists.
     */
    if (model->private) {
        return NGX_OK;
    }

    return ngx_nebula_check_model(r, ctx);
}


/* what the model itself refuses: images it does not take, a long prompt */
static ngx_int_t
ngx_nebula_check_model(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    u_char              *p;
    nebula_request_t    *req = ctx->req;
    ngx_nebula_model_t  *model = ctx->model;
    u_char               message[2 * NEBULA_MESSAGE_MAX];

    if (req->images && !(model->modalities & NGX_NEBULA_MODALITY_IMAGE)) {
        p = ngx_snprintf(message, sizeof(message) - 1,
                         "The model '%V' does not take image input.",
                         &model->name);
        *p = '\0';

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_request_error",
                                     "invalid_value", "messages",
                                     (char *) message);
    }

    if (ngx_nebula_choices(req) > model->choices) {
        p = ngx_snprintf(message, sizeof(message) - 1,
                         "Invalid value for '%s': the model '%V' answers "
                         "%uL choice%s at most.",
                         req->best_of > req->n ? "best_of" : "n",
                         &model->name, model->choices,
                         model->choices == 1 ? "" : "s");
        *p = '\0';

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_request_error",
                                     "invalid_value",
                                     req->best_of > req->n ? "best_of" : "n",
                                     (char *) message);
    }

    if (req->prompt_tokens > model->context) {
        p = ngx_snprintf(message, sizeof(message) - 1,
                         "This model's maximum context length is %uL "
                         "tokens. However, your messages come to about "
                         "%uL tokens.", model->context, req->prompt_tokens);
        *p = '\0';

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_request_error",
                                     "context_length_exceeded", "messages",
                                     (char *) message);
    }

    return NGX_OK;
}


/* how many answers a request asks for in one: n, best_of (at least 1) */
static uint64_t
ngx_nebula_choices(nebula_request_t *req)
{
    int64_t  n;

    n = ngx_max(req->n, req->best_of);

    return n > 1 ? (uint64_t) n : 1;
}


/* one edit: the bytes [start, end) of the body become data */
static ngx_inline nebula_edit_t *
ngx_nebula_edit(nebula_edit_t *e, size_t start, size_t end, u_char *data,
    size_t len)
{
    e->start = start;
    e->end = end;
    e->data = data;
    e->len = len;

    return e + 1;
}


/*
 * The upstream is asked for no more output than the reservation holds:
 * max_tokens (and max_completion_tokens) on /v1, options.num_predict on
 * the native API, replaced when larger, added when absent.  n choices
 * share the reservation: each is asked for its part.
 */
static nebula_edit_t *
ngx_nebula_clamp_edits(ngx_nebula_ctx_t *ctx, nebula_edit_t *e,
    u_char num[][64])
{
    uint64_t           cap;
    nebula_request_t  *req = ctx->req;

    cap = ctx->reserved_out / ngx_nebula_choices(req);

    if (req->api == NEBULA_API_CHAT) {

        if (req->max_tokens_span.end > req->max_tokens_span.start) {
            if (req->max_tokens < 0 || (uint64_t) req->max_tokens != cap) {
                e = ngx_nebula_edit(e, req->max_tokens_span.start,
                                    req->max_tokens_span.end, num[0],
                                    ngx_sprintf(num[0], "%uL", cap) - num[0]);
            }

        } else {
            e = ngx_nebula_edit(e, req->top_start + 1, req->top_start + 1,
                                num[0],
                                ngx_sprintf(num[0], "\"max_tokens\":%uL,", cap)
                                - num[0]);
        }

        if (req->max_completion_tokens_span.end
            > req->max_completion_tokens_span.start
            && (req->max_completion_tokens < 0
                || (uint64_t) req->max_completion_tokens != cap))
        {
            e = ngx_nebula_edit(e, req->max_completion_tokens_span.start,
                                req->max_completion_tokens_span.end, num[1],
                                ngx_sprintf(num[1], "%uL", cap) - num[1]);
        }

        return e;
    }

    if (req->num_predict_span.end > req->num_predict_span.start) {
        /* -1 (no limit), -2 (fill the context) and null are replaced too */
        if (req->num_predict < 0 || (uint64_t) req->num_predict != cap) {
            e = ngx_nebula_edit(e, req->num_predict_span.start,
                                req->num_predict_span.end, num[0],
                                ngx_sprintf(num[0], "%uL", cap) - num[0]);
        }

        return e;
    }

    if (req->options_null) {
        return ngx_nebula_edit(e, req->options_span.start,
                               req->options_span.end, num[0],
                               ngx_sprintf(num[0], "{\"num_predict\":%uL}",
                                           cap)
                               - num[0]);
    }

    if (req->options_span.end > req->options_span.start) {
        /*
         * {"num_predict":N} into "options": {} or {"num_predict":N, ...},
         * a comma only when a member stays (the drops of options begin
         * where this goes in, and go after it: nebula_edit_sort)
         */
        return ngx_nebula_edit(e, req->options_span.start + 1,
                               req->options_span.start + 1, num[0],
                               ngx_sprintf(num[0], "\"num_predict\":%uL%s",
                                           cap,
                                           req->options_kept ? "," : "")
                               - num[0]);
    }

    return ngx_nebula_edit(e, req->top_start + 1, req->top_start + 1, num[0],
                           ngx_sprintf(num[0],
                                       "\"options\":{\"num_predict\":%uL},",
                                       cap)
                           - num[0]);
}


/*
 * The body sent upstream names the upstream's model and, when a
 * reservation was made, asks for no more output than it holds; what a
 * client must not set on a shared fleet is dropped or bounded (docs/api.md,
 * "What reaches a pool"): options that reload a model, a keep_alive (the
 * operator's, nebula_model keep_alive=, goes instead), a num_ctx past the
 * catalog's context.  Nothing else moves.
 */
static ngx_int_t
ngx_nebula_rewrite_body(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    u_char               *p, *q;
    size_t                n, i, nedits;
    ngx_buf_t            *b;
    ngx_chain_t          *cl;
    nebula_edit_t        *e;
    nebula_request_t     *req = ctx->req;
    ngx_nebula_model_t   *model = ctx->model;
    nebula_edit_t         edits[NEBULA_DROP_MAX + 8];
    u_char                num[4][64];

    e = ngx_nebula_edit(edits, req->model_span.start, req->model_span.end,
                        model->upstream_quoted.data,
                        model->upstream_quoted.len);

    if (ctx->admitted) {
        e = ngx_nebula_clamp_edits(ctx, e, num);
    }

    for (i = 0; i < req->ndrops; i++) {
        e = ngx_nebula_edit(e, req->drops[i].start, req->drops[i].end,
                            NULL, 0);
    }

    if (req->num_ctx > 0 && (uint64_t) req->num_ctx > model->context) {
        /* a larger context than sold would let a prompt past its check */
        e = ngx_nebula_edit(e, req->num_ctx_span.start, req->num_ctx_span.end,
                            num[2],
                            ngx_sprintf(num[2], "%uL", model->context)
                            - num[2]);
    }

    if (model->keep_alive.len && req->api != NEBULA_API_CHAT) {
        /* a number for "0" and "-1": Ollama reads a string as a duration */
        e = ngx_nebula_edit(e, req->top_start + 1, req->top_start + 1,
                            num[3],
                            ngx_snprintf(num[3], sizeof(num[3]),
                                         (model->keep_alive.data[0] == '-'
                                          || model->keep_alive.len == 1)
                                         ? "\"keep_alive\":%V,"
                                         : "\"keep_alive\":\"%V\",",
                                         &model->keep_alive)
                            - num[3]);
    }

    if (req->api == NEBULA_API_CHAT && req->stream == 1
        && req->include_usage != 1)
    {
        /*
         * The gateway always gets usage for its metering; the client, who
         * did not ask, never sees the chunk (ngx_nebula_filter.c).
         */
        if (req->include_usage_span.end > req->include_usage_span.start) {
            e = ngx_nebula_edit(e, req->include_usage_span.start,
                                req->include_usage_span.end,
                                (u_char *) "true", 4);

        } else if (req->stream_options_null) {
            e = ngx_nebula_edit(e, req->stream_options_span.start,
                                req->stream_options_span.end,
                                (u_char *) "{\"include_usage\":true}",
                                sizeof("{\"include_usage\":true}") - 1);

        } else if (req->stream_options_span.end
                   > req->stream_options_span.start)
        {
            for (i = req->stream_options_span.start + 1;
                 i < ctx->body_len && (ctx->body[i] == ' '
                                       || ctx->body[i] == '\t'
                                       || ctx->body[i] == '\r'
                                       || ctx->body[i] == '\n');
                 i++)
            {
                /* void */
            }

            if (i < ctx->body_len && ctx->body[i] == '}') {
                e = ngx_nebula_edit(e, req->stream_options_span.start + 1,
                                    req->stream_options_span.start + 1,
                                    (u_char *) "\"include_usage\":true",
                                    sizeof("\"include_usage\":true") - 1);

            } else {
                e = ngx_nebula_edit(e, req->stream_options_span.start + 1,
                                    req->stream_options_span.start + 1,
                                    (u_char *) "\"include_usage\":true,",
                                    sizeof("\"include_usage\":true,") - 1);
            }

        } else {
            e = ngx_nebula_edit(e, req->top_start + 1, req->top_start + 1,
                       (u_char *) "\"stream_options\":{\"include_usage\":true},",
                       sizeof("\"stream_options\":{\"include_usage\":true},")
                       - 1);
        }

        ctx->strip_usage = 1;
    }

    nedits = e - edits;

    /* in body order; an insertion before a deletion that starts with it */
    nebula_edit_sort(edits, nedits);

    n = nebula_edit_length(ctx->body_len, edits, nedits);

    b = ngx_create_temp_buf(r->pool, n);
    if (b == NULL) {
        return NGX_ERROR;
    }

    nebula_edit_apply(ctx->body, ctx->body_len, edits, nedits, b->pos);
    b->last = b->pos + n;
    b->last_buf = 1;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    r->request_body->bufs = cl;
    r->headers_in.content_length_n = n;

    if (r->headers_in.content_length) {
        p = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        q = ngx_sprintf(p, "%uz", n);
        r->headers_in.content_length->value.data = p;
        r->headers_in.content_length->value.len = q - p;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "nebula: model \"%V\" to \"%V\" on pool \"%V\", "
                   "%uz edits", &model->name, &model->upstream_model,
                   &model->pool->name, nedits);

    return NGX_OK;
}


/* the whole body in one piece of memory, read from the temp file if need be */
static u_char *
ngx_nebula_flatten_body(ngx_http_request_t *r, size_t *len)
{
    u_char       *body, *p;
    off_t         size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = r->request_body->bufs;

    if (cl == NULL) {
        *len = 0;
        return (u_char *) "";
    }

    if (cl->next == NULL && !cl->buf->in_file) {
        *len = cl->buf->last - cl->buf->pos;
        return *len ? cl->buf->pos : (u_char *) "";
    }

    size = 0;

    for ( /* void */ ; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    body = ngx_pnalloc(r->pool, size + 1);
    if (body == NULL) {
        return NULL;
    }

    p = body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "nebula: short read of the request body file");
                return NULL;
            }

            p += n;
            continue;
        }

        /* an empty buffer (the last one, often) may have no memory at all */
        if (b->last != b->pos) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    *len = p - body;
    return body;
}
