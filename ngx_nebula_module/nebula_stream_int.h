/*
 * Nebula: what the response scanner's two files share, and no one else
 * includes: nebula_stream.c (the core: SSE lines, JSON tokens, keys and
 * counts, events, quiet mode) and nebula_stream_memo.c (the memo of an
 * SSE stream's recurring stretches).  The API is nebula_stream.h.
 *
 * The memo writes the core's state where it replays a stretch, reads a
 * text as the core would, and walks what it cannot replay with the core:
 * hence the JSON states and flags, the memo's own stops, the skip to the
 * next stop byte (static inline: the hot loops of both files call it)
 * and the test of whether an event ends a call.
 */

#ifndef NEBULA_STREAM_INT_H
#define NEBULA_STREAM_INT_H

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "nebula_stream.h"


/* json_state */
enum {
    J_VALUE = 0,        /* between tokens; literals need no state */
    J_KEY,
    J_KEY_ESCAPE,
    J_STRING,
    J_STRING_ESCAPE
};


/* json_flags */
#define F_MODEL     NEBULA_JF_MODEL_KEY
#define F_USAGE     NEBULA_JF_USAGE_KEY
#define F_CHOICES   NEBULA_JF_CHOICES_KEY
#define F_CONTENT   NEBULA_JF_CONTENT_KEY
#define F_TOOLS     NEBULA_JF_TOOLS_KEY
#define F_EXPECT    NEBULA_JF_EXPECT_KEY
#define F_OPEN      NEBULA_JF_CONTENT_OPEN
#define F_TYPE      NEBULA_JF_TYPE_KEY


/*
 * Where a memo's stretches end inside a chunk, besides the events the
 * caller sees: after the opening quote of a text value, and after its
 * closing quote.  Only a scanner with a memo stops there, and
 * nebula_memo_scan() goes on at once.
 */
#define EV_TEXT_OPEN   ((nebula_event_e) (NEBULA_EV_EVENT_END + 1))
#define EV_TEXT_CLOSE  ((nebula_event_e) (NEBULA_EV_EVENT_END + 2))


/* the bytes a string or a key cannot skip: its end, escapes, line ends */
static const unsigned char  nebula_stop_byte[256] = {
    ['"'] = 1, ['\\'] = 1, ['\n'] = 1, ['\r'] = 1
};


/* the first stop byte in [p, end), or end */
static inline const unsigned char *
nebula_find_stop(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__)
    int       mask;
    __m128i   x, m;

    const __m128i  quote = _mm_set1_epi8('"');
    const __m128i  bslash = _mm_set1_epi8('\\');
    const __m128i  cr = _mm_set1_epi8('\r');

    /*
     * Every control byte up to CR stops it, LF and CR among them, in one
     * comparison: the callers take the others as plain bytes, and a valid
     * JSON string has none.
     */

    while (end - p >= 16) {
        x = _mm_loadu_si128((const __m128i *) p);
        m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
                                      _mm_cmpeq_epi8(x, bslash)),
                         _mm_cmpeq_epi8(_mm_min_epu8(x, cr), x));
        mask = _mm_movemask_epi8(m);

        if (mask) {
            return p + __builtin_ctz((unsigned) mask);
        }

        p += 16;
    }

#else
    uint64_t  w, t;

#define NEBULA_ONES   0x0101010101010101ULL
#define NEBULA_HIGHS  0x8080808080808080ULL
#define NEBULA_ZERO(v)  (((v) - NEBULA_ONES) & ~(v) & NEBULA_HIGHS)

    /* word at a time: only whether a word has one, the bytes tell where */
    while (end - p >= 8) {
        memcpy(&w, p, 8);
        t = NEBULA_ZERO(w ^ (NEBULA_ONES * '"'))
            | NEBULA_ZERO(w ^ (NEBULA_ONES * '\\'))
            | NEBULA_ZERO(w ^ (NEBULA_ONES * '\n'))
            | NEBULA_ZERO(w ^ (NEBULA_ONES * '\r'));

        if (t) {
            break;
        }

        p += 8;
    }

#undef NEBULA_ZERO
#undef NEBULA_HIGHS
#undef NEBULA_ONES
#endif

    while (p < end && !nebula_stop_byte[*p]) {
        p++;
    }

    return p;
}


/* the events the caller sees, not the memo's own stops */
#define CALLER_EVENT(e)                                                       \
    ((e) == NEBULA_EV_MODEL_START || (e) == NEBULA_EV_MODEL_END              \
     || (e) == NEBULA_EV_EVENT_END)


/*
 * Whether a call stops at event e, at bytes into it: a quiet scanner notes
 * the end of an event but the usage chunk's, and goes on.
 */
static inline int
nebula_stream_stops(nebula_stream_t *s, nebula_event_e e, size_t at)
{
    if (e == NEBULA_EV_EVENT_END && s->quiet && !s->usage_only
        && at <= UINT32_MAX)
    {
        s->ended = (uint32_t) at;
        return 0;
    }

    return CALLER_EVENT(e);
}


/*
 * The module is a shared object built with -fPIC: a function other
 * objects could interpose is called through the PLT, and not inlined in
 * its own file.  What the two files share is hidden, called directly as
 * when it was static.
 */
#if defined(__GNUC__)
#define NEBULA_STREAM_HIDDEN  __attribute__((visibility("hidden")))
#else
#define NEBULA_STREAM_HIDDEN
#endif


/*
 * The scanner without a memo or quiet mode: consumes bytes up to and
 * including the first event, the memo's own stops among them (with a
 * memo only), or all len bytes when there is none.  (nebula_stream.c)
 */
NEBULA_STREAM_HIDDEN size_t nebula_stream_walk(nebula_stream_t *s,
    const unsigned char *p, size_t len, nebula_event_e *ev);

/*
 * nebula_stream_scan() with a memo, quiet or not: replays what it can,
 * walks the rest.  (nebula_stream_memo.c)
 */
NEBULA_STREAM_HIDDEN size_t nebula_memo_scan(nebula_stream_t *s,
    const unsigned char *p, size_t len, nebula_event_e *ev);

#endif /* NEBULA_STREAM_INT_H */
