/*
 * Nebula: the client request parser and validator (see nebula_request.h).
 *
 * yajl reports parse events; a small stack of frames says where in the
 * request each event sits (the top object, a message, a content part, ...),
 * so every value is checked in one pass without building a tree.
 */

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "nebula_request.h"


typedef enum {
    F_TOP = 0,
    F_MESSAGES,
    F_MESSAGE,
    F_CONTENT,
    F_PART,
    F_STREAM_OPTIONS,
    F_OPTIONS,
    F_IMAGES,
    F_SKIP
} frame_kind_e;


/* where a value sits; also the bit a map frame sets to catch duplicates */
typedef enum {
    S_OTHER = 0,
    S_MODEL,
    S_MESSAGES,
    S_TEMPERATURE,
    S_MAX_TOKENS,
    S_MAX_COMPLETION_TOKENS,
    S_STREAM,
    S_STREAM_OPTIONS,
    S_OPTIONS,
    S_PROMPT,
    S_SYSTEM,
    S_IMAGES,
    S_TOOLS,
    S_MESSAGE,
    S_ROLE,
    S_CONTENT,
    S_PART,
    S_PART_TYPE,
    S_PART_TEXT,
    S_PART_IMAGE,
    S_INCLUDE_USAGE,
    S_NUM_PREDICT,
    S_IMAGE
} slot_e;


typedef struct {
    frame_kind_e   kind;
    int            is_map;
    slot_e         key;          /* the current key's slot, in a map */
    size_t         key_end;      /* offset just past the current key */
    size_t         start;        /* offset of the opening bracket */
    size_t         index;        /* the next element's index, in an array */
    uint32_t       seen;         /* slots already met, in a map */
    slot_e         slot;         /* where this container sits */
    size_t         owner;        /* message index, for F_MESSAGE and below */
    size_t         part;         /* part index, for F_PART */
    int            part_type;    /* F_PART: 0 none, 1 text, 2 image;
                                    F_MESSAGE: the role, 1 + roles[] */
} frame_t;


/*
 * yajl's memory for one parse: its handle, lexer, stacks and the buffer it
 * decodes escaped strings into, a few hundred bytes to a few kilobytes,
 * are taken from here, in the parse's own frame, instead of five or more
 * mallocs and frees a request.  What does not fit goes to malloc.
 */
#define ARENA_SIZE   8192
#define ARENA_ALIGN  16

typedef struct {
    size_t                 used;
    size_t                 last;    /* offset of the last block's header */
    unsigned char          buf[ARENA_SIZE]
                               __attribute__((aligned(ARENA_ALIGN)));
} arena_t;


typedef struct {
    nebula_request_t      *req;
    const unsigned char   *body;
    size_t                 len;
    yajl_handle            yajl;
    int                    depth;   /* frames in use */
    int                    too_deep;
    int                    duplicate;
    int                    case_mismatch;

    /* not cleared for each parse: a frame is when it is pushed */
    frame_t                frames[NEBULA_JSON_MAX_DEPTH];
    arena_t                arena;
} parse_t;


static const char *roles[] = { "system", "user", "assistant", "tool", NULL };


/* a block is its size, in ARENA_ALIGN bytes before it, then its bytes */
static int
arena_has(arena_t *a, void *ptr)
{
    return (unsigned char *) ptr >= a->buf
           && (unsigned char *) ptr < a->buf + ARENA_SIZE;
}


static void *
arena_malloc(void *ctx, size_t size)
{
    size_t    n;
    arena_t  *a;

    a = ctx;
    n = ARENA_ALIGN + ((size + ARENA_ALIGN - 1) & ~(size_t) (ARENA_ALIGN - 1));

    if (size > ARENA_SIZE || n > ARENA_SIZE - a->used) {
        return malloc(size);
    }

    memcpy(a->buf + a->used, &size, sizeof(size_t));
    a->last = a->used;
    a->used += n;

    return a->buf + a->last + ARENA_ALIGN;
}


static void
arena_free(void *ctx, void *ptr)
{
    arena_t  *a;

    a = ctx;

    if (!arena_has(a, ptr)) {
        free(ptr);
    }

    /* the arena's blocks go with the parse */
}


