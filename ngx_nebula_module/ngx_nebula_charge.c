/*
 * Nebula: what a request is charged when it ends, however it ends
 * (docs/metering.md, "What is charged when"): the pool's reported usage,
 * within bounds, or what was streamed and our estimate; nothing for a
 * pool that failed before its first token; the prompt for a client that
 * left once the pool had the request; the reservation for a body we could
 * not read.  The result goes to the request's lease, or is settled on its
 * own (ngx_nebula_settle.c).
 */

#include "ngx_nebula.h"
#include "ngx_nebula_metrics.h"


static void ngx_nebula_charge_cleanup(void *data);


/*
 * The request will be settled when its pool goes: a point every request
 * reaches exactly once, whatever its ending and even after an internal
 * redirect to error_page.
 */
ngx_int_t
ngx_nebula_charge_register(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_nebula_charge_cleanup;
    cln->data = ctx;

    return NGX_OK;
}


/*
 * Whether the client went away once the pool had its request: the pool
 * has read the prompt by then, whatever the client saw.  Not a pool that
 * failed (its 5xx, a refused or timed out connection): that the client
 * then left changes nothing.
 */
static ngx_uint_t
ngx_nebula_client_left(ngx_nebula_ctx_t *ctx)
{
    ngx_http_request_t  *r = ctx->request;

    if (r == NULL || !ctx->proxied || ctx->upstream_failed
        || r->upstream == NULL || !r->upstream->request_sent)
    {
        return 0;
    }

    return r->connection->error
           || r->headers_out.status == NGX_HTTP_CLIENT_CLOSED_REQUEST;
}


/* picodollars; saturated, far beyond any real request, never wrapped */
uint64_t
ngx_nebula_cost(ngx_nebula_model_t *model, uint64_t in, uint64_t out)
{
    uint64_t  a, b;

    if (__builtin_mul_overflow(in, model->input_price, &a)
        || __builtin_mul_overflow(out, model->output_price, &b)
        || __builtin_add_overflow(a, b, &a)
        || a > NGX_NEBULA_COST_MAX)
    {
        return NGX_NEBULA_COST_MAX;
    }

    return a;
}


/*
 * The usage of a request as far as it went.  Reported counts are used as
 * they are, within bounds.  Without them the output is what was streamed
 * (a chunk a token of text, a tool call by its bytes) and the prompt our
 * estimate.  Returns which counts are estimated (NGX_NEBULA_SETTLE_EST_*),
 * 0 when none is.
 *
 * A request that failed before its first token is charged nothing, as
 * OpenAI and OpenRouter bill no failed request: bytes without a token (an
 * SSE comment, a chunk with the role only, an empty line) do not make the
 * pool's work billable, only a token or the pool's own usage does.  But a
 * client that leaves once the pool has its request pays the prompt the
 * pool read (its count when it sent one), and what was streamed.
 *
 * A 2xx whose body the filter could not read (compressed, of a type it
 * does not know) is charged its reservation: the most it could have cost.
 *
 * Bounds: no more output than was reserved (the pool was asked for no
 * more), no more prompt than the model's context (an embedding request's:
 * the context times its inputs) or our estimate, the larger (the pool
 * reads no more): a pool that reports more is
 * believed no further (ctx->over_in, ctx->over_out, logged at settlement).
 */
