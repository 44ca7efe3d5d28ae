/*
 * Nebula: a micro-benchmark of the stream scanner alone.
 *
 * Builds in memory a long recorded upstream stream (OpenAI SSE chunks like
 * the ones bench/run's canned upstream sends, and Ollama NDJSON lines),
 * then times nebula_stream_scan over it, fed in 4 KB slices as the network
 * would deliver them.  Nothing is restored or copied: the events are only
 * counted.  The last document carries the usage, which is checked, so a
 * scanner that skips work cannot pass.
 *
 *   cc -O2 -Ingx_nebula_module -o build/bench/stream_bench \
 *      bench/stream_bench.c ngx_nebula_module/nebula_stream.c \
 *      ngx_nebula_module/nebula_stream_memo.c
 *   build/bench/stream_bench [MB] [passes] [format]
 *                                  (default 100 MB, 3 passes, every format)
 *
 * Prints one line a format, the median of the passes:
 *   stream_bench format=sse bytes=N docs=N seconds=S mb_per_s=X ns_per_byte=Y
 * SSE twice: walked ("sse"), and as the module scans a stream, with a memo
 * and the model value kept as it is ("sse-memo").
 * (MB = 10^6 bytes).  Exit status 1 if the scanner's results are wrong.
 * A format named (sse, sse-memo, ndjson) runs alone: instructions under
 * callgrind, one format at a time,
 *   valgrind --tool=callgrind --collect-atstart=no \
 *       --toggle-collect=nebula_stream_scan build/bench/stream_bench 1 1 sse-memo
 */

#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nebula_stream.h"


#define SLICE  4096


typedef struct {
    unsigned char  *p;
    size_t          len;
    size_t          cap;
} buf_t;


static void
buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL) {
            perror("realloc");
            exit(2);
        }
    }

    memcpy(b->p + b->len, s, n);
    b->len += n;
}


static const char *words[] = {
    "Hello", " there", "!", " I", "'m", " doing", " well", ",",
    " thank", " you", " for", " asking", ".", " How", " can", " I",
    " help", " \\\"you\\\"", " today", "?\\n"
};

#define NWORDS  (sizeof(words) / sizeof(words[0]))


/* OpenAI chat.completion.chunk events, then the usage chunk and [DONE] */
static size_t
make_sse(buf_t *b, size_t target)
{
    char    line[512];
    size_t  docs = 0;
    int     n;

    while (b->len < target) {
        n = snprintf(line, sizeof(line),
            "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
            "\"created\":1700000000,\"model\":\"qwen3:latest\","
            "\"system_fingerprint\":\"fp_ollama\",\"choices\":[{\"index\":0,"
            "\"delta\":{\"role\":\"assistant\",\"content\":\"%s\"},"
            "\"finish_reason\":null}]}\n\n",
            words[docs % NWORDS]);
        buf_add(b, line, (size_t) n);
        docs++;
    }

    n = snprintf(line, sizeof(line),
        "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
        "\"created\":1700000000,\"model\":\"qwen3:latest\","
        "\"system_fingerprint\":\"fp_ollama\",\"choices\":[],"
        "\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":%zu,"
        "\"total_tokens\":%zu}}\n\ndata: [DONE]\n\n", docs, docs + 14);
    buf_add(b, line, (size_t) n);

    return docs;
}


/* Ollama /api/chat lines, the last with done and the counts */
static size_t
make_ndjson(buf_t *b, size_t target)
{
    char    line[512];
    size_t  docs = 0;
    int     n;

    while (b->len < target) {
        n = snprintf(line, sizeof(line),
            "{\"model\":\"qwen3:latest\",\"created_at\":"
            "\"2025-01-01T00:00:00.000000000Z\",\"message\":{\"role\":"
            "\"assistant\",\"content\":\"%s\"},\"done\":false}\n",
            words[docs % NWORDS]);
        buf_add(b, line, (size_t) n);
        docs++;
    }

    n = snprintf(line, sizeof(line),
        "{\"model\":\"qwen3:latest\",\"created_at\":"
        "\"2025-01-01T00:00:00.000000000Z\",\"message\":{\"role\":"
        "\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\","
        "\"done\":true,\"total_duration\":1000000,\"prompt_eval_count\":14,"
        "\"eval_count\":%zu}\n", docs);
    buf_add(b, line, (size_t) n);

    return docs;
}


