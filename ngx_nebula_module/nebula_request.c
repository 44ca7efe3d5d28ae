/*
 * Nebula: the client request parser and validator (see nebula_request.h).
 *
 * yajl reports parse events; a small stack of frames says where in the
 * request each event sits (the top object, a message, a content part, ...),
 * so every value is checked in one pass without building a tree.  What a
 * key means to each request shape is nebula_request_fields.c's.
 */

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "nebula_request_int.h"
#include "nebula_body.h"




/* the frame that holds the value being reported, and the value's slot */
static slot_e
current_slot(parse_t *p, frame_t **parent)
{
    frame_t  *f;

    if (p->depth == 0) {
        *parent = NULL;
        return S_OTHER;
    }

    f = &p->frames[p->depth - 1];
    *parent = f;

    if (f->is_map) {
        return f->key;
    }

    switch (f->kind) {
    case F_MESSAGES:
        return S_MESSAGE;
    case F_CONTENT:
        return S_PART;
    case F_IMAGES:
        return S_IMAGE;
    case F_INPUT:
        return S_INPUT_ITEM;
    case F_TOOLS:
        return S_TOOL;
    default:
        return S_OTHER;
    }
}


/* the offset where the value after the current key starts */
static size_t
value_start(parse_t *p, frame_t *f)
{
    size_t  i = f->key_end;

    while (i < p->len && p->body[i] != ':') {
        i++;
    }

    i++;

    while (i < p->len && (p->body[i] == ' ' || p->body[i] == '\t'
                          || p->body[i] == '\r' || p->body[i] == '\n'))
    {
        i++;
    }

    return i;
}


static void
record_span(parse_t *p, frame_t *f, nebula_span_t *span)
{
    span->start = value_start(p, f);
    span->end = yajl_get_bytes_consumed(p->yajl);
}


static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}


/*
 * A member of an object that may lose some ended: a dropped one becomes
 * a span to delete, with one comma beside it, so that what is left is
 * valid JSON whichever members go (see drops[] in nebula_request.h).
 */
static void
member_done(parse_t *p, frame_t *f)
{
    size_t             end, i;
    nebula_span_t     *d;
    nebula_request_t  *req = p->req;

    end = yajl_get_bytes_consumed(p->yajl);

    if (!f->dropping) {
        f->kept++;
        f->prev_end = end;
        return;
    }

    if (req->ndrops == NEBULA_DROP_MAX) {
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "options",
             "Invalid value for '%s': the body has more members the "
             "gateway removes (options it does not let through, "
             "keep_alive, _debug_render_only) than it takes.", "options");
        f->prev_end = end;
        return;
    }

    d = &req->drops[req->ndrops++];

    if (f->kept) {
        d->start = f->prev_end;
        d->end = end;

    } else {
        for (i = end; i < p->len && is_space(p->body[i]); i++) {
            /* void */
        }

        d->start = f->cursor;
        d->end = (i < p->len && p->body[i] == ',') ? i + 1 : end;
        f->cursor = d->end;
    }

    f->prev_end = end;
}


/*
 * After a value: in an array, the next element gets the next index; in
 * an object that may lose members, the member is kept or dropped.
 */
static inline void
value_done(parse_t *p, frame_t *parent)
{
    if (parent == NULL) {
        return;
    }

    if (!parent->is_map) {
        parent->index++;

    } else if (parent->kind == F_TOP || parent->kind == F_OPTIONS) {
        member_done(p, parent);
    }
}


