/*
 * Unit tests of the response scanner (nebula_stream.c): the public model
 * name restored in JSON, NDJSON and SSE bodies fed in arbitrary slices,
 * and the scanner held to the byte-at-a-time one it replaced.
 */

#include <stdlib.h>

#include "nebula_stream.h"
#include "tap.h"
#include "../fuzz/stream_ref.c"


#define PUBLIC  "\"pub/lic:1\""


typedef struct {
    char    *data;
    size_t   len;
    int      skipping;
} out_t;


static void
emit(out_t *o, const unsigned char *p, size_t n)
{
    memcpy(o->data + o->len, p, n);
    o->len += n;
}


/* what the nginx filter does with each slice */
static void
feed(nebula_stream_t *s, out_t *o, const unsigned char *p, size_t len)
{
    size_t          n, start, pos;
    nebula_event_e  ev;

    pos = 0;
    start = 0;

    while (pos < len) {
        n = nebula_stream_scan(s, p + pos, len - pos, &ev);
        pos += n;

        if (ev == NEBULA_EV_EVENT_END) {
            emit(o, p + start, pos - start);
            start = pos;
            continue;
        }

        if (ev == NEBULA_EV_MODEL_END) {
            o->skipping = 0;
            start = pos;
            continue;
        }

        if (o->skipping) {
            start = pos;
            continue;
        }

        if (ev == NEBULA_EV_MODEL_START) {
            emit(o, p + start, pos - 1 - start);
            emit(o, (const unsigned char *) PUBLIC, strlen(PUBLIC));
            o->skipping = 1;
            start = pos;
            continue;
        }

        emit(o, p + start, pos - start);
        start = pos;
    }
}


/* feeds input cut at the given points; returns the output, NUL-ended */
static char *
run(nebula_format_e format, const char *input, const size_t *cuts,
    size_t ncuts)
{
    nebula_stream_t  s;
    out_t            o;
    size_t           i, prev, len;

    len = strlen(input);
    o.data = malloc(len * 4 + 64);
    o.len = 0;
    o.skipping = 0;

    nebula_stream_init(&s, format);

    prev = 0;

    for (i = 0; i <= ncuts; i++) {
        size_t  at = (i < ncuts) ? cuts[i] : len;

        feed(&s, &o, (const unsigned char *) input + prev, at - prev);
        prev = at;
    }

    o.data[o.len] = '\0';
    return o.data;
}


static int
every_split(nebula_format_e format, const char *input, const char *want)
{
    size_t   len, a, b, cuts[2];
    char    *got;
    int      bad;

    len = strlen(input);
    bad = 0;

    for (a = 0; a <= len && !bad; a++) {
        for (b = a; b <= len && !bad; b += 7) {
            cuts[0] = a;
            cuts[1] = b;
            got = run(format, input, cuts, 2);

            if (strcmp(got, want) != 0) {
                printf("# cut at %zu and %zu:\n# got:  %s\n# want: %s\n",
                       a, b, got, want);
                bad = 1;
            }

            free(got);
        }
    }

    return !bad;
}


static int
byte_by_byte(nebula_format_e format, const char *input, const char *want)
{
    size_t   i, len, *cuts;
    char    *got;
    int      same;

    len = strlen(input);
    cuts = malloc(len * sizeof(size_t) + 1);

    for (i = 0; i < len; i++) {
        cuts[i] = i;
    }

    got = run(format, input, cuts, len);
    same = strcmp(got, want) == 0;

    if (!same) {
        printf("# got:  %s\n# want: %s\n", got, want);
    }

    free(got);
    free(cuts);
    return same;
}


static void
test_sse(void)
{
    const char  *in, *want;

    in = "data: {\"id\":\"c1\",\"model\":\"up:8b\",\"choices\":[{\"delta\":"
         "{\"content\":\"h\\u00e9 \\\"model\\\": x\",\"model\":\"keep\"}}]}\n\n"
         ": keep-alive comment with \"model\":\"x\"\n\n"
         "event: message\r\ndata: {\"model\" : \"up:8b\", \"x\":[1,2]}\r\n\r\n"
         "data:{\"choices\":[],\"usage\":{\"prompt_tokens\":3},"
         "\"model\":\"up:8b\"}\n\n"
         "data: {\"model\":\"a\\\"b\"}\n\n"
         "data: [DONE]\n\n";

    want = "data: {\"id\":\"c1\",\"model\":" PUBLIC ",\"choices\":[{\"delta\":"
           "{\"content\":\"h\\u00e9 \\\"model\\\": x\",\"model\":\"keep\"}}]}\n\n"
           ": keep-alive comment with \"model\":\"x\"\n\n"
           "event: message\r\ndata: {\"model\" : " PUBLIC ", \"x\":[1,2]}\r\n\r\n"
           "data:{\"choices\":[],\"usage\":{\"prompt_tokens\":3},"
           "\"model\":" PUBLIC "}\n\n"
           "data: {\"model\":" PUBLIC "}\n\n"
           "data: [DONE]\n\n";

    ok(every_split(NEBULA_FORMAT_SSE, in, want),
       "SSE: restored at every split into three slices");
    ok(byte_by_byte(NEBULA_FORMAT_SSE, in, want), "SSE: byte by byte");

    /* a broken event does not spoil the next one */
    in = "data: {\"a\":[[[{\n\ndata: {\"model\":\"up\"}\n\n";
    want = "data: {\"a\":[[[{\n\ndata: {\"model\":" PUBLIC "}\n\n";
    ok(every_split(NEBULA_FORMAT_SSE, in, want),
       "SSE: an unbalanced event is forgotten at its end");

    /* multi-line data is one JSON document */
    in = "data: {\"x\":1,\ndata: \"model\":\"up\"}\n\n";
    want = "data: {\"x\":1,\ndata: \"model\":" PUBLIC "}\n\n";
    ok(every_split(NEBULA_FORMAT_SSE, in, want), "SSE: multi-line data");

    /* UTF-8 split anywhere passes through untouched */
    in = "data: {\"model\":\"up\",\"c\":\"w\xc3\xb6rld \xe4\xbd\xa0 "
         "\xf0\x9f\x99\x82\"}\n\n";
    want = "data: {\"model\":" PUBLIC ",\"c\":\"w\xc3\xb6rld \xe4\xbd\xa0 "
           "\xf0\x9f\x99\x82\"}\n\n";
    ok(byte_by_byte(NEBULA_FORMAT_SSE, in, want), "SSE: UTF-8 intact");
}


