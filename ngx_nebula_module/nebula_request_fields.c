/*
 * Nebula: what each field of each request shape means to the parser: the
 * slot a key fills, where it sits, which shapes read it; the type a slot
 * wants and what a client is told when it is wrong; the native options a
 * client may set; the roles a message may have; what each shape
 * requires once its body is read, and the error codes.
 *
 * A new request shape (an API) is a column here: a bit in each row of
 * the fields it shares, rows for its own, and a line of shapes[].
 */

#include <stdio.h>

#include "nebula_request_int.h"


#define CHAT    (1u << NEBULA_API_CHAT)
#define OCHAT   (1u << NEBULA_API_OLLAMA_CHAT)
#define OGEN    (1u << NEBULA_API_OLLAMA_GENERATE)
#define EMB     (1u << NEBULA_API_EMBEDDINGS)
#define OEMB    (1u << NEBULA_API_OLLAMA_EMBED)
#define OEMBS   (1u << NEBULA_API_OLLAMA_EMBEDDINGS)
#define CMPL    (1u << NEBULA_API_COMPLETIONS)
#define OSHOW   (1u << NEBULA_API_OLLAMA_SHOW)
#define MSG     (1u << NEBULA_API_MESSAGES)
#define RESP    (1u << NEBULA_API_RESPONSES)
#define V1GEN   (CHAT | CMPL)                   /* OpenAI's generating */
#define GEN     (V1GEN | OCHAT | OGEN)          /* Ollama's own, and the
                                                   OpenAI layer's oldest */
#define NATIVE  (OCHAT | OGEN | OEMB | OEMBS)
#define ALL     (GEN | EMB | OEMB | OEMBS | OSHOW | MSG | RESP)


/*
 * content_parts, stream_default, needs_messages, needs_prompt,
 * openai_roles, needs_input, token_ids, needs_max_tokens, items, blocks
 */