static int
on_null(void *ctx)
{
    parse_t  *p = ctx;
    frame_t  *parent;
    slot_e    slot;

    slot = current_slot(p, &parent);

    switch (slot) {

    /*
     * Fields the gateway may have to set: it puts its value in place of the
     * null, for a second key would leave the client's null the last word.
     */
    case S_STREAM_OPTIONS:
        record_span(p, parent, &p->req->stream_options_span);
        p->req->stream_options_null = 1;
        break;

    case S_OPTIONS:
        record_span(p, parent, &p->req->options_span);
        p->req->options_null = 1;
        break;

    case S_MAX_TOKENS:
        record_span(p, parent, &p->req->max_tokens_span);
        break;

    case S_MAX_COMPLETION_TOKENS:
        record_span(p, parent, &p->req->max_completion_tokens_span);
        break;

    case S_NUM_PREDICT:
        record_span(p, parent, &p->req->num_predict_span);
        break;

    case S_NUM_CTX:
        record_span(p, parent, &p->req->num_ctx_span);
        break;

    case S_N:
        record_span(p, parent, &p->req->n_span);
        break;

    case S_BEST_OF:
        record_span(p, parent, &p->req->best_of_span);
        break;

    case S_INCLUDE_USAGE:
        record_span(p, parent, &p->req->include_usage_span);
        break;

    /* optional fields: null means "not given", as in OpenAI's API */
    case S_USAGE_INCLUDE:
    case S_TEMPERATURE:
    case S_STREAM:
    case S_SYSTEM:
    case S_IMAGES:
    case S_PROMPT:
    case S_PREVIOUS_RESPONSE:
    case S_CONVERSATION:
        break;

    case S_CONTENT:
        /* an assistant turn that only calls tools has no content */
        break;

    default:
        if (!nebula_req_slot_any(slot)) {
            nebula_req_bad_type(p, slot);
        }
    }

    value_done(p, parent);
    return 1;
}


static int
on_boolean(void *ctx, int v)
{
    parse_t  *p = ctx;
    frame_t  *parent;
    slot_e    slot;

    slot = current_slot(p, &parent);

    switch (slot) {
    case S_STREAM:
        p->req->stream = v;
        break;
    case S_INCLUDE_USAGE:
        p->req->include_usage = v;
        record_span(p, parent, &p->req->include_usage_span);
        break;
    case S_USAGE_INCLUDE:
        p->req->usage_cost = v;
        break;
    default:
        if (!nebula_req_slot_any(slot)) {
            nebula_req_bad_type(p, slot);
        }
    }

    value_done(p, parent);
    return 1;
}


static int
on_number(void *ctx, const char *s, size_t len)
{
    parse_t           *p = ctx;
    frame_t           *parent;
    slot_e             slot;
    int64_t            v;
    double             d;
    char               buf[64];
    nebula_request_t  *req = p->req;

    slot = current_slot(p, &parent);

    switch (slot) {

    case S_TEMPERATURE:
        if (len >= sizeof(buf)) {
            /* long, not large: 0.5 and eighty zeros is 0.5 */
            d = nebula_json_number_long(s, len);

        } else {
            memcpy(buf, s, len);
            buf[len] = '\0';
            d = strtod(buf, NULL);
        }

        if (!(d >= 0.0 && d <= 2.0)) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "temperature",
                 "Invalid value for 'temperature': %s must be a number "
                 "between 0 and 2.", len < sizeof(buf) ? buf : "it");
            break;
        }

        req->has_temperature = 1;
        req->temperature = d;
        break;

    case S_MAX_TOKENS:
    case S_MAX_COMPLETION_TOKENS:
        if (nebula_json_integer(s, len, &v) != 0 || v <= 0) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE,
                 slot == S_MAX_TOKENS ? nebula_req_limit_name(p)
                                      : "max_completion_tokens",
                 "Invalid value for '%s': expected a positive integer.",
                 slot == S_MAX_TOKENS ? nebula_req_limit_name(p)
                                      : "max_completion_tokens");
            break;
        }

        if (slot == S_MAX_TOKENS) {
            req->max_tokens = v;
            record_span(p, parent, &req->max_tokens_span);

        } else {
            req->max_completion_tokens = v;
            record_span(p, parent, &req->max_completion_tokens_span);
        }

        break;

    case S_NUM_PREDICT:
        /* Ollama takes -1 (no limit) and -2 (fill the context) too */
        if (nebula_json_integer(s, len, &v) != 0 || v < -2) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "options.num_predict",
                 "Invalid value for '%s': expected an integer.",
                 "options.num_predict");
            break;
        }

        req->num_predict = v;
        record_span(p, parent, &req->num_predict_span);
        break;

    /*
     * Positive integers the gateway checks against the model: num_ctx
     * (capped at its context), n and best_of (more than one answer only
     * where the model allows it).
     */
    case S_NUM_CTX:
    case S_N:
    case S_BEST_OF:
        if (nebula_json_integer(s, len, &v) != 0 || v <= 0) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE,
                 slot == S_N ? "n"
                 : slot == S_BEST_OF ? "best_of" : "options.num_ctx",
                 "Invalid value for '%s': expected a positive integer.",
                 slot == S_N ? "n"
                 : slot == S_BEST_OF ? "best_of" : "options.num_ctx");
            break;
        }

        if (slot == S_NUM_CTX) {
            req->num_ctx = v;
            record_span(p, parent, &req->num_ctx_span);

        } else if (slot == S_N) {
            req->n = v;
            record_span(p, parent, &req->n_span);

        } else {
            req->best_of = v;
            record_span(p, parent, &req->best_of_span);
        }

        break;

    case S_INPUT_ITEM:
        nebula_req_input_id(p, parent, s, len);
        break;

    default:
        if (!nebula_req_slot_any(slot)) {
            nebula_req_bad_type(p, slot);
        }
    }

    value_done(p, parent);
    return 1;
}


