/*
 * Nebula: a response's bytes on their way to the client, one upstream
 * buffer at a time: scanned (nebula_stream.c), the public model name put
 * in place of the upstream's, and passed on in buffers that point into
 * the upstream's own (shadows, as the sub filter does: nothing copied,
 * nothing held back), or, while documents are held whole, copied into the
 * event held: in strip mode, to drop the usage chunk the client did not
 * ask for; past its reservation, to cut the stream at the first document
 * that goes beyond it and end it as its API would (ngx_nebula_api.c).
 *
 * The filter proper (ngx_nebula_filter.c) decides what a response is and
 * hands its buffers here.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"
#include "nebula_usage.h"


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


/*
 * Passes bytes on: in shadow mode as a buffer pointing at them (into the
 * upstream's buffer, or the public name's memory), in strip mode copied
 * into the event held.
 */
static ngx_inline ngx_int_t
ngx_nebula_emit(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t ***ll, u_char *p, size_t n, ngx_buf_t **last)
{
    ngx_buf_t  *b;

    if (n == 0) {
        return NGX_OK;
    }

    if (ctx->holding) {
        b = ctx->event ? ctx->event->buf : NULL;

        if (b && (size_t) (b->end - b->last) >= n) {
            /* most often: room in the event held, three times a chunk */
            b->last = ngx_cpymem(b->last, p, n);
            return NGX_OK;
        }

        return ngx_nebula_event_append(r, ctx, p, n);
    }

    b = ngx_nebula_out_buf(r, ctx, ll);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->memory = 1;
    b->pos = p;
    b->last = p + n;
    *last = b;

    return NGX_OK;
}


/*
 * Strip mode: the bytes from *start to upto go into the event held; when
 * whole events end among them (at *ends), the open event, the one that
 * may yet be the usage chunk, begins there.
 */