static void
test_ndjson(void)
{
    const char  *in, *want;

    in = "{\"model\":\"gemma3:1b\",\"message\":{\"role\":\"assistant\","
         "\"content\":\"Hi\"},\"done\":false}\n"
         "{\"model\":\"gemma3:1b\",\"done\":true,\"prompt_eval_count\":5,"
         "\"eval_count\":2}\n";
    want = "{\"model\":" PUBLIC ",\"message\":{\"role\":\"assistant\","
           "\"content\":\"Hi\"},\"done\":false}\n"
           "{\"model\":" PUBLIC ",\"done\":true,\"prompt_eval_count\":5,"
           "\"eval_count\":2}\n";

    ok(every_split(NEBULA_FORMAT_NDJSON, in, want), "NDJSON: every split");
    ok(byte_by_byte(NEBULA_FORMAT_NDJSON, in, want), "NDJSON: byte by byte");

    in = "{\"error\":\"model 'x' not found\"}\n";
    ok(every_split(NEBULA_FORMAT_NDJSON, in, in),
       "NDJSON: an error without a model key passes unchanged");
}


static void
test_json(void)
{
    const char  *in, *want;

    in = "{\n  \"id\": \"chatcmpl-1\",\n  \"model\": \"up:8b\",\n"
         "  \"choices\": [{\"message\": {\"model\": \"x\"}}],\n"
         "  \"usage\": {\"prompt_tokens\": 1, \"model\": \"no\"}\n}\n";
    want = "{\n  \"id\": \"chatcmpl-1\",\n  \"model\": " PUBLIC ",\n"
           "  \"choices\": [{\"message\": {\"model\": \"x\"}}],\n"
           "  \"usage\": {\"prompt_tokens\": 1, \"model\": " PUBLIC "}"
           "\n}\n";

    ok(every_split(NEBULA_FORMAT_JSON, in, want), "JSON: pretty-printed");

    /*
     * A value that is not a string is left alone, and a model deeper than
     * a top-level object's
     */
    in = "{\"model\":null,\"x\":[{\"model\":\"up\"}],\"y\":{\"z\":"
         "{\"model\":\"up\"}}}";
    ok(every_split(NEBULA_FORMAT_JSON, in, in), "JSON: model null kept");

    /* Anthropic's message_start, the Responses API's response.created */
    in = "event: message_start\ndata: {\"type\":\"message_start\","
         "\"message\":{\"id\":\"msg_1\",\"model\":\"up:8b\",\"content\":[],"
         "\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n"
         "event: response.created\ndata: {\"response\":{\"id\":\"resp_1\","
         "\"model\":\"up:8b\",\"usage\":null},\"type\":\"response.created\"}"
         "\n\n";
    want = "event: message_start\ndata: {\"type\":\"message_start\","
         "\"message\":{\"id\":\"msg_1\",\"model\":" PUBLIC ",\"content\":[],"
         "\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n"
         "event: response.created\ndata: {\"response\":{\"id\":\"resp_1\","
         "\"model\":" PUBLIC ",\"usage\":null},\"type\":\"response.created\"}"
         "\n\n";
    ok(every_split(NEBULA_FORMAT_SSE, in, want),
       "SSE: message.model and response.model");

    /* a key that merely starts like ours */
    in = "{\"models\":\"up\",\"mode\":\"up\",\"model\":\"up\"}";
    want = "{\"models\":\"up\",\"mode\":\"up\",\"model\":" PUBLIC "}";
    ok(every_split(NEBULA_FORMAT_JSON, in, want), "JSON: only the exact key");
}


/* the usage counts found when the input is cut at every point */
static int
usage_every_split(nebula_format_e format, const char *input, int64_t prompt,
    int64_t completion)
{
    nebula_stream_t  s;
    out_t            o;
    size_t           a, len;
    int64_t          p, c;

    len = strlen(input);
    o.data = malloc(len * 4 + 64);

    for (a = 0; a <= len; a++) {
        o.len = 0;
        o.skipping = 0;
        nebula_stream_init(&s, format);
        feed(&s, &o, (const unsigned char *) input, a);
        feed(&s, &o, (const unsigned char *) input + a, len - a);

        p = s.has_prompt ? (int64_t) s.prompt_tokens : -1;
        c = s.has_completion ? (int64_t) s.completion_tokens : -1;

        if (p != prompt || c != completion) {
            printf("# cut at %zu: prompt %lld completion %lld\n", a,
                   (long long) p, (long long) c);
            free(o.data);
            return 0;
        }
    }

    free(o.data);
    return 1;
}


static void
test_usage(void)
{
    ok(usage_every_split(NEBULA_FORMAT_SSE,
       "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"x\"}}],"
       "\"usage\":null}\n\n"
       "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":123,"
       "\"completion_tokens\":4567,\"total_tokens\":4690}}\n\n"
       "data: [DONE]\n\n", 123, 4567), "SSE: the usage chunk");

    ok(usage_every_split(NEBULA_FORMAT_JSON,
       "{\"id\":\"c\",\"choices\":[{\"message\":{\"content\":"
       "\"prompt_tokens: 9\"},\"usage\":{\"prompt_tokens\":1}}],"
       "\"usage\" : { \"completion_tokens\" : 12 , \"prompt_tokens\" : 10 ,"
       "\"total_tokens\":22 } }", 10, 12),
       "JSON: top-level usage only, spaces anywhere");

    ok(usage_every_split(NEBULA_FORMAT_NDJSON,
       "{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n"
       "{\"model\":\"m\",\"done\":true,\"total_duration\":5589157167,"
       "\"prompt_eval_count\":26,\"prompt_eval_duration\":1,"
       "\"eval_count\":298,\"eval_duration\":4799921000}\n", 26, 298),
       "NDJSON: prompt_eval_count and eval_count");

    ok(usage_every_split(NEBULA_FORMAT_NDJSON,
       "{\"model\":\"m\",\"done\":true,\"eval_count\":7}\n", -1, 7),
       "NDJSON: a cached prompt without prompt_eval_count");

    ok(usage_every_split(NEBULA_FORMAT_JSON,
       "{\"usage\":{\"prompt_tokens\":null,\"completion_tokens\":\"5\","
       "\"x\":{\"prompt_tokens\":3}}}", -1, -1),
       "JSON: counts that are not numbers are ignored");

    ok(usage_every_split(NEBULA_FORMAT_JSON,
       "{\"usage\":{\"prompt_tokens\":4,\"prompt_tokens_details\":"
       "{\"cached_tokens\":2,\"completion_tokens\":9},"
       "\"completion_tokens\":5}}", 4, 5),
       "JSON: a count after an object inside usage");

    /* Anthropic: message_start's estimate, message_delta's real counts */
    ok(usage_every_split(NEBULA_FORMAT_SSE,
       "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
       "{\"id\":\"msg_1\",\"model\":\"m\",\"content\":[],\"usage\":"
       "{\"input_tokens\":30,\"output_tokens\":0}}}\n\n"
       "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
       "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":"
       "\"input_tokens\"}}\n\n"
       "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
       "{\"stop_reason\":\"end_turn\",\"usage\":{\"output_tokens\":1}},"
       "\"usage\":{\"input_tokens\":26,\"output_tokens\":298}}\n\n"
       "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
       26, 298), "SSE: Anthropic's message_start and message_delta");

    ok(usage_every_split(NEBULA_FORMAT_JSON,
       "{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[{\"type\":"
       "\"text\",\"text\":\"hi\"}],\"usage\":{\"input_tokens\":12,"
       "\"output_tokens\":6}}", 12, 6), "JSON: Anthropic's message");

    /* Responses: usage null in response.created, the counts at the end */
    ok(usage_every_split(NEBULA_FORMAT_SSE,
       "event: response.created\ndata: {\"response\":{\"model\":\"m\","
       "\"usage\":null},\"sequence_number\":0,\"type\":\"response.created\"}"
       "\n\n"
       "event: response.completed\ndata: {\"response\":{\"model\":\"m\","
       "\"output\":[{\"content\":[{\"text\":\"hi\",\"usage\":{"
       "\"input_tokens\":1}}]}],\"usage\":{\"input_tokens\":7,"
       "\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":8,"
       "\"output_tokens_details\":{\"reasoning_tokens\":0},"
       "\"total_tokens\":15}},\"sequence_number\":9,"
       "\"type\":\"response.completed\"}\n\n", 7, 8),
       "SSE: the Responses API's response.completed");
}


