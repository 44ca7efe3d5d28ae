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
 * usage.prompt_tokens and usage.completion_tokens, Ollama's native
 * prompt_eval_count and eval_count, or the input_tokens and output_tokens
 * of Anthropic's Messages API and OpenAI's Responses API, in a top-level
 * "usage" or one a top-level object holds (message.usage,
 * response.usage); the last values seen are kept.  Those two APIs' streams
 * name the model inside a top-level object too (message.model,
 * response.model), and mark their end by an event's "type"
 * ("message_stop", "response.completed"), as OpenAI's does with
 * "data: [DONE]" and Ollama's with "done": true.  It
 * counts the documents that carried text (Ollama streams a token a chunk)
 * and the bytes of the tool calls (which Ollama sends whole, in one
 * chunk), for when no usage comes (nebula_stream_output_estimate()), and
 * tells the usage-only chunk of a stream (choices: []) from the others,
 * for a caller that removes it.
 *
 * Its state is a few dozen bytes, whatever the length of the stream; an
 * SSE scanner may be given a memo of 1.5 KB that makes it several times
 * faster (nebula_memo_t).
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


/* json_flags: what the current key and value mean */
#define NEBULA_JF_MODEL_KEY     0x01  /* the current top-level key: "model" */
#define NEBULA_JF_USAGE_KEY     0x02  /* ... "usage" */
#define NEBULA_JF_CHOICES_KEY   0x04  /* ... "choices" */
#define NEBULA_JF_CONTENT_KEY   0x08  /* the current key holds text */
#define NEBULA_JF_TOOLS_KEY     0x10  /* ... tool calls: "tool_calls" */
#define NEBULA_JF_EXPECT_KEY    0x20  /* a key may come next */
#define NEBULA_JF_CONTENT_OPEN  0x40  /* just after its opening quote */
#define NEBULA_JF_TYPE_KEY      0x80  /* the current top-level key: "type" */


typedef struct nebula_memo_s  nebula_memo_t;


typedef struct {
    /*
     * The scanner's own state first, up to prompt_tokens: what its next
     * step depends on, and all it depends on.  A memo compares and copies
     * it whole (NEBULA_STREAM_LOCAL bytes).  The wide fields first; what
     * the scanner changes at every token in whole bytes (no
     * read-modify-write of a shared word), the meaning of the current key
     * and value as bits of one, json_flags, that it can hold in a register.
     */

    nebula_format_e  format;
    uint32_t         depth;
    uint64_t         maps;          /* bit d: the container at depth d+1 */
    uint64_t         num;           /* a count being read */

    unsigned char    key[NEBULA_KEY_MAX];

    /* SSE lines */
    unsigned char    field[5];
    unsigned char    line_state;
    unsigned char    after_cr;
    unsigned char    field_len;

    /* JSON tokens */
    unsigned char    json_state;
    unsigned char    json_flags;    /* NEBULA_JF_* */
    unsigned char    in_model;
    unsigned char    in_content;    /* in a string a text key holds */
    unsigned char    key_len;
    unsigned char    num_key;       /* which count a number being read is */

    /* what one document (an SSE event, an NDJSON line) holds */
    unsigned char    choices_open;       /* just after "choices": [ */

    /* the stream's end as the upstream marks it: data: [DONE], "done":true */
    unsigned char    done_key;
    unsigned char    done_pos;           /* "[DONE]" matched so far, 7: no */

    /* in a tool_calls value: the depth of what it holds; 0: in none */
    unsigned char    tool_depth;

    /*
     * The depth of the usage object's keys: 2 for a top-level "usage",
     * 3 for one inside a top-level object (Anthropic's message.usage,
     * the Responses API's response.usage); 0: in none
     */
    unsigned char    usage_depth;

    unsigned         num_digits:1;
    unsigned         doc_choices_empty:1;
    unsigned         doc_usage:1;        /* it has a "usage" object */
    unsigned         doc_content:1;      /* it carried text */
    unsigned         usage_only:1;       /* the event just ended was the
                                            usage chunk: choices [] */
    unsigned         mid_line:1;         /* NDJSON: a line is open */
    unsigned         in_type:1;          /* in the value of a top-level
                                            "type", read into key[] */

    /* what the stream told: the usage counts, as the upstream reports them */
    uint64_t         prompt_tokens;      /* prompt_tokens, prompt_eval_count */
    uint64_t         completion_tokens;  /* completion_tokens, eval_count */

    /* documents that carried text: the tokens streamed, give or take */
    uint64_t         content_docs;

    /*
     * The bytes of the tool_calls values passed: the key at the depths
     * of choices[].delta.tool_calls and choices[].message.tool_calls (4)
     * and of native message.tool_calls (2), as the keys of text are.
     * Each from its opening bracket to its closing one, both counted, as
     * JSON takes them: an SSE line's "data:" and line ends inside one are
     * not; a value that is no array or object counts nothing, one inside
     * another counts once, one a document's end cuts counts to there.
     */
    uint64_t         tool_bytes;

    unsigned         has_prompt:1;
    unsigned         has_completion:1;
    unsigned         done:1;
    unsigned         told:1;             /* a count or "done" was written,
                                            or a tool call opened */
    unsigned         quiet:1;            /* nebula_stream_quiet() */

    unsigned char    mark;               /* the memo slot that starts here */
    unsigned char    replayed;           /* the slot just replayed */
    unsigned char    resume;             /* the slot a slice cut, matching */
    uint16_t         resume_off;         /* and how far */
    nebula_memo_t   *memo;

    /*
     * A model value the caller keeps as it is: its bytes, closing quote
     * (one of 4 GB or more is not kept: the state stays 128 bytes)
     */
    const unsigned char  *keep;
    uint32_t              keep_len;

    uint32_t         ended;              /* quiet: see nebula_stream_quiet() */
} nebula_stream_t;


