/*
 * Nebula: the stream scanner as it was before its fast paths, a byte at a
 * time, kept as the reference the fuzz targets and the unit tests hold
 * nebula_stream.c to: fed the same slices, both must return the same
 * counts and events and leave the same state.  Included, not linked.
 * What the scanner has learnt to count since (thinking and reasoning,
 * the bytes of tool calls) is written here the same plain way.
 */

#include <string.h>

#include "nebula_stream.h"


/* the state as it was then, whatever nebula_stream_t has become */
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
    unsigned         usage_key:1;   /* the current key is "usage" (depth 1
                                       or 2) */
    unsigned char    usage_depth;   /* the depth of a usage object's keys,
                                       while one is open */
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

    /*
     * Tool calls: the current key is "tool_calls" (choices[].delta,
     * choices[].message, native message: depth 4 or 2); the depth of the
     * array or object that key opened, while it is open; and the bytes
     * ref_json_byte() took while one was open, its brackets included
     */
    unsigned         tools_key:1;
    uint32_t         tool_depth;
    uint64_t         tool_bytes;

    /* the stream's end as the upstream marks it: data: [DONE], "done":true */
    unsigned         done:1;
    unsigned         done_key:1;
    unsigned         type_key:1;         /* the current key: top-level "type" */
    unsigned         in_type:1;          /* in its value, read into key[] */
    unsigned         done_pos:3;         /* "[DONE]" matched so far, 7: no */
    unsigned         mid_line:1;         /* NDJSON: a line is open */
} ref_stream_t;


enum {
    REF_L_START = 0,        /* at the beginning of an SSE line */
    REF_L_FIELD,            /* in the field name */
    REF_L_DATA_SPACE,       /* just after "data:" */
    REF_L_DATA,             /* in a data value: JSON */
    REF_L_SKIP              /* in any other line: passed as it is */
};


enum {
    REF_J_VALUE = 0,        /* between tokens; literals need no state */
    REF_J_KEY,
    REF_J_KEY_ESCAPE,
    REF_J_STRING,
    REF_J_STRING_ESCAPE
};


enum {
    REF_N_NONE = 0,
    REF_N_PROMPT,           /* usage.prompt_tokens */
    REF_N_COMPLETION,       /* usage.completion_tokens */
    REF_N_PROMPT_EVAL,      /* prompt_eval_count */
    REF_N_EVAL              /* eval_count */
};


static int
ref_key_is(ref_stream_t *s, const char *name, size_t len)
{
    return s->key_len == len && memcmp(s->key, name, len) == 0;
}


static void
ref_number_done(ref_stream_t *s)
{
    switch (s->num_key) {
    case REF_N_PROMPT:
    case REF_N_PROMPT_EVAL:
        s->prompt_tokens = s->num;
        s->has_prompt = 1;
        break;
    case REF_N_COMPLETION:
    case REF_N_EVAL:
        s->completion_tokens = s->num;
        s->has_completion = 1;
        break;
    }

    s->num_key = REF_N_NONE;
    s->num_digits = 0;
    s->num = 0;
}


/* a byte of a value after a counted key: digits make the number */
static void
ref_number_byte(ref_stream_t *s, unsigned char c)
{
    if (c >= '0' && c <= '9') {
        if (s->num < 1000000000000000ULL) {
            s->num = s->num * 10 + (c - '0');
        }
        s->num_digits = 1;
        return;
    }

    if (s->num_digits) {
        ref_number_done(s);
        return;
    }

    if (c != ':' && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
        /* null, a string, a fraction: not a count */
        s->num_key = REF_N_NONE;
    }
}


static void
ref_json_reset(ref_stream_t *s)
{
    s->json_state = REF_J_VALUE;
    s->expect_key = 0;
    s->model_key = 0;
    s->in_model = 0;
    s->key_len = 0;
    s->depth = 0;
    s->maps = 0;
    s->num_key = REF_N_NONE;
    s->num_digits = 0;
    s->num = 0;
    s->usage_key = 0;
    s->usage_depth = 0;
    s->type_key = 0;
    s->in_type = 0;
    s->choices_key = 0;
    s->choices_open = 0;
    s->doc_choices_empty = 0;
    s->doc_usage = 0;
    s->content_key = 0;
    s->content_open = 0;
    s->doc_content = 0;
    s->tools_key = 0;
    s->tool_depth = 0;
}