typedef struct {
    size_t  events[4];
} counts_t;


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* one pass over the whole stream in SLICE-byte slices */
static double
scan_all(nebula_format_e fmt, const buf_t *b, nebula_stream_t *s, counts_t *c,
    int memo)
{
    const unsigned char  *p;
    size_t                off, len, n;
    nebula_event_e        ev;
    double                t0;

    static nebula_memo_t  m;

    memset(c, 0, sizeof(*c));
    nebula_stream_init(s, fmt);

    if (memo) {
        nebula_stream_memo(s, &m);
        nebula_stream_keep(s, (const unsigned char *) "qwen3:latest\"", 13);
    }

    t0 = now();

    for (off = 0; off < b->len; off += SLICE) {
        p = b->p + off;
        len = b->len - off < SLICE ? b->len - off : SLICE;

        while (len) {
            n = nebula_stream_scan(s, p, len, &ev);
            if (n == 0) {
                fprintf(stderr, "stream_bench: the scanner consumed nothing\n");
                exit(1);
            }
            p += n;
            len -= n;
            c->events[ev]++;
        }
    }

    return now() - t0;
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}


static int
run(const char *name, nebula_format_e fmt, size_t target, int passes,
    int memo)
{
    buf_t            b = { NULL, 0, 0 };
    nebula_stream_t  s;
    counts_t         c;
    size_t           docs, want_ends;
    double           t[16], sec;
    int              i, ok;

    docs = (fmt == NEBULA_FORMAT_SSE) ? make_sse(&b, target)
                                      : make_ndjson(&b, target);

    for (i = 0; i < passes; i++) {
        t[i] = scan_all(fmt, &b, &s, &c, memo);
    }

    qsort(t, (size_t) passes, sizeof(double), cmp_double);
    sec = t[passes / 2];

    /*
     * every document: its model opened and closed (kept: only those a
     * slice cuts); SSE: every event ends
     */
    want_ends = (fmt == NEBULA_FORMAT_SSE) ? docs + 2 : 0;
    ok = (memo ? c.events[NEBULA_EV_MODEL_START] <= b.len / SLICE + 1
               : c.events[NEBULA_EV_MODEL_START] == docs + 1)
         && c.events[NEBULA_EV_MODEL_END] == c.events[NEBULA_EV_MODEL_START]
         && c.events[NEBULA_EV_EVENT_END] == want_ends
         && s.has_completion && s.completion_tokens == docs
         && s.has_prompt && s.prompt_tokens == 14
         && s.content_docs == docs && s.done;

    if (!ok) {
        fprintf(stderr, "stream_bench: %s: wrong results: model %zu/%zu, "
                "ends %zu, completion %llu, content docs %llu, done %u "
                "(docs %zu)\n", name, c.events[NEBULA_EV_MODEL_START],
                c.events[NEBULA_EV_MODEL_END], c.events[NEBULA_EV_EVENT_END],
                (unsigned long long) s.completion_tokens,
                (unsigned long long) s.content_docs, (unsigned) s.done, docs);
    }

    printf("stream_bench format=%s bytes=%zu docs=%zu slice=%d passes=%d "
           "seconds=%.6f mb_per_s=%.1f ns_per_byte=%.3f ok=%d\n",
           name, b.len, docs + 1, SLICE, passes, sec, b.len / sec / 1e6,
           sec * 1e9 / b.len, ok);
    fflush(stdout);

    free(b.p);
    return ok;
}


int
main(int argc, char **argv)
{
    size_t       mb = 100;
    int          passes = 3, ok;
    const char  *only = NULL;

    if (argc > 1) {
        mb = (size_t) strtoul(argv[1], NULL, 10);
    }
    if (argc > 2) {
        passes = atoi(argv[2]);
    }
    if (argc > 3) {
        only = argv[3];
    }
    if (mb == 0 || passes < 1 || passes > 16
        || (only && strcmp(only, "sse") != 0 && strcmp(only, "sse-memo") != 0
            && strcmp(only, "ndjson") != 0))
    {
        fprintf(stderr, "usage: stream_bench [MB] [passes 1-16] "
                "[sse | sse-memo | ndjson]\n");
        return 2;
    }

    ok = 1;

#define RUN(name, fmt, memo)                                                  \
    if (only == NULL || strcmp(only, name) == 0) {                            \
        ok &= run(name, fmt, mb * 1000000, passes, memo);                     \
    }

    RUN("sse", NEBULA_FORMAT_SSE, 0);
    RUN("sse-memo", NEBULA_FORMAT_SSE, 1);
    RUN("ndjson", NEBULA_FORMAT_NDJSON, 0);

#undef RUN

    return ok ? 0 : 1;
}