/* the events of a whole SSE body cut at every point: ends, usage-only */
static void
test_events(void)
{
    const char       *in;
    nebula_stream_t   s;
    nebula_event_e    ev;
    size_t            len, a, i, n, ends, usage_only, last_end;
    int               ok_all;

    in = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
         ": comment\n\n"
         "data: {\"choices\":[{\"delta\":{\"content\":\"\"},"
         "\"finish_reason\":\"stop\"}]}\n\n"
         "data: {\"id\":\"x\",\"choices\": [ ],\"usage\":{\"prompt_tokens\":3,"
         "\"completion_tokens\":1}}\n\n"
         "data: [DONE]\n\n";
    len = strlen(in);
    ok_all = 1;

    for (a = 0; a <= len; a++) {
        nebula_stream_init(&s, NEBULA_FORMAT_SSE);
        ends = 0;
        usage_only = 0;
        last_end = 0;

        for (i = 0; i < len; i += n) {
            size_t  lim = (i < a) ? a - i : len - i;

            n = nebula_stream_scan(&s, (const unsigned char *) in + i, lim, &ev);

            if (ev == NEBULA_EV_EVENT_END) {
                ends++;
                usage_only += s.usage_only;

                if (s.usage_only) {
                    last_end = i + n;
                }
            }
        }

        if (ends != 5 || usage_only != 1 || s.content_docs != 1
            || strncmp(in + last_end, "data: [DONE]", 12) != 0)
        {
            printf("# cut at %zu: %zu ends, %zu usage-only, %llu content\n",
                   a, ends, usage_only, (unsigned long long) s.content_docs);
            ok_all = 0;
            break;
        }
    }

    ok(ok_all, "SSE: five event ends, one usage-only chunk, one with text");

    nebula_stream_init(&s, NEBULA_FORMAT_NDJSON);
    in = "{\"message\":{\"content\":\"a\"},\"done\":false}\n"
         "{\"message\":{\"content\":\"b\"},\"done\":false}\n"
         "{\"message\":{\"content\":\"\"},\"done\":true,\"eval_count\":2}\n";
    (void) nebula_stream_scan(&s, (const unsigned char *) in, strlen(in), &ev);
    is_int(s.content_docs, 2, "NDJSON /api/chat: two lines with text");

    nebula_stream_init(&s, NEBULA_FORMAT_NDJSON);
    in = "{\"response\":\"a\",\"done\":false}\n{\"response\":\"\\\"\",\"done\":false}\n";
    (void) nebula_stream_scan(&s, (const unsigned char *) in, strlen(in), &ev);
    is_int(s.content_docs, 2, "NDJSON /api/generate: two lines with text");

    /* a thinking model's reasoning is output the upstream bills */
    nebula_stream_init(&s, NEBULA_FORMAT_NDJSON);
    in = "{\"message\":{\"role\":\"assistant\",\"content\":\"\","
         "\"thinking\":\"hm\"},\"done\":false}\n"
         "{\"message\":{\"content\":\"ok\"},\"done\":false}\n";
    (void) nebula_stream_scan(&s, (const unsigned char *) in, strlen(in), &ev);
    is_int(s.content_docs, 2, "NDJSON /api/chat: message.thinking counts");

    nebula_stream_init(&s, NEBULA_FORMAT_NDJSON);
    in = "{\"response\":\"\",\"thinking\":\"hm\",\"done\":false}\n";
    (void) nebula_stream_scan(&s, (const unsigned char *) in, strlen(in), &ev);
    is_int(s.content_docs, 1, "NDJSON /api/generate: thinking counts");

    nebula_stream_init(&s, NEBULA_FORMAT_SSE);
    in = "data: {\"choices\":[{\"delta\":{\"reasoning\":\"a\"}}]}\n\n"
         "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"b\"}}]}\n\n"
         "data: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\n\n"
         "data: {\"choices\":[{\"delta\":{\"reasoning\":\"\"}}]}\n\n";
    for (i = 0, len = strlen(in); i < len; i += n) {
        n = nebula_stream_scan(&s, (const unsigned char *) in + i, len - i,
                               &ev);
    }
    is_int(s.content_docs, 3, "SSE: delta.reasoning and reasoning_content count");

    /* /v1/completions streams choices[].text; a text elsewhere is none */
    nebula_stream_init(&s, NEBULA_FORMAT_SSE);
    in = "data: {\"choices\":[{\"text\":\"a\",\"index\":0}]}\n\n"
         "data: {\"choices\":[{\"text\":\"\",\"index\":0}]}\n\n"
         "data: {\"choices\":[{\"text\":\"b\"}],\"text\":\"c\"}\n\n"
         "data: {\"choices\":[{\"delta\":{\"text\":\"d\"}}]}\n\n";
    for (i = 0, len = strlen(in); i < len; i += n) {
        n = nebula_stream_scan(&s, (const unsigned char *) in + i, len - i,
                               &ev);
    }
    is_int(s.content_docs, 2, "SSE: /v1/completions' choices[].text counts");
}


/*
 * The fast paths: a run skipped 16 bytes at a time, a token taken whole,
 * cut by the end of a slice anywhere.
 */
