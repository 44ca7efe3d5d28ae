/*
 * Nebula: the response filter.
 *
 * It puts the public model name back in every JSON document of a proxied
 * response: the whole JSON answer, each NDJSON line, each SSE event.  The
 * scanner (nebula_stream.c) finds the upstream's "model" value; the filter
 * passes every other byte on as it arrives, in buffers that point into the
 * upstream's own (shadows, as the sub filter does), so nothing is copied and
 * nothing is held back.
 *
 * One exception, strip mode: a stream whose client did not ask for usage
 * while the gateway did (ngx_nebula_access.c) has each SSE event copied
 * and held until its end, and the usage chunk dropped.  An event is a
 * token: the client waits for nothing it could use.
 *
 * And one replacement: a pool that answers 5xx (Ollama's {"error": "..."},
 * or a broken proxy's HTML page) gets the contract's 502 upstream_error
 * (504 upstream_timeout for a 504) in the OpenAI shape, its message kept.
 * Its 4xx pass as they are: they tell the client what was wrong.
 */

#include "ngx_nebula.h"

#include <yajl/yajl_tree.h>

#include "nebula_show.h"


static ngx_int_t ngx_nebula_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_nebula_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_nebula_release_header(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, off_t in, ngx_chain_t *out);
static void ngx_nebula_upstream_finalize(ngx_http_request_t *r,
    ngx_int_t rc);
static ngx_int_t ngx_nebula_failed_header(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);
static ngx_int_t ngx_nebula_failed_body(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_nebula_whole_body(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, ngx_chain_t *in);
static ngx_chain_t *ngx_nebula_failed_error(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx);


/* of a failed pool's body, what is read for its message */
#define NGX_NEBULA_FAILED_HOLD_MAX  4096

/* of that message, what the client is shown */
#define NGX_NEBULA_FAILED_MESSAGE_MAX  200

/* an answer rewritten whole (/api/show, verbose dropped) is no larger */
#define NGX_NEBULA_WHOLE_MAX  (4 * 1024 * 1024)


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


static void
ngx_nebula_upstream_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_buf_t         *b;
    ngx_chain_t       *out, **ll, one;
    ngx_nebula_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);

    if (ctx == NULL) {
        return;
    }

    if (ctx->header_held) {
        /* the answer failed before its body was read: nginx cuts it */
        (void) ngx_nebula_release_header(r, ctx, -1, NULL);
    }

    ctx->upstream_finalize(r, rc);

    if (ctx->whole) {
        /*
         * An answer held whole that the pool cut short: nothing of it is
         * out, and nginx would only close; the 502 goes instead
         */
        if ((rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE)
            && rc != NGX_HTTP_CLIENT_CLOSED_REQUEST
            && !r->connection->error)
        {
            b = ngx_calloc_buf(r->pool);
            if (b == NULL) {
                return;
            }

            b->last_buf = 1;
            one.buf = b;
            one.next = NULL;
            ctx->stream_broken = 1;

            (void) ngx_nebula_whole_body(r, ctx, &one);
        }

        return;
    }

    if (ctx->upstream_failed) {
        /*
         * The pool's 5xx body was cut short: the client still gets the
         * whole error, not a truncated one, before nginx closes.
         */
        if (!(rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE)
            || rc == NGX_HTTP_CLIENT_CLOSED_REQUEST
            || rc == NGX_HTTP_REQUEST_TIME_OUT
            || !r->upstream->header_sent || r->connection->error
            || ctx->closing || r->header_only)
        {
            return;
        }

        out = ngx_nebula_failed_error(r, ctx);

        if (out) {
            ctx->closing = 1;
            (void) ngx_http_output_filter(r, out);
        }

        return;
    }

    if (!(rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE)
        || rc == NGX_HTTP_CLIENT_CLOSED_REQUEST
        || rc == NGX_HTTP_REQUEST_TIME_OUT
        || !r->upstream->header_sent || r->connection->error
        || !ctx->filtering || ctx->closing
        || ctx->stream.format == NEBULA_FORMAT_JSON)
    {
        /* (a JSON answer cut short has no place for an error event) */
        return;
    }

    out = NULL;
    ll = &out;

    /* an event held whole goes first, cut as it is */
    (void) ngx_nebula_event_send(ctx, &ll);

    if (ngx_nebula_stream_error(r, ctx, &ll) != NGX_OK) {
        return;
    }

    *ll = NULL;

    if (out) {
        ctx->closing = 1;   /* the filter passes what follows as it is */
        (void) ngx_http_output_filter(r, out);
    }
}