static const nebula_req_shape_t  shapes[] = {
    /* /v1/chat/completions: parts, one answer by default */
    [NEBULA_API_CHAT]              = { 1, 0, 1, 0, 1, 0, 0, 0, 0, 0 },
    /* /api/chat */
    [NEBULA_API_OLLAMA_CHAT]       = { 0, 1, 1, 0, 0, 0, 0, 0, 0, 0 },
    /* /api/generate */
    [NEBULA_API_OLLAMA_GENERATE]   = { 0, 1, 0, 1, 0, 0, 0, 0, 0, 0 },
    /* /v1/embeddings: texts or token ids */
    [NEBULA_API_EMBEDDINGS]        = { 0, 0, 0, 0, 0, 1, 1, 0, 0, 0 },
    /* /api/embed: texts */
    [NEBULA_API_OLLAMA_EMBED]      = { 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 },
    /* /api/embeddings: one prompt */
    [NEBULA_API_OLLAMA_EMBEDDINGS] = { 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
    /* /v1/completions: one prompt, a string (as Ollama takes it) */
    [NEBULA_API_COMPLETIONS]       = { 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
    /* /api/show: a model alone */
    [NEBULA_API_OLLAMA_SHOW]       = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
    /* /v1/messages: Anthropic's content blocks; max_tokens required */
    [NEBULA_API_MESSAGES]          = { 1, 0, 1, 0, 0, 0, 0, 1, 0, 1 },
    /* /v1/responses: input, a string or items */
    [NEBULA_API_RESPONSES]         = { 1, 0, 0, 0, 0, 0, 0, 0, 1, 1 }
};


const nebula_req_shape_t *
nebula_req_shape(nebula_api_e api)
{
    return &shapes[api];
}


/*
 * The fields, in the order of the frames they sit in (frame_kind_e: the
 * lookup below depends on it); within a frame, no two rows that one shape
 * reads have the same name.  Keys are looked up folded as Go
 * folds them (nebula_fold_key), so names are lower case.
 */
typedef struct {
    unsigned char   frame;      /* frame_kind_e */
    unsigned char   slot;       /* slot_e */
    unsigned char   len;
    unsigned short  apis;       /* the shapes that read it */
    const char     *name;
} field_t;

#define FIELD(frame, slot, apis, name)                                       \
    { frame, slot, sizeof(name) - 1, apis, name }

static const field_t  fields[] = {

    FIELD(F_TOP, S_MODEL, ALL, "model"),
    FIELD(F_TOP, S_STREAM, GEN | MSG | RESP, "stream"),
    FIELD(F_TOP, S_TOOLS, GEN | MSG | RESP, "tools"),
    FIELD(F_TOP, S_DEBUG_RENDER, GEN, "_debug_render_only"),
    FIELD(F_TOP, S_MESSAGES, CHAT | OCHAT | MSG, "messages"),
    FIELD(F_TOP, S_MESSAGES, RESP, "input"),
    FIELD(F_TOP, S_PROMPT, OGEN | OEMBS | CMPL, "prompt"),
    FIELD(F_TOP, S_INPUT, EMB | OEMB, "input"),
    FIELD(F_TOP, S_SYSTEM, OGEN, "system"),
    FIELD(F_TOP, S_CONTENT, MSG, "system"),         /* a string or blocks */
    FIELD(F_TOP, S_SYSTEM, RESP, "instructions"),
    FIELD(F_TOP, S_IMAGES, OGEN, "images"),
    FIELD(F_TOP, S_SUFFIX, OGEN | CMPL, "suffix"),
    FIELD(F_TOP, S_TEMPLATE, OGEN, "template"),
    FIELD(F_TOP, S_CONTEXT, OGEN, "context"),
    FIELD(F_TOP, S_TEMPERATURE, V1GEN | MSG | RESP, "temperature"),
    FIELD(F_TOP, S_MAX_TOKENS, V1GEN | MSG, "max_tokens"),
    FIELD(F_TOP, S_MAX_TOKENS, RESP, "max_output_tokens"),
    FIELD(F_TOP, S_PREVIOUS_RESPONSE, RESP, "previous_response_id"),
    FIELD(F_TOP, S_CONVERSATION, RESP, "conversation"),
    FIELD(F_TOP, S_MAX_COMPLETION_TOKENS, CHAT, "max_completion_tokens"),
    FIELD(F_TOP, S_STREAM_OPTIONS, V1GEN, "stream_options"),
    FIELD(F_TOP, S_USAGE, V1GEN, "usage"),
    FIELD(F_TOP, S_N, V1GEN, "n"),
    FIELD(F_TOP, S_BEST_OF, V1GEN, "best_of"),
    FIELD(F_TOP, S_OPTIONS, NATIVE, "options"),
    FIELD(F_TOP, S_KEEP_ALIVE, NATIVE, "keep_alive"),
    FIELD(F_TOP, S_VERBOSE, OSHOW, "verbose"),

    /* the Responses API's items: any role Ollama takes, or none */
    FIELD(F_MESSAGE, S_ROLE, ALL & ~RESP, "role"),
    FIELD(F_MESSAGE, S_CONTENT, ALL, "content"),
    FIELD(F_MESSAGE, S_TOOL_CALLS, ALL, "tool_calls"),
    FIELD(F_MESSAGE, S_REASONING, CHAT, "reasoning"),
    FIELD(F_MESSAGE, S_IMAGES, OCHAT, "images"),
    FIELD(F_MESSAGE, S_REASONING, OCHAT, "thinking"),

    FIELD(F_PART, S_PART_TYPE, ALL, "type"),
    FIELD(F_PART, S_PART_TEXT, ALL, "text"),
    FIELD(F_PART, S_PART_IMAGE, CHAT | RESP, "image_url"),
    FIELD(F_PART, S_SOURCE, MSG, "source"),
    FIELD(F_PART, S_REASONING, MSG, "thinking"),
    FIELD(F_PART, S_TOOL_CALLS, MSG, "input"),      /* tool_use's */
    FIELD(F_PART, S_CONTENT, MSG, "content"),       /* tool_result's */

    FIELD(F_STREAM_OPTIONS, S_INCLUDE_USAGE, ALL, "include_usage"),

    FIELD(F_OPTIONS, S_NUM_PREDICT, ALL, "num_predict"),
    FIELD(F_OPTIONS, S_NUM_CTX, ALL, "num_ctx"),

    FIELD(F_IMAGE_URL, S_IMAGE_URL, ALL, "url"),

    FIELD(F_SOURCE, S_SOURCE_TYPE, MSG, "type"),
    FIELD(F_SOURCE, S_SOURCE_DATA, MSG, "data"),

    FIELD(F_TOOL, S_TOOL_TYPE, MSG | RESP, "type"),

    FIELD(F_USAGE, S_USAGE_INCLUDE, V1GEN, "include"),

    { F_SKIP, S_OTHER, 0, 0, NULL }
};


/*
 * The first row of each frame's fields, found once: a key's lookup walks
 * its frame's rows only (it runs for every key of every body).
 */
static unsigned char  first_row[F_SKIP + 2];


static void
index_fields(void)
{
    int  i, k;

    k = 0;

    for (i = 0; i <= F_SKIP + 1; i++) {
        while (fields[k].name && fields[k].frame < i) {
            k++;
        }

        first_row[i] = (unsigned char) k;
    }
}


slot_e
nebula_req_slot(parse_t *p, frame_t *f, const unsigned char *key, size_t len)
{
    unsigned        bit;
    const field_t  *r, *end;

    if (f->kind >= F_SKIP) {
        return S_OTHER;
    }

    if (first_row[F_SKIP + 1] == 0) {
        index_fields();
    }

    bit = 1u << p->req->api;
    r = &fields[first_row[f->kind]];
    end = &fields[first_row[f->kind + 1]];

    for ( /* void */ ; r < end; r++) {
        if (r->len == len && (r->apis & bit)
            && memcmp(key, r->name, len) == 0)
        {
            return (slot_e) r->slot;
        }
    }

    return S_OTHER;
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


int
nebula_req_option_passes(parse_t *p, const unsigned char *key, size_t len)
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
            if (nebula_req_key_is(key, len, p->pass_options[i])) {
                return 1;
            }
        }
    }

    return 0;
}