static void
test_fast_paths(void)
{
    const char  *in, *want;

    /* a model value and strings longer than a block, escapes at its edges */
    in = "data: {\"id\":\"0123456789abcde\\\"0123456789abcdef0123\\\\\","
         "\"model\":\"a-model-name-of-more-than-thirty-two-bytes:latest\","
         "\"choices\":[{\"delta\":{\"content\":\"\\\\0123456789abcdef\"}}]}"
         "\n\n";
    want = "data: {\"id\":\"0123456789abcde\\\"0123456789abcdef0123\\\\\","
           "\"model\":" PUBLIC ","
           "\"choices\":[{\"delta\":{\"content\":\"\\\\0123456789abcdef\"}}]}"
           "\n\n";
    ok(every_split(NEBULA_FORMAT_SSE, in, want),
       "SSE: long values and escapes at every split");

    /* lines skipped whole: comments and other fields, long, with quotes */
    in = ": a comment longer than a block, with \"model\":\"x\" in it\n"
         "id: 0123456789abcdef0123456789\r\n"
         "event: \"model\"\n"
         "data: {\"model\":\"up\"}\n\n";
    want = ": a comment longer than a block, with \"model\":\"x\" in it\n"
           "id: 0123456789abcdef0123456789\r\n"
           "event: \"model\"\n"
           "data: {\"model\":" PUBLIC "}\n\n";
    ok(every_split(NEBULA_FORMAT_SSE, in, want),
       "SSE: skipped lines at every split");

    /* keys longer than NEBULA_KEY_MAX, escaped, or like ours but for one */
    in = "{\"a_key_far_longer_than_twenty_bytes\":1,\"mod\\u0065l\":\"x\","
         "\"modelx\":\"x\",\"model\":\"up\"}";
    want = "{\"a_key_far_longer_than_twenty_bytes\":1,\"mod\\u0065l\":\"x\","
           "\"modelx\":\"x\",\"model\":" PUBLIC "}";
    ok(every_split(NEBULA_FORMAT_JSON, in, want),
       "JSON: long and escaped keys at every split");

    /* JSON: CR, LF and other control bytes inside strings are plain */
    in = "{\"x\":\"a\nb\r\tc\x01\",\"k\ney\":1,\"model\":\"up\"}";
    want = "{\"x\":\"a\nb\r\tc\x01\",\"k\ney\":1,\"model\":" PUBLIC "}";
    ok(every_split(NEBULA_FORMAT_JSON, in, want),
       "JSON: line ends inside strings at every split");

    /* NDJSON: a line cut inside a string; the next is read afresh */
    in = "{\"x\":\"broken\n{\"model\":\"up\",\"y\":\"\\\\\"}\n";
    want = "{\"x\":\"broken\n{\"model\":" PUBLIC ",\"y\":\"\\\\\"}\n";
    ok(every_split(NEBULA_FORMAT_NDJSON, in, want),
       "NDJSON: a line ending inside a string at every split");
}


/* the end marks and the usage-only chunk, at every split */
static int
marks_every_split(nebula_format_e format, const char *input, int done,
    uint64_t content_docs, size_t usage_only)
{
    nebula_stream_t  s;
    nebula_event_e   ev;
    size_t           len, a, i, n, lim, uo;

    len = strlen(input);

    for (a = 0; a <= len; a++) {
        nebula_stream_init(&s, format);
        uo = 0;

        for (i = 0; i < len; i += n) {
            lim = (i < a) ? a - i : len - i;
            n = nebula_stream_scan(&s, (const unsigned char *) input + i, lim,
                                   &ev);

            if (ev == NEBULA_EV_EVENT_END) {
                uo += s.usage_only;
            }
        }

        if ((int) s.done != done || s.content_docs != content_docs
            || uo != usage_only)
        {
            printf("# cut at %zu: done %u, content docs %llu, "
                   "usage-only %zu\n", a, (unsigned) s.done,
                   (unsigned long long) s.content_docs, uo);
            return 0;
        }
    }

    return 1;
}


static void
test_marks(void)
{
    ok(marks_every_split(NEBULA_FORMAT_SSE,
       "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n"
       "data: {\"choices\":[ ],\"usage\":{}}\r\n\r\n"
       "data: [DONE]\r\n\r\n", 1, 1, 1),
       "SSE: CRLF, choices [ ] and [DONE] at every split");

    ok(marks_every_split(NEBULA_FORMAT_SSE,
       "data:[DONE]\n\n", 1, 0, 0), "SSE: data:[DONE] without a space");

    ok(marks_every_split(NEBULA_FORMAT_SSE,
       "data: [DONE]x\n\ndata: [DONE\n\n", 0, 0, 0),
       "SSE: not quite [DONE]");

    ok(marks_every_split(NEBULA_FORMAT_NDJSON,
       "{\"message\":{\"content\":\"\\\"\"},\"done\" : \t false}\n"
       "{\"message\":{\"content\":\"\"},\"done\" :\ttrue}\n", 1, 1, 0),
       "NDJSON: done with blanks around the colon, every split");

    ok(marks_every_split(NEBULA_FORMAT_JSON,
       "{\"done\":\n true, \"response\":\"0123456789abcdef0123\"}", 1, 1, 0),
       "JSON: a line end before done's value");

    ok(marks_every_split(NEBULA_FORMAT_SSE,
       "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\","
       "\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}\r\n\r\n"
       "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
       "\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"b\"}}\n\n"
       "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
       "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
       "\"{\\\"x\\\":1}\"}}\n\n"
       "event: message_stop\ndata: {\"type\" : \"message_stop\"}\n\n",
       1, 3, 0), "SSE: Anthropic's deltas and message_stop");

    ok(marks_every_split(NEBULA_FORMAT_SSE,
       "event: response.output_text.delta\ndata: {\"content_index\":0,"
       "\"delta\":\"a\",\"type\":\"response.output_text.delta\"}\n\n"
       "event: response.output_text.done\ndata: {\"text\":\"a\","
       "\"type\":\"response.output_text.done\"}\n\n"
       "data: {\"type\":\"response.completed\"}\n\n", 1, 1, 0),
       "SSE: a Responses stream's text and response.completed");

    ok(marks_every_split(NEBULA_FORMAT_SSE,
       "data: {\"type\":\"message_stopped\"}\n\n"
       "data: {\"type\":\"message_\\u0073top\"}\n\n"
       "data: {\"x\":{\"type\":\"message_stop\"}}\n\n"
       "data: {\"type\":[\"message_stop\"]}\n\n"
       "data: {\"type\":\"response.complete\"}\n\n", 0, 0, 0),
       "SSE: not quite the end");
}


/*
 * Tool calls: what a body adds to content_docs and tool_bytes, and the
 * output estimate, when it is cut at every point; plainly, with a memo
 * (SSE), quiet, and cut again 37 bytes later
 */
