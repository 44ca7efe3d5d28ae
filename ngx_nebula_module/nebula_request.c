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
    F_IMAGE_URL,        /* a part's "image_url": {"url": ...} */
    F_CONTEXT,          /* /api/generate's "context": [ids] */
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
    S_IMAGE,
    S_NUM_CTX,
    S_N,
    S_BEST_OF,
    S_SUFFIX,
    S_TEMPLATE,
    S_CONTEXT,
    S_REASONING,        /* a message's reasoning (/v1) or thinking */
    S_TOOL_CALLS,
    S_IMAGE_URL,        /* "url" in a part's "image_url" object */
    S_KEEP_ALIVE,       /* dropped: the operator sets it */
    S_DEBUG_RENDER,     /* _debug_render_only: dropped */
    S_DROP              /* a native option not let through: dropped */
} slot_e;


/* what a content part's image came to (frame_t.img) */
typedef enum {
    IMG_NONE = 0,       /* no "image_url" member */
    IMG_SHAPE,          /* one, but no string url in it */
    IMG_OK,
    IMG_URL,            /* not a data URL Ollama takes */
    IMG_DATA            /* a data URL whose image we cannot read */
} img_e;


typedef struct {
    frame_kind_e   kind;
    int            is_map;
    slot_e         key;          /* the current key's slot, in a map */
    size_t         key_end;      /* offset just past the current key */
    size_t         start;        /* offset of the opening bracket */
    size_t         index;        /* the next element's index, in an array */
    uint64_t       seen;         /* slots already met, in a map */
    slot_e         slot;         /* where this container sits */
    size_t         owner;        /* message index, for F_MESSAGE and below */
    size_t         part;         /* part index, for F_PART */
    int            part_type;    /* F_PART: 0 none, 1 text, 2 image;
                                    F_MESSAGE: the role, 1 + roles[] */

    /* F_TOP and F_OPTIONS: members dropped and kept (see drops[]) */
    int            dropping;     /* the current member goes */
    size_t         kept;         /* members kept so far */
    size_t         cursor;       /* where the next leading drop starts */
    size_t         prev_end;     /* the end of the last member's value */

    /* F_PART: its image, judged once the part's type is known */
    img_e          img;
    nebula_image_e img_err;      /* IMG_DATA */
    uint64_t       img_tokens;   /* IMG_OK */
    size_t         img_bytes;    /* IMG_OK */
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
    const char *const     *pass_options;
    yajl_handle            yajl;
    int                    depth;   /* frames in use */
    int                    too_deep;
    int                    duplicate;
    int                    case_mismatch;
    int                    has_prompt;  /* a non-empty prompt */

    /* not cleared for each parse: a frame is when it is pushed */
    frame_t                frames[NEBULA_JSON_MAX_DEPTH];
    arena_t                arena;
} parse_t;


static const char *roles[] = { "system", "user", "assistant", "tool", NULL };


static int utf8_invalid(const unsigned char *p, size_t len, size_t *at);


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
        if (key_is(key, len, "_debug_render_only")) {
            return S_DEBUG_RENDER;
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
            if (key_is(key, len, "suffix")) {
                return S_SUFFIX;
            }
            if (key_is(key, len, "template")) {
                return S_TEMPLATE;
            }
            if (key_is(key, len, "context")) {
                return S_CONTEXT;
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
            if (key_is(key, len, "n")) {
                return S_N;
            }
            if (key_is(key, len, "best_of")) {
                return S_BEST_OF;
            }

        } else {
            if (key_is(key, len, "options")) {
                return S_OPTIONS;
            }
            if (key_is(key, len, "keep_alive")) {
                return S_KEEP_ALIVE;
            }
        }

        return S_OTHER;

    case F_MESSAGE:
        if (key_is(key, len, "role")) {
            return S_ROLE;
        }
        if (key_is(key, len, "content")) {
            return S_CONTENT;
        }
        if (key_is(key, len, "tool_calls")) {
            return S_TOOL_CALLS;
        }

        if (api == NEBULA_API_CHAT) {
            if (key_is(key, len, "reasoning")) {
                return S_REASONING;
            }

        } else {
            if (key_is(key, len, "images")) {
                return S_IMAGES;
            }
            if (key_is(key, len, "thinking")) {
                return S_REASONING;
            }
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

    case F_IMAGE_URL:
        return key_is(key, len, "url") ? S_IMAGE_URL : S_OTHER;

    case F_STREAM_OPTIONS:
        return key_is(key, len, "include_usage") ? S_INCLUDE_USAGE : S_OTHER;

    case F_OPTIONS:
        if (key_is(key, len, "num_predict")) {
            return S_NUM_PREDICT;
        }
        return key_is(key, len, "num_ctx") ? S_NUM_CTX : S_OTHER;

    default:
        return S_OTHER;
    }
}