/* slots whose value may be anything: counted, passed or dropped as is */
int
nebula_req_slot_any(slot_e slot)
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
    case S_VERBOSE:
    case S_DROP:
    case S_SOURCE:          /* Ollama refuses what is no object */
    case S_SOURCE_TYPE:
    case S_SOURCE_DATA:     /* no string: no image, refused at the end */
    case S_TOOL:
    case S_TOOL_TYPE:
    case S_USAGE:           /* read only when an object */
        return 1;
    default:
        return 0;
    }
}


static const char *roles[] = { "system", "user", "assistant", "tool",
                                "developer", "function", NULL };


/*
 * A message's role, its value at span: what Ollama gets, as 1 + its index
 * in roles[] (3 is "assistant"), or NEBULA_ROLE_UNKNOWN once refused.
 * OpenAI's "developer" and "function", which Ollama knows neither of, are
 * renamed "system" and "tool" (an edit in role_edits[]), on /v1 alone.
 */
int
nebula_req_role(parse_t *p, slot_e slot, const unsigned char *s, size_t len,
    const nebula_span_t *span)
{
    int                  i;
    nebula_request_t    *req = p->req;
    nebula_role_edit_t  *e;

    for (i = 0; roles[i]; i++) {
        if (nebula_req_key_is(s, len, roles[i])) {
            break;
        }
    }

    i = roles[i] ? i + 1 : 0;

    if (i < NEBULA_ROLE_DEVELOPER) {
        if (i == 0) {
            nebula_req_bad_type(p, slot);
            return NEBULA_ROLE_UNKNOWN;
        }

        return i;
    }

    if (!p->shape->openai_roles) {
        nebula_req_bad_type(p, slot);       /* Ollama's own API */
        return NEBULA_ROLE_UNKNOWN;
    }

    if (req->nrole_edits == NEBULA_ROLE_EDIT_MAX) {
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "messages",
             "Invalid value for '%s': more than 64 messages have the role "
             "\"developer\" or \"function\"; send \"system\" or \"tool\" "
             "instead.", "messages");
        return NEBULA_ROLE_UNKNOWN;
    }

    e = &req->role_edits[req->nrole_edits++];
    e->span = *span;

    if (i == NEBULA_ROLE_DEVELOPER) {
        e->to = "\"system\"";
        return NEBULA_ROLE_SYSTEM;
    }

    e->to = "\"tool\"";
    return NEBULA_ROLE_TOOL;
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