static ngx_int_t
ngx_nebula_type_is(ngx_http_request_t *r, const char *type, size_t len)
{
    ngx_str_t  *ct = &r->headers_out.content_type;

    return ct->len >= len && ngx_strncasecmp(ct->data, (u_char *) type, len)
                             == 0
           && (ct->len == len || ct->data[len] == ';' || ct->data[len] == ' ');
}


/*
 * A 2xx whose body the filter cannot read: it passes untouched (its model
 * name not restored), and settlement charges its reservation, the most it
 * could have cost: a client must not get answers free by asking for a
 * form we cannot count.
 */
static void
ngx_nebula_unreadable(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    const char *header, ngx_str_t *value)
{
    if (r->headers_out.status < NGX_HTTP_OK
        || r->headers_out.status >= NGX_HTTP_SPECIAL_RESPONSE)
    {
        return;
    }

    ctx->unreadable = 1;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "nebula: pool \"%V\" answered %ui with a body the gateway "
                  "cannot meter (%s: \"%V\"): charged its reservation",
                  &ctx->model->pool->name, r->headers_out.status, header,
                  value);
}


static ngx_int_t
ngx_nebula_header_filter(ngx_http_request_t *r)
{
    nebula_format_e        format;
    ngx_nebula_ctx_t      *ctx;
    ngx_nebula_ps_pool_t  *pp;

    if (r != r->main && (pp = ngx_nebula_ps_subrequest(r)) != NULL) {
        /* a pool's list of its running models, for GET /api/ps */
        ngx_nebula_ps_header_filter(r, pp);
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);

    if (ctx == NULL || !ctx->proxied || r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    if (r->upstream
        && r->headers_out.status >= NGX_HTTP_INTERNAL_SERVER_ERROR
        && r->headers_out.status == r->upstream->headers_in.status_n
        && !r->upstream->header_sent)
    {
        return ngx_nebula_failed_header(r, ctx);
    }

    if (r->header_only) {
        return ngx_http_next_header_filter(r);
    }

    if (ngx_nebula_type_is(r, "text/event-stream", 17)) {
        format = NEBULA_FORMAT_SSE;

    } else if (ngx_nebula_type_is(r, "application/x-ndjson", 20)) {
        format = NEBULA_FORMAT_NDJSON;

    } else if (ngx_nebula_type_is(r, "application/json", 16)) {
        format = NEBULA_FORMAT_JSON;

    } else {
        ngx_nebula_unreadable(r, ctx, "Content-Type",
                              &r->headers_out.content_type);
        return ngx_http_next_header_filter(r);
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len)
    {
        /*
         * A compressed body cannot be read (the module asks pools for
         * none: ngx_nebula_hide_headers(); a proxy between may still)
         */
        ngx_nebula_unreadable(r, ctx, "Content-Encoding",
                              &r->headers_out.content_encoding->value);
        return ngx_http_next_header_filter(r);
    }

    if (ctx->api->unmetered) {
        /* the whole answer is read, rewritten, and then goes, header too */
        if (format != NEBULA_FORMAT_JSON
            || r->headers_out.status != NGX_HTTP_OK)
        {
            return ngx_http_next_header_filter(r);
        }

        ctx->whole = 1;
        r->filter_need_in_memory = 1;

        if (r->upstream) {
            /* to answer a pool that stops midway (nginx would close) */
            ctx->upstream_finalize = r->upstream->finalize_request;
            r->upstream->finalize_request = ngx_nebula_upstream_finalize;
        }

        ngx_http_clear_content_length(r);
        ngx_http_clear_accept_ranges(r);
        ngx_http_weak_etag(r);

        return NGX_OK;
    }

    nebula_stream_init(&ctx->stream, format);
    ctx->filtering = 1;

    /* a model value that is the public name already needs no stop */
    nebula_stream_keep(&ctx->stream, ctx->model->quoted.data + 1,
                       ctx->model->quoted.len - 1);

    if (r->upstream) {
        /* to hear of a failure midway, before nginx cuts the response */
        ctx->upstream_finalize = r->upstream->finalize_request;
        r->upstream->finalize_request = ngx_nebula_upstream_finalize;
    }

    if (format != NEBULA_FORMAT_SSE) {
        ctx->strip_usage = 0;

    } else {
        /*
         * A stream's chunks repeat their framing: with a memo of it the
         * scanner compares most of a chunk instead of walking it (1.5 KB
         * a stream; without it, if none is to be had, it only walks).
         */
        nebula_stream_memo(&ctx->stream,
                           ngx_palloc(r->pool, sizeof(nebula_memo_t)));

        /*
         * Strip mode needs an event's end only where the usage chunk
         * ends, and where the last whole event of a buffer ends (which
         * the scanner notes): a scan a buffer, not one an event.
         */
        nebula_stream_quiet(&ctx->stream,
                            ctx->strip_usage || ctx->cost_usage);
        ctx->holding = ctx->strip_usage || ctx->cost_usage;
    }

    if (format == NEBULA_FORMAT_JSON && ctx->cost_usage) {
        /* the answer is held whole: its usage gets the cost at its end */
        ctx->holding = 1;
    }

    if (ctx->admitted && format != NEBULA_FORMAT_JSON) {
        /* a stream is cut where it passes what was reserved for it */
        ctx->limit = ctx->reserved_out;
    }

    r->filter_need_in_memory = 1;

    ngx_http_clear_accept_ranges(r);
    ngx_http_weak_etag(r);

    if (format == NEBULA_FORMAT_JSON && r->headers_out.content_length_n >= 0
        && r->upstream)
    {
        /*
         * A whole JSON answer, of a known length: its header waits for
         * its body, most often read with it, so that the length (the
         * public name's may differ from the upstream's) is told exactly,
         * with no chunked encoding (ngx_nebula_release_header()).
         */
        ctx->header_held = 1;
        ctx->held_length = r->headers_out.content_length_n;
        return NGX_OK;
    }

    /* the public name has another length than the upstream's */
    ngx_http_clear_content_length(r);

    return ngx_http_next_header_filter(r);
}


/*
 * The header held for a JSON answer goes: with the length of what the
 * filter made of the body when the body came whole, else (a body in
 * several reads, a failure before it) chunked, as any other.
 */
static ngx_int_t
ngx_nebula_release_header(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    off_t in, ngx_chain_t *out)
{
    off_t         len;
    ngx_chain_t  *cl;

    ctx->header_held = 0;

    if (in == ctx->held_length) {
        len = 0;

        for (cl = out; cl; cl = cl->next) {
            len += ngx_buf_size(cl->buf);
        }

        r->headers_out.content_length_n = len;

        if (r->headers_out.content_length) {
            /* the upstream's header: nginx writes ours from the number */
            r->headers_out.content_length->hash = 0;
            r->headers_out.content_length = NULL;
        }

    } else {
        ngx_http_clear_content_length(r);
    }

    return ngx_http_next_header_filter(r);
}


/*
 * The pool answered 5xx: the client gets the contract's error instead, its
 * status and headers now, its body once the pool's has been read (for the
 * message).  Nothing was produced: settlement charges nothing, as
 * ctx->filtering stays 0.  An error page of ours (error_page, after the
 * proxy itself failed) comes through another location, without this ctx.
 */
static ngx_int_t
ngx_nebula_failed_header(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    ngx_table_elt_t  *ce;

    ctx->upstream_failed = 1;

    r->headers_out.status =
        (r->headers_out.status == NGX_HTTP_GATEWAY_TIME_OUT)
        ? NGX_HTTP_GATEWAY_TIME_OUT : NGX_HTTP_BAD_GATEWAY;

    /* the pool's own status line would name its status, not ours */
    ngx_str_null(&r->headers_out.status_line);

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    ngx_str_null(&r->headers_out.charset);

    ce = r->headers_out.content_encoding;

    if (ce) {
        ce->hash = 0;
        r->headers_out.content_encoding = NULL;
    }

    ngx_http_clear_content_length(r);
    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);

    if (r->header_only) {
        return ngx_http_next_header_filter(r);
    }

    /* the message is read from memory, whatever proxy_buffering says */
    r->filter_need_in_memory = 1;

    if (r->upstream->finalize_request != ngx_nebula_upstream_finalize) {
        /* to answer whole even when the pool's body is cut short */
        ctx->upstream_finalize = r->upstream->finalize_request;
        r->upstream->finalize_request = ngx_nebula_upstream_finalize;
    }

    return ngx_http_next_header_filter(r);
}


