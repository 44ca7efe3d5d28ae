/*
 * Nebula: the client request parser and validator.
 *
 * Plain C with no nginx types, so unit tests and fuzzers drive it directly.
 * It parses one complete request body with yajl, validates it against the
 * contract (model, messages, temperature, max_tokens, stream, ...), records
 * where the fields the gateway edits sit in the body, and estimates the
 * prompt's tokens.
 */

#ifndef NEBULA_REQUEST_H
#define NEBULA_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "nebula_body.h"

#include "nebula_estimate.h"


typedef enum {
    NEBULA_API_CHAT = 0,           /* POST /v1/chat/completions */
    NEBULA_API_OLLAMA_CHAT,        /* POST /api/chat */
    NEBULA_API_OLLAMA_GENERATE,    /* POST /api/generate */
    NEBULA_API_EMBEDDINGS,         /* POST /v1/embeddings */
    NEBULA_API_OLLAMA_EMBED,       /* POST /api/embed */
    NEBULA_API_OLLAMA_EMBEDDINGS,  /* POST /api/embeddings (legacy) */
    NEBULA_API_COMPLETIONS,        /* POST /v1/completions */
    NEBULA_API_OLLAMA_SHOW,        /* POST /api/show */
    NEBULA_API_MESSAGES,           /* POST /v1/messages (Anthropic) */
    NEBULA_API_RESPONSES           /* POST /v1/responses */
} nebula_api_e;


typedef enum {
    NEBULA_REQ_OK = 0,
    NEBULA_REQ_INVALID_JSON,
    NEBULA_REQ_MISSING_FIELD,
    NEBULA_REQ_INVALID_VALUE
} nebula_req_error_e;


/* a byte range [start, end) of the body; present only when end > start */
typedef struct {
    size_t  start;
    size_t  end;
} nebula_span_t;


#define NEBULA_MODEL_NAME_MAX   256
#define NEBULA_PARAM_MAX        64
#define NEBULA_MESSAGE_MAX      256

/* nesting deeper than this is refused: no real request needs it */
#define NEBULA_JSON_MAX_DEPTH   64

/* members the gateway removes from one body, at most (else refused) */
#define NEBULA_DROP_MAX         32

/* messages whose role the gateway renames for Ollama, at most */
#define NEBULA_ROLE_EDIT_MAX    64


/*
 * A role Ollama does not know, renamed: OpenAI's "developer" (what newer
 * clients send instead of "system") becomes "system", the legacy
 * "function" becomes "tool".
 */
typedef struct {
    nebula_span_t  span;           /* the role's value, quotes included */
    const char    *to;             /* the role Ollama gets, quoted */
} nebula_role_edit_t;


/*
 * What an operator decides about a body.  pass_options: names of native
 * "options" members let through besides the generation options (a
 * NULL-terminated array, or NULL), e.g. "num_thread" on a fleet where
 * clients may set it.
 */
typedef struct {
    const char *const  *pass_options;
} nebula_request_policy_t;


typedef struct {
    nebula_api_e        api;

    char                model[NEBULA_MODEL_NAME_MAX];
    size_t              model_len;
    nebula_span_t       model_span;         /* the value, quotes included */

    int                 stream;             /* -1 absent, 0 or 1 */
    int                 include_usage;      /* -1 absent, 0 or 1 */
    nebula_span_t       include_usage_span;
    int                 usage_cost;         /* usage.include: true (1) */
    nebula_span_t       stream_options_span;   /* an object, or null */
    int                 stream_options_null;

    int64_t             max_tokens;         /* -1 absent or null */
    nebula_span_t       max_tokens_span;    /* its value, null included */
    int64_t             max_completion_tokens;  /* -1 absent */
    nebula_span_t       max_completion_tokens_span;

    int64_t             num_predict;        /* native options.num_predict */
    nebula_span_t       num_predict_span;
    int64_t             num_ctx;            /* options.num_ctx, -1 absent
                                               or null */
    nebula_span_t       num_ctx_span;       /* its value, null included */
    nebula_span_t       options_span;       /* native "options", or null */
    int                 options_null;
    size_t              options_kept;       /* members of options left
                                               once drops[] are deleted */

    int64_t             n;                  /* /v1: n, -1 absent or null */
    nebula_span_t       n_span;             /* its value, null included */
    int64_t             best_of;            /* -1 absent or null */
    nebula_span_t       best_of_span;


    int                 has_temperature;
    double              temperature;

    size_t              messages;
    size_t              text_bytes;         /* strings the pool reads,
                                               decoded */
    size_t              other_bytes;        /* tools, tool calls: raw */
    uint64_t            context_ids;        /* /api/generate's context,
                                               token ids of embeddings */
    size_t              inputs;             /* an embedding request's */
    uint64_t            longest_input;      /* the tokens of its longest
                                               (the context bounds each) */
    size_t              images;
    uint64_t            image_tokens;       /* by their sizes */
    size_t              image_bytes;        /* their data's length */

    uint64_t            prompt_tokens;      /* the estimate
                                               (nebula_estimate.h) */

    size_t              top_start;          /* offset of the top '{' */

    nebula_req_error_e  error;
    char                param[NEBULA_PARAM_MAX];   /* "" when none */
    char                message[NEBULA_MESSAGE_MAX];

    /*
     * Members to delete before the body goes upstream (native options
     * not let through, native keep_alive, _debug_render_only, /api/show's
     * verbose), in body
     * order, never overlapping.  Each span takes a comma with it so that
     * the body stays valid JSON whichever members of an object go: a
     * member after a kept one from the end of the value before it to
     * the end of its own; one before any kept member from where the
     * last deletion ended (or the object's '{') through the comma after
     * its value.  So the first span in an object may start just after
     * its '{', where an insertion at the same offset must be ordered
     * before it (nebula_edit_sort does).
     */
    size_t              nrole_edits;
    size_t              ndrops;

    /* last: not cleared, read only up to their counts */
    nebula_span_t       drops[NEBULA_DROP_MAX];
    nebula_role_edit_t  role_edits[NEBULA_ROLE_EDIT_MAX];
} nebula_request_t;


/*
 * Parses and validates a whole body.  Returns NEBULA_REQ_OK or the first
 * error; a body that is not well-formed JSON is always invalid_json, even
 * when a field before the syntax error was also wrong.
 */
nebula_req_error_e nebula_request_parse(nebula_request_t *req,
    nebula_api_e api, const unsigned char *body, size_t len);

/* the same with an operator's policy; NULL is the default policy */
nebula_req_error_e nebula_request_parse_policy(nebula_request_t *req,
    nebula_api_e api, const unsigned char *body, size_t len,
    const nebula_request_policy_t *policy);


const char *nebula_req_error_code(nebula_req_error_e err);

#endif /* NEBULA_REQUEST_H */