static int
on_string(void *ctx, const unsigned char *s, size_t len)
{
    parse_t           *p = ctx;
    frame_t           *parent;
    slot_e             slot;
    size_t             at;
    char               param[NEBULA_PARAM_MAX];
    nebula_span_t      span;
    nebula_request_t  *req = p->req;

    slot = current_slot(p, &parent);

    switch (slot) {

    case S_MODEL:
        if (len == 0 || len >= NEBULA_MODEL_NAME_MAX
            || memchr(s, '\0', len) != NULL)
        {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "model",
                 "Invalid value for 'model': %s", len == 0
                 ? "it must not be empty." : "no such model name.");
            break;
        }

        /*
         * yajl decodes a lone surrogate escape ("\udc00") to bytes that are
         * not UTF-8; Go would read U+FFFD.  Neither names a model, and the
         * bytes must not reach a message or a log.
         */
        if (nebula_utf8_invalid(s, len, &at)) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "model",
                 "Invalid value for 'model': %s",
                 "it is not valid UTF-8 (a lone surrogate escape?).");
            break;
        }

        memcpy(req->model, s, len);
        req->model[len] = '\0';
        req->model_len = len;
        record_span(p, parent, &req->model_span);
        break;

    case S_ROLE:
        record_span(p, parent, &span);
        parent->part_type = nebula_req_role(p, slot, s, len, &span);
        break;

    case S_PROMPT:
        p->has_prompt = (len > 0);
        req->text_bytes += len;
        break;

    case S_MESSAGES:
        /* the Responses API's input, a string: one user message */
        if (!p->shape->items) {
            nebula_req_bad_type(p, slot);
            break;
        }

        if (len == 0) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "input",
                 "Invalid value for '%s': it must not be empty.", "input");
            break;
        }

        req->messages++;
        req->text_bytes += len;
        break;

    case S_CONTENT:
    case S_PART_TEXT:
    case S_SYSTEM:
    case S_SUFFIX:
    case S_TEMPLATE:
    case S_REASONING:
        req->text_bytes += len;
        break;

    case S_PART_TYPE:
        if (p->shape->blocks) {
            /*
             * Anthropic's blocks, the Responses API's parts: an image is
             * judged when its block ends; a type Ollama does not know
             * it skips, and the body's size bounds what it would read
             */
            parent->part_type =
                (nebula_req_key_is(s, len, "text")
                 || nebula_req_key_is(s, len, "input_text")
                 || nebula_req_key_is(s, len, "output_text")) ? 1
                : (nebula_req_key_is(s, len, "image")
                   || nebula_req_key_is(s, len, "input_image")) ? 2 : 3;

        } else if (nebula_req_key_is(s, len, "text")) {
            parent->part_type = 1;

        } else if (nebula_req_key_is(s, len, "image_url")) {
            parent->part_type = 2;

        } else {
            nebula_req_msg_param(p, param, sizeof(param), "type");
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
                 "Invalid value for '%s': expected 'text' or 'image_url'.",
                 param);
        }

        break;

    case S_PART_IMAGE:
        /* the short form: "image_url": "data:..." */
        nebula_req_part_image(parent, s, len);
        break;

    case S_IMAGE_URL:
        /* the long form: "image_url": {"url": "data:..."} */
        nebula_req_part_image(&p->frames[p->depth - 2], s, len);
        break;

    case S_IMAGE:
        nebula_req_native_image(p, parent, s, len);
        break;

    case S_SOURCE_TYPE:
        /* Ollama reads a base64 source alone, and fetches no URL */
        p->frames[p->depth - 2].src_other =
            !nebula_req_key_is(s, len, "base64");
        break;

    case S_SOURCE_DATA:
        nebula_req_source_image(&p->frames[p->depth - 2], s, len);
        break;

    case S_TOOL_TYPE:
        nebula_req_tool_type(p, s, len);
        break;

    case S_INPUT:
    case S_INPUT_ITEM:
        nebula_req_input_string(p, parent, slot, len);
        break;

    default:
        if (!nebula_req_slot_any(slot)) {
            nebula_req_bad_type(p, slot);
        }
    }

    value_done(p, parent);
    return 1;
}


