/*
 * Nebula: a resumable scanner for upstream response bodies
 * (see nebula_stream.h): its core.  The SSE line machine, the JSON token
 * machine, the keys and counts, the events, quiet mode, the walk
 * (nebula_stream_walk()); the memo of an SSE stream's recurring
 * stretches, and the entry nebula_stream_scan() that walks or replays,
 * are nebula_stream_memo.c, what both use nebula_stream_int.h.
 *
 * Some 1,300 lines, more than the 1,000 a file should have, and kept so:
 * each transition is written twice, a byte at a time (json_byte(),
 * sse_byte()) and a run at a time (json_run(), sse_run()), and the two
 * must leave the same state after every byte, so they are read and
 * changed side by side.  Apart, key_meaning(), json_reset() and in_map()
 * would go to a header too, and sse_byte() would no longer be inlined in
 * nebula_stream_walk().
 */

#include <string.h>

#include "nebula_stream_int.h"


enum {
    L_START = 0,        /* at the beginning of an SSE line */
    L_FIELD,            /* in the field name */
    L_DATA_SPACE,       /* just after "data:" */
    L_DATA,             /* in a data value: JSON */
    L_SKIP              /* in any other line: passed as it is */
};


enum {
    N_NONE = 0,
    N_PROMPT,           /* usage.prompt_tokens */
    N_COMPLETION,       /* usage.completion_tokens */
    N_PROMPT_EVAL,      /* prompt_eval_count */
    N_EVAL              /* eval_count */
};


/* what a key means to us: the flags it sets, "done", the count it names */
#define K_MODEL     F_MODEL
#define K_USAGE     F_USAGE
#define K_CHOICES   F_CHOICES
#define K_CONTENT   F_CONTENT
#define K_TOOLS     F_TOOLS
#define K_TYPE      F_TYPE
#define K_FLAGS     (K_MODEL | K_USAGE | K_CHOICES | K_CONTENT | K_TOOLS     \
                     | K_TYPE)
#define K_DONE      0x100
#define K_NUM(m)    ((m) >> 9)


static int
key_is(const unsigned char *key, size_t key_len, const char *name,
    size_t len)
{
    return key_len == len && memcmp(key, name, len) == 0;
}


/*
 * The keys we look for, at the depths they count at: K_* bits and, from
 * bit 9, the count a number after the key is (N_*).  By depth and length
 * first: this runs for every key of every document, and most keys are
 * none of ours.
 */