/*
 * The pool's body is held (its first NGX_NEBULA_FAILED_HOLD_MAX bytes, in
 * ctx->event, unused otherwise: a failed response is not filtered) and
 * consumed; at its end the contract's error goes out instead.
 */
static ngx_int_t
ngx_nebula_failed_body(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t *in)
{
    size_t        n, have;
    ngx_uint_t    last;
    ngx_buf_t    *ib;
    ngx_chain_t  *cl, *out;

    if (ctx->closing) {
        /* our error is out: what follows is nginx's own (a flush) */
        return ngx_http_next_body_filter(r, in);
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        ib = cl->buf;

        if (ngx_buf_in_memory(ib)) {
            have = ctx->event ? (size_t) (ctx->event->buf->last
                                          - ctx->event->buf->pos)
                              : 0;
            n = ngx_min((size_t) (ib->last - ib->pos),
                        NGX_NEBULA_FAILED_HOLD_MAX - have);

            if (ngx_nebula_event_append(r, ctx, ib->pos, n) != NGX_OK) {
                return NGX_ERROR;
            }

            ib->pos = ib->last;
        }

        if (ib->in_file) {
            ib->file_pos = ib->file_last;
        }

        if (ib->last_buf) {
            last = 1;
        }
    }

    if (!last) {
        return NGX_OK;
    }

    out = ngx_nebula_failed_error(r, ctx);
    if (out == NULL) {
        return NGX_ERROR;
    }

    ctx->closing = 1;

    return ngx_http_next_body_filter(r, out);
}


