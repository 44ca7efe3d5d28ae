/*
 * Nebula: the request parser's own types, shared by its two files
 * (nebula_request.c: the walk through the body; nebula_request_fields.c:
 * what each field of each request shape means).  Not for other files.
 */

#ifndef NEBULA_REQUEST_INT_H
#define NEBULA_REQUEST_INT_H

#include <stdint.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "nebula_arena.h"
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
    F_INPUT,            /* embeddings' "input": [texts], [ids], [[ids]] */
    F_SOURCE,           /* an Anthropic image block's "source" */
    F_TOOLS,            /* "tools": [...] (Messages, Responses) */
    F_TOOL,             /* one of them */
    F_USAGE,            /* OpenRouter's "usage": {"include": true} */
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
    S_VERBOSE,          /* /api/show's verbose: dropped */
    S_DROP,             /* a native option not let through: dropped */
    S_INPUT,            /* an embedding request's "input" */
    S_INPUT_ITEM,       /* one element of it */
    S_SOURCE,           /* an Anthropic image block's "source" */
    S_SOURCE_TYPE,      /* its "type": "base64" alone is read */
    S_SOURCE_DATA,      /* its "data": base64 */
    S_TOOL,             /* an element of "tools" */
    S_TOOL_TYPE,        /* its "type" */
    S_PREVIOUS_RESPONSE,    /* the Responses API's state, which Ollama */
    S_CONVERSATION,         /* does not keep: refused but null */
    S_USAGE,            /* OpenRouter's usage accounting: "usage" ... */
    S_USAGE_INCLUDE     /* ... "include": the cost in the answer's usage */
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
    int            part_type;    /* F_PART: 0 none, 1 text, 2 image,
                                    3 another block (Messages, Responses);
                                    F_MESSAGE: the role, 1 + roles[] */
    unsigned       src_other:1;  /* F_PART: a source not base64 */

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


/* what tells a request shape (nebula_api_e) from another but its fields */
typedef struct {
    unsigned       content_parts:1;  /* content may be an array of parts */
    unsigned       stream_default:1; /* streams unless told not to */
    unsigned       needs_messages:1;
    unsigned       needs_prompt:1;   /* a non-empty prompt */
    unsigned       openai_roles:1;   /* "developer", "function" renamed */
    unsigned       needs_input:1;    /* a non-empty "input" (embeddings) */
    unsigned       token_ids:1;      /* input may be token ids (OpenAI) */
    unsigned       needs_max_tokens:1;   /* Anthropic's max_tokens */
    unsigned       items:1;          /* the Responses API's input: a string
                                        or items, of any role or none */
    unsigned       blocks:1;         /* content blocks of other types
                                        (tool_use, tool_result, thinking,
                                        input_text, ...); "tools" read */
} nebula_req_shape_t;


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
    int                    has_input;   /* an input (embeddings) */
    const nebula_req_shape_t  *shape;

    /* not cleared for each parse: a frame is when it is pushed */
    frame_t                frames[NEBULA_JSON_MAX_DEPTH];
    nebula_arena_t         arena;
} parse_t;


/* what the list of turns is called: "input" (Responses), "messages" */
#define NEBULA_REQ_ITEMS(p)  ((p)->shape->items ? "input" : "messages")


static inline int
nebula_req_key_is(const unsigned char *key, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(key, name, len) == 0;
}


/* nebula_request_fields.c */
void nebula_req_fail(parse_t *p, nebula_req_error_e err, const char *param,
    const char *fmt, const char *arg);
void nebula_req_msg_param(parse_t *p, char *buf, size_t size,
    const char *field);
const nebula_req_shape_t *nebula_req_shape(nebula_api_e api);
slot_e nebula_req_slot(parse_t *p, frame_t *f, const unsigned char *key,
    size_t len);
int nebula_req_option_passes(parse_t *p, const unsigned char *key,
    size_t len);
int nebula_req_slot_any(slot_e slot);
frame_kind_e nebula_req_frame_kind(parse_t *p, frame_t *parent, slot_e slot,
    int is_map);
const char *nebula_req_limit_name(parse_t *p);
nebula_req_error_e nebula_req_required(parse_t *p);

/* nebula_req_role()'s answers */
#define NEBULA_ROLE_SYSTEM     1
#define NEBULA_ROLE_ASSISTANT  3
#define NEBULA_ROLE_TOOL       4
#define NEBULA_ROLE_DEVELOPER  5
#define NEBULA_ROLE_FUNCTION   6
#define NEBULA_ROLE_UNKNOWN    7

int nebula_req_role(parse_t *p, slot_e slot, const unsigned char *s,
    size_t len, const nebula_span_t *span);
void nebula_req_bad_type(parse_t *p, slot_e slot);

/* nebula_request_inputs.c */
void nebula_req_input_invalid(parse_t *p);
void nebula_req_input_string(parse_t *p, frame_t *parent, slot_e slot,
    size_t len);
void nebula_req_input_id(parse_t *p, frame_t *parent, const char *s,
    size_t len);
frame_kind_e nebula_req_input_frame(parse_t *p, frame_t *parent,
    slot_e slot, int is_map);
void nebula_req_input_done(parse_t *p, frame_t *f);

/* nebula_request_images.c */
void nebula_req_part_image(frame_t *part, const unsigned char *s, size_t len);
void nebula_req_native_image(parse_t *p, frame_t *images,
    const unsigned char *s, size_t len);
void nebula_req_part_done(parse_t *p, frame_t *f);
void nebula_req_source_image(frame_t *part, const unsigned char *s,
    size_t len);
void nebula_req_tool_type(parse_t *p, const unsigned char *s, size_t len);

#endif /* NEBULA_REQUEST_INT_H */
