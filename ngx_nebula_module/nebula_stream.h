/*
 * Nebula: a resumable scanner for upstream response bodies.
 *
 * Plain C with no nginx types.  It is fed the body in whatever slices the
 * network delivers (a frame, a JSON token or a UTF-8 character may be split
 * anywhere) and finds, in every JSON document of the body, the top-level
 * "model" value, so the caller can put the public model name in its place
 * without holding any byte back.  The body is a single JSON document, NDJSON
 * (one document a line, as Ollama's native API streams) or Server-Sent
 * Events whose "data:" fields carry JSON (OpenAI's streams).
 *
 * On the way it picks up the usage the upstream reports: OpenAI's
 * usage.prompt_tokens and usage.completion_tokens, or Ollama's native
 * prompt_eval_count and eval_count; the last values seen are kept.  It
 * counts the documents that carried text (Ollama streams a token a chunk),
 * for when no usage comes, and tells the usage-only chunk of a stream
 * (choices: []) from the others, for a caller that removes it.
 *
 * Its state is a few dozen bytes, whatever the length of the stream.
 */

#ifndef NEBULA_STREAM_H
#define NEBULA_STREAM_H

#include <stddef.h>
#include <stdint.h>


typedef enum {
    NEBULA_FORMAT_JSON = 0,
    NEBULA_FORMAT_NDJSON,
    NEBULA_FORMAT_SSE
} nebula_format_e;


typedef enum {
    NEBULA_EV_NONE = 0,        /* everything given was consumed */
    NEBULA_EV_MODEL_START,     /* the last byte consumed opened the value */
    NEBULA_EV_MODEL_END,       /* the last byte consumed closed it */
    NEBULA_EV_EVENT_END        /* SSE: the last byte consumed ended an event */
} nebula_event_e;


/* long enough for "prompt_eval_count" */
#define NEBULA_KEY_MAX  20


typedef struct {
    nebula_format_e  format;

    /* SSE lines */
    unsigned         line_state:3;
    unsigned         after_cr:1;
    unsigned         field_len:4;
    unsigned char    field[5];

    /* JSON tokens */
    unsigned         json_state:3;
    unsigned         expect_key:1;
    unsigned         model_key:1;
    unsigned         in_model:1;
    unsigned         key_len:5;
    uint32_t         depth;
    uint64_t         maps;          /* bit d: the container at depth d+1 */
    unsigned char    key[NEBULA_KEY_MAX];

    /* the usage counts, as the upstream reports them */
    unsigned         num_key:3;     /* which count a number being read is */
    unsigned         num_digits:1;
    unsigned         usage_key:1;   /* the current top-level key is "usage" */
    unsigned         in_usage:1;    /* inside the top-level "usage" object */
    unsigned         has_prompt:1;
    unsigned         has_completion:1;
    uint64_t         num;
    uint64_t         prompt_tokens;      /* prompt_tokens, prompt_eval_count */
    uint64_t         completion_tokens;  /* completion_tokens, eval_count */

    /* what one document (an SSE event, an NDJSON line) holds */
    unsigned         choices_key:1;      /* the current key is "choices" */
    unsigned         choices_open:1;     /* just after "choices": [ */
    unsigned         doc_choices_empty:1;
    unsigned         doc_usage:1;        /* it has a "usage" object */
    unsigned         content_key:1;      /* the current key holds text */
    unsigned         content_open:1;     /* just after its opening quote */
    unsigned         doc_content:1;      /* it carried text */
    unsigned         usage_only:1;       /* the event just ended was the
                                            usage chunk: choices [] */

    /* documents that carried text: the tokens streamed, give or take */
    uint64_t         content_docs;

    /* the stream's end as the upstream marks it: data: [DONE], "done":true */
    unsigned         done:1;
    unsigned         done_key:1;
    unsigned         done_pos:3;         /* "[DONE]" matched so far, 7: no */
    unsigned         mid_line:1;         /* NDJSON: a line is open */
} nebula_stream_t;


void nebula_stream_init(nebula_stream_t *s, nebula_format_e format);

/*
 * Consumes bytes from p up to and including the first event, or all len
 * bytes when there is none; returns how many it consumed and sets *ev.
 */
size_t nebula_stream_scan(nebula_stream_t *s, const unsigned char *p,
    size_t len, nebula_event_e *ev);

#endif /* NEBULA_STREAM_H */