static void *
arena_realloc(void *ctx, void *ptr, size_t size)
{
    size_t          old, n;
    arena_t        *a;
    unsigned char  *p;

    a = ctx;

    if (ptr == NULL) {
        return arena_malloc(ctx, size);
    }

    if (!arena_has(a, ptr)) {
        return realloc(ptr, size);
    }

    p = ptr;
    memcpy(&old, p - ARENA_ALIGN, sizeof(size_t));

    if (size <= old) {
        return ptr;
    }

    n = ARENA_ALIGN + ((size + ARENA_ALIGN - 1) & ~(size_t) (ARENA_ALIGN - 1));

    if (p - ARENA_ALIGN == a->buf + a->last && size <= ARENA_SIZE
        && n <= ARENA_SIZE - a->last)
    {
        /* the last block grows where it is */
        memcpy(p - ARENA_ALIGN, &size, sizeof(size_t));
        a->used = a->last + n;
        return ptr;
    }

    p = arena_malloc(ctx, size);

    if (p != NULL) {
        memcpy(p, ptr, old);
    }

    return p;
}


static void
fail(parse_t *p, nebula_req_error_e err, const char *param,
    const char *fmt, const char *arg)
{
    nebula_request_t  *req = p->req;

    if (req->error != NEBULA_REQ_OK) {
        return;     /* the first error is the one reported */
    }

    req->error = err;
    snprintf(req->param, sizeof(req->param), "%s", param ? param : "");
    snprintf(req->message, sizeof(req->message), fmt, arg ? arg : "");
}


static void
msg_param(parse_t *p, char *buf, size_t size, const char *field)
{
    frame_t  *f;
    int       i;

    for (i = p->depth - 1; i >= 0; i--) {
        f = &p->frames[i];

        if (f->kind == F_PART) {
            snprintf(buf, size, "messages[%zu].content[%zu]%s%s", f->owner,
                     f->part, field[0] ? "." : "", field);
            return;
        }

        if (f->kind == F_MESSAGE) {
            snprintf(buf, size, "messages[%zu]%s%s", f->owner,
                     field[0] ? "." : "", field);
            return;
        }
    }

    snprintf(buf, size, "%s", field);
}


static int
key_is(const unsigned char *key, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(key, name, len) == 0;
}


static slot_e
slot_for_key(parse_t *p, frame_t *f, const unsigned char *key, size_t len)
{
    nebula_api_e  api = p->req->api;

    switch (f->kind) {

    case F_TOP:
        if (key_is(key, len, "model")) {
            return S_MODEL;
        }
        if (key_is(key, len, "stream")) {
            return S_STREAM;
        }
        if (key_is(key, len, "tools")) {
            return S_TOOLS;
        }

        if (api == NEBULA_API_OLLAMA_GENERATE) {
            if (key_is(key, len, "prompt")) {
                return S_PROMPT;
            }
            if (key_is(key, len, "system")) {
                return S_SYSTEM;
            }
            if (key_is(key, len, "images")) {
                return S_IMAGES;
            }

        } else if (key_is(key, len, "messages")) {
            return S_MESSAGES;
        }

        if (api == NEBULA_API_CHAT) {
            if (key_is(key, len, "temperature")) {
                return S_TEMPERATURE;
            }
            if (key_is(key, len, "max_tokens")) {
                return S_MAX_TOKENS;
            }
            if (key_is(key, len, "max_completion_tokens")) {
                return S_MAX_COMPLETION_TOKENS;
            }
            if (key_is(key, len, "stream_options")) {
                return S_STREAM_OPTIONS;
            }

        } else if (key_is(key, len, "options")) {
            return S_OPTIONS;
        }

        return S_OTHER;

    case F_MESSAGE:
        if (key_is(key, len, "role")) {
            return S_ROLE;
        }
        if (key_is(key, len, "content")) {
            return S_CONTENT;
        }
        if (api != NEBULA_API_CHAT && key_is(key, len, "images")) {
            return S_IMAGES;
        }
        return S_OTHER;

    case F_PART:
        if (key_is(key, len, "type")) {
            return S_PART_TYPE;
        }
        if (key_is(key, len, "text")) {
            return S_PART_TEXT;
        }
        if (key_is(key, len, "image_url")) {
            return S_PART_IMAGE;
        }
        return S_OTHER;

    case F_STREAM_OPTIONS:
        return key_is(key, len, "include_usage") ? S_INCLUDE_USAGE : S_OTHER;

    case F_OPTIONS:
        return key_is(key, len, "num_predict") ? S_NUM_PREDICT : S_OTHER;

    default:
        return S_OTHER;
    }
}


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