/*
 * The native options a client may set: those that shape the generation.
 * The others (num_gpu, main_gpu, num_thread, num_batch, use_mmap,
 * use_mlock, numa, low_vram, f16_kv, logits_all, vocab_only, ...) load
 * the model anew, or differently, for every client of the fleet, so
 * they are dropped unless the operator lets them through.  Ollama reads
 * options as a Go map: names match exactly, case included, so these are
 * matched exactly too.  num_predict and num_ctx are slots of their own.
 */
#define OPTION(name)  { sizeof(name) - 1, name }

static const struct {
    size_t       len;
    const char  *name;
} generation_options[] = {
    OPTION("num_keep"), OPTION("seed"), OPTION("top_k"), OPTION("top_p"),
    OPTION("min_p"), OPTION("tfs_z"), OPTION("typical_p"),
    OPTION("repeat_last_n"), OPTION("temperature"), OPTION("repeat_penalty"),
    OPTION("presence_penalty"), OPTION("frequency_penalty"),
    OPTION("mirostat"), OPTION("mirostat_tau"), OPTION("mirostat_eta"),
    OPTION("penalize_newline"), OPTION("stop"), { 0, NULL }
};


static int
option_passes(parse_t *p, const unsigned char *key, size_t len)
{
    size_t  i;

    for (i = 0; generation_options[i].name; i++) {
        if (generation_options[i].len == len
            && memcmp(key, generation_options[i].name, len) == 0)
        {
            return 1;
        }
    }

    if (p->pass_options != NULL) {
        for (i = 0; p->pass_options[i]; i++) {
            if (key_is(key, len, p->pass_options[i])) {
                return 1;
            }
        }
    }

    return 0;
}