static ngx_int_t
ngx_nebula_hold(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx, u_char **start,
    u_char *upto, u_char **ends)
{
    size_t  before;

    before = ctx->event ? (size_t) (ctx->event->buf->last
                                    - ctx->event->buf->pos)
                        : 0;

    if (upto > *start
        && ngx_nebula_event_append(r, ctx, *start, upto - *start) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (*ends) {
        ctx->event_start = before + (*ends - *start);
        *ends = NULL;
    }

    *start = upto;

    return NGX_OK;
}


/*
 * OpenRouter's "cost" put in the usage of the document held from "from"
 * on, whole (a JSON answer, a stream's usage chunk), when the request
 * asked ("usage": {"include": true}): USD, of what the request is charged
 * for the usage there.  A document without a usage object is left as it
 * is.
 */
static ngx_int_t
ngx_nebula_cost_insert(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    size_t from)
{
    int         empty;
    u_char     *tail, *p, text[NGX_INT64_LEN + 24];
    size_t      off, n;
    uint64_t    in, out;
    unsigned    done;
    ngx_buf_t  *b;

    if (ctx->event == NULL) {
        return NGX_OK;
    }

    b = ctx->event->buf;

    if (from >= (size_t) (b->last - b->pos)
        || nebula_usage_close(b->pos + from, b->last - b->pos - from,
                              ctx->stream.format == NEBULA_FORMAT_SSE,
                              &off, &empty)
           != 0)
    {
        return NGX_OK;
    }

    /*
     * The usage reported is the pool's last word (a stream's usage chunk
     * comes just before its end): charged as a stream that ended, not
     * as one cut there (ngx_nebula_usage() takes the larger of the count
     * and the estimate for that)
     */
    done = ctx->stream.done;
    ctx->stream.done = 1;
    (void) ngx_nebula_usage(ctx, &in, &out);
    ctx->stream.done = done;

    p = ngx_cpymem(text, ",\"cost\":", 8);
    p = ngx_nebula_decimal12(p, ngx_nebula_cost(ctx->model, in, out));

    /* what follows the usage's closing brace, copied out of the way */
    n = b->last - (b->pos + from + off);

    tail = ngx_pnalloc(r->pool, n);
    if (tail == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(tail, b->pos + from + off, n);
    b->last = b->pos + from + off;

    if (ngx_nebula_event_append(r, ctx, text + empty, p - text - empty)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_nebula_event_append(r, ctx, tail, n);
}


/*
 * A JSON answer held whole for its cost: read to its end (its last
 * buffer, or as many bytes as its length said), it gets the cost and goes.
 * One too large to hold went on as it came, without.
 */
ngx_int_t
ngx_nebula_cost_whole(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t ***ll)
{
    if (ctx->event_passing) {
        return NGX_OK;
    }

    if (ngx_nebula_cost_insert(r, ctx, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    (void) ngx_nebula_event_send(ctx, ll);

    return NGX_OK;
}


/*
 * What the pool has streamed so far, in tokens: a chunk a token of text,
 * as Ollama streams them (fewer when it sends several in one), a tool
 * call by its bytes.
 */
static ngx_inline uint64_t
ngx_nebula_output(ngx_nebula_ctx_t *ctx)
{
    return nebula_stream_output_estimate(&ctx->stream);
}


/*
 * The stream reached the output it was reserved: from here on each
 * document is held whole until its end, when a text one past the
 * reservation is cut (ngx_nebula_cut); the rest (the pool's last chunk,
 * its usage, [DONE]) passes.  An honest pool stops there, and only its
 * closing documents are held.
 */
static void
ngx_nebula_limit_hold(ngx_nebula_ctx_t *ctx)
{
    ctx->limit_hold = 1;
    ctx->holding = 1;

    /* every event's end is wanted now, not only the usage chunk's */
    nebula_stream_quiet(&ctx->stream, 0);
}


/*
 * The document that just ended went past the reservation: it is dropped
 * with what follows, and the stream ends as the pool should have ended it,
 * "length" its finish reason, in the API's own shape.  nginx is told the
 * upstream's answer is over (u->length = 0): it closes that connection
 * and finishes the response once what is out has been sent.
 */
static ngx_int_t
ngx_nebula_cut(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    u_char              *p, *buf;
    size_t               size, before;
    uint64_t             prompt;
    ngx_str_t           *name;
    nebula_request_t    *req = ctx->req;
    nebula_stream_t     *st = &ctx->stream;

    ctx->cut = 1;

    if (r->upstream) {
        r->upstream->length = 0;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "nebula: pool \"%V\" streamed past the %uL tokens it was "
                  "asked for (model \"%V\"): cut there",
                  &ctx->model->pool->name, ctx->limit, &ctx->model->name);

    name = &ctx->model->quoted;

    /*
     * The last words name the model twice (the last chunk, the usage
     * chunk) around ids, counts and a few hundred bytes of keys: room for
     * the longest name there is, sized from this one.
     */
    size = 2 * name->len + 1024;

    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    prompt = (st->has_prompt && st->prompt_tokens) ? st->prompt_tokens
                                                   : req->prompt_tokens;

    p = ctx->api->stream_end(buf, buf + size, name, ctx->request_id, prompt,
                             ctx->limit,
                             req->include_usage == 1 || ctx->cost_usage);

    before = ctx->event ? (size_t) (ctx->event->buf->last
                                    - ctx->event->buf->pos)
                        : 0;

    if (ngx_nebula_event_append(r, ctx, buf, p - buf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ctx->cost_usage ? ngx_nebula_cost_insert(r, ctx, before) : NGX_OK;
}


/*
 * One buffer of the upstream's body: scanned, the public name put in place
 * of the upstream's.  Its bytes pass as they come (shadow mode), or, while
 * documents are held whole (strip mode: the usage chunk the client did not
 * ask for is dropped; past the reservation: one past it is cut), copied
 * into the event held.
 */
ngx_int_t
ngx_nebula_relay_buf(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_buf_t *ib, ngx_chain_t ***ll)
{
    u_char          *pos, *start, *ends, *lim, *nl;
    size_t           n;
    ngx_buf_t       *b, *shadow;
    ngx_str_t       *name;
    ngx_uint_t       doc_end;
    nebula_event_e   ev;

    b = NULL;
    shadow = NULL;
    pos = ib->pos;
    start = pos;
    ends = NULL;
    name = &ctx->model->quoted;

    while (pos < ib->last) {

        if (ctx->limit && !ctx->limit_hold
            && ngx_nebula_output(ctx) >= ctx->limit)
        {
            /* what came before is out or held: from here on, held */
            ngx_nebula_limit_hold(ctx);
        }

        lim = ib->last;
        nl = NULL;

        if (ctx->limit_hold && ctx->stream.format == NEBULA_FORMAT_NDJSON) {
            /* a line at a time: its end is the document's */
            nl = ngx_strlchr(pos, ib->last, '\n');
            lim = nl ? nl + 1 : ib->last;
        }

        n = nebula_stream_scan(&ctx->stream, pos, lim - pos, &ev);

        if (ctx->stream.ended) {
            /* quiet: whole events ended up to here, none the usage chunk */
            ends = pos + ctx->stream.ended;
        }

        pos += n;

        doc_end = (ev == NEBULA_EV_EVENT_END)
                  || (ev == NEBULA_EV_NONE && nl && pos == lim);

        /*
         * Inside the upstream's model value nothing is passed; the scanner
         * knows where it ends, even when a broken document ends first.
         */
        if (ev == NEBULA_EV_MODEL_END
            || (ctx->stream.in_model && ev != NEBULA_EV_MODEL_START))
        {
            start = pos;
            continue;
        }

        if (ev == NEBULA_EV_MODEL_START) {
            /* the opening quote goes with the name */
            if (ctx->holding) {
                if (ngx_nebula_hold(r, ctx, &start, pos - 1, &ends)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

            } else if (ngx_nebula_emit(r, ctx, ll, start, pos - 1 - start,
                                       &shadow)
                       != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (ngx_nebula_emit(r, ctx, ll, name->data, name->len, &shadow)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            start = pos;
            continue;
        }

        if (!ctx->holding) {
            if (ngx_nebula_emit(r, ctx, ll, start, pos - start, &shadow)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            start = pos;
            continue;
        }

        /*
         * Holding: what is read is copied into the event held only when it
         * must be (a document to cut out, a name to put in, the buffer's
         * end): the whole documents of a buffer in one copy, not one a
         * document.
         */

        if (doc_end && !ctx->event_passing) {

            if (ctx->limit_hold && ngx_nebula_output(ctx) > ctx->limit) {
                /* past the reservation: it, and all that follows, goes */
                if (ends) {
                    if (ngx_nebula_hold(r, ctx, &start, ends, &ends)
                        != NGX_OK)
                    {
                        return NGX_ERROR;
                    }

                } else if (ctx->event) {
                    ctx->event->buf->last = ctx->event->buf->pos
                                            + ctx->event_start;
                }

                if (ngx_nebula_cut(r, ctx) != NGX_OK) {
                    return NGX_ERROR;
                }

                start = ib->last;
                pos = ib->last;
                break;
            }

            if (ctx->cost_usage && ctx->stream.usage_only) {
                /* the usage chunk, whole in the event held, gets its cost */
                if (ngx_nebula_hold(r, ctx, &start, pos, &ends) != NGX_OK
                    || ngx_nebula_cost_insert(r, ctx, ctx->event_start)
                       != NGX_OK)
                {
                    return NGX_ERROR;
                }

                ctx->event_start = ctx->event->buf->last
                                   - ctx->event->buf->pos;
                continue;
            }

            if (!ctx->strip_usage || !ctx->stream.usage_only) {
                /*
                 * A whole document: it goes with the others this buffer
                 * ends, when it has been read through, in the same call:
                 * one buffer out for many, and no token waits.
                 */
                ends = pos;
                continue;
            }

            /* the chunk the client did not ask for */
            if (ends) {
                /* it began after the last whole event */
                if (ngx_nebula_hold(r, ctx, &start, ends, &ends) != NGX_OK) {
                    return NGX_ERROR;
                }

            } else if (ctx->event) {
                /* it began in the event held */
                ctx->event->buf->last = ctx->event->buf->pos
                                        + ctx->event_start;
            }

            start = pos;
            ctx->usage_stripped = 1;
            continue;
        }

        if (ev == NEBULA_EV_NONE) {
            /* the slice's end, all of it read: held below, or the next */
            continue;
        }

        /* the end of an event too large to hold */

        if (ngx_nebula_hold(r, ctx, &start, pos, &ends) != NGX_OK) {
            return NGX_ERROR;
        }

        b = ngx_nebula_event_send(ctx, ll);
        ctx->event_start = 0;
        ctx->event_passing = 0;
        nebula_stream_quiet(&ctx->stream,
                            (ctx->strip_usage || ctx->cost_usage)
                            && !ctx->limit_hold);
    }

    if (ctx->holding) {
        /* whole events that ended the buffer, and the one begun */
        if (ngx_nebula_hold(r, ctx, &start, ib->last, &ends) != NGX_OK) {
            return NGX_ERROR;
        }

        if (!ctx->event_passing && !ctx->cut && ctx->event
            && (size_t) (ctx->event->buf->last - ctx->event->buf->pos)
               - ctx->event_start
               > (ctx->stream.format == NEBULA_FORMAT_JSON
                  ? NGX_NEBULA_COST_HOLD_MAX : NGX_NEBULA_EVENT_HOLD_MAX))
        {
            /* no usage chunk is that large: it goes on as it comes */
            ctx->event_passing = 1;

            /* whose end the scanner is to report */
            nebula_stream_quiet(&ctx->stream, 0);
        }

        if (ib->last_buf && ctx->cost_usage
            && ctx->stream.format == NEBULA_FORMAT_JSON)
        {
            /* a JSON answer, held whole for its cost */
            if (ngx_nebula_cost_whole(r, ctx, ll) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        if (ctx->event_passing || ctx->cut || ib->last_buf) {
            b = ngx_nebula_event_send(ctx, ll);
            ctx->event_start = 0;
        }

        /*
         * Else the whole events held go on once the chain is read
         * (ngx_nebula_body_filter): an upstream that frames each event as
         * a chunk of its own (Ollama flushes one an event) hands us a
         * buffer an event, and they go on as one buffer, not one each.
         */
    }

    if (shadow) {
        /*
         * Buffers point into ib: it is marked consumed only once the last
         * of them has been sent, so the upstream does not reuse memory we
         * still point into.
         */
        shadow->shadow = ib;
        shadow->recycled = ib->recycled;

        if (b == NULL) {
            b = shadow;
        }

    } else {
        /* all of ib was copied, or lay in the model value: consumed now */
        ib->pos = ib->last;
    }

    if (b == NULL) {
        /* nothing of ib went on: only the end of the response needs one */
        return ngx_nebula_end_buf(r, ib, ll);
    }

    /* the last buffer made from ib carries its flags */
    b->last_buf = ib->last_buf;
    b->last_in_chain = ib->last_in_chain;
    b->flush = ib->flush;

    return NGX_OK;
}


/*
 * ib ends the response (or its part of the chain) and passes nothing on:
 * a fresh empty buffer carries its flags.  Fresh: an empty buffer is done
 * at once for us but not for the filters after us, so it is never put
 * back on a free list.
 */
ngx_int_t
ngx_nebula_end_buf(ngx_http_request_t *r, ngx_buf_t *ib, ngx_chain_t ***ll)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (!(ib->last_buf || ib->last_in_chain)) {
        return NGX_OK;
    }

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->sync = 1;
    b->last_buf = ib->last_buf;
    b->last_in_chain = ib->last_in_chain;
    b->flush = ib->flush;

    cl->buf = b;
    **ll = cl;
    *ll = &cl->next;

    return NGX_OK;
}


/*
 * The upstream failed or timed out midway through a stream (before its
 * [DONE] or "done": true).  nginx cuts the response short, which HTTP
 * clients notice; the client also gets an error it can read, in the
 * stream's own format, just before.
 */
ngx_int_t
ngx_nebula_stream_error(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t ***ll)
{
    ngx_buf_t        *b;
    nebula_stream_t  *st = &ctx->stream;

    if (st->done || r->headers_out.status >= 300
        || st->format == NEBULA_FORMAT_JSON)
    {
        return NGX_OK;
    }

    ctx->stream_broken = 1;

    /* whatever was cut off is closed first */
    if ((st->format == NEBULA_FORMAT_SSE && st->line_state != 0)
        || (st->format == NEBULA_FORMAT_NDJSON && st->mid_line))
    {
        b = ngx_nebula_out_buf(r, ctx, ll);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->memory = 1;
        b->pos = (u_char *) "\n\n";
        b->last = b->pos + (st->format == NEBULA_FORMAT_SSE ? 2 : 1);
    }

    b = ngx_nebula_out_buf(r, ctx, ll);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->memory = 1;
    b->pos = ctx->api->stream_error.data;
    b->last = b->pos + ctx->api->stream_error.len;

    return NGX_OK;
}


ngx_int_t
ngx_nebula_event_append(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    u_char *p, size_t n)
{
    size_t        size, have;
    ngx_buf_t    *b, *nb;
    ngx_chain_t  *cl, **pcl;

    if (n == 0) {
        return NGX_OK;
    }

    cl = ctx->event;

    if (cl && (size_t) (cl->buf->end - cl->buf->last) >= n) {
        cl->buf->last = ngx_cpymem(cl->buf->last, p, n);
        return NGX_OK;
    }

    b = cl ? cl->buf : NULL;
    have = b ? (size_t) (b->last - b->pos) : 0;
    /*
     * Room for two of a token's events (a few hundred bytes each): the
     * buffer lives as long as its stream, and a server holds thousands of
     * slow streams; a bigger event doubles it, and the bigger one is kept.
     */
    size = ngx_max(2 * (have + n), 512);

    if (cl == NULL) {
        /* a buffer sent before and big enough, from the free list */
        for (pcl = &ctx->free_mem; *pcl; pcl = &(*pcl)->next) {
            if ((size_t) ((*pcl)->buf->end - (*pcl)->buf->start) >= n) {
                cl = *pcl;
                *pcl = cl->next;
                cl->next = NULL;
                cl->buf->pos = cl->buf->start;
                cl->buf->last = ngx_cpymem(cl->buf->start, p, n);
                ctx->event = cl;
                return NGX_OK;
            }
        }

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->next = NULL;
    }

    /* a new buffer, or a bigger one for an event that outgrew its own */
    nb = ngx_create_temp_buf(r->pool, size);
    if (nb == NULL) {
        return NGX_ERROR;
    }

    nb->tag = (ngx_buf_tag_t) &ngx_http_nebula_module;

    if (have) {
        nb->last = ngx_cpymem(nb->last, b->pos, have);
    }

    nb->last = ngx_cpymem(nb->last, p, n);

    if (b) {
        /*
         * The event outgrew it: held, never sent, it is no one's now.
         * Freed (when nginx allocated it apart, as it does all but small
         * ones), or a JSON answer held whole for its cost would leave a
         * trail of its halves, twice its size, until the request ends.
         */
        (void) ngx_pfree(r->pool, b->start);
    }

    cl->buf = nb;
    ctx->event = cl;

    return NGX_OK;
}


/*
 * The whole events held go on; the one begun after them stays, copied
 * into a buffer of its own (a few hundred bytes: a token's chunk).
 */
ngx_int_t
ngx_nebula_event_split(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    ngx_chain_t ***ll, ngx_buf_t **sent)
{
    u_char     *tail;
    size_t      n;
    ngx_buf_t  *b;

    b = ctx->event->buf;
    tail = b->pos + ctx->event_start;
    n = b->last - tail;

    b->last = tail;
    ctx->event_start = 0;

    *sent = ngx_nebula_event_send(ctx, ll);

    /* the tail is read before anything can reuse the memory it lies in */
    return ngx_nebula_event_append(r, ctx, tail, n);
}


/* the event held so far goes on; returns its buffer, if any */
ngx_buf_t *
ngx_nebula_event_send(ngx_nebula_ctx_t *ctx, ngx_chain_t ***ll)
{
    ngx_chain_t  *cl;

    cl = ctx->event;

    if (cl == NULL || cl->buf->last == cl->buf->pos) {
        return NULL;
    }

    cl->buf->flush = 0;
    cl->buf->last_buf = 0;
    cl->buf->last_in_chain = 0;

    cl->next = NULL;
    **ll = cl;
    *ll = &cl->next;

    ctx->event = NULL;

    return cl->buf;
}