/* after a value in an array, the next element gets the next index */
static void
value_done(frame_t *parent)
{
    if (parent != NULL && !parent->is_map) {
        parent->index++;
    }
}


static int
parse_integer(const char *s, size_t len, int64_t *out)
{
    size_t   i = 0;
    int      neg = 0;
    int64_t  v = 0;

    if (len && s[0] == '-') {
        neg = 1;
        i = 1;
    }

    if (i == len || len - i > 15) {
        return -1;  /* also "too large": 15 digits is more than any limit */
    }

    for ( /* void */ ; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }

    *out = neg ? -v : v;
    return 0;
}


static void
bad_type(parse_t *p, slot_e slot, const char *what)
{
    char         param[NEBULA_PARAM_MAX];
    const char  *name;

    switch (slot) {
    case S_MODEL:
        name = "model";
        break;
    case S_MESSAGES:
        name = "messages";
        break;
    case S_TEMPERATURE:
        name = "temperature";
        break;
    case S_MAX_TOKENS:
        name = "max_tokens";
        break;
    case S_MAX_COMPLETION_TOKENS:
        name = "max_completion_tokens";
        break;
    case S_STREAM:
        name = "stream";
        break;
    case S_STREAM_OPTIONS:
        name = "stream_options";
        break;
    case S_OPTIONS:
        name = "options";
        break;
    case S_PROMPT:
        name = "prompt";
        break;
    case S_SYSTEM:
        name = "system";
        break;
    case S_INCLUDE_USAGE:
        name = "stream_options.include_usage";
        break;
    case S_NUM_PREDICT:
        name = "options.num_predict";
        break;
    case S_MESSAGE:
        snprintf(param, sizeof(param), "messages[%zu]",
                 p->frames[p->depth - 1].index);
        fail(p, NEBULA_REQ_INVALID_VALUE, param,
             "Invalid type for '%s': each message must be an object.",
             param);
        return;
    case S_ROLE:
        msg_param(p, param, sizeof(param), "role");
        fail(p, NEBULA_REQ_INVALID_VALUE, param,
             "Invalid value for '%s': expected one of 'system', 'user', "
             "'assistant' or 'tool'.", param);
        return;
    case S_CONTENT:
        msg_param(p, param, sizeof(param), "content");
        fail(p, NEBULA_REQ_INVALID_VALUE, param,
             p->req->api == NEBULA_API_CHAT
             ? "Invalid type for '%s': expected a string or an array of "
               "content parts."
             : "Invalid type for '%s': expected a string.", param);
        return;
    case S_PART:
        snprintf(param, sizeof(param), "messages[%zu].content[%zu]",
                 p->frames[p->depth - 2].owner,
                 p->frames[p->depth - 1].index);
        fail(p, NEBULA_REQ_INVALID_VALUE, param,
             "Invalid type for '%s': each content part must be an object.",
             param);
        return;
    case S_PART_TYPE:
    case S_PART_TEXT:
    case S_PART_IMAGE:
        msg_param(p, param, sizeof(param),
                  slot == S_PART_TYPE ? "type"
                  : slot == S_PART_TEXT ? "text" : "image_url");
        fail(p, NEBULA_REQ_INVALID_VALUE, param,
             "Invalid value for '%s'.", param);
        return;
    case S_IMAGES:
    case S_IMAGE:
        fail(p, NEBULA_REQ_INVALID_VALUE, "images",
             "Invalid value for '%s': expected an array of base64 strings.",
             "images");
        return;
    default:
        return;
    }

    snprintf(param, sizeof(param), "Invalid type for '%%s': expected %s.",
             what);
    fail(p, NEBULA_REQ_INVALID_VALUE, name, param, name);
}