static void
ref_stream_init(ref_stream_t *s, nebula_format_e format)
{
    memset(s, 0, sizeof(ref_stream_t));
    s->format = format;
    ref_json_reset(s);
}


static int
ref_in_map(ref_stream_t *s)
{
    /* containers deeper than 64 levels count as arrays: only depth 1 matters */
    return s->depth > 0 && s->depth <= 64
           && (s->maps & ((uint64_t) 1 << (s->depth - 1)));
}


/* one byte of JSON, but for the bytes of tool calls (ref_json_byte()) */
static nebula_event_e
ref_json_token(ref_stream_t *s, unsigned char c)
{
    switch (s->json_state) {

    case REF_J_VALUE:
        if (s->num_key) {
            ref_number_byte(s, c);
        }

        if (s->done_key && c != ':' && c != ' ' && c != '\t' && c != '\r'
            && c != '\n')
        {
            /* Ollama's final line: "done": true */
            s->done |= (c == 't');
            s->done_key = 0;
        }

        if (s->choices_open && c != ' ' && c != '\t' && c != '\r'
            && c != '\n')
        {
            s->choices_open = 0;

            if (c == ']') {
                s->doc_choices_empty = 1;
            }
        }

        switch (c) {

        case '{':
        case '[':
            if (s->depth < 64) {
                if (c == '{') {
                    s->maps |= (uint64_t) 1 << s->depth;

                } else {
                    s->maps &= ~((uint64_t) 1 << s->depth);
                }
            }

            s->depth++;

            if (s->tools_key && s->tool_depth == 0) {
                s->tool_depth = s->depth;
            }

            s->tools_key = 0;
            s->expect_key = (c == '{');
            s->model_key = 0;
            if (s->usage_key && c == '{' && s->usage_depth == 0) {
                s->usage_depth = (unsigned char) s->depth;
                s->doc_usage = 1;
            }
            s->usage_key = 0;
            s->type_key = 0;
            s->choices_open = (s->depth == 2 && s->choices_key && c == '[');
            s->choices_key = 0;
            s->content_key = 0;
            break;

        case '}':
        case ']':
            if (s->tool_depth != 0 && s->depth == s->tool_depth) {
                s->tool_depth = 0;
            }
            if (s->usage_depth != 0 && s->depth == s->usage_depth) {
                s->usage_depth = 0;
            }
            if (s->depth > 0) {
                s->depth--;
            }
            s->expect_key = 0;
            s->model_key = 0;
            break;

        case ',':
            s->expect_key = ref_in_map(s);
            s->model_key = 0;
            s->usage_key = 0;
            s->choices_key = 0;
            s->content_key = 0;
            s->tools_key = 0;
            s->type_key = 0;
            break;

        case '"':
            if (s->expect_key && ref_in_map(s)) {
                s->json_state = REF_J_KEY;
                s->key_len = 0;
                break;
            }

            s->json_state = REF_J_STRING;
            s->usage_key = 0;
            s->choices_key = 0;
            s->content_open = s->content_key;
            s->content_key = 0;
            s->tools_key = 0;

            if (s->type_key) {
                s->type_key = 0;
                s->in_type = 1;
                s->key_len = 0;
            }

            if (s->model_key) {
                s->in_model = 1;
                return NEBULA_EV_MODEL_START;
            }

            break;

        default:
            /* ':', whitespace, and the bytes of numbers and literals */
            break;
        }

        break;

    case REF_J_KEY:
        if (c == '"') {
            s->json_state = REF_J_VALUE;
            s->expect_key = 0;
            s->model_key = 0;
            s->usage_key = 0;
            s->type_key = 0;
            s->num_key = REF_N_NONE;

            /* choices[].delta.content, message.content, response */
            s->content_key = ((s->depth == 4 || s->depth == 2)
                              && ref_key_is(s, "content", 7))
                             || (s->depth == 1 && ref_key_is(s, "response", 8))
                             /* thinking and reasoning, as the scanner */
                             || ((s->depth == 1 || s->depth == 2)
                                 && ref_key_is(s, "thinking", 8))
                             /* /v1/completions: choices[].text */
                             || (s->depth == 3 && ref_key_is(s, "text", 4))
                             /* Responses: delta; Anthropic: delta.text,
                                delta.partial_json */
                             || (s->depth == 1 && ref_key_is(s, "delta", 5))
                             || (s->depth == 2 && ref_key_is(s, "text", 4))
                             || (s->depth == 2 && s->usage_depth != 2
                                 && ref_key_is(s, "partial_json", 12))
                             || (s->depth == 4
                                 && (ref_key_is(s, "reasoning", 9)
                                     || ref_key_is(s, "reasoning_content",
                                                   17)));
            s->done_key = (s->depth == 1 && ref_key_is(s, "done", 4));

            /* choices[].delta.tool_calls, message.tool_calls */
            s->tools_key = ((s->depth == 4 || s->depth == 2)
                            && ref_key_is(s, "tool_calls", 10));

            /* message.model, response.model; message.usage, ... */
            if (s->depth == 1 || s->depth == 2) {
                s->model_key = ref_key_is(s, "model", 5);
                s->usage_key = ref_key_is(s, "usage", 5);
            }

            if (s->depth == 1) {
                s->choices_key = ref_key_is(s, "choices", 7);
                s->type_key = ref_key_is(s, "type", 4);

                if (ref_key_is(s, "prompt_eval_count", 17)) {
                    s->num_key = REF_N_PROMPT_EVAL;

                } else if (ref_key_is(s, "eval_count", 10)) {
                    s->num_key = REF_N_EVAL;
                }

            } else if (s->depth == s->usage_depth) {
                if (ref_key_is(s, "input_tokens", 12)) {
                    s->num_key = REF_N_PROMPT;

                } else if (ref_key_is(s, "output_tokens", 13)) {
                    s->num_key = REF_N_COMPLETION;

                } else if (s->depth == 2
                           && ref_key_is(s, "prompt_tokens", 13))
                {
                    s->num_key = REF_N_PROMPT;

                } else if (s->depth == 2
                           && ref_key_is(s, "completion_tokens", 17))
                {
                    s->num_key = REF_N_COMPLETION;
                }
            }

            break;
        }

        if (c == '\\') {
            s->json_state = REF_J_KEY_ESCAPE;
            s->key_len = NEBULA_KEY_MAX;   /* an escaped key is not ours */
            break;
        }

        if (s->key_len < NEBULA_KEY_MAX) {
            s->key[s->key_len++] = c;
        }

        break;

    case REF_J_KEY_ESCAPE:
        s->json_state = REF_J_KEY;
        break;

    case REF_J_STRING:
        if (s->in_type) {
            /* an event's type: its end, message_stop, response.completed */
            if (c == '"') {
                s->in_type = 0;
                s->done |= ref_key_is(s, "message_stop", 12)
                           || ref_key_is(s, "response.completed", 18);

            } else if (c == '\\') {
                s->key_len = NEBULA_KEY_MAX;

            } else if (s->key_len < NEBULA_KEY_MAX) {
                s->key[s->key_len++] = c;
            }
        }

        if (s->content_open) {
            s->content_open = 0;

            if (c != '"' && !s->doc_content) {
                s->doc_content = 1;
                s->content_docs++;
            }
        }

        if (c == '"') {
            s->json_state = REF_J_VALUE;
            s->model_key = 0;

            if (s->in_model) {
                s->in_model = 0;
                return NEBULA_EV_MODEL_END;
            }

            break;
        }

        if (c == '\\') {
            s->json_state = REF_J_STRING_ESCAPE;
        }

        break;

    case REF_J_STRING_ESCAPE:
        s->json_state = REF_J_STRING;
        break;
    }

    return NEBULA_EV_NONE;
}