/* an error in the request: the first one is the one reported */
void
nebula_req_fail(parse_t *p, nebula_req_error_e err, const char *param,
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


void
nebula_req_msg_param(parse_t *p, char *buf, size_t size, const char *field)
{
    frame_t  *f;
    int       i;

    for (i = p->depth - 1; i >= 0; i--) {
        f = &p->frames[i];

        if (f->kind == F_PART) {
            snprintf(buf, size, "%s[%zu].content[%zu]%s%s",
                     NEBULA_REQ_ITEMS(p), f->owner, f->part,
                     field[0] ? "." : "", field);
            return;
        }

        if (f->kind == F_MESSAGE) {
            snprintf(buf, size, "%s[%zu]%s%s", NEBULA_REQ_ITEMS(p), f->owner,
                     field[0] ? "." : "", field);
            return;
        }
    }

    snprintf(buf, size, "%s", field);
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
    case S_USAGE_INCLUDE:
        return "a boolean";
    case S_MESSAGES:
    case S_IMAGES:
        return "an array";
    case S_STREAM_OPTIONS:
    case S_OPTIONS:
    case S_MESSAGE:
    case S_PART:
        return "an object";
    case S_INPUT:
        return "a string or an array";
    default:
        return "another type";
    }
}


/* the param a plain field's error names */
static const char *
slot_param(slot_e slot)
{
    switch (slot) {
    case S_MODEL:
        return "model";
    case S_MESSAGES:
        return "messages";
    case S_TEMPERATURE:
        return "temperature";
    case S_MAX_TOKENS:
        return "max_tokens";
    case S_MAX_COMPLETION_TOKENS:
        return "max_completion_tokens";
    case S_STREAM:
        return "stream";
    case S_STREAM_OPTIONS:
        return "stream_options";
    case S_OPTIONS:
        return "options";
    case S_PROMPT:
        return "prompt";
    case S_SYSTEM:
        return "system";
    case S_INCLUDE_USAGE:
        return "stream_options.include_usage";
    case S_USAGE_INCLUDE:
        return "usage.include";
    case S_NUM_PREDICT:
        return "options.num_predict";
    case S_NUM_CTX:
        return "options.num_ctx";
    case S_N:
        return "n";
    case S_BEST_OF:
        return "best_of";
    default:
        return NULL;
    }
}


/* what a shape requires, once the whole body is read */
nebula_req_error_e
nebula_req_required(parse_t *p)
{
    if (p->req->model_len == 0) {
        nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, "model",
             "You must provide a model parameter.", NULL);
        return p->req->error;
    }

    if ((p->shape->needs_messages || p->shape->items)
        && !(p->frames[0].seen & ((uint64_t) 1 << S_MESSAGES)))
    {
        nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, NEBULA_REQ_ITEMS(p),
             "Missing required parameter: '%s'.", NEBULA_REQ_ITEMS(p));
        return p->req->error;
    }

    if (p->shape->needs_max_tokens && p->req->max_tokens < 0) {
        /* Anthropic's API requires it; Ollama's refuses a request without */
        nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, "max_tokens",
             "Missing required parameter: '%s'.", "max_tokens");
        return p->req->error;
    }

    if (p->shape->needs_input && !p->has_input) {
        nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, "input",
             "Missing required parameter: '%s'.", "input");
        return p->req->error;
    }

    if (p->shape->needs_prompt && !p->has_prompt) {
        /*
         * Ollama answers a generate without a prompt by loading the model
         * (images or not), evicting others, and reports no tokens.
         */
        nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, "prompt",
             "Missing required parameter: '%s'. A request without a "
             "prompt would only load the model, which this gateway does "
             "not do on a client's behalf.", "prompt");
        return p->req->error;
    }

    return NEBULA_REQ_OK;
}


/* the output limit's name in the shape's body */
const char *
nebula_req_limit_name(parse_t *p)
{
    return (p->req->api == NEBULA_API_RESPONSES) ? "max_output_tokens"
                                                 : "max_tokens";
}