static const char *
slot_type(slot_e slot)
{
    switch (slot) {
    case S_MODEL:
    case S_PROMPT:
    case S_SYSTEM:
    case S_ROLE:
    case S_PART_TYPE:
    case S_PART_TEXT:
    case S_IMAGE:
        return "a string";
    case S_TEMPERATURE:
        return "a number";
    case S_MAX_TOKENS:
    case S_MAX_COMPLETION_TOKENS:
    case S_NUM_PREDICT:
        return "an integer";
    case S_STREAM:
    case S_INCLUDE_USAGE:
        return "a boolean";
    case S_MESSAGES:
    case S_IMAGES:
        return "an array";
    case S_STREAM_OPTIONS:
    case S_OPTIONS:
    case S_MESSAGE:
    case S_PART:
        return "an object";
    default:
        return "another type";
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

    case S_INCLUDE_USAGE:
        record_span(p, parent, &p->req->include_usage_span);
        break;

    /* optional fields: null means "not given", as in OpenAI's API */
    case S_TEMPERATURE:
    case S_STREAM:
    case S_TOOLS:
    case S_OTHER:
    case S_SYSTEM:
    case S_IMAGES:
        break;

    case S_CONTENT:
        /* an assistant turn that only calls tools has no content */
        break;

    default:
        bad_type(p, slot, slot_type(slot));
    }

    value_done(parent);
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
    case S_OTHER:
    case S_TOOLS:
        break;
    default:
        bad_type(p, slot, slot_type(slot));
    }

    value_done(parent);
    return 1;
}


/* a number of 64 characters or more; NaN when there is no memory for it */
static double
number_long(const char *s, size_t len)
{
    char    *copy;
    double   d;

    copy = malloc(len + 1);
    if (copy == NULL) {
        return NAN;
    }

    memcpy(copy, s, len);
    copy[len] = '\0';
    d = strtod(copy, NULL);
    free(copy);

    return d;
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
            d = number_long(s, len);

        } else {
            memcpy(buf, s, len);
            buf[len] = '\0';
            d = strtod(buf, NULL);
        }

        if (!(d >= 0.0 && d <= 2.0)) {
            fail(p, NEBULA_REQ_INVALID_VALUE, "temperature",
                 "Invalid value for 'temperature': %s must be a number "
                 "between 0 and 2.", len < sizeof(buf) ? buf : "it");
            break;
        }

        req->has_temperature = 1;
        req->temperature = d;
        break;

    case S_MAX_TOKENS:
    case S_MAX_COMPLETION_TOKENS:
        if (parse_integer(s, len, &v) != 0 || v <= 0) {
            fail(p, NEBULA_REQ_INVALID_VALUE,
                 slot == S_MAX_TOKENS ? "max_tokens" : "max_completion_tokens",
                 "Invalid value for '%s': expected a positive integer.",
                 slot == S_MAX_TOKENS ? "max_tokens" : "max_completion_tokens");
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
        if (parse_integer(s, len, &v) != 0 || v < -2) {
            fail(p, NEBULA_REQ_INVALID_VALUE, "options.num_predict",
                 "Invalid value for '%s': expected an integer.",
                 "options.num_predict");
            break;
        }

        req->num_predict = v;
        record_span(p, parent, &req->num_predict_span);
        break;

    case S_OTHER:
    case S_TOOLS:
        break;

    default:
        bad_type(p, slot, slot_type(slot));
    }

    value_done(parent);
    return 1;
}