static int
push(parse_t *p, int is_map)
{
    frame_t       *parent, *f;
    slot_e         slot;
    frame_kind_e   kind;

    if (p->depth == NEBULA_JSON_MAX_DEPTH) {
        p->too_deep = 1;
        return 0;
    }

    slot = current_slot(p, &parent);

    if (p->depth == 0) {
        kind = F_TOP;

        if (!is_map) {
            return 0;   /* reported as "not an object" */
        }

    } else {
        kind = nebula_req_frame_kind(p, parent, slot, is_map);
    }

    /* the image fields are F_PART's alone: set below, not cleared */
    f = &p->frames[p->depth++];
    memset(f, 0, offsetof(frame_t, img_err));
    f->kind = kind;
    f->is_map = is_map;
    f->slot = slot;
    f->start = yajl_get_bytes_consumed(p->yajl) - 1;
    f->cursor = f->start + 1;

    if (parent != NULL) {
        /* what sits inside a message knows its index */
        f->owner = parent->owner;
    }

    if (kind == F_MESSAGE) {
        f->owner = parent->index;
        p->req->messages++;

    } else if (kind == F_PART) {
        f->part = parent->index;

    } else if (kind == F_TOP) {
        p->req->top_start = f->start;
    }

    return 1;
}


static int
pop(parse_t *p)
{
    frame_t           *f, *parent;
    size_t             end;
    char               param[NEBULA_PARAM_MAX];
    nebula_request_t  *req = p->req;

    f = &p->frames[--p->depth];
    end = yajl_get_bytes_consumed(p->yajl);

    switch (f->kind) {

    case F_MESSAGES:
        if (f->index == 0) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, NEBULA_REQ_ITEMS(p),
                 "Invalid value for '%s': the array must not be empty.",
                 NEBULA_REQ_ITEMS(p));
        }
        break;

    case F_MESSAGE:
        if (p->shape->items) {
            /* an item: a message, a function call or its output, ... */
            break;
        }

        if (!(f->seen & ((uint64_t) 1 << S_ROLE))) {
            snprintf(param, sizeof(param), "messages[%zu].role", f->owner);
            nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, param,
                 "Missing required parameter: '%s'.", param);

        } else if (!(f->seen & ((uint64_t) 1 << S_CONTENT))
                   && f->part_type != 3)
        {
            /* only an assistant turn that calls tools may go without */
            snprintf(param, sizeof(param), "messages[%zu].content",
                     f->owner);
            nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, param,
                 "Missing required parameter: '%s'.", param);
        }
        break;

    case F_PART:
        if (f->part_type == 0) {
            snprintf(param, sizeof(param), "%s[%zu].content[%zu].type",
                     NEBULA_REQ_ITEMS(p), f->owner, f->part);
            nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, param,
                 "Missing required parameter: '%s'.", param);
        }

        nebula_req_part_done(p, f);
        break;

    case F_STREAM_OPTIONS:
        req->stream_options_span.start = f->start;
        req->stream_options_span.end = end;
        break;

    case F_OPTIONS:
        req->options_span.start = f->start;
        req->options_span.end = end;
        req->options_kept = f->kept;
        break;

    case F_CONTEXT:
        /* each id is a token the model reads */
        req->context_ids += f->index;
        break;

    case F_INPUT:
        nebula_req_input_done(p, f);
        break;

    default:
        break;
    }

    if (f->slot == S_TOOLS || f->slot == S_TOOL_CALLS) {
        req->other_bytes += end - f->start;
    }

    parent = (p->depth > 0) ? &p->frames[p->depth - 1] : NULL;
    value_done(p, parent);

    return 1;
}


