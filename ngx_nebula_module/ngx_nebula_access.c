/*
 * Nebula: a proxied request before its content handler (the precontent
 * phase, after nginx's own access checks): the gate every request to a
 * pool passes.
 *
 * The key is looked for first (no key, no body read: 401 at once).  Then
 * the body is read without blocking (nginx spills a large one to a temp
 * file), parsed and validated as its API's shape (ngx_nebula_api.c), and
 * the model looked up in the catalog.  Admission decides
 * (ngx_nebula_admission.c), now or when Redis answers; the request's
 * phases then run again, and this handler, re-entered, acts on the
 * verdict: a refusal is sent, or the body is rewritten for the pool
 * (ngx_nebula_rewrite.c) and proxy_pass carries it to the model's pool
 * ($nebula_pool_url).
 */

#include "ngx_nebula.h"


static void ngx_nebula_body_handler(ngx_http_request_t *r);
static void ngx_nebula_ctx_cleanup(void *data);
static ngx_int_t ngx_nebula_act(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);
static ngx_int_t ngx_nebula_process_body(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);
static u_char *ngx_nebula_flatten_body(ngx_http_request_t *r, size_t *len);
static ngx_int_t ngx_nebula_check_model(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);
static ngx_int_t ngx_nebula_refuse(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, ngx_uint_t status, const char *type,
    const char *code, const char *param, const char *message);


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
    ngx_nebula_api_t        *api;
    ngx_nebula_ctx_t        *ctx;
    ngx_nebula_loc_conf_t   *nlcf;
    ngx_nebula_main_conf_t  *nmcf;

    nlcf = ngx_http_get_module_loc_conf(r, ngx_http_nebula_module);
    api = ngx_nebula_api(nlcf->api);

    if (api->name.len == 0 || api->handler != NULL || r != r->main) {
        /* not a proxied API's location */
        return NGX_DECLINED;
    }

    if (nlcf->api == NGX_NEBULA_API_OLLAMA_PS) {
        /* no body, no model: the pools are asked for their lists */
        return ngx_nebula_ps_handler(r);
    }

    ctx = ngx_nebula_get_ctx(r);

    if (ctx != NULL) {
        /*
         * Re-entered: with admission's verdict to act on; once the body
         * has been read and handled; or after an internal redirect (which
         * forgets module contexts) into another location of ours, where
         * it must not be admitted twice.
         */
        if (ctx->body_done) {
            return NGX_DECLINED;
        }

        if (ctx->verdict.action != NGX_NEBULA_VERDICT_NONE) {
            return ngx_nebula_act(r, ctx);
        }

        return NGX_AGAIN;
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

    ctx->api = api;

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
                    ctx->secret.len > 4
                    && ngx_strncmp(ctx->secret.data,
                                   NGX_NEBULA_MANAGEMENT_PREFIX, 4) == 0
                    ? "A management key manages keys; it calls no model: "
                      "use an API key (nb-...)."
                    : "Incorrect API key provided."));
            return NGX_DONE;
        }

        /* its account's data: the hash tag of every name in Redis */
        (void) ngx_nebula_key_tag(&ctx->secret, ctx->key_id, ctx->tag);
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

    if (nmcf->redis == NULL) {
        /* keys are not checked: nothing to admit */
        ctx->verdict.action = NGX_NEBULA_VERDICT_PROCEED;

    } else {
        rc = ngx_nebula_admit(r, ctx);

        if (rc == NGX_AGAIN) {
            /* Redis decides; its answer runs the phases again */
            return;
        }

        if (rc != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    /* decided now: the handler acts on it, in its phase */
    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * Admission's verdict: a refusal is sent; a request that proceeds passes
 * the model's own checks (a private model's, now that the key is known to
 * list it), has its body rewritten for the pool, and goes on to
 * proxy_pass.  What the phase handler returns.
 */
static ngx_int_t
ngx_nebula_act(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    ngx_int_t              rc;
    ngx_nebula_verdict_t  *v = &ctx->verdict;

    if (v->action == NGX_NEBULA_VERDICT_FAIL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* every authenticated answer carries them, a refusal too */
    if (v->headers
        && ngx_nebula_ratelimit_headers(r, &ctx->admit, ctx->now) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (v->action == NGX_NEBULA_VERDICT_REFUSE) {
        ngx_http_finalize_request(r,
            ngx_nebula_refuse(r, ctx, v->status, v->type, v->code, v->param,
                              v->message));
        return NGX_DONE;
    }

    if (ctx->model->private) {
        /*
         * Admitted: the key lists the model.  A refusal now gives the
         * reservation back, uncounted (ngx_nebula_charge.c).
         */
        rc = ngx_nebula_check_model(r, ctx);

        if (rc != NGX_OK || ctx->refused) {
            ngx_http_finalize_request(r, rc);
            return NGX_DONE;
        }
    }

    if (ctx->admitted && ctx->api->limit != NGX_NEBULA_LIMIT_NONE
        && ctx->reserved_out < ngx_nebula_choices(ctx->req))
    {
        /* less output left than a token a choice: given back, refused */
        ngx_http_finalize_request(r,
            ngx_nebula_refuse(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS,
                              "insufficient_quota", "insufficient_quota",
                              NULL, "You exceeded your monthly token quota; "
                              "it resets at the start of next month "
                              "(UTC)."));
        return NGX_DONE;
    }

    if (ngx_nebula_rewrite_body(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_nebula_hide_headers(r);

    ctx->body_done = 1;
    ctx->proxied = 1;

    /* the body is kept for proxy_pass, as the mirror module keeps it */
    r->preserve_body = 1;

    return NGX_DECLINED;
}


/* sends a refusal; the caller finalizes the request with its result */
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
    char                    *msg;
    u_char                  *body;
    size_t                   len;
    nebula_api_e             api;
    nebula_request_t        *req;
    ngx_nebula_model_t      *model;
    ngx_nebula_main_conf_t  *nmcf;
    nebula_request_policy_t  policy;

    if (r->request_body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

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

    api = ctx->api->request;

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

    if (ctx->api->unmetered) {
        /* an answer about the model: it reads no prompt */
        req->prompt_tokens = 0;
    }

    model = ngx_nebula_find_model(nmcf, (u_char *) req->model,
                                  req->model_len);

    /* a private model exists only for the keys that list it (admission) */
    if (model == NULL || (model->private && nmcf->redis == NULL)) {
        msg = ngx_nebula_unknown_model(r->pool, (u_char *) req->model,
                                       req->model_len);
        if (msg == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_NOT_FOUND,
                                     "invalid_request_error",
                                     "model_not_found", "model", msg);
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
    uint64_t             tokens;
    nebula_request_t    *req = ctx->req;
    ngx_nebula_model_t  *model = ctx->model;
    u_char               message[2 * NEBULA_MESSAGE_MAX];

    if (ctx->api->unmetered) {
        /* about any model the key reaches, of either kind */
        return NGX_OK;
    }

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

    if (model->embedding != ctx->api->embeds) {
        p = ngx_snprintf(message, sizeof(message) - 1,
                         model->embedding
                         ? "The model '%V' is an embedding model: it answers "
                           "on /v1/embeddings and /api/embed, not here."
                         : "The model '%V' does not make embeddings: use an "
                           "embedding model (see GET /v1/models).",
                         &model->name);
        *p = '\0';

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_request_error",
                                     "invalid_value", "model",
                                     (char *) message);
    }

    /* an embedding's context bounds each input, not their sum */
    tokens = ctx->api->embeds ? req->longest_input : req->prompt_tokens;

    if (tokens > model->context) {
        p = ngx_snprintf(message, sizeof(message) - 1,
                         "This model's maximum context length is %uL "
                         "tokens. However, %s to about %uL tokens.",
                         model->context,
                         ctx->api->embeds ? "an input comes"
                                          : "your messages come",
                         tokens);
        *p = '\0';

        return ngx_nebula_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                     "invalid_request_error",
                                     "context_length_exceeded",
                                     ctx->api->embeds ? "input" : "messages",
                                     (char *) message);
    }

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