static int
on_string(void *ctx, const unsigned char *s, size_t len)
{
    parse_t           *p = ctx;
    frame_t           *parent;
    slot_e             slot;
    int                i;
    char               param[NEBULA_PARAM_MAX];
    nebula_request_t  *req = p->req;

    slot = current_slot(p, &parent);

    switch (slot) {

    case S_MODEL:
        if (len == 0 || len >= NEBULA_MODEL_NAME_MAX
            || memchr(s, '\0', len) != NULL)
        {
            fail(p, NEBULA_REQ_INVALID_VALUE, "model",
                 "Invalid value for 'model': %s", len == 0
                 ? "it must not be empty." : "no such model name.");
            break;
        }

        memcpy(req->model, s, len);
        req->model[len] = '\0';
        req->model_len = len;
        record_span(p, parent, &req->model_span);
        break;

    case S_ROLE:
        for (i = 0; roles[i]; i++) {
            if (key_is(s, len, roles[i])) {
                break;
            }
        }

        if (roles[i] == NULL) {
            bad_type(p, slot, NULL);
        }

        parent->part_type = i + 1;     /* 3 is "assistant" */

        break;

    case S_CONTENT:
    case S_PART_TEXT:
    case S_PROMPT:
    case S_SYSTEM:
        req->text_bytes += len;
        break;

    case S_PART_TYPE:
        if (key_is(s, len, "text")) {
            parent->part_type = 1;

        } else if (key_is(s, len, "image_url")) {
            parent->part_type = 2;

        } else {
            msg_param(p, param, sizeof(param), "type");
            fail(p, NEBULA_REQ_INVALID_VALUE, param,
                 "Invalid value for '%s': expected 'text' or 'image_url'.",
                 param);
        }

        break;

    case S_PART_IMAGE:
        /* the short form: "image_url": "data:..." */
        req->images++;
        break;

    case S_IMAGE:
        req->images++;
        break;

    case S_OTHER:
    case S_TOOLS:
        break;

    default:
        bad_type(p, slot, slot_type(slot));
    }

    value_done(parent);
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
    kind = F_SKIP;

    switch (slot) {
    case S_MESSAGES:
        kind = F_MESSAGES;
        break;
    case S_MESSAGE:
        kind = F_MESSAGE;
        break;
    case S_CONTENT:
        kind = (p->req->api == NEBULA_API_CHAT) ? F_CONTENT : F_SKIP;
        break;
    case S_PART:
        kind = F_PART;
        break;
    case S_STREAM_OPTIONS:
        kind = F_STREAM_OPTIONS;
        break;
    case S_OPTIONS:
        kind = F_OPTIONS;
        break;
    case S_IMAGES:
        kind = F_IMAGES;
        break;
    case S_PART_IMAGE:
        /* the long form: "image_url": {"url": "data:..."} */
        if (is_map) {
            p->req->images++;
        }
        break;
    default:
        break;
    }

    if (p->depth == 0) {
        kind = F_TOP;

        if (!is_map) {
            return 0;   /* reported as "not an object" */
        }

    } else {
        switch (kind) {
        case F_MESSAGES:
        case F_CONTENT:
        case F_IMAGES:
            if (is_map) {
                bad_type(p, slot, slot_type(slot));
                kind = F_SKIP;
            }
            break;
        case F_MESSAGE:
        case F_PART:
        case F_STREAM_OPTIONS:
        case F_OPTIONS:
            if (!is_map) {
                bad_type(p, slot, slot_type(slot));
                kind = F_SKIP;
            }
            break;
        default:
            if (slot != S_OTHER && slot != S_TOOLS && slot != S_PART_IMAGE) {
                bad_type(p, slot, slot_type(slot));
            }
        }

        if (kind == F_CONTENT && p->req->api != NEBULA_API_CHAT) {
            kind = F_SKIP;
        }
    }

    f = &p->frames[p->depth++];
    memset(f, 0, sizeof(frame_t));
    f->kind = kind;
    f->is_map = is_map;
    f->slot = slot;
    f->start = yajl_get_bytes_consumed(p->yajl) - 1;

    if (kind == F_MESSAGE) {
        f->owner = parent->index;
        p->req->messages++;

    } else if (kind == F_PART) {
        f->owner = p->frames[p->depth - 2].owner;  /* the message */
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
            fail(p, NEBULA_REQ_INVALID_VALUE, "messages",
                 "Invalid value for '%s': the array must not be empty.",
                 "messages");
        }
        break;

    case F_MESSAGE:
        if (!(f->seen & (1u << S_ROLE))) {
            snprintf(param, sizeof(param), "messages[%zu].role", f->owner);
            fail(p, NEBULA_REQ_MISSING_FIELD, param,
                 "Missing required parameter: '%s'.", param);

        } else if (!(f->seen & (1u << S_CONTENT)) && f->part_type != 3) {
            /* only an assistant turn that calls tools may go without */
            snprintf(param, sizeof(param), "messages[%zu].content",
                     f->owner);
            fail(p, NEBULA_REQ_MISSING_FIELD, param,
                 "Missing required parameter: '%s'.", param);
        }
        break;

    case F_PART:
        if (f->part_type == 0) {
            snprintf(param, sizeof(param), "messages[%zu].content[%zu].type",
                     f->owner, f->part);
            fail(p, NEBULA_REQ_MISSING_FIELD, param,
                 "Missing required parameter: '%s'.", param);
        }
        break;

    case F_STREAM_OPTIONS:
        req->stream_options_span.start = f->start;
        req->stream_options_span.end = end;
        break;

    case F_OPTIONS:
        req->options_span.start = f->start;
        req->options_span.end = end;
        break;

    default:
        break;
    }

    if (f->slot == S_TOOLS) {
        req->other_bytes += end - f->start;
    }

    parent = (p->depth > 0) ? &p->frames[p->depth - 1] : NULL;
    value_done(parent);

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