/* a value of the wrong type (or, for a role, an unknown one) in a slot */
void
nebula_req_bad_type(parse_t *p, slot_e slot)
{
    char         param[NEBULA_PARAM_MAX];
    const char  *name;

    switch (slot) {
    case S_MESSAGES:
        if (p->shape->items) {
            nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "input",
                 "Invalid type for '%s': expected a string or an array of "
                 "input items.", "input");
            return;
        }
        break;
    case S_MESSAGE:
        snprintf(param, sizeof(param), "%s[%zu]", NEBULA_REQ_ITEMS(p),
                 p->frames[p->depth - 1].index);
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
             p->shape->items
             ? "Invalid type for '%s': each input item must be an object."
             : "Invalid type for '%s': each message must be an object.",
             param);
        return;
    case S_PREVIOUS_RESPONSE:
    case S_CONVERSATION:
        name = (slot == S_CONVERSATION) ? "conversation"
                                        : "previous_response_id";
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, name,
             "Invalid value for '%s': this gateway keeps no responses or "
             "conversations (the Responses API is served stateless, as "
             "Ollama serves it); send the whole conversation in 'input'.",
             name);
        return;
    case S_ROLE:
        nebula_req_msg_param(p, param, sizeof(param), "role");
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
             p->shape->openai_roles
             ? "Invalid value for '%s': expected one of 'system', "
               "'developer', 'user', 'assistant', 'tool' or 'function'."
             : "Invalid value for '%s': expected one of 'system', 'user', "
               "'assistant' or 'tool'.", param);
        return;
    case S_CONTENT:
        nebula_req_msg_param(p, param, sizeof(param),
                             p->depth == 1 ? "system" : "content");
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
             p->shape->content_parts
             ? "Invalid type for '%s': expected a string or an array of "
               "content parts."
             : "Invalid type for '%s': expected a string.", param);
        return;
    case S_PART:
        snprintf(param, sizeof(param), "%s[%zu].content[%zu]",
                 NEBULA_REQ_ITEMS(p), p->frames[p->depth - 2].owner,
                 p->frames[p->depth - 1].index);
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
             "Invalid type for '%s': each content part must be an object.",
             param);
        return;
    case S_PART_TYPE:
    case S_PART_TEXT:
    case S_PART_IMAGE:
    case S_IMAGE_URL:
        nebula_req_msg_param(p, param, sizeof(param),
                             slot == S_PART_TYPE ? "type"
                             : slot == S_PART_TEXT ? "text" : "image_url");
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
                        "Invalid value for '%s'.", param);
        return;
    case S_INPUT:
    case S_INPUT_ITEM:
        nebula_req_input_invalid(p);
        return;
    case S_IMAGES:
    case S_IMAGE:
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "images",
             "Invalid value for '%s': expected an array of base64 strings.",
             "images");
        return;
    default:
        break;
    }

    name = (slot == S_MAX_TOKENS) ? nebula_req_limit_name(p)
           : (slot == S_SYSTEM && p->shape->items) ? "instructions"
           : slot_param(slot);

    if (name == NULL) {
        return;
    }

    snprintf(param, sizeof(param), "Invalid type for '%%s': expected %s.",
             slot_type(slot));
    nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, name, param, name);
}


/*
 * The frame a container opened at a slot makes, below the top: what it
 * holds that its shape reads, or F_SKIP; a container where the shape
 * wants another is refused (nebula_req_bad_type()) and skipped.
 */
frame_kind_e
nebula_req_frame_kind(parse_t *p, frame_t *parent, slot_e slot, int is_map)
{
    frame_kind_e  kind;

    kind = F_SKIP;

    switch (slot) {
    case S_MESSAGES:
        kind = F_MESSAGES;
        break;
    case S_MESSAGE:
        kind = F_MESSAGE;
        break;
    case S_CONTENT:
        kind = p->shape->content_parts ? F_CONTENT : F_SKIP;
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
    case S_INPUT:
    case S_INPUT_ITEM:
        kind = nebula_req_input_frame(p, parent, slot, is_map);
        break;
    case S_SOURCE:
        kind = is_map ? F_SOURCE : F_SKIP;
        break;
    case S_TOOLS:
        /* read for their types where a pool runs tools of its own */
        kind = (p->shape->blocks && !is_map) ? F_TOOLS : F_SKIP;
        break;
    case S_TOOL:
        kind = is_map ? F_TOOL : F_SKIP;
        break;
    case S_USAGE:
        kind = is_map ? F_USAGE : F_SKIP;
        break;
    default:
        break;
    }

    switch (kind) {
    case F_MESSAGES:
    case F_CONTENT:
    case F_IMAGES:
        if (is_map) {
            nebula_req_bad_type(p, slot);
            kind = F_SKIP;
        }
        break;
    case F_MESSAGE:
    case F_PART:
    case F_STREAM_OPTIONS:
    case F_OPTIONS:
        if (!is_map) {
            nebula_req_bad_type(p, slot);
            kind = F_SKIP;
        }
        break;
    case F_IMAGE_URL:
    case F_CONTEXT:
    case F_INPUT:
    case F_SOURCE:
    case F_TOOLS:
    case F_TOOL:
    case F_USAGE:
        break;
    default:
        if (!nebula_req_slot_any(slot) && slot != S_PART_IMAGE) {
            nebula_req_bad_type(p, slot);
        }
    }

    return kind;
}