static int
tools_every_split(nebula_format_e format, const char *input,
    uint64_t content_docs, uint64_t tool_bytes)
{
    int              k;
    size_t           len, a, b, i, n, lim;
    uint64_t         est;
    nebula_event_e   ev;
    nebula_stream_t  s;

    static nebula_memo_t  memo;

    len = strlen(input);
    est = content_docs + (tool_bytes + 3) / 4;

    for (k = 0; k < 3; k++) {
        for (a = 0; a <= len; a++) {
            b = a + 37;
            nebula_stream_init(&s, format);
            nebula_stream_memo(&s, (k == 1) ? &memo : NULL);
            nebula_stream_quiet(&s, k == 2);

            for (i = 0; i < len; i += n) {
                lim = (i < a) ? a - i : (i < b && b < len) ? b - i : len - i;
                n = nebula_stream_scan(&s, (const unsigned char *) input + i,
                                       lim, &ev);
            }

            if (s.content_docs != content_docs || s.tool_bytes != tool_bytes
                || nebula_stream_output_estimate(&s) != est)
            {
                printf("# %s, cut at %zu and %zu: content docs %llu, tool "
                       "bytes %llu, estimate %llu\n",
                       (k == 1) ? "memo" : (k == 2) ? "quiet" : "plain",
                       a, b, (unsigned long long) s.content_docs,
                       (unsigned long long) s.tool_bytes,
                       (unsigned long long) nebula_stream_output_estimate(&s));
                return 0;
            }
        }
    }

    return 1;
}


/* Ollama's tool calls as its OpenAI layer and its native API send them */
#define OAI_TOOLS                                                             \
    "[{\"id\":\"call_k3x9\",\"index\":0,\"type\":\"function\","               \
    "\"function\":{\"name\":\"get_weather\",\"arguments\":"                   \
    "\"{\\\"city\\\":\\\"Paris \\\\\\\"]}\\\"}\"}}]"

#define NATIVE_TOOLS                                                          \
    "[{\"id\":\"call_k3x9\",\"function\":{\"index\":0,\"name\":"              \
    "\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":[1,2]}}}]"

#define OAI_CHUNK(delta, finish)                                              \
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","      \
    "\"created\":1,\"model\":\"up\",\"system_fingerprint\":\"fp_ollama\","    \
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"," delta      \
    "},\"finish_reason\":" finish "}]}\n\n"


static void
test_tools(void)
{
    nebula_stream_t  s;

    /* the /v1 stream: a token, the call whole in one chunk, its end */
    ok(tools_every_split(NEBULA_FORMAT_SSE,
       OAI_CHUNK("\"content\":\"Let me look\"", "null")
       OAI_CHUNK("\"content\":\"\",\"tool_calls\":" OAI_TOOLS, "null")
       OAI_CHUNK("\"content\":\"\"", "\"tool_calls\"")
       "data: [DONE]\n\n", 1, strlen(OAI_TOOLS)),
       "SSE: delta.tool_calls counted by its bytes (%zu), the text by its "
       "chunk", strlen(OAI_TOOLS));

    /* the same chunk three times: a memo must not replay it uncounted */
    ok(tools_every_split(NEBULA_FORMAT_SSE,
       OAI_CHUNK("\"content\":\"\",\"tool_calls\":" OAI_TOOLS, "null")
       OAI_CHUNK("\"content\":\"\",\"tool_calls\":" OAI_TOOLS, "null")
       OAI_CHUNK("\"content\":\"a\"", "null")
       OAI_CHUNK("\"content\":\"\",\"tool_calls\":" OAI_TOOLS, "null"),
       1, 3 * strlen(OAI_TOOLS)), "SSE: three like chunks with calls");

    /* the /v1 JSON answer */
    ok(tools_every_split(NEBULA_FORMAT_JSON,
       "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":"
       "\"up\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
       "\"content\":\"\",\"tool_calls\":" OAI_TOOLS "},\"finish_reason\":"
       "\"tool_calls\"}],\"usage\":{\"prompt_tokens\":9,"
       "\"completion_tokens\":21}}", 0, strlen(OAI_TOOLS)),
       "JSON: choices[].message.tool_calls");

    /* native: NDJSON lines, and the answer not streamed */
    ok(tools_every_split(NEBULA_FORMAT_NDJSON,
       "{\"model\":\"up\",\"message\":{\"role\":\"assistant\",\"content\":"
       "\"Hm\"},\"done\":false}\n"
       "{\"model\":\"up\",\"message\":{\"role\":\"assistant\",\"content\":"
       "\"\",\"tool_calls\":" NATIVE_TOOLS "},\"done\":false}\n"
       "{\"model\":\"up\",\"message\":{\"role\":\"assistant\",\"content\":"
       "\"\"},\"done\":true}\n", 1, strlen(NATIVE_TOOLS)),
       "NDJSON: message.tool_calls (%zu bytes)", strlen(NATIVE_TOOLS));

    ok(tools_every_split(NEBULA_FORMAT_JSON,
       "{\n  \"model\": \"up\",\n  \"message\": {\n    \"tool_calls\": [\n"
       "      {\"function\": {\"name\": \"f\"}}\n    ]\n  }\n}\n", 0,
       strlen("[\n      {\"function\": {\"name\": \"f\"}}\n    ]")),
       "JSON: pretty-printed, the line ends inside counted");

    /*
     * An SSE event's lines: "data:" and the line ends are not JSON; a
     * line that starts as "[DONE]" would is read a byte at a time
     */
    ok(tools_every_split(NEBULA_FORMAT_SSE,
       "data: {\"message\":{\"tool_calls\":[{\"a\":1,\r\n"
       "data:\"b\":\"}\"}\n"
       "data: ]}}\n\n"
       "data: {\"message\":{\"tool_calls\":\n"
       "data: [DONE]}}\n\n", 0, strlen("[{\"a\":1,\"b\":\"}\"}]")
                                  + strlen("[DONE]")),
       "SSE: calls over data lines");

    /* what is not counted */
    ok(tools_every_split(NEBULA_FORMAT_SSE,
       "data: {\"tool_calls\":[1],\"choices\":[{\"tool_calls\":[2],"
       "\"delta\":{\"tool_calls\":null,\"x\":{\"tool_calls\":[3]}}}]}\n\n"
       "data: {\"message\":{\"tool_calls\":\"[4]\",\"tool\\u005fcalls\":[5],"
       "\"tool_call\":[6]}}\n\n", 0, 0),
       "SSE: tool_calls at other depths, null, a string, escaped: none");

    /* a call the document's end cuts, one within another */
    ok(tools_every_split(NEBULA_FORMAT_NDJSON,
       "{\"message\":{\"tool_calls\":[{\"a\":\"\\\"\n"
       "{\"message\":{\"tool_calls\":[{\"b\":{\"tool_calls\":[1]}}],"
       "\"content\":\"x\"}}\n", 1,
       strlen("[{\"a\":\"\\\"") + strlen("[{\"b\":{\"tool_calls\":[1]}}]")),
       "NDJSON: a call cut by its line's end, a call in a call");

    /* text in a native call (at depth 4): a text and tool bytes both */
    ok(tools_every_split(NEBULA_FORMAT_SSE,
       "data: {\"message\":{\"tool_calls\":[{\"content\":\"t\"}]}}"
       "\n\n"
       "data: {\"message\":{\"tool_calls\":[{\"content\":\"u\"}]}}"
       "\n\n", 2, 2 * strlen("[{\"content\":\"t\"}]")),
       "SSE: a text within a call, twice (the memo's text path)");

    nebula_stream_init(&s, NEBULA_FORMAT_SSE);
    s.content_docs = 3;
    is_int(nebula_stream_output_estimate(&s), 3, "estimate: 3 texts");
    s.tool_bytes = 1;
    is_int(nebula_stream_output_estimate(&s), 4, "estimate: and 1 byte");
    s.tool_bytes = 8;
    is_int(nebula_stream_output_estimate(&s), 5, "estimate: and 8 bytes");
    s.tool_bytes = 9;
    is_int(nebula_stream_output_estimate(&s), 6, "estimate: and 9 bytes");
}


