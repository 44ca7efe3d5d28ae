/*
 * Nebula: a resumable scanner for upstream response bodies
 * (see nebula_stream.h).
 */

#include <string.h>

#include "nebula_stream.h"


enum {
    L_START = 0,        /* at the beginning of an SSE line */
    L_FIELD,            /* in the field name */
    L_DATA_SPACE,       /* just after "data:" */
    L_DATA,             /* in a data value: JSON */
    L_SKIP              /* in any other line: passed as it is */
};


enum {
    J_VALUE = 0,        /* between tokens; literals need no state */
    J_KEY,
    J_KEY_ESCAPE,
    J_STRING,
    J_STRING_ESCAPE
};


enum {
    N_NONE = 0,
    N_PROMPT,           /* usage.prompt_tokens */
    N_COMPLETION,       /* usage.completion_tokens */
    N_PROMPT_EVAL,      /* prompt_eval_count */
    N_EVAL              /* eval_count */
};


static int
key_is(nebula_stream_t *s, const char *name, size_t len)
{
    return s->key_len == len && memcmp(s->key, name, len) == 0;
}


static void
number_done(nebula_stream_t *s)
{
    switch (s->num_key) {
    case N_PROMPT:
    case N_PROMPT_EVAL:
        s->prompt_tokens = s->num;
        s->has_prompt = 1;
        break;
    case N_COMPLETION:
    case N_EVAL:
        s->completion_tokens = s->num;
        s->has_completion = 1;
        break;
    }

    s->num_key = N_NONE;
    s->num_digits = 0;
    s->num = 0;
}


/* a byte of a value after a counted key: digits make the number */
static void
number_byte(nebula_stream_t *s, unsigned char c)
{
    if (c >= '0' && c <= '9') {
        if (s->num < 1000000000000000ULL) {
            s->num = s->num * 10 + (c - '0');
        }
        s->num_digits = 1;
        return;
    }

    if (s->num_digits) {
        number_done(s);
        return;
    }

    if (c != ':' && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
        /* null, a string, a fraction: not a count */
        s->num_key = N_NONE;
    }
}


static void
json_reset(nebula_stream_t *s)
{
    s->json_state = J_VALUE;
    s->expect_key = 0;
    s->model_key = 0;
    s->in_model = 0;
    s->key_len = 0;
    s->depth = 0;
    s->maps = 0;
    s->num_key = N_NONE;
    s->num_digits = 0;
    s->num = 0;
    s->usage_key = 0;
    s->in_usage = 0;
    s->choices_key = 0;
    s->choices_open = 0;
    s->doc_choices_empty = 0;
    s->doc_usage = 0;
    s->content_key = 0;
    s->content_open = 0;
    s->doc_content = 0;
}


void
nebula_stream_init(nebula_stream_t *s, nebula_format_e format)
{
    memset(s, 0, sizeof(nebula_stream_t));
    s->format = format;
    json_reset(s);
}


static int
in_map(nebula_stream_t *s)
{
    /* containers deeper than 64 levels count as arrays: only depth 1 matters */
    return s->depth > 0 && s->depth <= 64
           && (s->maps & ((uint64_t) 1 << (s->depth - 1)));
}


