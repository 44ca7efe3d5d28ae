/*
 * Nebula: the response filter.
 *
 * It puts the public model name back in every JSON document of a proxied
 * response: the whole JSON answer, each NDJSON line, each SSE event.  The
 * scanner (nebula_stream.c) finds the upstream's "model" value; the filter
 * passes every other byte on as it arrives, in buffers that point into the
 * upstream's own (shadows, as the sub filter does), so nothing is copied and
 * nothing is held back.
 */

#include "ngx_nebula.h"


static ngx_int_t ngx_nebula_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_nebula_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_nebula_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_nebula_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_nebula_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_nebula_type_is(ngx_http_request_t *r, const char *type, size_t len)
{
    ngx_str_t  *ct = &r->headers_out.content_type;

    return ct->len >= len && ngx_strncasecmp(ct->data, (u_char *) type, len)
                             == 0
           && (ct->len == len || ct->data[len] == ';' || ct->data[len] == ' ');
}


static ngx_int_t
ngx_nebula_header_filter(ngx_http_request_t *r)
{
    nebula_format_e    format;
    ngx_nebula_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);

    if (ctx == NULL || !ctx->proxied || r != r->main || r->header_only) {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_nebula_type_is(r, "text/event-stream", 17)) {
        format = NEBULA_FORMAT_SSE;

    } else if (ngx_nebula_type_is(r, "application/x-ndjson", 20)) {
        format = NEBULA_FORMAT_NDJSON;

    } else if (ngx_nebula_type_is(r, "application/json", 16)) {
        format = NEBULA_FORMAT_JSON;

    } else {
        return ngx_http_next_header_filter(r);
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len)
    {
        /* a compressed body cannot be read: send Accept-Encoding "" */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "nebula: upstream response is \"%V\" encoded, model "
                      "name not restored",
                      &r->headers_out.content_encoding->value);
        return ngx_http_next_header_filter(r);
    }

    nebula_stream_init(&ctx->stream, format);
    ctx->filtering = 1;

    r->filter_need_in_memory = 1;

    /* the public name has another length than the upstream's */
    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_weak_etag(r);

    return ngx_http_next_header_filter(r);
}


static ngx_buf_t *
ngx_nebula_out_buf(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t ***ll)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
    if (cl == NULL) {
        return NULL;
    }

    b = cl->buf;
    ngx_memzero(b, sizeof(ngx_buf_t));
    b->tag = (ngx_buf_tag_t) &ngx_http_nebula_module;

    **ll = cl;
    *ll = &cl->next;

    return b;
}


static ngx_int_t
ngx_nebula_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    u_char             *pos, *start;
    size_t              n;
    ngx_int_t           rc;
    ngx_buf_t          *b, *ib;
    ngx_chain_t        *out, **ll, *cl;
    nebula_event_e      ev;
    ngx_nebula_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);

    if (ctx == NULL || !ctx->filtering) {
        return ngx_http_next_body_filter(r, in);
    }

    out = NULL;
    ll = &out;

    for (cl = in; cl; cl = cl->next) {
        ib = cl->buf;
        b = NULL;

        if (ngx_buf_size(ib) && r->headers_out.status < 300) {
            ctx->output_seen = 1;
        }

        if (ngx_buf_in_memory(ib)) {
            pos = ib->pos;
            start = pos;

            while (pos < ib->last) {
                n = nebula_stream_scan(&ctx->stream, pos, ib->last - pos, &ev);
                pos += n;

                if (ev == NEBULA_EV_MODEL_END) {
                    /* the upstream's name and closing quote are dropped */
                    ctx->skipping = 0;
                    start = pos;
                    continue;
                }

                if (ctx->skipping) {
                    start = pos;
                    continue;
                }

                if (ev == NEBULA_EV_MODEL_START) {
                    pos--;      /* the opening quote goes with the name */
                    ctx->skipping = 1;
                }

                if (pos > start) {
                    b = ngx_nebula_out_buf(r, ctx, &ll);
                    if (b == NULL) {
                        return NGX_ERROR;
                    }

                    b->memory = 1;
                    b->pos = start;
                    b->last = pos;
                }

                if (ev == NEBULA_EV_MODEL_START) {
                    b = ngx_nebula_out_buf(r, ctx, &ll);
                    if (b == NULL) {
                        return NGX_ERROR;
                    }

                    b->memory = 1;
                    b->pos = ctx->model->quoted.data;
                    b->last = ctx->model->quoted.data + ctx->model->quoted.len;

                    pos++;
                    start = pos;

                } else {
                    start = pos;
                }
            }

        } else if (ngx_buf_size(ib)) {
            /* filter_need_in_memory makes this a bug, not a state */
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "nebula: response buffer not in memory");
            return NGX_ERROR;
        }

        /*
         * The last buffer made from ib carries it as its shadow and its
         * flags: ib is marked consumed only once that buffer has been sent,
         * so the upstream does not reuse memory we still point into.
         */

        if (b == NULL) {
            b = ngx_nebula_out_buf(r, ctx, &ll);
            if (b == NULL) {
                return NGX_ERROR;
            }

            b->sync = 1;
        }

        b->last_buf = ib->last_buf;
        b->last_in_chain = ib->last_in_chain;
        b->flush = ib->flush;
        b->shadow = ib;
        b->recycled = ib->recycled;
    }

    *ll = NULL;

    rc = ngx_http_next_body_filter(r, out);

    /* what has been sent goes back to the free list, its shadow consumed */

    for (ll = &ctx->busy; *ll; ll = &(*ll)->next) { /* void */ }
    *ll = out;

    while (ctx->busy) {
        cl = ctx->busy;
        b = cl->buf;

        if (ngx_buf_size(b) != 0) {
            break;
        }

        if (b->shadow) {
            b->shadow->pos = b->shadow->last;
        }

        ctx->busy = cl->next;
        cl->next = ctx->free;
        ctx->free = cl;
    }

    return rc;
}