static int
on_start_map(void *ctx)
{
    return push(ctx, 1);
}


static int
on_start_array(void *ctx)
{
    return push(ctx, 0);
}


static int
on_end(void *ctx)
{
    return pop(ctx);
}


static int
on_map_key(void *ctx, const unsigned char *key, size_t len)
{
    parse_t        *p = ctx;
    frame_t        *f;
    slot_e          slot;
    size_t          n;
    unsigned char   folded[32];

    f = &p->frames[p->depth - 1];
    f->key_end = yajl_get_bytes_consumed(p->yajl);

    n = nebula_fold_key(key, len, folded, sizeof(folded));
    slot = (n <= sizeof(folded)) ? nebula_req_slot(p, f, folded, n) : S_OTHER;

    if (slot == S_KEEP_ALIVE || slot == S_DEBUG_RENDER || slot == S_VERBOSE) {
        /* dropped in any spelling Go reads, however often it comes */
        f->key = slot;
        f->dropping = 1;
        return 1;
    }

    if (slot != S_OTHER && (n != len || memcmp(folded, key, len) != 0)) {
        p->case_mismatch = 1;
        return 0;
    }

    if (slot != S_OTHER) {
        if (f->seen & ((uint64_t) 1 << slot)) {
            /*
             * Upstreams keep the last of duplicate keys, we would check the
             * first: refuse, or a client could pass one model and use another.
             */
            p->duplicate = 1;
            return 0;
        }

        f->seen |= (uint64_t) 1 << slot;

    } else if (f->kind == F_OPTIONS && !nebula_req_option_passes(p, key, len)) {
        slot = S_DROP;
    }

    if (slot == S_PART_IMAGE) {
        f->img = IMG_SHAPE;     /* until a data URL is read in it */
    }

    f->key = slot;
    f->dropping = (slot == S_DROP);

    return 1;
}


static yajl_callbacks  callbacks = {
    on_null,
    on_boolean,
    NULL,
    NULL,
    on_number,
    on_string,
    on_start_map,
    on_map_key,
    on_end,
    on_start_array,
    on_end
};



nebula_req_error_e
nebula_request_parse(nebula_request_t *req, nebula_api_e api,
    const unsigned char *body, size_t len)
{
    return nebula_request_parse_policy(req, api, body, len, NULL);
}