static inline unsigned
key_meaning(uint32_t depth, unsigned in_usage, const unsigned char *key,
    size_t len)
{
    switch (depth) {

    case 1:
        switch (len) {
        case 4:
            /* Ollama's "done"; the event of Anthropic's and Responses' */
            return key_is(key, len, "done", 4) ? K_DONE
                   : key_is(key, len, "type", 4) ? K_TYPE : 0;
        case 5:
            /* "delta": a Responses event's text (output_text.delta) */
            return key_is(key, len, "model", 5) ? K_MODEL
                   : key_is(key, len, "usage", 5) ? K_USAGE
                   : key_is(key, len, "delta", 5) ? K_CONTENT : 0;
        case 7:
            return key_is(key, len, "choices", 7) ? K_CHOICES : 0;
        case 8:
            /* /api/generate's text, and its thinking (qwen3, deepseek-r1) */
            return (key_is(key, len, "response", 8)
                    || key_is(key, len, "thinking", 8)) ? K_CONTENT : 0;
        case 10:
            return key_is(key, len, "eval_count", 10) ? N_EVAL << 9 : 0;
        case 17:
            return key_is(key, len, "prompt_eval_count", 17)
                   ? N_PROMPT_EVAL << 9 : 0;
        }

        return 0;

    case 2:
        /*
         * message.content, message.thinking, message.tool_calls; usage.*;
         * Anthropic's message.model, message.usage, delta.text,
         * delta.thinking, delta.partial_json (a tool call's arguments,
         * which Ollama sends whole); the Responses API's response.model,
         * response.usage
         */
        switch (len) {
        case 4:
            return key_is(key, len, "text", 4) ? K_CONTENT : 0;
        case 5:
            return key_is(key, len, "model", 5) ? K_MODEL
                   : key_is(key, len, "usage", 5) ? K_USAGE : 0;
        case 7:
            return key_is(key, len, "content", 7) ? K_CONTENT : 0;
        case 8:
            return key_is(key, len, "thinking", 8) ? K_CONTENT : 0;
        case 10:
            return key_is(key, len, "tool_calls", 10) ? K_TOOLS : 0;
        case 12:
            return !in_usage ? (key_is(key, len, "partial_json", 12)
                                ? K_CONTENT : 0)
                   : key_is(key, len, "input_tokens", 12) ? N_PROMPT << 9
                   : 0;
        case 13:
            return !in_usage ? 0
                   : key_is(key, len, "prompt_tokens", 13) ? N_PROMPT << 9
                   : key_is(key, len, "output_tokens", 13)
                   ? N_COMPLETION << 9 : 0;
        case 17:
            return (in_usage && key_is(key, len, "completion_tokens", 17))
                   ? N_COMPLETION << 9 : 0;
        }

        return 0;

    case 3:
        /*
         * /v1/completions' choices[].text, Anthropic's content[].text;
         * message.usage.*, response.usage.*
         */
        switch (len) {
        case 4:
            return key_is(key, len, "text", 4) ? K_CONTENT : 0;
        case 12:
            return (in_usage && key_is(key, len, "input_tokens", 12))
                   ? N_PROMPT << 9 : 0;
        case 13:
            return (in_usage && key_is(key, len, "output_tokens", 13))
                   ? N_COMPLETION << 9 : 0;
        }

        return 0;

    case 4:
        /*
         * choices[].delta.content, choices[].message.content, and the
         * reasoning a thinking model streams before its answer: tokens the
         * upstream bills, counted when no usage comes; and the tool calls,
         * counted by their bytes
         */
        if (key_is(key, len, "tool_calls", 10)) {
            return K_TOOLS;
        }

        return (key_is(key, len, "content", 7)
                || key_is(key, len, "reasoning", 9)
                || key_is(key, len, "reasoning_content", 17)) ? K_CONTENT : 0;
    }

    return 0;
}