/*
 * Bodies meant to corner the fast paths, fed in every two cuts and byte by
 * byte to this scanner and to the byte-at-a-time one (t/fuzz/stream_ref.c):
 * after every call, the same count, event and state.
 */
#define BODY(s)  { s, sizeof(s) - 1 }

static const struct {
    const char  *data;
    size_t       len;
} corner_bodies[] = {
    /* /v1/completions: choices[].text */
    BODY("data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"model\":"
         "\"up\",\"choices\":[{\"text\":\"He\",\"index\":0,"
         "\"finish_reason\":null}]}\n\n"
         "data: {\"model\":\"up\",\"choices\":[{\"text\":\"\",\"index\":0,"
         "\"finish_reason\":\"stop\"}]}\n\n"
         "data: {\"model\":\"up\",\"choices\":[],\"usage\":{\"prompt_tokens\":"
         "4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"),
    BODY("data: {\"id\":\"c1\",\"model\":\"up:8b\",\"choices\":[{\"delta\":"
         "{\"content\":\"h\\u00e9 \\\"x\\\"\"}}],\"usage\":null}\n\n"
         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
         "\"completion_tokens\":345}}\r\n\r\ndata: [DONE]\n\n"),

    BODY(": comment \"with\" quotes that runs over sixteen bytes\r\n"
         "event: x\r\ndata:{\"model\" : \"up\" , \"x\" : [ 1 , { } ] }\r\n\r\n"
         "data: {\"x\":\"a\\\ndata: b\",\"k\\\ndata: ey\":\"model\"}\n\n"),

    BODY("data: {\"choices\": [\n"
         "data: ]}\n\ndata: {\"choices\":[\r\ndata: \t]}\n\n"
         "data: {\"choices\":[\t],\"usage\":{}}\n\n"
         "data: {\"choices\":[],\"usage\":{}}\n\n"),

    /* unbalanced lines; a key of 21 to 31 bytes and one of 34 */
    BODY("{\"a\":[1,{\"b\":2}\n{\"model\":\"up\"}\n"
         "{\"a_key_of_twenty_five_bytes\":1,"
         "\"a_key_far_longer_than_twenty_bytes\":2}}}\n"
         "{\"model\":\"up\"}\n"),

    BODY("{\"model\":\"m\",\"done\":\n\"x\",\"eval_count\":\n7,"
         "\"done\": true}\n"
         "{\"model\":\"unterminated\n{\"response\":\"\",\"done\":\r\n"
         "{\"prompt_eval_count\":1,\"eval_count\":2}\n"),

    BODY("{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
         "[[[[{\"model\":\"deep\"}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
         "]]]]]]]]]]]]]]]]],\"model\":\"top\","
         "\"usage\":{\"prompt_tokens\":5}}"),

    BODY("{\"0123456789abcdefghij\":1,\"0123456789abcdefghijk\\\"\":2,"
         "\"model\\\\\":\"x\",\"content\":\"\x01\t\x0b\x0d\x0a\","
         "\"model\":\"y\"}"
         "\n\x00\xff\xc3\xb6{\"model\":\"\xe4\xbd\xa0\"}"),

    /*
     * For the memo: chunks that repeat, the same bytes after a different
     * state (a string left open, a key cut), counts and "done" that
     * repeat after others, text that is empty, escaped, or none
     */
    BODY("data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"a\"}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"b\"}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"\"}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"\\\"\"}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"c\"}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[],"
         "\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":3}}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[],"
         "\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":3}}\n\n"
         "data: {\"id\":\"c\",\"usage\":{\"prompt_tokens\":20,"
         "\"completion_tokens\":4},\"choices\":[]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[],"
         "\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":3}}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"done\":true}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"done\":true}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"d\"}}]}\n\n"
         "data: {\"id\":\"c\",\"mod\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"e\"}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"f\"}}]}\r\n\r\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"g\"}}]}\n\n"
         "data: [DONE]\n\ndata: [DONE]\n\n"),

    /*
     * Chunks whose text lies at another depth, after other stretches, with
     * the same bytes after it, in turns: a token's chunk replayed whole
     * (its framing, its text, the framing after) stays exact as the
     * memo's slots change hands
     */
    BODY("data: {\"model\":\"m\",\"choices\":[{\"delta\":"
         "{\"content\":\"a\"}}]}\n\n"
         "data: {\"model\":\"m\",\"choices\":[{\"delta\":"
         "{\"content\":\"b\"}}]}\n\n"
         "data: {\"message\":{\"content\":\"c\"}}]}\n\n"
         "data: {\"message\":{\"content\":\"d\"}}]}\n\n"
         "data: {\"model\":\"m\",\"choices\":[{\"delta\":"
         "{\"content\":\"e\"}}]}\n\n"
         "data: {\"model\":\"m\",\"choices\":[{\"delta\":"
         "{\"content\":\"f\"}}]}\n\n"
         "data: {\"choices\":[{\"delta\":{\"content\":\"g\"}}]}\n\n"
         "data: {\"model\":\"m\",\"choices\":[{\"delta\":"
         "{\"content\":\"h\"}}]}\n\n"),

    /*
     * A chunk whose beginning differs from the memo's stretch and whose
     * rest is the same: a slice that ends in it must not let the next
     * call take the rest from the slot
     */
    BODY("data: {\"k\":\"v\",\"model\":\"up\",\"x\":1}\n\n"
         "data: {\"k\":\"v\",\"model\":\"up\",\"x\":1}\n\n"
         "data: [\"k\":\"v\",\"model\":\"up\",\"x\":1]\n\n"
         "data: {\"k\":\"v\",\"model\":\"up\",\"x\":1}\n\n"),

    /*
     * Tool calls, counted by their bytes: Ollama's chunks (for the memo:
     * alike, after text, one a line cuts), native lines, a call in a call,
     * calls cut by a document's end, tool_calls where they do not count
     */
    BODY("data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"a\"}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"\",\"tool_calls\":[{\"id\":\"call_1\",\"function\":"
         "{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\\\"]}\\\"}\"}}]}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"\",\"tool_calls\":[{\"id\":\"call_1\",\"function\":"
         "{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":\\\"]}\\\"}\"}}]}}]}\n\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"b\",\"tool_calls\":[{\"a\":1,\n"
         "data: \"b\":2}]}}]}\r\n\r\n"
         "data: {\"id\":\"c\",\"model\":\"up\",\"choices\":[{\"delta\":"
         "{\"content\":\"\"},\"finish_reason\":\"tool_calls\"}]}\n\n"
         "data: [DONE]\n\n"),

    BODY("{\"model\":\"up\",\"message\":{\"content\":\"\",\"tool_calls\":"
         "[{\"function\":{\"name\":\"f\",\"arguments\":{\"n\":[1,{}]}}}]},"
         "\"done\":false}\n"
         "{\"message\":{\"tool_calls\":[{\"content\":\"t\","
         "\"tool_calls\":[1]}],\"content\":\"y\"}}\n"
         "{\"message\":{\"tool_calls\":[{\"content\":\"t\","
         "\"tool_calls\":[1]}],\"content\":\"y\"}}\n"
         "{\"message\":{\"tool_calls\":[[\r\"\n"
         "{\"choices\":[{\"tool_calls\":[1,2]}],\"tool_calls\":{\"a\":[]}}\n"
         "{\"message\":{\"tool_calls\":null,\"content\":\"x\"}}\n"
         "{\"message\":{\"tool_calls\":}[1],\"x\":[2]}\n"
         "{\"message\":{\"tool_calls\":{\"a\":\"}\"}}}\n"),

    /*
     * Anthropic's and the Responses API's events: models inside a
     * top-level object, usage at two depths and after objects, types
     */
    BODY("event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
         "{\"id\":\"msg_1\",\"model\":\"up\",\"content\":[],\"usage\":"
         "{\"input_tokens\":30,\"output_tokens\":0}}}\n\n"
         "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
         "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"}}"
         "\n\n"
         "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
         "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"b\"}}"
         "\n\n"
         "data: {\"type\":\"x\",\"delta\":{\"partial_json\":\"{}\","
         "\"usage\":{\"partial_json\":\"q\",\"input_tokens\":2}}}\n\n"
         "data: {\"usage\":{\"model\":\"up\",\"usage\":{\"output_tokens\":5},"
         "\"input_tokens\":4,\"x\":{\"output_tokens\":6},\"output_tokens\":7}}"
         "\n\n"
         "data: {\"type\":\"message_\\\"stop\",\"type\":\"message_stop\"}"
         "\n\n"
         "data: {\"response\":{\"model\":\"up\",\"usage\":null},"
         "\"type\":\"response.created\"}\n\n"
         "data: {\"delta\":\"c\",\"type\":\"response.output_text.delta\"}\n\n"
         "data: {\"delta\":\"d\",\"type\":\"response.output_text.delta\"}\n\n"
         "data: {\"type\":\"response.complet\ndata: ed\"}\n\n"
         "data: {\"type\":\"response.completed\",\"response\":{\"usage\":"
         "{\"input_tokens\":7,\"input_tokens_details\":{},"
         "\"output_tokens\":8}}}\n\n"),

    BODY("{\"type\":\"message_stop\"}\n{\"type\":\"response.completed\"\n"
         "{\"message\":{\"model\":\"up\",\"usage\":{\"input_tokens\":1,"
         "\"output_tokens\":2}},\"usage\":{\"output_tokens\":3}}\n"
         "{\"type\":\"0123456789012345678901234\"}\n"),

    BODY("data: {\"message\":{\"tool_calls\":[{\"content\":\"t\"}]}}"
         "\n\n"
         "data: {\"message\":{\"tool_calls\":[{\"content\":\"u\"}]}}"
         "\n\n"
         "data: {\"message\":{\"tool_calls\":[[\n\n"
         "data: {\"message\":{\"tool_calls\":{}}}\r\n\r\n"
         "data: {\"message\":{\"tool_calls\":\ndata: [DONE]}}\n\n"
         "data: {\"choices\":[{\"delta\":{\"tool_calls\":\n"
         "data: [D]}}]}\n\n"
         "data: {\"message\":{\"tool_calls\":[{\"content\":\"v\"}]}}"
         "\n\n"),
};