/*
 * One byte of JSON; returns the event it completes.  A byte is a tool
 * call's when a tool_calls value is open before it or after it: the
 * opening bracket, all within, the closing bracket.
 */
static nebula_event_e
ref_json_byte(ref_stream_t *s, unsigned char c)
{
    int             in;
    nebula_event_e  e;

    in = (s->tool_depth != 0);
    e = ref_json_token(s, c);

    if (in || s->tool_depth != 0) {
        s->tool_bytes++;
    }

    return e;
}


/* the output estimate, the same way: a token a text, four bytes of tools */
static uint64_t
ref_output_estimate(const ref_stream_t *s)
{
    return s->content_docs + (s->tool_bytes + 3) / 4;
}


static nebula_event_e
ref_sse_byte(ref_stream_t *s, unsigned char c)
{
    if (s->after_cr) {
        s->after_cr = 0;

        if (c == '\n') {
            return NEBULA_EV_NONE;      /* the LF of a CRLF */
        }
    }

    if (c == '\r' || c == '\n') {
        s->after_cr = (c == '\r');

        if (s->line_state == REF_L_DATA && s->done_pos == 6) {
            s->done = 1;    /* data: [DONE] */
        }

        if (s->line_state == REF_L_START) {
            /* a blank line ends the event: its JSON is complete */
            s->usage_only = s->doc_choices_empty && s->doc_usage;
            ref_json_reset(s);
            s->line_state = REF_L_START;
            return NEBULA_EV_EVENT_END;
        }

        s->line_state = REF_L_START;
        return NEBULA_EV_NONE;
    }

    switch (s->line_state) {

    case REF_L_START:
        s->field_len = 0;
        s->line_state = REF_L_FIELD;
        /* fall through */

    case REF_L_FIELD:
        if (c == ':') {
            s->line_state = (s->field_len == 4
                             && memcmp(s->field, "data", 4) == 0)
                            ? REF_L_DATA_SPACE : REF_L_SKIP;
            break;
        }

        if (s->field_len < sizeof(s->field)) {
            s->field[s->field_len++] = c;
        }

        break;

    case REF_L_DATA_SPACE:
        s->line_state = REF_L_DATA;
        s->done_pos = 0;

        if (c == ' ') {
            break;
        }

        /* fall through */

    case REF_L_DATA:
        if (s->done_pos < 6 && c == (unsigned char) "[DONE]"[s->done_pos]) {
            s->done_pos++;

        } else {
            s->done_pos = 7;
        }

        return ref_json_byte(s, c);

    default:
        break;
    }

    return NEBULA_EV_NONE;
}