#define NEBULA_STREAM_LOCAL  offsetof(nebula_stream_t, prompt_tokens)


/*
 * A memo of an SSE stream's recurring stretches.  The chunks of a stream
 * repeat their framing byte for byte (the id, the created time, the model,
 * the keys around the text); only the text and the last chunks differ.
 * The scanner is a pure function of its own state and the bytes it reads,
 * so a stretch that begins in the state a stretch began in before, with
 * the same bytes, ends where that one ended: it is compared, not walked.
 * Stretches begin at a chunk's start, after its model value's quotes, and
 * after its text; one that writes a count or "done", or passes bytes of a
 * tool call, is not kept.
 */

#define NEBULA_MEMO_SLOTS  4
#define NEBULA_MEMO_BYTES  256
#define NEBULA_MEMO_NONE   NEBULA_MEMO_SLOTS

typedef struct {
    unsigned char    from[NEBULA_STREAM_LOCAL];
    unsigned char    to[NEBULA_STREAM_LOCAL];
    unsigned char    bytes[NEBULA_MEMO_BYTES];
    uint16_t         len;                /* 0: empty */
    unsigned char    ev;                 /* the event it ends in */
    unsigned char    next;               /* the slot that starts after it */
    unsigned char    content_docs;       /* what it adds to content_docs */
    unsigned char    after;              /* the slot whose end it began at */
    unsigned char    text_adds;          /* ending at a text that is not
                                            empty, the text adds a document
                                            to content_docs */
} nebula_memo_slot_t;


struct nebula_memo_s {
    nebula_memo_slot_t  slot[NEBULA_MEMO_SLOTS];
};


void nebula_stream_init(nebula_stream_t *s, nebula_format_e format);

/*
 * A model value the caller would put in its own place anyway (the public
 * name, when the upstream already uses it): given as its JSON bytes and
 * closing quote, before the first scan.  One that comes whole in a slice
 * is then a string like any other, with no MODEL events: fewer stops, and
 * a memo's stretch runs through it.  One cut by a slice's end is
 * reported as ever.
 */
void nebula_stream_keep(nebula_stream_t *s, const unsigned char *value,
    size_t len);

/* an SSE scanner takes up a memo (any other ignores it); it may be NULL */
void nebula_stream_memo(nebula_stream_t *s, nebula_memo_t *memo);

/*
 * Quiet (on != 0): NEBULA_EV_EVENT_END is reported only where the usage
 * chunk ends (usage_only); the scan goes on past the ends of other
 * events, and s->ended is then how many bytes of the call reach the last
 * of them (0: none).  (Within a call's first 4 GiB: one that ends later
 * is reported.)  For a caller that holds events whole only to cut
 * out the usage chunk: a call a slice, not one an event.  It may be
 * turned on and off between calls.
 */
void nebula_stream_quiet(nebula_stream_t *s, int on);

/*
 * Consumes bytes from p up to and including the first event, or all len
 * bytes when there is none; returns how many it consumed and sets *ev.
 */
size_t nebula_stream_scan(nebula_stream_t *s, const unsigned char *p,
    size_t len, nebula_event_e *ev);

/*
 * The output tokens of what was scanned so far, for when the upstream
 * reports none: content_docs (a token a document with text) plus
 * ceil(tool_bytes / 4).  A tool call comes whole in one document, its
 * name and its arguments, so it is counted by its size instead, at the
 * usual four bytes a token.  The bytes are those of its JSON, brackets,
 * keys, quotes and escapes included: an upper bound of the strings it
 * carries, whatever the encoding.
 */
static inline uint64_t
nebula_stream_output_estimate(const nebula_stream_t *s)
{
    /* inline: the filter asks at each stop of a stream (its limit) */
    return s->content_docs + s->tool_bytes / 4 + (s->tool_bytes % 4 != 0);
}

#endif /* NEBULA_STREAM_H */