#undef BODY

#define NCORNERS  (sizeof(corner_bodies) / sizeof(corner_bodies[0]))


/* feeds input cut at a and b to both scanners; 0 when they part */
static int
same_as_reference(nebula_format_e format, const char *input, size_t len,
    size_t a, size_t b, nebula_memo_t *memo, const char *keep, int quiet)
{
    size_t           i, n, lim;
    nebula_event_e   ev;
    nebula_stream_t  s;
    ref_stream_t     r;

    ref_pair_init(&s, &r, format, memo, keep, quiet);

    for (i = 0; i < len; i += n) {
        lim = (i < a) ? a - i : (i < b) ? b - i : len - i;

        if (!ref_pair_scan(&s, &r, (const unsigned char *) input + i, lim,
                           &n, &ev))
        {
            printf("# format %d%s%s%s, cut at %zu and %zu: at %zu, "
                   "consumed %zu of %zu, event %d\n", (int) format,
                   memo ? " with a memo" : "", keep ? ", keeping" : "",
                   quiet ? ", quiet" : "", a, b, i, n, lim, (int) ev);
            return 0;
        }
    }

    return 1;
}


static void
test_reference(void)
{
    int               same, k_memo, quiet;
    size_t            k, len, a, b, i, n;
    const char       *keep;
    nebula_memo_t    *memo;
    nebula_format_e   format;
    nebula_stream_t   s;
    ref_stream_t      r;
    nebula_event_e    ev;

    static nebula_memo_t  memo_space;

    for (k_memo = 0; k_memo <= 11; k_memo++) {

    /*
     * 0-2: each format; 3: SSE with a memo; 4-7 the same keeping the
     * model value "up", the one most bodies here name; 8-11 the same
     * again, quiet (as strip mode scans)
     */
    format = ((k_memo & 3) == 3) ? NEBULA_FORMAT_SSE
                                 : (nebula_format_e) (k_memo & 3);
    memo = ((k_memo & 3) == 3) ? &memo_space : NULL;
    keep = (k_memo >= 4) ? "up\"" : NULL;
    quiet = (k_memo >= 8);

    {
        same = 1;

        for (k = 0; k < NCORNERS && same; k++) {
            len = corner_bodies[k].len;

            for (a = 0; a <= len && same; a++) {
                /* a long body: every first cut, every 29th second one */
                for (b = a; b <= len && same; b += (len > 512) ? 29 : 1) {
                    same = same_as_reference(format, corner_bodies[k].data,
                                             len, a, b, memo, keep, quiet);
                }
            }

            /* byte by byte */
            ref_pair_init(&s, &r, format, memo, keep, quiet);

            for (i = 0; i < len && same; i++) {
                if (!ref_pair_scan(&s, &r, (const unsigned char *)
                                   corner_bodies[k].data + i, 1, &n, &ev))
                {
                    printf("# format %d, body %zu, byte by byte: at %zu\n",
                           (int) format, k, i);
                    same = 0;
                }
            }
        }

        ok(same, "format %d%s%s%s: as the byte-at-a-time scanner, at every "
           "two cuts", (int) format, memo ? " with a memo" : "",
           keep ? ", keeping \"up\"" : "", quiet ? ", quiet" : "");
    }

    }
}


