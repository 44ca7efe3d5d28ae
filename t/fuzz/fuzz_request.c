/*
 * libFuzzer target: the request parser and validator, the estimate, and
 * the body edits.
 *
 * The first byte picks the API (and, with bit 2, a policy that lets
 * num_thread through); the rest is the body.  Beyond "no crash, no
 * sanitizer report", a body the parser accepts must:
 *   - have an estimate no smaller than its floor, and images costing
 *     256 to 16384 tokens each;
 *   - have drops in body order, not overlapping, within the body;
 *   - still be accepted, naming the new model, once its model is
 *     rewritten as the gateway does;
 *   - still be accepted, with nothing left to drop and the same kept
 *     options, once its drops are deleted, also with num_predict put in
 *     options as the lead puts it (replaced, or inserted at its start
 *     with a comma when members are left).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nebula_request.h"


static const char *const  pass[] = { "num_thread", NULL };


static unsigned char *
edited(const unsigned char *body, size_t len, nebula_edit_t *e, size_t n,
    size_t *out_len)
{
    size_t          i;
    unsigned char  *out;

    nebula_edit_sort(e, n);

    for (i = 1; i < n; i++) {
        if (e[i].start < e[i - 1].end) {
            abort();    /* overlapping edits */
        }
    }

    *out_len = nebula_edit_length(len, e, n);
    out = malloc(*out_len + 1);
    if (out == NULL) {
        return NULL;
    }

    nebula_edit_apply(body, len, e, n, out);

    return out;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t                    n, i, len;
    uint64_t                  floor;
    unsigned char             q[64], num[32], *out;
    const unsigned char      *body;
    nebula_api_e              api;
    nebula_edit_t             edit, e[NEBULA_DROP_MAX + 1];
    nebula_request_t          req, again;
    nebula_request_policy_t   policy, *pol;

    if (size < 1) {
        return 0;
    }

    /* the first byte: the shape (its rest), and the policy (bit 7) */
    api = (nebula_api_e) ((data[0] & 0x7f) % (NEBULA_API_RESPONSES + 1));
    policy.pass_options = pass;
    pol = (data[0] & 0x80) ? &policy : NULL;
    body = data + 1;
    len = size - 1;

    if (nebula_request_parse_policy(&req, api, body, len, pol)
        != NEBULA_REQ_OK)
    {
        return 0;
    }

    /* the estimate */
    if (req.image_bytes > len
        || req.image_tokens < NEBULA_IMAGE_TOKENS * (uint64_t) req.images
        || req.image_tokens > NEBULA_IMAGE_TOKENS_MAX * (uint64_t) req.images)
    {
        abort();
    }

    floor = (len - req.image_bytes + 3) / 4 + req.image_tokens;

    if (req.prompt_tokens < floor
        || req.prompt_tokens < req.context_ids + req.image_tokens)
    {
        abort();
    }

    /* an embedding request: inputs, each within the estimate */
    if ((api == NEBULA_API_EMBEDDINGS || api == NEBULA_API_OLLAMA_EMBED)
        ? req.inputs == 0 || req.longest_input > req.prompt_tokens
        : req.inputs != 0)
    {
        abort();
    }

    /* the drops */
    if (req.ndrops > NEBULA_DROP_MAX) {
        abort();
    }

    for (i = 0; i < req.ndrops; i++) {
        if (req.drops[i].start >= req.drops[i].end
            || req.drops[i].end > len
            || (i > 0 && req.drops[i].start < req.drops[i - 1].end))
        {
            abort();
        }
    }

    /* the model rewritten */
    edit.start = req.model_span.start;
    edit.end = req.model_span.end;
    edit.data = q;
    edit.len = nebula_json_quote(q, (const unsigned char *) "up/stream:1",
                                 11);

    out = edited(body, len, &edit, 1, &n);
    if (out == NULL) {
        return 0;
    }

    if (nebula_request_parse_policy(&again, api, out, n, pol) != NEBULA_REQ_OK
        || strcmp(again.model, "up/stream:1") != 0
        || again.messages != req.messages
        || again.max_tokens != req.max_tokens
        || again.stream != req.stream
        || again.images != req.images
        || again.image_tokens != req.image_tokens
        || again.inputs != req.inputs
        || again.longest_input != req.longest_input
        || again.ndrops != req.ndrops)
    {
        abort();
    }

    free(out);

    /* the drops deleted, then also num_predict set as the lead sets it */
    for (i = 0; i < req.ndrops; i++) {
        e[i].start = req.drops[i].start;
        e[i].end = req.drops[i].end;
        e[i].data = NULL;
        e[i].len = 0;
    }

    n = req.ndrops;

    if (api != NEBULA_API_CHAT && !req.options_null
        && req.options_span.end > req.options_span.start)
    {
        if (req.num_predict_span.end > req.num_predict_span.start) {
            e[n].start = req.num_predict_span.start;
            e[n].end = req.num_predict_span.end;
            e[n].data = (const unsigned char *) "9";
            e[n].len = 1;

        } else {
            e[n].start = req.options_span.start + 1;
            e[n].end = e[n].start;
            e[n].len = snprintf((char *) num, sizeof(num),
                                "\"num_predict\":9%s",
                                req.options_kept ? "," : "");
            e[n].data = num;
        }

        n++;
    }

    out = edited(body, len, e, n, &i);
    if (out == NULL) {
        return 0;
    }

    if (nebula_request_parse_policy(&again, api, out, i, pol) != NEBULA_REQ_OK
        || again.ndrops != 0
        || strcmp(again.model, req.model) != 0
        || again.messages != req.messages
        || again.images != req.images
        || again.context_ids != req.context_ids
        || (n > req.ndrops
            && (again.num_predict != 9
                || again.options_kept
                   != req.options_kept
                      + (req.num_predict_span.end
                         == req.num_predict_span.start))))
    {
        abort();
    }

    free(out);
    return 0;
}
