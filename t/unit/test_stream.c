/*
 * Unit tests of the response scanner (nebula_stream.c): the public model
 * name restored in JSON, NDJSON and SSE bodies fed in arbitrary slices.
 */

#include <stdlib.h>

#include "nebula_stream.h"
#include "tap.h"


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
         "  \"choices\": [{\"message\": {\"content\": \"x\"}}],\n"
         "  \"usage\": {\"prompt_tokens\": 1, \"model\": \"no\"}\n}\n";
    want = "{\n  \"id\": \"chatcmpl-1\",\n  \"model\": " PUBLIC ",\n"
           "  \"choices\": [{\"message\": {\"content\": \"x\"}}],\n"
           "  \"usage\": {\"prompt_tokens\": 1, \"model\": \"no\"}\n}\n";

    ok(every_split(NEBULA_FORMAT_JSON, in, want), "JSON: pretty-printed");

    /* a value that is not a string is left alone */
    in = "{\"model\":null,\"x\":{\"model\":\"up\"}}";
    ok(every_split(NEBULA_FORMAT_JSON, in, in), "JSON: model null kept");

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
}


static void
test_state_size(void)
{
    ok(sizeof(nebula_stream_t) <= 96, "scanner state is %zu bytes",
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
    test_state_size();

    return done_testing();
}