/*
 * The memo is used: a stream of like chunks, whole, fills its four slots,
 * and one that replays them ends as the scan without one.
 */
static void
test_memo(void)
{
    int               i;
    size_t            pos, n, cut;
    unsigned          filled, k, events, other;
    nebula_event_e    ev;
    nebula_stream_t   s, plain;

    static nebula_memo_t  memo;
    static char           body[4096];

    body[0] = '\0';
    other = 0;

    for (i = 0; i < 12; i++) {
        snprintf(body + strlen(body), sizeof(body) - strlen(body),
                 "data: {\"id\":\"chatcmpl-7\",\"object\":\"chat.completion."
                 "chunk\",\"model\":\"qwen3:latest\",\"choices\":[{\"index\":0,"
                 "\"delta\":{\"role\":\"assistant\",\"content\":\"w%d\"},"
                 "\"finish_reason\":null}]}\n\n", i);
    }

    nebula_stream_init(&s, NEBULA_FORMAT_SSE);
    nebula_stream_memo(&s, &memo);
    nebula_stream_init(&plain, NEBULA_FORMAT_SSE);

    for (pos = 0; pos < strlen(body); pos += n) {
        n = nebula_stream_scan(&s, (unsigned char *) body + pos,
                               strlen(body) - pos, &ev);
    }

    for (pos = 0; pos < strlen(body); pos += n) {
        n = nebula_stream_scan(&plain, (unsigned char *) body + pos,
                               strlen(body) - pos, &ev);
    }

    filled = 0;
    for (k = 0; k < NEBULA_MEMO_SLOTS; k++) {
        filled += (memo.slot[k].len != 0);
    }

    ok(filled == NEBULA_MEMO_SLOTS, "a stream of like chunks fills the "
       "memo's %u slots: %u", NEBULA_MEMO_SLOTS, filled);
    ok(memo.slot[0].len == strlen("data: {\"id\":\"chatcmpl-7\",\"object\":"
                                  "\"chat.completion.chunk\",\"model\":\""),
       "a chunk's first stretch ends at its model value: %u bytes",
       (unsigned) memo.slot[0].len);
    ok(s.content_docs == 12 && plain.content_docs == 12,
       "with and without it, 12 chunks of text: %llu, %llu",
       (unsigned long long) s.content_docs,
       (unsigned long long) plain.content_docs);
    ok(memcmp(&s, &plain, NEBULA_STREAM_LOCAL) == 0,
       "and the same state at the end");

    /* keeping the model value: one event a chunk, its end */
    nebula_stream_init(&s, NEBULA_FORMAT_SSE);
    nebula_stream_memo(&s, &memo);
    nebula_stream_keep(&s, (const unsigned char *) "qwen3:latest\"", 13);
    events = 0;

    for (pos = 0; pos < strlen(body); pos += n) {
        n = nebula_stream_scan(&s, (unsigned char *) body + pos,
                               strlen(body) - pos, &ev);
        events += (ev != NEBULA_EV_NONE);
        other += (ev != NEBULA_EV_NONE && ev != NEBULA_EV_EVENT_END);
    }

    ok(events == 12 && other == 0, "keeping the model value, the 12 "
       "chunks are 12 events, their ends: %u, %u others", events, other);
    ok(memo.slot[0].len == strlen("data: {\"id\":\"chatcmpl-7\",\"object\":"
                                  "\"chat.completion.chunk\",\"model\":"
                                  "\"qwen3:latest\",\"choices\":[{\"index\":0,"
                                  "\"delta\":{\"role\":\"assistant\","
                                  "\"content\":\""),
       "and the first stretch runs through it to the text: %u bytes",
       (unsigned) memo.slot[0].len);
    ok(s.content_docs == 12, "the same 12 chunks of text");

    /*
     * a slice that ends in the third chunk's model value: that value is
     * reported (MODEL_START, MODEL_END), the ones after are kept again
     */
    nebula_stream_init(&s, NEBULA_FORMAT_SSE);
    nebula_stream_memo(&s, &memo);
    nebula_stream_keep(&s, (const unsigned char *) "qwen3:latest\"", 13);
    events = 0;
    other = 0;
    cut = strstr(strstr(strstr(body, "qwen3") + 1, "qwen3") + 1, "qwen3")
          - body + 3;

    for (pos = 0; pos < strlen(body); pos += n) {
        n = nebula_stream_scan(&s, (unsigned char *) body + pos,
                               (pos < cut ? cut : strlen(body)) - pos, &ev);
        events += (ev != NEBULA_EV_NONE);
        other += (ev != NEBULA_EV_NONE && ev != NEBULA_EV_EVENT_END);
    }

    ok(events == 14 && other == 2, "a model value cut by a slice is "
       "reported, and the later ones kept: %u events, %u others", events,
       other);

    nebula_stream_init(&s, NEBULA_FORMAT_NDJSON);
    nebula_stream_memo(&s, &memo);
    ok(s.memo == NULL, "an NDJSON scanner takes no memo");
}


static void
test_state_size(void)
{
    ok(sizeof(nebula_stream_t) <= 128, "scanner state is %zu bytes",
       sizeof(nebula_stream_t));
}


int
main(void)
{
    test_sse();
    test_ndjson();
    test_json();
    test_usage();
    test_events();
    test_fast_paths();
    test_marks();
    test_tools();
    test_reference();
    test_memo();
    test_state_size();

    return done_testing();
}
