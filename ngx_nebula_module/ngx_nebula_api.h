/*
 * Nebula: the APIs a location can serve ("nebula NAME"), and what tells
 * one from another, in one table (ngx_nebula_api.c).  Every step of a
 * request reads its API's row instead of a switch of its own:
 *
 *   the body's shape         request    (the parser's fields and checks)
 *   the model, the limits    limit      (where the output limit is written)
 *   the stream's format      stream     (how the filter frames a document)
 *   where usage appears      usage, ask_usage
 *   the error shape          errors
 *   how a cut stream ends    stream_end, stream_error
 *
 * Adding an API: a row here, a request shape in nebula_request_fields.c,
 * and what is new about it (docs/architecture.md, "Adding an API").
 */

#ifndef NGX_NEBULA_API_H
#define NGX_NEBULA_API_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "nebula_request.h"
#include "nebula_stream.h"


/* where the output limit is written in a request's body */
typedef enum {
    NGX_NEBULA_LIMIT_MAX_TOKENS = 0,   /* max_tokens, max_completion_tokens */
    NGX_NEBULA_LIMIT_MAX_OUTPUT_TOKENS,    /* the Responses API's */
    NGX_NEBULA_LIMIT_NUM_PREDICT,      /* options.num_predict */
    NGX_NEBULA_LIMIT_NONE              /* no output to limit: embeddings */
} ngx_nebula_limit_e;


/* where the pool reports usage */
typedef enum {
    NGX_NEBULA_USAGE_OPENAI = 0,       /* usage.prompt_tokens, ...; or
                                          input_tokens, output_tokens
                                          (Messages, Responses) */
    NGX_NEBULA_USAGE_OLLAMA,           /* prompt_eval_count, eval_count */
    NGX_NEBULA_USAGE_NONE              /* none (the legacy /api/embeddings):
                                          an answer costs the estimate */
} ngx_nebula_usage_e;


/* the shape of an error the client is sent */
typedef enum {
    NGX_NEBULA_ERRORS_OPENAI = 0,      /* {"error":{"message",...}} */
    NGX_NEBULA_ERRORS_OLLAMA,          /* {"error":"..."} */
    NGX_NEBULA_ERRORS_ANTHROPIC        /* {"type":"error","error":{...}} */
} ngx_nebula_errors_e;


typedef struct ngx_nebula_api_s  ngx_nebula_api_t;

struct ngx_nebula_api_s {
    ngx_str_t                 name;          /* of "nebula NAME" */
    ngx_http_handler_pt       handler;       /* answered here; NULL:
                                                proxied to a pool */

    /* a proxied API's */
    nebula_api_e              request;       /* the body's shape */
    ngx_nebula_limit_e        limit;
    ngx_nebula_usage_e        usage;
    nebula_format_e           stream;        /* a stream's framing */
    ngx_nebula_errors_e       errors;
    unsigned                  ask_usage:1;   /* a stream has usage only
                                                when the request asks */
    unsigned                  keep_alive:1;  /* takes the model's
                                                keep_alive (native) */
    unsigned                  embeds:1;      /* embeddings: for embedding
                                                models alone, no output */
    unsigned                  unmetered:1;   /* about a model, not of it:
                                                no tokens, nothing counted
                                                (/api/show); its answer
                                                rewritten whole
                                                (nebula_show.c) */

    /*
     * The last documents of a stream cut at its reservation, as the pool
     * should have ended it: written to p (up to last); returns the end.
     */
    u_char                 *(*stream_end)(u_char *p, u_char *last,
                                          ngx_str_t *model, u_char *id,
                                          uint64_t prompt, uint64_t output,
                                          ngx_uint_t usage);

    /* a stream the pool broke off: the error it ends with */
    ngx_str_t                 stream_error;
};


/* by the id a location keeps (ngx_nebula_api_e) */
ngx_nebula_api_t *ngx_nebula_api(ngx_uint_t id);

/* by its name in "nebula NAME": its id, or NGX_ERROR */
ngx_int_t ngx_nebula_api_id(ngx_str_t *name);

/* "chat, ollama_chat, ..." for a message */
const char *ngx_nebula_api_names(void);

#endif /* NGX_NEBULA_API_H */