static void
number_done(nebula_stream_t *s)
{
    switch (s->num_key) {
    case N_PROMPT:
    case N_PROMPT_EVAL:
        s->prompt_tokens = s->num;
        s->has_prompt = 1;
        s->told = 1;
        break;
    case N_COMPLETION:
    case N_EVAL:
        s->completion_tokens = s->num;
        s->has_completion = 1;
        s->told = 1;
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
    s->json_flags = 0;
    s->in_model = 0;
    s->in_content = 0;
    s->key_len = 0;
    s->depth = 0;
    s->maps = 0;
    s->num_key = N_NONE;
    s->num_digits = 0;
    s->num = 0;
    s->choices_open = 0;
    s->doc_choices_empty = 0;
    s->doc_usage = 0;
    s->doc_content = 0;
    s->tool_depth = 0;
    s->usage_depth = 0;
    s->in_type = 0;
}


/*
 * A top-level "type" value read whole: the last event of an Anthropic
 * stream, or of a Responses one
 */
static void
type_done(nebula_stream_t *s)
{
    s->in_type = 0;

    if (key_is(s->key, s->key_len, "message_stop", 12)
        || key_is(s->key, s->key_len, "response.completed", 18))
    {
        s->done = 1;
        s->told = 1;
    }
}


void
nebula_stream_init(nebula_stream_t *s, nebula_format_e format)
{
    memset(s, 0, sizeof(nebula_stream_t));
    s->format = format;
    json_reset(s);
}


static int
in_map(uint32_t depth, uint64_t maps)
{
    /*
     * Containers deeper than 64 levels count as arrays: only depth 1
     * matters.  At depth 0, depth - 1 wraps around, out of range too.
     */
    return depth - 1 < 64 && ((maps >> (depth - 1)) & 1);
}


/* one byte of JSON; returns the event it completes */
static nebula_event_e
json_byte(nebula_stream_t *s, unsigned char c)
{
    unsigned  f, m;

    f = s->json_flags;

    if (s->tool_depth) {
        /* a byte of a tool call, its closing bracket too */
        s->tool_bytes++;
    }

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
            s->told = 1;
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

            /* all but content_open end; expect_key begins */
            s->json_flags = (f & F_OPEN) | ((c == '{') ? F_EXPECT : 0);

            if ((f & F_TOOLS) && s->tool_depth == 0) {
                /* a tool call's value opens: this byte is its first */
                s->tool_depth = (unsigned char) s->depth;
                s->tool_bytes++;
                s->told = 1;
            }

            if ((f & F_USAGE) && c == '{' && s->usage_depth == 0) {
                /* depth 2 or 3: a usage key is at depth 1 or 2 */
                s->usage_depth = (unsigned char) s->depth;
                s->doc_usage = 1;
            }

            s->choices_open = (s->depth == 2 && (f & F_CHOICES) && c == '[');
            break;

        case '}':
        case ']':
            if (s->depth == s->tool_depth) {
                /* the tool call's value closes (depth 0: none is open) */
                s->tool_depth = 0;
            }

            if (s->depth == s->usage_depth) {
                s->usage_depth = 0;
            }

            if (s->depth > 0) {
                s->depth--;
            }

            s->json_flags = f & ~(F_EXPECT | F_MODEL);
            break;

        case ',':
            s->json_flags = (f & F_OPEN)
                            | (in_map(s->depth, s->maps) ? F_EXPECT : 0);
            break;

        case '"':
            if ((f & F_EXPECT) && in_map(s->depth, s->maps)) {
                s->json_state = J_KEY;
                s->key_len = 0;
                break;
            }

            s->json_state = J_STRING;

            /* usage_key, choices_key, content_key, type_key end here */
            s->json_flags = (f & (F_MODEL | F_EXPECT))
                            | ((f & F_CONTENT) ? F_OPEN : 0);

            if (f & F_TYPE) {
                s->in_type = 1;
                s->key_len = 0;
            }

            if (f & F_MODEL) {
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
            m = key_meaning(s->depth, s->depth == s->usage_depth, s->key,
                            s->key_len);

            s->json_state = J_VALUE;

            /* expect_key ends; only a top-level key sets choices_key */
            s->json_flags = (f & (F_OPEN | ((s->depth == 1) ? 0 : F_CHOICES)))
                            | (m & K_FLAGS);
            s->done_key = (m & K_DONE) != 0;
            s->num_key = K_NUM(m);
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
        if (s->in_type) {
            if (c == '"') {
                type_done(s);

            } else if (c == '\\') {
                s->key_len = NEBULA_KEY_MAX;    /* escaped: none of ours */

            } else if (s->key_len < NEBULA_KEY_MAX) {
                s->key[s->key_len++] = c;
            }
        }

        if (f & F_OPEN) {
            s->json_flags = f & ~F_OPEN;
            s->in_content = 1;

            if (c != '"' && !s->doc_content) {
                s->doc_content = 1;
                s->content_docs++;
            }
        }

        if (c == '"') {
            s->json_state = J_VALUE;
            s->json_flags &= ~F_MODEL;
            s->in_content = 0;

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
            s->told = 1;
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


/*
 * The fast paths.  Most of a body is the inside of strings and keys, and
 * lines an SSE scanner passes as they are: bytes that change nothing but
 * where the next interesting byte is.  Those are skipped 16 bytes at a
 * time, and the tokens between them are taken a token, not a byte, at a
 * time.  What is rare or cut by the end of a slice (a CR, a field name
 * but "data", "[DONE]", a number we count, a line end inside a token)
 * goes on byte by byte as above.  Both paths leave exactly the same state
 * after every byte: the fuzz targets hold this file to the byte-at-a-time
 * scanner it replaced (t/fuzz/stream_ref.c).  (The skip to the next byte
 * a string or a key stops at, nebula_find_stop(), is in
 * nebula_stream_int.h: the memo reads texts with it.)
 */


/* what a byte is between tokens */
enum {
    V_PLAIN = 0,        /* ':', whitespace, numbers, literals */
    V_QUOTE,
    V_COMMA,
    V_OPEN,
    V_CLOSE,
    V_EOL               /* CR, LF: a line end, or whitespace */
};


static const unsigned char  value_class[256] = {
    ['"'] = V_QUOTE, [','] = V_COMMA, ['{'] = V_OPEN, ['['] = V_OPEN,
    ['}'] = V_CLOSE, [']'] = V_CLOSE, ['\r'] = V_EOL, ['\n'] = V_EOL
};


/*
 * A run of JSON bytes, as json_byte() would take them one by one.  It
 * stops at an event (consumed, *ev set), at a line end the framing must
 * see, and where json_byte() must go on: after a key that names a count,
 * or when what settles "done" or an empty "choices" lies beyond a line
 * end or the slice.  The state it moves through most is held in locals
 * and written back once at the end.
 *
 * The bytes of a tool call it passes are counted by their addresses: the
 * address where they begin in this run is taken from tool_bytes (where
 * the value opens, or at the start of a run in one) and the address where
 * they end added (where it closes, its line ends, or the run ends), in
 * unsigned arithmetic: right once the run returns.  A pointer held
 * through the run instead costs every run more, in registers.
 */
static const unsigned char *
json_run(nebula_stream_t *s, const unsigned char *p, const unsigned char *end,
    nebula_event_e *ev)
{
    size_t                n;
    uint32_t              depth;
    uint64_t              maps;
    unsigned              f, m, state, key_len;
    unsigned char         c, lf, cr;
    const unsigned char  *q;

    state = s->json_state;

    if ((state == J_VALUE && (s->num_key || s->done_key || s->choices_open))
        || s->in_type)
    {
        return p;
    }

    if (s->tool_depth) {
        s->tool_bytes -= (uintptr_t) p;
    }

    /* the line ends the framing owns: JSON none, NDJSON LF, SSE both */
    lf = (s->format != NEBULA_FORMAT_JSON) ? '\n' : 0;
    cr = (s->format == NEBULA_FORMAT_SSE) ? '\r' : 0;

#define FRAMING(c)  ((c) <= '\r' && ((c) == lf || (c) == cr) && (c) != 0)

    depth = s->depth;
    maps = s->maps;
    key_len = s->key_len;

    f = s->json_flags;

    switch (state) {
    case J_VALUE:
        goto value;
    case J_KEY:
        goto key;
    case J_STRING:
        goto string;
    default:
        goto escape;
    }

value:

    state = J_VALUE;

    for ( ;; ) {
        if (p == end) {
            goto done;
        }

        c = *p;

        switch (value_class[c]) {

        case V_PLAIN:
            /* the rest of a number or a literal, whitespace */
            do {
                p++;
            } while (p != end && value_class[*p] == V_PLAIN);

            break;

        case V_QUOTE:
            p++;

            if ((f & F_EXPECT) && in_map(depth, maps)) {
                key_len = 0;
                goto key;
            }

            goto string_value;

        case V_COMMA:
            p++;
            goto comma;

        case V_OPEN:
            p++;

            if (depth < 64) {
                if (c == '{') {
                    maps |= (uint64_t) 1 << depth;

                } else {
                    maps &= ~((uint64_t) 1 << depth);
                }
            }

            depth++;

            m = f;
            f = (f & F_OPEN) | ((c == '{') ? F_EXPECT : 0);

            if ((m & (F_USAGE | F_CHOICES | F_TOOLS)) == 0) {
                /* most often: no key of ours opened it */
                break;
            }

            if ((m & F_TOOLS) && s->tool_depth == 0) {
                /* a tool call's value, from this byte */
                s->tool_depth = (unsigned char) depth;
                s->tool_bytes -= (uintptr_t) (p - 1);
                s->told = 1;
            }

            if (c == '{' && (m & F_USAGE) && s->usage_depth == 0) {
                s->usage_depth = (unsigned char) depth;
                s->doc_usage = 1;
            }

            if (depth != 2) {
                break;
            }

            if (c == '[' && (m & F_CHOICES)) {
                /* the next byte but whitespace tells an empty "choices" */
                if (p == end || *p == ' ' || *p == '\t' || *p == '\r'
                    || *p == '\n')
                {
                    s->choices_open = 1;
                    goto done;
                }

                if (*p == ']') {
                    s->doc_choices_empty = 1;
                }
            }

            break;

        case V_CLOSE:
            p++;

            if (depth == s->tool_depth) {
                /* the tool call's value, to this byte (0: none is open) */
                if (depth != 0) {
                    s->tool_bytes += (uintptr_t) p;
                    s->tool_depth = 0;
                }
            }

            if (depth == s->usage_depth) {
                s->usage_depth = 0;
            }

            if (depth > 0) {
                depth--;
            }

            f &= ~(F_EXPECT | F_MODEL);

            break;

        default: /* V_EOL */
            if (c == '\n' && lf && !cr) {
                /* NDJSON: the line ends, its JSON is complete */
                if (s->tool_depth) {
                    s->tool_bytes += (uintptr_t) p;
                }

                p++;
                json_reset(s);
                depth = 0;
                maps = 0;
                key_len = 0;
                f = 0;
                break;
            }

            if (FRAMING(c)) {
                goto done;
            }

            p++;
        }
    }

comma:

    f = (f & F_OPEN) | (in_map(depth, maps) ? F_EXPECT : 0);

    /* most often next: a key */
    if (p != end && *p == '"' && (f & F_EXPECT)) {
        p++;
        key_len = 0;
        goto key;
    }

    goto value;

key:

    state = J_KEY;

    if (key_len == 0) {
        q = nebula_find_stop(p, end);

        if (q != end && *q == '"') {
            /* the whole key is here: it is read where it lies */
            n = (size_t) (q - p);
            key_len = (n < NEBULA_KEY_MAX) ? n : NEBULA_KEY_MAX;
            m = key_meaning(depth, depth == s->usage_depth, p, key_len);
            p = q + 1;
            goto key_done;
        }
    }

    for ( ;; ) {
        q = nebula_find_stop(p, end);

        n = (size_t) (q - p);
        if (n > NEBULA_KEY_MAX - key_len) {
            n = NEBULA_KEY_MAX - key_len;
        }

        memcpy(s->key + key_len, p, n);
        key_len += n;
        p = q;

        if (p == end) {
            goto done;
        }

        c = *p;

        if (c == '"') {
            p++;
            m = key_meaning(depth, depth == s->usage_depth, s->key, key_len);
            goto key_done;
        }

        if (FRAMING(c)) {
            goto done;
        }

        p++;

        if (c == '\\') {
            /* an escaped key is not ours */
            key_len = NEBULA_KEY_MAX;
            state = J_KEY_ESCAPE;
            goto escape;
        }

        /* a CR or LF that is no line end here: a byte of the key */
        if (key_len < NEBULA_KEY_MAX) {
            s->key[key_len++] = c;
        }
    }

key_done:

    /* expect_key ends; only a top-level key sets or clears choices_key */
    f = (f & (F_OPEN | ((depth == 1) ? 0 : F_CHOICES))) | (m & K_FLAGS);

    if (K_NUM(m)) {
        /* the number is read byte by byte */
        s->num_key = K_NUM(m);
        state = J_VALUE;
        goto done;
    }

    if (m & K_DONE) {
        /* "done": its value is settled by its first byte */
        while (p != end && (*p == ':' || *p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == end || *p == '\r' || *p == '\n') {
            s->done_key = 1;
            state = J_VALUE;
            goto done;
        }

        s->done |= (*p == 't');
        s->told = 1;
    }

    /* most often next: the colon, a no-op, and a string */
    if (p != end && *p == ':') {
        p++;
    }

    if (p == end || *p != '"') {
        goto value;
    }

    p++;

string_value:

    if (f & F_TYPE) {
        /* an event's type: read byte by byte (json_byte()), it is short */
        s->in_type = 1;
        key_len = 0;
        f &= F_EXPECT;
        state = J_STRING;
        goto done;
    }

    /* a string value opens: usage_key, choices_key, content_key end */
    f = (f & (F_MODEL | F_EXPECT)) | ((f & F_CONTENT) ? F_OPEN : 0);

    if (f & F_MODEL) {
        if (s->keep_len != 0 && (size_t) (end - p) >= s->keep_len
            && memcmp(p, s->keep, s->keep_len) == 0)
        {
            /*
             * The value is the one the caller keeps, its closing quote in
             * this slice: a string like any other, no events.
             */
            p += s->keep_len;
            f &= ~F_MODEL;
            state = J_VALUE;

            if (p != end && *p == ',') {
                p++;
                goto comma;
            }

            goto value;
        }

        s->in_model = 1;
        state = J_STRING;
        *ev = NEBULA_EV_MODEL_START;
        goto done;
    }

    if ((f & F_OPEN) && s->memo && s->tool_depth == 0) {
        /*
         * A memo's stretch ends where the text, which differs, begins
         * (but in a tool call, whose bytes nebula_memo_scan() does not
         * count)
         */
        state = J_STRING;
        *ev = EV_TEXT_OPEN;
        goto done;
    }

string:

    state = J_STRING;

    if (f & F_OPEN) {
        if (p == end) {
            goto done;
        }

        c = *p;

        if (FRAMING(c)) {
            goto done;
        }

        f &= ~F_OPEN;
        s->in_content = 1;

        if (c != '"' && !s->doc_content) {
            s->doc_content = 1;
            s->content_docs++;
        }
    }

    for ( ;; ) {
        p = nebula_find_stop(p, end);

        if (p == end) {
            goto done;
        }

        c = *p;

        if (c == '"') {
            p++;
            f &= ~F_MODEL;

            if (s->in_model) {
                s->in_model = 0;
                state = J_VALUE;
                *ev = NEBULA_EV_MODEL_END;
                goto done;
            }

            if (s->in_content) {
                s->in_content = 0;

                if (s->memo) {
                    /* and a stretch begins again after it */
                    state = J_VALUE;
                    *ev = EV_TEXT_CLOSE;
                    goto done;
                }
            }

            /* most often next: a comma */
            if (p != end && *p == ',') {
                p++;
                state = J_VALUE;
                goto comma;
            }

            goto value;
        }

        if (FRAMING(c)) {
            goto done;
        }

        p++;

        if (c == '\\') {
            state = J_STRING_ESCAPE;
            goto escape;
        }
    }

escape:

    /* the byte after a backslash, whatever it is, unless a line end */
    if (p == end) {
        goto done;
    }

    c = *p;

    if (FRAMING(c)) {
        goto done;
    }

    p++;

    if (state == J_KEY_ESCAPE) {
        goto key;
    }

    goto string;

done:

#undef FRAMING

    if (s->tool_depth) {
        s->tool_bytes += (uintptr_t) p;
    }

    s->json_state = state;
    s->depth = depth;
    s->maps = maps;
    s->key_len = key_len;
    s->json_flags = f;

    return p;
}


/*
 * SSE: the plain stretches of lines, and the line ends after them; it
 * stops at an event (consumed, *ev set), and where sse_byte() must go on:
 * a CR, a field name but "data" or one a slice cuts, the start of a
 * "[DONE]".
 */
static const unsigned char *
sse_run(nebula_stream_t *s, const unsigned char *p, const unsigned char *end,
    nebula_event_e *ev)
{
    unsigned char  c;

    if (s->after_cr) {
        return p;
    }

    while (p != end) {

        switch (s->line_state) {

        case L_START:
            if (*p == '\n') {
                /* a blank line ends the event: its JSON is complete */
                s->usage_only = s->doc_choices_empty && s->doc_usage;
                json_reset(s);
                *ev = NEBULA_EV_EVENT_END;
                return p + 1;
            }

            /* "data:" whole in this slice, as sse_byte() would take it */
            if (end - p < 5 || memcmp(p, "data:", 5) != 0) {
                return p;
            }

            memcpy(s->field, "data", 4);
            s->field_len = 4;
            s->line_state = L_DATA_SPACE;
            p += 5;

            if (p == end) {
                return p;
            }

            /* fall through */

        case L_DATA_SPACE:
            c = *p;

            if (c == '\r' || c == '\n') {
                return p;
            }

            s->line_state = L_DATA;
            s->done_pos = 0;

            if (c == ' ') {
                p++;

                if (p == end) {
                    return p;
                }
            }

            /* fall through */

        case L_DATA:
            if (s->done_pos < 7) {
                c = *p;

                if (c == '\r' || c == '\n'
                    || (s->done_pos < 6
                        && c == (unsigned char) "[DONE]"[s->done_pos]))
                {
                    return p;
                }

                /* what sse_byte() does to it, before json_run() takes it */
                s->done_pos = 7;
            }

            p = json_run(s, p, end, ev);

            if (*ev != NEBULA_EV_NONE || p == end || *p != '\n') {
                return p;
            }

            /*
             * An LF ends the line, whatever json_run() stopped for; no
             * "[DONE]" ended here, done_pos is 7.
             */
            p++;
            s->line_state = L_START;
            break;

        case L_SKIP:
            for ( ;; ) {
                p = nebula_find_stop(p, end);

                if (p == end) {
                    return p;
                }

                if (*p == '\r' || *p == '\n') {
                    break;
                }

                p++;
            }

            if (*p == '\r') {
                return p;
            }

            p++;
            s->line_state = L_START;
            break;

        default:
            return p;
        }
    }

    return p;
}


/*
 * Each format's fast path, and a byte the slow way where it stops, until
 * an event or the slice's end
 */
size_t
nebula_stream_walk(nebula_stream_t *s, const unsigned char *p, size_t len,
    nebula_event_e *ev)
{
    nebula_event_e        e;
    const unsigned char  *q, *end, *start;

    q = p;
    end = p + len;
    e = NEBULA_EV_NONE;

    while (q < end) {

        switch (s->format) {

        case NEBULA_FORMAT_SSE:
            q = sse_run(s, q, end, &e);
            break;

        case NEBULA_FORMAT_NDJSON:
            start = q;
            q = json_run(s, q, end, &e);

            if (q != start) {
                /* an LF json_run() passed ended the line, as any LF */
                s->mid_line = (q[-1] != '\n');
            }

            break;

        default:
            q = json_run(s, q, end, &e);
        }

        if (e != NEBULA_EV_NONE || q == end) {
            break;
        }

        /* one byte the slow way */

        switch (s->format) {

        case NEBULA_FORMAT_SSE:
            e = sse_byte(s, *q);
            break;

        case NEBULA_FORMAT_NDJSON:
            if (*q == '\n') {
                /* a raw LF never occurs inside a JSON token */
                json_reset(s);
                s->mid_line = 0;
                e = NEBULA_EV_NONE;
                break;
            }

            s->mid_line = 1;

            /* fall through */

        default:
            e = json_byte(s, *q);
        }

        q++;

        if (e != NEBULA_EV_NONE) {
            break;
        }
    }

    *ev = e;
    return (size_t) (q - p);
}


void
nebula_stream_keep(nebula_stream_t *s, const unsigned char *value,
    size_t len)
{
    s->keep = value;
    s->keep_len = (len <= UINT32_MAX) ? (uint32_t) len : 0;
}


void
nebula_stream_quiet(nebula_stream_t *s, int on)
{
    s->quiet = (on != 0);
}