/* slots whose value may be anything: counted, passed or dropped as is */
static int
slot_any(slot_e slot)
{
    switch (slot) {
    case S_OTHER:
    case S_TOOLS:
    case S_TOOL_CALLS:
    case S_SUFFIX:
    case S_TEMPLATE:
    case S_CONTEXT:
    case S_REASONING:
    case S_KEEP_ALIVE:
    case S_DEBUG_RENDER:
    case S_DROP:
        return 1;
    default:
        return 0;
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
        fail(p, NEBULA_REQ_INVALID_VALUE, "options",
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
    case S_NUM_CTX:
        name = "options.num_ctx";
        break;
    case S_N:
        name = "n";
        break;
    case S_BEST_OF:
        name = "best_of";
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
    case S_IMAGE_URL:
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
    case S_IMAGE_URL:
        return "a string";
    case S_TEMPERATURE:
        return "a number";
    case S_MAX_TOKENS:
    case S_MAX_COMPLETION_TOKENS:
    case S_NUM_PREDICT:
    case S_NUM_CTX:
    case S_N:
    case S_BEST_OF:
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
    case S_TEMPERATURE:
    case S_STREAM:
    case S_SYSTEM:
    case S_IMAGES:
    case S_PROMPT:
        break;

    case S_CONTENT:
        /* an assistant turn that only calls tools has no content */
        break;

    default:
        if (!slot_any(slot)) {
            bad_type(p, slot, slot_type(slot));
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
    default:
        if (!slot_any(slot)) {
            bad_type(p, slot, slot_type(slot));
        }
    }

    value_done(p, parent);
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

    /*
     * Positive integers the gateway checks against the model: num_ctx
     * (capped at its context), n and best_of (more than one answer only
     * where the model allows it).
     */
    case S_NUM_CTX:
    case S_N:
    case S_BEST_OF:
        if (parse_integer(s, len, &v) != 0 || v <= 0) {
            fail(p, NEBULA_REQ_INVALID_VALUE,
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

    default:
        if (!slot_any(slot)) {
            bad_type(p, slot, slot_type(slot));
        }
    }

    value_done(p, parent);
    return 1;
}


/*
 * An OpenAI content part's image: kept in the part's frame until the
 * part ends, as Ollama reads image_url only in a part of type image_url,
 * and "type" may come after it.
 */
static void
part_image(frame_t *part, const unsigned char *s, size_t len)
{
    long       at;
    uint32_t   w, h;

    at = nebula_image_data_url(s, len);

    if (at < 0) {
        /* an http(s) URL, another type: Ollama refuses, we cannot bound */
        part->img = IMG_URL;
        return;
    }

    part->img_err = nebula_image_size(s + at, len - at, &w, &h);

    if (part->img_err != NEBULA_IMAGE_OK) {
        part->img = IMG_DATA;
        return;
    }

    part->img = IMG_OK;
    part->img_tokens = nebula_image_tokens(w, h);
    part->img_bytes = len;
}


/* a native image: bare base64, in messages[i].images or images */
static void
native_image(parse_t *p, frame_t *images, const unsigned char *s,
    size_t len)
{
    char            param[NEBULA_PARAM_MAX], msg[NEBULA_MESSAGE_MAX];
    uint32_t        w, h;
    nebula_image_e  err;

    err = nebula_image_size(s, len, &w, &h);

    if (err != NEBULA_IMAGE_OK) {
        if (p->depth == 2) {
            snprintf(param, sizeof(param), "images[%zu]", images->index);

        } else {
            snprintf(param, sizeof(param), "messages[%zu].images[%zu]",
                     images->owner, images->index);
        }

        snprintf(msg, sizeof(msg), "Invalid value for '%s': %s.", param,
                 nebula_image_error(err));
        fail(p, NEBULA_REQ_INVALID_VALUE, param, "%s", msg);
        return;
    }

    p->req->images++;
    p->req->image_tokens += nebula_image_tokens(w, h);
    p->req->image_bytes += len;
}


static int
on_string(void *ctx, const unsigned char *s, size_t len)
{
    parse_t           *p = ctx;
    frame_t           *parent;
    slot_e             slot;
    int                i;
    size_t             at;
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

        /*
         * yajl decodes a lone surrogate escape ("\udc00") to bytes that are
         * not UTF-8; Go would read U+FFFD.  Neither names a model, and the
         * bytes must not reach a message or a log.
         */
        if (utf8_invalid(s, len, &at)) {
            fail(p, NEBULA_REQ_INVALID_VALUE, "model",
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

    case S_PROMPT:
        p->has_prompt = (len > 0);
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
        part_image(parent, s, len);
        break;

    case S_IMAGE_URL:
        /* the long form: "image_url": {"url": "data:..."} */
        part_image(&p->frames[p->depth - 2], s, len);
        break;

    case S_IMAGE:
        native_image(p, parent, s, len);
        break;

    default:
        if (!slot_any(slot)) {
            bad_type(p, slot, slot_type(slot));
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
        kind = is_map ? F_IMAGE_URL : F_SKIP;
        break;
    case S_CONTEXT:
        /* Ollama takes an array of ids; anything else it refuses */
        kind = is_map ? F_SKIP : F_CONTEXT;
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
        case F_IMAGE_URL:
        case F_CONTEXT:
            break;
        default:
            if (!slot_any(slot) && slot != S_PART_IMAGE) {
                bad_type(p, slot, slot_type(slot));
            }
        }
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


/* a content part ends: its image, if it is a part of type image_url */
static void
part_done(parse_t *p, frame_t *f)
{
    char               param[NEBULA_PARAM_MAX], msg[NEBULA_MESSAGE_MAX];
    nebula_request_t  *req = p->req;

    if (f->part_type != 2) {
        return;     /* Ollama reads no image from a text part */
    }

    snprintf(param, sizeof(param), "messages[%zu].content[%zu].image_url",
             f->owner, f->part);

    switch (f->img) {

    case IMG_OK:
        req->images++;
        req->image_tokens += f->img_tokens;
        req->image_bytes += f->img_bytes;
        return;

    case IMG_NONE:
        fail(p, NEBULA_REQ_MISSING_FIELD, param,
             "Missing required parameter: '%s'.", param);
        return;

    case IMG_SHAPE:
        snprintf(msg, sizeof(msg), "Invalid value for '%s': expected a "
                 "data URL, or an object with a 'url' data URL.", param);
        break;

    case IMG_URL:
        snprintf(msg, sizeof(msg), "Invalid value for '%s': expected a "
                 "data URL of a base64 image (data:image/png;base64,...); "
                 "image URLs are not fetched.", param);
        break;

    default:
        snprintf(msg, sizeof(msg), "Invalid value for '%s': %s.", param,
                 nebula_image_error(f->img_err));
    }

    fail(p, NEBULA_REQ_INVALID_VALUE, param, "%s", msg);
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
        if (!(f->seen & ((uint64_t) 1 << S_ROLE))) {
            snprintf(param, sizeof(param), "messages[%zu].role", f->owner);
            fail(p, NEBULA_REQ_MISSING_FIELD, param,
                 "Missing required parameter: '%s'.", param);

        } else if (!(f->seen & ((uint64_t) 1 << S_CONTENT))
                   && f->part_type != 3)
        {
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

        part_done(p, f);
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
    f->key_end = yajl_get_bytes_consumed(p->yajl);

    n = fold_key(key, len, folded, sizeof(folded));
    slot = (n <= sizeof(folded)) ? slot_for_key(p, f, folded, n) : S_OTHER;

    if (slot == S_KEEP_ALIVE || slot == S_DEBUG_RENDER) {
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

    } else if (f->kind == F_OPTIONS && !option_passes(p, key, len)) {
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
    p.arena.used = 0;
    p.arena.last = 0;
    p.req = req;
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
        && !(p.frames[0].seen & ((uint64_t) 1 << S_MESSAGES)))
    {
        fail(&p, NEBULA_REQ_MISSING_FIELD, "messages",
             "Missing required parameter: '%s'.", "messages");
        return req->error;
    }

    if (api == NEBULA_API_OLLAMA_GENERATE && !p.has_prompt) {
        /*
         * Ollama answers a generate without a prompt by loading the model
         * (images or not), evicting others, and reports no tokens.
         */
        fail(&p, NEBULA_REQ_MISSING_FIELD, "prompt",
             "Missing required parameter: '%s'. A request without a "
             "prompt would only load the model, which this gateway does "
             "not do on a client's behalf.", "prompt");
        return req->error;
    }

    if (req->stream == -1) {
        /* OpenAI answers in one piece by default, Ollama streams */
        req->stream = (api == NEBULA_API_CHAT) ? 0 : 1;
    }

    est.body_bytes = len;
    est.image_bytes = req->image_bytes;
    est.text_bytes = req->text_bytes;
    est.other_bytes = req->other_bytes;
    est.messages = req->messages;
    est.context_ids = req->context_ids;
    est.image_tokens = req->image_tokens;

    req->prompt_tokens = nebula_estimate_tokens(&est);

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

        if (edits[i].len) {
            /* a deletion may come without data (NULL) */
            memcpy(out, edits[i].data, edits[i].len);
            out += edits[i].len;
        }

        pos = edits[i].end;
    }

    memcpy(out, body + pos, len - pos);
}


void
nebula_edit_sort(nebula_edit_t *edits, size_t n)
{
    size_t         i, j;
    nebula_edit_t  e;

    for (i = 1; i < n; i++) {
        e = edits[i];

        for (j = i; j > 0; j--) {
            if (edits[j - 1].start < e.start
                || (edits[j - 1].start == e.start
                    && (edits[j - 1].end == edits[j - 1].start
                        || e.end != e.start)))
            {
                break;
            }

            edits[j] = edits[j - 1];
        }

        edits[j] = e;
    }
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