ngx_uint_t
ngx_nebula_usage(ngx_nebula_ctx_t *ctx, uint64_t *in, uint64_t *out)
{
    uint64_t          max_in;
    ngx_uint_t        estimated, left;
    nebula_stream_t  *st = &ctx->stream;

    estimated = 0;
    *in = 0;
    *out = 0;

    if (ctx->unreadable) {
        *in = ctx->reserved_in;
        *out = ctx->reserved_out;
        return NGX_NEBULA_SETTLE_EST_IN | NGX_NEBULA_SETTLE_EST_OUT;
    }

    left = ngx_nebula_client_left(ctx);

    if (!ctx->filtering && !left) {
        /* no body we could read: the pool answered nothing to charge */
        return 0;
    }

    if (st->has_completion) {
        *out = st->completion_tokens;

        if (!st->done && st->format != NEBULA_FORMAT_JSON
            && nebula_stream_output_estimate(st) > *out)
        {
            /*
             * A count a stream gave before its end (Anthropic's
             * message_start says 0 output tokens): what streamed after
             * it is charged as when none came
             */
            *out = nebula_stream_output_estimate(st);
            estimated |= NGX_NEBULA_SETTLE_EST_OUT;
        }

    } else {
        /* a chunk a token of text, a tool call by its bytes */
        *out = nebula_stream_output_estimate(st);

        if (*out) {
            estimated |= NGX_NEBULA_SETTLE_EST_OUT;
        }
    }

    if (st->has_prompt
        && (st->prompt_tokens > 0 || ctx->req->prompt_tokens == 0))
    {
        *in = st->prompt_tokens;

    } else if (*out > 0 || st->has_completion || st->has_prompt || left
               || (ctx->api->usage == NGX_NEBULA_USAGE_NONE
                   && ctx->output_seen && !ctx->stream_broken))
    {
        /*
         * Ollama leaves the count out, or 0, when the prompt was cached;
         * its legacy /api/embeddings never gives one
         */
        *in = ctx->req->prompt_tokens;
        estimated |= NGX_NEBULA_SETTLE_EST_IN;
    }

    if (ctx->admitted && *out > ctx->reserved_out) {
        *out = ctx->reserved_out;

        /* a stream cut there is logged as such (ngx_nebula_cut) */
        ctx->over_out = !ctx->cut;
    }

    /* embeddings: the context bounds each input */
    max_in = ngx_max(ctx->model->context * ngx_max(ctx->req->inputs, 1),
                     ctx->req->prompt_tokens);

    if (*in > max_in) {
        *in = max_in;
        ctx->over_in = 1;
    }

    return estimated;
}


/* the request is over, however it ended: its usage replaces its reservation */
static void
ngx_nebula_charge_cleanup(void *data)
{
    ngx_nebula_ctx_t  *ctx = data;

    uint64_t             in, out;
    ngx_uint_t           estimated, flags;
    ngx_nebula_model_t  *model = ctx->model;

    if (!ctx->admitted || ctx->settled) {
        return;
    }

    ctx->settled = 1;

    ngx_nebula_hold_remove(&ctx->hold);

    if ((ctx->refused && !ctx->proxied) || ctx->api->unmetered) {
        /*
         * refused once admitted (a private model's checks), or about a
         * model (/api/show): given back, nothing counted
         */
        estimated = 0;
        in = 0;
        out = 0;
        flags = 0;

    } else {
        estimated = ngx_nebula_usage(ctx, &in, &out);
        flags = NGX_NEBULA_SETTLE_COUNT | estimated;
    }

    if (ctx->over_in || ctx->over_out) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "nebula: pool \"%V\" reported more %s than it could "
                      "have used for model \"%V\" (at most %uL input, %uL "
                      "output): charged the bound",
                      &model->pool->name,
                      ctx->over_in ? (ctx->over_out ? "input and output"
                                                    : "input")
                                   : "output",
                      &model->name, in, out);
    }

    ctx->estimated = estimated ? 1 : 0;
    ctx->prompt_tokens = in;
    ctx->completion_tokens = out;
    ctx->cost = ngx_nebula_cost(model, in, out);

    if (flags & NGX_NEBULA_SETTLE_COUNT) {
        ngx_nebula_metrics_usage(ctx, in, out, ctx->cost, estimated != 0);

        /* GET /v1/generation's record of it */
        ngx_nebula_generation_record(ctx, in, out, estimated,
                                     ngx_nebula_client_left(ctx));
    }

    if (ctx->lease) {
        /* settled with the lease's other requests, within a second */
        ngx_nebula_lease_settle(ctx, in, out, ctx->cost,
                                estimated & NGX_NEBULA_SETTLE_EST_IN,
                                estimated & NGX_NEBULA_SETTLE_EST_OUT,
                                flags & NGX_NEBULA_SETTLE_COUNT);
        return;
    }

    /*
     * A key with little left (under 64 of this reservation, the lease's
     * measure) settles at once: held a few milliseconds more for its
     * batch, the reservation could refuse the key's next request, which
     * its usage leaves room for.
     */
    if (ctx->admit.in_left < 64 * (int64_t) ngx_max(ctx->reserved_in, 1)
        || ctx->admit.out_left < 64 * (int64_t) ngx_max(ctx->reserved_out, 1))
    {
        flags |= NGX_NEBULA_SETTLE_NOW;
    }

    /* the record says which counts were estimated, as the access log does */
    ngx_nebula_settle_request(ngx_cycle->log, ctx->tag, ctx->month,
                              ctx->now, ctx->res_id, &model->name,
                              ctx->reserved_in, ctx->reserved_out, in, out,
                              ctx->cost, flags);
}
