/*
 * Nebula: the body a pool gets.  It names the upstream's model, asks for
 * no more output than was reserved (where its API writes the limit), and
 * asks for the usage a stream sends only when asked; what a client must
 * not set on a shared fleet is dropped or bounded (docs/api.md, "What
 * reaches a pool").  Edits of byte ranges of the client's own body: no
 * byte else moves, nothing is re-encoded.
 */

#include "ngx_nebula.h"


#define NGX_NEBULA_ASK_USAGE  "\"stream_options\":{\"include_usage\":true},"


/* how many answers a request asks for in one: n, best_of (at least 1) */
uint64_t
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
 * max_tokens (and max_completion_tokens) on /v1 (the Responses API's
 * max_output_tokens), options.num_predict on the native API, replaced
 * when larger, added when absent.  n choices
 * share the reservation: each is asked for its part.
 */
static nebula_edit_t *
ngx_nebula_clamp_edits(ngx_nebula_ctx_t *ctx, nebula_edit_t *e,
    u_char num[][64])
{
    uint64_t           cap;
    nebula_request_t  *req = ctx->req;

    cap = ctx->reserved_out / ngx_nebula_choices(req);

    if (ctx->api->limit != NGX_NEBULA_LIMIT_NUM_PREDICT) {

        if (req->max_tokens_span.end > req->max_tokens_span.start) {
            if (req->max_tokens < 0 || (uint64_t) req->max_tokens != cap) {
                e = ngx_nebula_edit(e, req->max_tokens_span.start,
                                    req->max_tokens_span.end, num[0],
                                    ngx_sprintf(num[0], "%uL", cap) - num[0]);
            }

        } else {
            e = ngx_nebula_edit(e, req->top_start + 1, req->top_start + 1,
                                num[0],
                                ngx_sprintf(num[0], "\"%s\":%uL,",
                                            ctx->api->limit
                                            == NGX_NEBULA_LIMIT_MAX_TOKENS
                                            ? "max_tokens"
                                            : "max_output_tokens", cap)
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
ngx_int_t
ngx_nebula_rewrite_body(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    u_char               *p, *q;
    size_t                n, i, nedits;
    ngx_buf_t            *b;
    ngx_chain_t          *cl;
    nebula_edit_t        *e;
    nebula_request_t     *req = ctx->req;
    ngx_nebula_model_t   *model = ctx->model;
    nebula_edit_t         edits[NEBULA_DROP_MAX + NEBULA_ROLE_EDIT_MAX + 8];
    u_char                num[4][64];

    e = ngx_nebula_edit(edits, req->model_span.start, req->model_span.end,
                        model->upstream_quoted.data,
                        model->upstream_quoted.len);

    if (ctx->admitted && ctx->api->limit != NGX_NEBULA_LIMIT_NONE) {
        e = ngx_nebula_clamp_edits(ctx, e, num);
    }

    for (i = 0; i < req->nrole_edits; i++) {
        e = ngx_nebula_edit(e, req->role_edits[i].span.start,
                            req->role_edits[i].span.end,
                            (u_char *) req->role_edits[i].to,
                            ngx_strlen(req->role_edits[i].to));
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

    if (model->keep_alive.len && ctx->api->keep_alive) {
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

    if (ctx->api->ask_usage && req->stream == 1 && req->include_usage != 1) {
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
                                (u_char *) NGX_NEBULA_ASK_USAGE,
                                sizeof(NGX_NEBULA_ASK_USAGE) - 1);
        }

        /* OpenRouter's usage accounting asks for the usage chunk too */
        ctx->strip_usage = (req->usage_cost != 1);
    }

    ctx->cost_usage = (req->usage_cost == 1);

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