/*
 * Ollama decodes bodies with Go's encoding/json, which matches a key to a
 * field whatever its case (and takes U+017F for s, U+212A for k), the last
 * one winning.  So keys are folded the same way before they are looked
 * up; a key that names one of our fields in another spelling is refused,
 * or a client could have us check "model" while Ollama reads "MODEL".
 */
static size_t
fold_key(const unsigned char *key, size_t len, unsigned char *out,
    size_t size)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        if (n == size) {
            return size + 1;    /* longer than any field of ours */
        }

        if (key[i] >= 'A' && key[i] <= 'Z') {
            out[n++] = key[i] + ('a' - 'A');

        } else if (key[i] == 0xc5 && i + 1 < len && key[i + 1] == 0xbf) {
            out[n++] = 's';
            i++;

        } else if (key[i] == 0xe2 && i + 2 < len && key[i + 1] == 0x84
                   && key[i + 2] == 0xaa)
        {
            out[n++] = 'k';
            i += 2;

        } else {
            out[n++] = key[i];
        }
    }

    return n;
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

    n = fold_key(key, len, folded, sizeof(folded));
    slot = (n <= sizeof(folded)) ? slot_for_key(p, f, folded, n) : S_OTHER;

    if (slot != S_OTHER && (n != len || memcmp(folded, key, len) != 0)) {
        p->case_mismatch = 1;
        return 0;
    }

    if (slot != S_OTHER) {
        if (f->seen & (1u << slot)) {
            /*
             * Upstreams keep the last of duplicate keys, we would check the
             * first: refuse, or a client could pass one model and use another.
             */
            p->duplicate = 1;
            return 0;
        }

        f->seen |= 1u << slot;
    }

    f->key = slot;
    f->key_end = yajl_get_bytes_consumed(p->yajl);

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



/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF.  yajl checks only a sequence's shape, and a body it lets
 * through is one a pool may refuse, after we counted it.  Returns 1, with
 * the offending byte's offset, for a body that is not UTF-8.
 */
static int
utf8_invalid(const unsigned char *p, size_t len, size_t *at)
{
    size_t          i, k, n;
    unsigned char   c, lo, hi;
    uint64_t        w;

    i = 0;

    while (i < len) {

        /* ASCII, eight bytes at a time */
        while (i + 8 <= len) {
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL) {
                break;
            }
            i += 8;
        }

        if (i == len) {
            break;
        }

        c = p[i];

        if (c < 0x80) {
            i++;
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) {
                lo = 0xa0;              /* no overlong forms */
            } else if (c == 0xed) {
                hi = 0x9f;              /* no surrogates */
            }

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f;              /* nothing past U+10FFFF */
            }

        } else {
            *at = i;
            return 1;
        }

        if (i + n >= len) {
            /* cut short */
            *at = i;
            return 1;
        }

        if (p[i + 1] < lo || p[i + 1] > hi) {
            *at = i;
            return 1;
        }

        for (k = 2; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                *at = i;
                return 1;
            }
        }

        i += n + 1;
    }

    return 0;
}