/* one byte of JSON; returns the event it completes */
static nebula_event_e
json_byte(nebula_stream_t *s, unsigned char c)
{
    switch (s->json_state) {

    case J_VALUE:
        if (s->num_key) {
            number_byte(s, c);
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
            s->expect_key = (c == '{');
            s->model_key = 0;
            s->in_usage = (s->depth == 2 && s->usage_key && c == '{');
            s->doc_usage |= s->in_usage;
            s->usage_key = 0;
            s->choices_open = (s->depth == 2 && s->choices_key && c == '[');
            s->choices_key = 0;
            s->content_key = 0;
            break;

        case '}':
        case ']':
            if (s->depth > 0) {
                s->depth--;
            }
            s->expect_key = 0;
            s->model_key = 0;
            if (s->depth < 2) {
                s->in_usage = 0;
            }
            break;

        case ',':
            s->expect_key = in_map(s);
            s->model_key = 0;
            s->usage_key = 0;
            s->choices_key = 0;
            s->content_key = 0;
            break;

        case '"':
            if (s->expect_key && in_map(s)) {
                s->json_state = J_KEY;
                s->key_len = 0;
                break;
            }

            s->json_state = J_STRING;
            s->usage_key = 0;
            s->choices_key = 0;
            s->content_open = s->content_key;
            s->content_key = 0;

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

    case J_KEY:
        if (c == '"') {
            s->json_state = J_VALUE;
            s->expect_key = 0;
            s->model_key = 0;
            s->usage_key = 0;
            s->num_key = N_NONE;

            /* choices[].delta.content, message.content, response */
            s->content_key = ((s->depth == 4 || s->depth == 2)
                              && key_is(s, "content", 7))
                             || (s->depth == 1 && key_is(s, "response", 8));
            s->done_key = (s->depth == 1 && key_is(s, "done", 4));

            if (s->depth == 1) {
                s->model_key = key_is(s, "model", 5);
                s->usage_key = key_is(s, "usage", 5);
                s->choices_key = key_is(s, "choices", 7);

                if (key_is(s, "prompt_eval_count", 17)) {
                    s->num_key = N_PROMPT_EVAL;

                } else if (key_is(s, "eval_count", 10)) {
                    s->num_key = N_EVAL;
                }

            } else if (s->depth == 2 && s->in_usage) {
                if (key_is(s, "prompt_tokens", 13)) {
                    s->num_key = N_PROMPT;

                } else if (key_is(s, "completion_tokens", 17)) {
                    s->num_key = N_COMPLETION;
                }
            }

            break;
        }

        if (c == '\\') {
            s->json_state = J_KEY_ESCAPE;
            s->key_len = NEBULA_KEY_MAX;   /* an escaped key is not ours */
            break;
        }

        if (s->key_len < NEBULA_KEY_MAX) {
            s->key[s->key_len++] = c;
        }

        break;

    case J_KEY_ESCAPE:
        s->json_state = J_KEY;
        break;

    case J_STRING:
        if (s->content_open) {
            s->content_open = 0;

            if (c != '"' && !s->doc_content) {
                s->doc_content = 1;
                s->content_docs++;
            }
        }

        if (c == '"') {
            s->json_state = J_VALUE;
            s->model_key = 0;

            if (s->in_model) {
                s->in_model = 0;
                return NEBULA_EV_MODEL_END;
            }

            break;
        }

        if (c == '\\') {
            s->json_state = J_STRING_ESCAPE;
        }

        break;

    case J_STRING_ESCAPE:
        s->json_state = J_STRING;
        break;
    }

    return NEBULA_EV_NONE;
}


static nebula_event_e
sse_byte(nebula_stream_t *s, unsigned char c)
{
    if (s->after_cr) {
        s->after_cr = 0;

        if (c == '\n') {
            return NEBULA_EV_NONE;      /* the LF of a CRLF */
        }
    }

    if (c == '\r' || c == '\n') {
        s->after_cr = (c == '\r');

        if (s->line_state == L_DATA && s->done_pos == 6) {
            s->done = 1;    /* data: [DONE] */
        }

        if (s->line_state == L_START) {
            /* a blank line ends the event: its JSON is complete */
            s->usage_only = s->doc_choices_empty && s->doc_usage;
            json_reset(s);
            s->line_state = L_START;
            return NEBULA_EV_EVENT_END;
        }

        s->line_state = L_START;
        return NEBULA_EV_NONE;
    }

    switch (s->line_state) {

    case L_START:
        s->field_len = 0;
        s->line_state = L_FIELD;
        /* fall through */

    case L_FIELD:
        if (c == ':') {
            s->line_state = (s->field_len == 4
                             && memcmp(s->field, "data", 4) == 0)
                            ? L_DATA_SPACE : L_SKIP;
            break;
        }

        if (s->field_len < sizeof(s->field)) {
            s->field[s->field_len++] = c;
        }

        break;

    case L_DATA_SPACE:
        s->line_state = L_DATA;
        s->done_pos = 0;

        if (c == ' ') {
            break;
        }

        /* fall through */

    case L_DATA:
        if (s->done_pos < 6 && c == (unsigned char) "[DONE]"[s->done_pos]) {
            s->done_pos++;

        } else {
            s->done_pos = 7;
        }

        return json_byte(s, c);

    default:
        break;
    }

    return NEBULA_EV_NONE;
}


size_t
nebula_stream_scan(nebula_stream_t *s, const unsigned char *p, size_t len,
    nebula_event_e *ev)
{
    size_t          i;
    nebula_event_e  e;

    for (i = 0; i < len; i++) {

        switch (s->format) {

        case NEBULA_FORMAT_SSE:
            e = sse_byte(s, p[i]);
            break;

        case NEBULA_FORMAT_NDJSON:
            if (p[i] == '\n') {
                /* a raw LF never occurs inside a JSON token */
                json_reset(s);
                s->mid_line = 0;
                e = NEBULA_EV_NONE;
                break;
            }

            s->mid_line = 1;

            /* fall through */

        default:
            e = json_byte(s, p[i]);
        }

        if (e != NEBULA_EV_NONE) {
            *ev = e;
            return i + 1;
        }
    }

    *ev = NEBULA_EV_NONE;
    return len;
}