static size_t
ref_stream_scan(ref_stream_t *s, const unsigned char *p, size_t len,
    nebula_event_e *ev)
{
    size_t          i;
    nebula_event_e  e;

    for (i = 0; i < len; i++) {

        switch (s->format) {

        case NEBULA_FORMAT_SSE:
            e = ref_sse_byte(s, p[i]);
            break;

        case NEBULA_FORMAT_NDJSON:
            if (p[i] == '\n') {
                /* a raw LF never occurs inside a JSON token */
                ref_json_reset(s);
                s->mid_line = 0;
                e = NEBULA_EV_NONE;
                break;
            }

            s->mid_line = 1;

            /* fall through */

        default:
            e = ref_json_byte(s, p[i]);
        }

        if (e != NEBULA_EV_NONE) {
            *ev = e;
            return i + 1;
        }
    }

    *ev = NEBULA_EV_NONE;
    return len;
}


/* whether two scanners are in the same state, as far as it means anything */
static int
ref_same_state(const nebula_stream_t *a, const ref_stream_t *b)
{
    size_t    n;
    unsigned  f;

#define REF_SAME(f)  (a->f == b->f)

    if (!(REF_SAME(format) && REF_SAME(line_state) && REF_SAME(after_cr)
          && REF_SAME(field_len) && REF_SAME(json_state)
          && REF_SAME(in_model) && REF_SAME(key_len) && REF_SAME(depth)
          && REF_SAME(maps) && REF_SAME(num_key) && REF_SAME(num_digits)
          && REF_SAME(has_prompt) && REF_SAME(has_completion)
          && REF_SAME(num) && REF_SAME(prompt_tokens)
          && REF_SAME(completion_tokens) && REF_SAME(choices_open)
          && REF_SAME(doc_choices_empty) && REF_SAME(doc_usage)
          && REF_SAME(doc_content) && REF_SAME(usage_only)
          && REF_SAME(content_docs) && REF_SAME(done) && REF_SAME(done_key)
          && REF_SAME(done_pos) && REF_SAME(mid_line)
          && REF_SAME(tool_depth) && REF_SAME(tool_bytes)
          && REF_SAME(usage_depth) && REF_SAME(in_type)
          && nebula_stream_output_estimate(a) == ref_output_estimate(b)))
    {
        return 0;
    }

#undef REF_SAME

    f = (b->model_key ? NEBULA_JF_MODEL_KEY : 0)
        | (b->usage_key ? NEBULA_JF_USAGE_KEY : 0)
        | (b->choices_key ? NEBULA_JF_CHOICES_KEY : 0)
        | (b->content_key ? NEBULA_JF_CONTENT_KEY : 0)
        | (b->tools_key ? NEBULA_JF_TOOLS_KEY : 0)
        | (b->expect_key ? NEBULA_JF_EXPECT_KEY : 0)
        | (b->content_open ? NEBULA_JF_CONTENT_OPEN : 0)
        | (b->type_key ? NEBULA_JF_TYPE_KEY : 0);

    if (a->json_flags != f) {
        return 0;
    }

    /*
     * The bytes of a key matter only while it is read, and could still be
     * ours: a key seen whole is matched where it lies, the buffer is for
     * one a slice cuts, and one escaped or that long is none of ours.
     */
    if ((a->json_state == REF_J_KEY || a->json_state == REF_J_KEY_ESCAPE)
        && a->key_len < NEBULA_KEY_MAX
        && memcmp(a->key, b->key, a->key_len) != 0)
    {
        return 0;
    }

    n = a->field_len < sizeof(a->field) ? a->field_len : sizeof(a->field);

    return memcmp(a->field, b->field, n) == 0;
}