/*
 * "The model pool failed (HTTP 500): ...", in the shape of the client's
 * API (ngx_nebula_error.c), the pool's own message taken from its JSON
 * ({"error": {"message": "..."}} as its OpenAI and Anthropic APIs say it,
 * {"error": "..."} as its native one).
 */
static ngx_chain_t *
ngx_nebula_failed_error(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    u_char       *body, *msg, *p;
    size_t        len, mlen;
    ngx_buf_t    *b, *held;
    u_char        text[sizeof("The model pool timed out (HTTP 999): ")
                       + NGX_NEBULA_FAILED_MESSAGE_MAX];
    ngx_uint_t    status;
    yajl_val      root, v;
    ngx_chain_t  *cl;
    const char   *code;

    static const char  *p_message[] = { "error", "message", NULL };
    static const char  *p_error[] = { "error", NULL };

    status = r->upstream->headers_in.status_n;
    code = (r->headers_out.status == NGX_HTTP_GATEWAY_TIME_OUT)
           ? "upstream_timeout" : "upstream_error";

    root = NULL;
    msg = NULL;
    mlen = 0;
    held = ctx->event ? ctx->event->buf : NULL;

    if (held && held->last > held->pos
        && ngx_strlchr(held->pos, held->last, '\0') == NULL)
    {
        len = held->last - held->pos;

        body = ngx_pnalloc(r->pool, len + 1);
        if (body == NULL) {
            return NULL;
        }

        *ngx_cpymem(body, held->pos, len) = '\0';

        root = yajl_tree_parse((const char *) body, NULL, 0);

        v = root ? yajl_tree_get(root, p_message, yajl_t_string) : NULL;

        if (v == NULL && root) {
            v = yajl_tree_get(root, p_error, yajl_t_string);
        }

        if (v) {
            msg = (u_char *) YAJL_GET_STRING(v);
            mlen = ngx_strlen(msg);
        }
    }

    if (mlen > NGX_NEBULA_FAILED_MESSAGE_MAX) {
        mlen = NGX_NEBULA_FAILED_MESSAGE_MAX;

        /* not in the middle of a UTF-8 character */
        while (mlen && (msg[mlen] & 0xc0) == 0x80) {
            mlen--;
        }
    }

    p = ngx_snprintf(text, sizeof(text), "The model pool %s (HTTP %03ui)",
                     r->headers_out.status == NGX_HTTP_GATEWAY_TIME_OUT
                     ? "timed out" : "failed",
                     ngx_min(status, 999));

    p = mlen ? ngx_snprintf(p, text + sizeof(text) - p, ": %*s", mlen, msg)
             : ngx_cpymem(p, ".", 1);

    if (root) {
        yajl_tree_free(root);
    }

    b = ngx_nebula_error_body(r->pool, ctx->api->errors,
                              r->headers_out.status, "api_error", code, NULL,
                              text, p - text);
    cl = ngx_alloc_chain_link(r->pool);

    if (b == NULL || cl == NULL) {
        return NULL;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


/* the rewritten answer, written straight into the request's pool */
static u_char *
ngx_nebula_whole_alloc(void *data, size_t size)
{
    return ngx_pnalloc(data, size);
}


/*
 * An answer held whole (ctx->whole: /api/show's), header too, until its
 * last byte: then rewritten as the catalog has the model (nebula_show.c)
 * and sent with its length.  One that cannot be read (cut short, not
 * JSON, too large) is replaced by the contract's 502: nothing of it has
 * gone out yet.
 */
static ngx_int_t
ngx_nebula_whole_body(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t *in)
{
    u_char              *out;
    size_t               n, len;
    ngx_int_t            rc;
    ngx_buf_t           *b, *ib, *held;
    ngx_uint_t           last;
    ngx_chain_t         *cl, one;
    nebula_show_t        show;
    ngx_nebula_model_t  *model = ctx->model;

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        ib = cl->buf;
        n = ngx_buf_in_memory(ib) ? (size_t) (ib->last - ib->pos) : 0;
        held = ctx->event ? ctx->event->buf : NULL;
        len = held ? (size_t) (held->last - held->pos) : 0;

        if (n && len + n > NGX_NEBULA_WHOLE_MAX) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "nebula: pool \"%V\" answered more than %uz bytes "
                          "about model \"%V\"", &model->pool->name,
                          (size_t) NGX_NEBULA_WHOLE_MAX, &model->name);
            ctx->stream_broken = 1;

        } else if (n && !ctx->stream_broken) {
            if (ngx_nebula_event_append(r, ctx, ib->pos, n) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        ib->pos = ib->last;

        if (ib->last_buf) {
            last = 1;
        }
    }

    if (!last) {
        return NGX_OK;
    }

    ctx->whole = 0;
    held = ctx->event ? ctx->event->buf : NULL;
    out = NULL;
    len = 0;

    if (held && !ctx->stream_broken) {
        show.upstream = model->upstream_model.data;
        show.upstream_len = model->upstream_model.len;
        show.name = model->name.data;
        show.name_len = model->name.len;
        show.context = model->context;

        if (nebula_show_rewrite(&show, held->pos, held->last - held->pos,
                                ngx_nebula_whole_alloc, r->pool, &out, &len)
            != 0)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "nebula: pool \"%V\" answered about model \"%V\" "
                          "with a body the gateway cannot read",
                          &model->pool->name, &model->name);
        }
    }

    if (out) {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->pos = out;
        b->last = out + len;
        b->memory = 1;

    } else {
        b = ngx_nebula_error_body(r->pool, ctx->api->errors,
                                  NGX_HTTP_BAD_GATEWAY, "api_error",
                                  "upstream_error", NULL,
                                  (u_char *) "The model pool's answer could "
                                  "not be read.",
                                  sizeof("The model pool's answer could not "
                                         "be read.") - 1);
        if (b == NULL) {
            return NGX_ERROR;
        }

        r->headers_out.status = NGX_HTTP_BAD_GATEWAY;
        ngx_str_null(&r->headers_out.status_line);
        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_type_len = r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_next_header_filter(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    one.buf = b;
    one.next = NULL;

    return ngx_http_next_body_filter(r, &one);
}


/* the time to the first byte of the answer: GET /v1/generation tells it */
static void
ngx_nebula_first_byte(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t *out)
{
    ngx_time_t      *tp;
    ngx_msec_int_t   ms;

    for ( /* void */ ; out; out = out->next) {
        if (ngx_buf_size(out->buf)) {
            break;
        }
    }

    if (out == NULL) {
        return;
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ctx->ttft = (ngx_msec_t) ngx_max(ms, 0);
    ctx->first_byte = 1;
}


static ngx_int_t
ngx_nebula_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    off_t               held;
    ngx_int_t           rc;
    ngx_buf_t          *b, *ib;
    ngx_uint_t          flush;
    ngx_chain_t           *out, **ll, *cl;
    ngx_nebula_ctx_t      *ctx;
    ngx_nebula_ps_pool_t  *pp;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);
    held = 0;
    flush = 0;

    if (ctx && ctx->upstream_failed && r == r->main) {
        return ngx_nebula_failed_body(r, ctx, in);
    }

    if (ctx && ctx->whole && r == r->main) {
        return ngx_nebula_whole_body(r, ctx, in);
    }

    if (r != r->main && (pp = ngx_nebula_ps_subrequest(r)) != NULL) {
        return ngx_nebula_ps_body_filter(r, pp, in);
    }

    if (ctx == NULL || !ctx->filtering) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->header_held) {
        if (in == NULL) {
            /* a flush before anything was read */
            return ngx_http_next_body_filter(r, NULL);
        }

        held = 0;

        for (cl = in; cl; cl = cl->next) {
            held += ngx_buf_size(cl->buf);
        }
    }

    out = NULL;
    ll = &out;

    for (cl = in; cl; cl = cl->next) {
        ib = cl->buf;

        if (ngx_buf_size(ib) && r->headers_out.status < 300) {
            ctx->output_seen = 1;
        }

        if (!ngx_buf_in_memory(ib) && ngx_buf_size(ib)) {
            /* filter_need_in_memory makes this a bug, not a state */
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "nebula: response buffer not in memory");
            return NGX_ERROR;
        }

        if (ctx->cut) {
            /*
             * Cut at the reservation: the pool's bytes go nowhere, and the
             * response ends with nginx's own last buffer (u->length = 0
             * made it finish the upstream's answer).
             */
            if (r->upstream) {
                r->upstream->length = 0;
            }

            if (ngx_buf_in_memory(ib)) {
                ib->pos = ib->last;
            }

            if (ngx_nebula_end_buf(r, ib, &ll) != NGX_OK) {
                return NGX_ERROR;
            }

            continue;
        }

        if (ctx->closing) {
            /* the gateway's own last words: passed as they are */
            *ll = ngx_alloc_chain_link(r->pool);
            if (*ll == NULL) {
                return NGX_ERROR;
            }

            (*ll)->buf = ib;
            ll = &(*ll)->next;
            continue;
        }

        if (ngx_nebula_relay_buf(r, ctx, ib, &ll) != NGX_OK) {
            return NGX_ERROR;
        }

        flush |= ib->flush;
    }

    if (ctx->header_held && ctx->cost_usage && held == ctx->held_length
        && ngx_nebula_cost_whole(r, ctx, &ll) != NGX_OK)
    {
        /* a JSON answer that came whole: its cost, and its length told */
        return NGX_ERROR;
    }

    if (ctx->holding && ctx->event_start && !ctx->closing && !ctx->cut) {
        /* strip mode: the whole events the chain brought, in one buffer */
        if (ngx_nebula_event_split(r, ctx, &ll, &b) != NGX_OK) {
            return NGX_ERROR;
        }

        if (b) {
            b->flush = flush;
        }
    }

    *ll = NULL;

    if (!ctx->first_byte && out) {
        ngx_nebula_first_byte(r, ctx, out);
    }

    if (ctx->header_held) {
        rc = ngx_nebula_release_header(r, ctx, held, out);

        if (rc == NGX_ERROR || rc > NGX_OK) {
            return rc;
        }
    }

    rc = ngx_http_next_body_filter(r, out);

    /* what has been sent goes back to a free list, its shadow consumed */

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

        if (b->tag != (ngx_buf_tag_t) &ngx_http_nebula_module) {
            continue;   /* a fresh end-of-response buffer: not reused */
        }

        if (b->temporary) {
            /* an event buffer of ours: its memory serves again */
            cl->next = ctx->free_mem;
            ctx->free_mem = cl;

        } else {
            cl->next = ctx->free;
            ctx->free = cl;
        }
    }

    return rc;
}