nebula_req_error_e
nebula_request_parse(nebula_request_t *req, nebula_api_e api,
    const unsigned char *body, size_t len)
{
    parse_t           p;
    yajl_status       st;
    unsigned char     c;
    size_t            i;
    yajl_alloc_funcs  afs;

    memset(req, 0, sizeof(nebula_request_t));
    req->api = api;
    req->stream = -1;
    req->include_usage = -1;
    req->max_tokens = -1;
    req->max_completion_tokens = -1;
    req->num_predict = -1;

    memset(&p, 0, offsetof(parse_t, frames));
    memset(&p.frames[0], 0, sizeof(frame_t));
    p.arena.used = 0;
    p.arena.last = 0;
    p.req = req;
    p.body = body;
    p.len = len;

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

    if (utf8_invalid(body, len, &i)) {
        req->error = NEBULA_REQ_INVALID_JSON;
        snprintf(req->message, sizeof(req->message),
                 "The request body is not valid UTF-8 (at byte %zu).", i);
        return req->error;
    }

    afs.malloc = arena_malloc;
    afs.realloc = arena_realloc;
    afs.free = arena_free;
    afs.ctx = &p.arena;

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

    if (req->model_len == 0) {
        fail(&p, NEBULA_REQ_MISSING_FIELD, "model",
             "You must provide a model parameter.", NULL);
        return req->error;
    }

    if (api != NEBULA_API_OLLAMA_GENERATE
        && !(p.frames[0].seen & (1u << S_MESSAGES)))
    {
        fail(&p, NEBULA_REQ_MISSING_FIELD, "messages",
             "Missing required parameter: '%s'.", "messages");
        return req->error;
    }

    if (req->stream == -1) {
        /* OpenAI answers in one piece by default, Ollama streams */
        req->stream = (api == NEBULA_API_CHAT) ? 0 : 1;
    }

    req->prompt_tokens = (req->text_bytes + 3) / 4
                         + (req->other_bytes + 3) / 4
                         + 4 * (uint64_t) req->messages + 3
                         + NEBULA_IMAGE_TOKENS * (uint64_t) req->images;

    return NEBULA_REQ_OK;
}


size_t
nebula_edit_length(size_t len, const nebula_edit_t *edits, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        len = len - (edits[i].end - edits[i].start) + edits[i].len;
    }

    return len;
}


void
nebula_edit_apply(const unsigned char *body, size_t len,
    const nebula_edit_t *edits, size_t n, unsigned char *out)
{
    size_t  i, pos;

    pos = 0;

    for (i = 0; i < n; i++) {
        memcpy(out, body + pos, edits[i].start - pos);
        out += edits[i].start - pos;
        memcpy(out, edits[i].data, edits[i].len);
        out += edits[i].len;
        pos = edits[i].end;
    }

    memcpy(out, body + pos, len - pos);
}


size_t
nebula_json_quote(unsigned char *out, const unsigned char *s, size_t len)
{
    static const char   hex[] = "0123456789abcdef";
    unsigned char      *p = out;
    size_t              i;

    *p++ = '"';

    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case '"':
        case '\\':
            *p++ = '\\';
            *p++ = s[i];
            break;
        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;
        case '\r':
            *p++ = '\\';
            *p++ = 'r';
            break;
        case '\t':
            *p++ = '\\';
            *p++ = 't';
            break;
        default:
            if (s[i] < 0x20) {
                *p++ = '\\';
                *p++ = 'u';
                *p++ = '0';
                *p++ = '0';
                *p++ = hex[s[i] >> 4];
                *p++ = hex[s[i] & 0xf];

            } else {
                *p++ = s[i];
            }
        }
    }

    *p++ = '"';

    return p - out;
}


const char *
nebula_req_error_code(nebula_req_error_e err)
{
    switch (err) {
    case NEBULA_REQ_INVALID_JSON:
        return "invalid_json";
    case NEBULA_REQ_MISSING_FIELD:
        return "missing_field";
    case NEBULA_REQ_INVALID_VALUE:
        return "invalid_value";
    default:
        return NULL;
    }
}