/*
 * The reference driven over the n bytes the scanner s consumed in one call
 * of len bytes, which ended in ev: it must find the same event at the
 * same place (or none, all len bytes consumed), but for the model values
 * the scanner kept (nebula_stream_keep()): the reference reports them,
 * MODEL_START and, keep_len bytes on, MODEL_END; the scanner need not.
 * And a quiet scanner (nebula_stream_quiet()) passes the ends of events
 * but the usage chunk's: the last of them where s->ended says.
 */
static int
ref_scan_as(ref_stream_t *r, const unsigned char *p, size_t n, size_t len,
    nebula_event_e ev, const nebula_stream_t *s)
{
    size_t          m, k, ended;
    nebula_event_e  rev;

    if (n == 0 || n > len || (ev == NEBULA_EV_NONE && n != len)) {
        return 0;
    }

    m = 0;
    ended = 0;
    rev = NEBULA_EV_NONE;

    while (m < n) {
        k = ref_stream_scan(r, p + m, n - m, &rev);
        m += k;

        if (rev == NEBULA_EV_MODEL_START && m < n) {
            /* a value the scanner kept: the caller's, whole in the slice */
            if (s->keep_len == 0 || n - m < s->keep_len
                || memcmp(p + m, s->keep, s->keep_len) != 0)
            {
                return 0;
            }

            k = ref_stream_scan(r, p + m, s->keep_len, &rev);

            if (k != s->keep_len || rev != NEBULA_EV_MODEL_END) {
                return 0;
            }

            m += k;
            rev = NEBULA_EV_NONE;
            continue;
        }

        if (rev == NEBULA_EV_EVENT_END && s->quiet && !r->usage_only) {
            /* an event end a quiet scanner passes */
            ended = m;
            rev = NEBULA_EV_NONE;
            continue;
        }

        if (rev != NEBULA_EV_NONE && m < n) {
            return 0;
        }
    }

    return rev == ev && s->ended == ended;
}


/* a scanner (with a memo, keeping a value, quiet: as given), the reference */
static void
ref_pair_init(nebula_stream_t *s, ref_stream_t *r, nebula_format_e format,
    nebula_memo_t *memo, const char *keep, int quiet)
{
    nebula_stream_init(s, format);
    nebula_stream_memo(s, memo);
    nebula_stream_quiet(s, quiet);
    ref_stream_init(r, format);

    if (keep) {
        nebula_stream_keep(s, (const unsigned char *) keep, strlen(keep));
    }
}


/*
 * One call of the scanner on len bytes, the reference over what it took:
 * 0 when they part (a count, an event or the state); *n, what it took
 */
static int
ref_pair_scan(nebula_stream_t *s, ref_stream_t *r, const unsigned char *p,
    size_t len, size_t *n, nebula_event_e *ev)
{
    *n = nebula_stream_scan(s, p, len, ev);

    return ref_scan_as(r, p, *n, len, *ev, s) && ref_same_state(s, r);
}