nebula_req_error_e
nebula_request_parse_policy(nebula_request_t *req, nebula_api_e api,
    const unsigned char *body, size_t len,
    const nebula_request_policy_t *policy)
{
    parse_t            p;
    yajl_status        st;
    unsigned char      c;
    size_t             i;
    yajl_alloc_funcs   afs;
    nebula_estimate_t  est;

    /* drops[] is read only up to ndrops: a parse need not clear it */
    memset(req, 0, offsetof(nebula_request_t, drops));
    req->api = api;
    req->stream = -1;
    req->include_usage = -1;
    req->max_tokens = -1;
    req->max_completion_tokens = -1;
    req->num_predict = -1;
    req->num_ctx = -1;
    req->n = -1;
    req->best_of = -1;

    memset(&p, 0, offsetof(parse_t, frames));
    memset(&p.frames[0], 0, sizeof(frame_t));
    p.req = req;
    p.shape = nebula_req_shape(api);
    p.body = body;
    p.len = len;
    p.pass_options = (policy != NULL) ? policy->pass_options : NULL;

    for (i = 0; i < len; i++) {
        c = body[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            break;
        }
    }

    if (i == len) {
        req->error = NEBULA_REQ_INVALID_JSON;
        snprintf(req->message, sizeof(req->message),
                 "The request body is empty: expected a JSON object.");
        return req->error;
    }

    if (body[i] != '{') {
        req->error = NEBULA_REQ_INVALID_JSON;
        snprintf(req->message, sizeof(req->message),
                 "The request body must be a JSON object.");
        return req->error;
    }

    if (nebula_utf8_invalid(body, len, &i)) {
        req->error = NEBULA_REQ_INVALID_JSON;
        snprintf(req->message, sizeof(req->message),
                 "The request body is not valid UTF-8 (at byte %zu).", i);
        return req->error;
    }

    nebula_arena_init(&p.arena, &afs);

    p.yajl = yajl_alloc(&callbacks, &afs, &p);
    if (p.yajl == NULL) {
        req->error = NEBULA_REQ_INVALID_JSON;
        snprintf(req->message, sizeof(req->message), "Out of memory.");
        return req->error;
    }

    st = yajl_parse(p.yajl, body, len);
    if (st == yajl_status_ok) {
        st = yajl_complete_parse(p.yajl);
    }

    if (st != yajl_status_ok) {
        req->error = NEBULA_REQ_INVALID_JSON;
        req->param[0] = '\0';

        if (p.too_deep) {
            snprintf(req->message, sizeof(req->message),
                     "The request body nests deeper than %d levels.",
                     NEBULA_JSON_MAX_DEPTH);

        } else if (p.duplicate) {
            snprintf(req->message, sizeof(req->message),
                     "The request body repeats a key: each field may "
                     "appear once.");

        } else if (p.case_mismatch) {
            snprintf(req->message, sizeof(req->message),
                     "A key of the request body names a field in another "
                     "case: fields are written in lower case.");

        } else {
            snprintf(req->message, sizeof(req->message),
                     "We could not parse the JSON body of your request: %s "
                     "at byte %zu.",
                     st == yajl_status_error ? "syntax error"
                                             : "unexpected input",
                     yajl_get_bytes_consumed(p.yajl));
        }

        yajl_free(p.yajl);
        return req->error;
    }

    yajl_free(p.yajl);

    if (req->error != NEBULA_REQ_OK) {
        return req->error;
    }

    if (nebula_req_required(&p) != NEBULA_REQ_OK) {
        return req->error;
    }

    if (req->stream == -1) {
        /* OpenAI answers in one piece by default, Ollama streams */
        req->stream = p.shape->stream_default;
    }

    est.body_bytes = len;
    est.image_bytes = req->image_bytes;
    est.text_bytes = req->text_bytes;
    est.other_bytes = req->other_bytes;
    est.messages = req->messages + req->inputs;
    est.context_ids = req->context_ids;
    est.image_tokens = req->image_tokens;

    req->prompt_tokens = nebula_estimate_tokens(&est);

    return NEBULA_REQ_OK;
}

