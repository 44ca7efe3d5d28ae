/*
 * Nebula: the response scanner's memo (nebula_memo_t in nebula_stream.h):
 * the recurring stretches of an SSE stream, compared and replayed, not
 * walked; and the scanner's entry, nebula_stream_scan(), which hands a
 * scanner with a memo to nebula_memo_scan() and walks the others
 * (nebula_stream_walk(), nebula_stream.c).
 *
 * Stretches.  The bytes are cut at events: the caller's, and around a
 * text (EV_TEXT_OPEN, EV_TEXT_CLOSE: json_run() stops there only with a
 * memo, and not in a tool call).  The event a stretch begins after names
 * its slot (memo_next()): 0 an event's end (and the memo's start), 1 a
 * model value's opening quote, 2 its closing quote, 3 a text's closing
 * quote.  After a text's opening quote there is none (MEMO_TEXT): the
 * text is read to its closing quote, the short way when only plain bytes
 * come first (as json_run() would), else walked.
 *
 * A slot keys on the state the stretch began in (from: the
 * NEBULA_STREAM_LOCAL first bytes of nebula_stream_t, all the next step
 * depends on) and its bytes, up to and with its event's byte.  It holds
 * the state they end in (to), the event, the next slot, the texts they
 * added, and what was replayed just before it last began (after: a slot,
 * or MEMO_AFTER_TEXT(k, full), slot k then a text, empty or not).
 *
 * It replays a stretch that begins at its mark, in its state (after is
 * what was just replayed, or the states compare equal), with its bytes,
 * all in the slice: the state becomes to, content_docs grows by what the
 * stretch added, and the call stops at its event as a walk would.  A
 * slot that ends at a text, a plain text after it and slot 3's bytes
 * after that, when slot 3 last began after this slot and a text as empty:
 * the whole chunk in one replay (memo_text_tail()).  A stretch a slice
 * cuts that is so far a slot's, from its state, adding no text: the next
 * call replays its rest if that is the slot's (s->resume).
 *
 * What guards it (memo_walk()): a walked stretch is kept in its slot only
 * when it began at a slot's mark, ended at an event in the slice within
 * NEBULA_MEMO_BYTES, told nothing (s->told: a count, a "done" key or
 * [DONE], a tool call's opening), did not begin in a tool call, and did
 * not stop at a model value that would have been kept
 * (nebula_stream_keep()) had the slice not cut it.  A stretch a slice
 * cuts leaves its slot as it was; its rest is walked, kept nowhere.  A
 * slot rewritten, those that began after it forget it.
 *
 * A replay leaves the state as the walk would: it copies the LOCAL bytes
 * and adds to content_docs, and touches nothing else (the counts, done,
 * tool_bytes), which is why a stretch that changes more is never kept.
 * s->mark and s->replayed carry the next slot and the last one replayed
 * to the next call.  The fuzz targets hold every call to the reference
 * scanner (t/fuzz/stream_ref.c), with a memo and without.
 */

#include <string.h>

#include "nebula_stream_int.h"


void
nebula_stream_memo(nebula_stream_t *s, nebula_memo_t *memo)
{
    unsigned  i;

    if (s->format != NEBULA_FORMAT_SSE || memo == NULL) {
        s->memo = NULL;
        return;
    }

    for (i = 0; i < NEBULA_MEMO_SLOTS; i++) {
        memo->slot[i].len = 0;
        memo->slot[i].after = NEBULA_MEMO_NONE;
    }

    s->memo = memo;
    s->mark = 0;
    s->replayed = NEBULA_MEMO_NONE;
    s->resume = NEBULA_MEMO_NONE;
}


/* after a text's opening quote: no slot, but a short way to its end */
#define MEMO_TEXT  (NEBULA_MEMO_NONE + 1)

/*
 * What a stretch began after, besides a slot replayed: a text read the
 * short way right after slot k was replayed, empty or not; the state it
 * leaves follows from slot k's end and that alone.
 */
#define MEMO_AFTER_TEXT(k, full)  (MEMO_TEXT + 1 + 2 * (k) + ((full) != 0))
#define MEMO_BASE(a)                                                          \
    ((unsigned) (((a) < NEBULA_MEMO_SLOTS) ? (a)                              \
                 : ((a) > MEMO_TEXT) ? ((a) - MEMO_TEXT - 1) / 2              \
                 : NEBULA_MEMO_NONE))


/* the slot of the stretch that begins after an event */
static unsigned
memo_next(nebula_event_e ev)
{
    switch ((int) ev) {
    case NEBULA_EV_EVENT_END:
        return 0;
    case NEBULA_EV_MODEL_START:
        return 1;
    case NEBULA_EV_MODEL_END:
        return 2;
    case EV_TEXT_CLOSE:
        return 3;
    case EV_TEXT_OPEN:
        /* the text: it differs from chunk to chunk, it is read as it is */
        return MEMO_TEXT;
    default:
        return NEBULA_MEMO_NONE;
    }
}


/*
 * A stretch that stopped at a model value the scanner would have kept,
 * had the slice not cut it (or had it been read a byte at a time), is not
 * kept in its slot: the slot would replay the stop for every chunk after.
 */
static int
memo_may_keep(nebula_stream_t *s, const unsigned char *p,
    const unsigned char *end)
{
    size_t  n;

    if (s->keep_len == 0) {
        return 0;
    }

    n = (size_t) (end - p);

    return memcmp(p, s->keep, (n < s->keep_len) ? n : s->keep_len) == 0;
}


/*
 * A stretch that begins at slot mark's mark and is not replayed: scanned,
 * and kept in the slot when it ends in this slice with nothing told.  Out
 * of nebula_memo_scan()'s way, which replays most stretches with less.
 * Returns what nebula_stream_walk() consumed and sets *e; *mark becomes
 * the next stretch's slot.
 */
static size_t
memo_walk(nebula_stream_t *s, const unsigned char *q, const unsigned char *end,
    unsigned *mark, unsigned replayed, nebula_event_e *e)
{
    size_t                n;
    uint64_t              docs;
    unsigned              cur, i, after, resume;
    nebula_memo_t        *memo;
    nebula_memo_slot_t   *m;
    unsigned char         from[NEBULA_STREAM_LOCAL];

    memo = s->memo;
    cur = *mark;
    m = NULL;
    resume = 0;
    after = NEBULA_MEMO_NONE;
    docs = 0;

    if (cur < NEBULA_MEMO_SLOTS) {
        m = &memo->slot[cur];

        /*
         * A stretch the slice cuts that is so far the slot's, from its
         * state, and adds no text (which its beginning may hold): the
         * next call can take the rest from the slot.
         */
        resume = m->len > (size_t) (end - q) && m->content_docs == 0
                 && memcmp(q, m->bytes, end - q) == 0
                 && ((m->after != NEBULA_MEMO_NONE && m->after == replayed)
                     || memcmp(s, m->from, NEBULA_STREAM_LOCAL) == 0);

        /*
         * Where this stretch began, to keep it in the slot if it ends in
         * this slice; one the slice cuts leaves the slot as it is.
         */
        memcpy(from, s, NEBULA_STREAM_LOCAL);
        after = replayed;
        docs = s->content_docs;
        s->told = 0;
    }

    n = nebula_stream_walk(s, q, (size_t) (end - q), e);

    if (*e == NEBULA_EV_NONE) {
        /* the slice ended in a stretch: the next call is inside it */
        if (resume) {
            s->resume = (unsigned char) cur;
            s->resume_off = (uint16_t) n;
        }

        *mark = NEBULA_MEMO_NONE;
        return n;
    }

    *mark = memo_next(*e);

    /*
     * (Nor one that passed bytes of a tool call, which a slot would not
     * count again: one that opens a tool call has told, and one that
     * began in a tool call is known by the state it began in.)
     */

    if (m && n <= NEBULA_MEMO_BYTES && !s->told
        && from[offsetof(nebula_stream_t, tool_depth)] == 0
        && !(*e == NEBULA_EV_MODEL_START && memo_may_keep(s, q + n, end)))
    {
        /*
         * A slot that began where this one ended (or after a text read
         * after it) now begins elsewhere
         */
        for (i = 0; i < NEBULA_MEMO_SLOTS; i++) {
            if (MEMO_BASE(memo->slot[i].after) == cur) {
                memo->slot[i].after = NEBULA_MEMO_NONE;
            }
        }

        /* (and this one not after itself: its end has changed) */
        if (MEMO_BASE(after) == cur) {
            after = NEBULA_MEMO_NONE;
        }

        memcpy(m->from, from, NEBULA_STREAM_LOCAL);
        memcpy(m->to, s, NEBULA_STREAM_LOCAL);
        memcpy(m->bytes, q, n);
        m->len = (uint16_t) n;
        m->ev = (unsigned char) *e;
        m->next = (unsigned char) *mark;
        m->content_docs = (unsigned char) (s->content_docs - docs);
        m->after = (unsigned char) after;
        m->text_adds = (*e == EV_TEXT_OPEN && !s->doc_content);
    }

    return n;
}


/*
 * After slot k's stretch, replayed up to a text's opening quote (p): when
 * the text is plain and the stretch after its closing quote is the
 * memo's, as it began after slot k's end and such a text last time,
 * returns that slot and where it ends, the whole chunk replayed in one.
 */
static nebula_memo_slot_t *
memo_text_tail(nebula_memo_t *memo, unsigned k, const unsigned char *p,
    const unsigned char *end, const unsigned char **past, unsigned *full)
{
    size_t                n;
    nebula_memo_slot_t   *t;
    const unsigned char  *q;

    q = nebula_find_stop(p, end);

    if (q == end || *q != '"') {
        return NULL;
    }

    n = (size_t) (q - p);
    q++;

    t = &memo->slot[memo_next(EV_TEXT_CLOSE)];

    if (t->after != MEMO_AFTER_TEXT(k, n)
        || (size_t) t->len - 1 >= (size_t) (end - q)
        || memcmp(q, t->bytes, t->len) != 0)
    {
        return NULL;
    }

    *past = q + t->len;
    *full = (n != 0);

    return t;
}


/*
 * With a memo: each stretch that begins at a slot's mark is compared with
 * the one the slot holds, and replayed when the state and the bytes are
 * the same; else memo_walk() scans it.  A stretch that begins where one
 * replayed ends begins in the state that one left: a slot found to begin
 * so, the same slot just replayed, needs no comparison of states.  The
 * state is the same after each call as without a memo (the fuzz targets
 * hold it to the reference scanner both ways).  The slot to compare and
 * the one replayed last stay in registers until the call returns: a
 * token's chunk is a replay, its text, and a replay.
 */
size_t
nebula_memo_scan(nebula_stream_t *s, const unsigned char *p, size_t len,
    nebula_event_e *ev)
{
    size_t                n, rest;
    unsigned              mark, replayed, prev, full;
    nebula_event_e        e;
    nebula_memo_t        *memo;
    nebula_memo_slot_t   *m, *t;
    const unsigned char  *q, *end;

    q = p;
    end = p + len;
    memo = s->memo;
    mark = s->mark;
    replayed = s->replayed;
    e = NEBULA_EV_NONE;

    if (s->resume != NEBULA_MEMO_NONE && len != 0) {
        /*
         * The last slice ended inside a stretch that, so far, was a
         * slot's, from the slot's state: if the rest is the slot's rest,
         * the stretch ends where the slot's ended.  (Only a call's
         * beginning can be inside a stretch so.)
         */
        m = &memo->slot[s->resume];
        rest = m->len - s->resume_off;
        s->resume = NEBULA_MEMO_NONE;

        if (rest <= len && memcmp(q, m->bytes + s->resume_off, rest) == 0) {
            memcpy(s, m->to, NEBULA_STREAM_LOCAL);
            q += rest;
            e = (nebula_event_e) m->ev;
            mark = m->next;
            replayed = NEBULA_MEMO_NONE;

            if (nebula_stream_stops(s, e, (size_t) (q - p))) {
                goto done;
            }
        }
    }

    while (q < end) {
        if (mark < NEBULA_MEMO_SLOTS) {
            m = &memo->slot[mark];

            /* (size_t) (len - 1): an empty slot fits nowhere */
            if ((size_t) m->len - 1 < (size_t) (end - q)
                && ((m->after != NEBULA_MEMO_NONE && m->after == replayed)
                    || memcmp(s, m->from, NEBULA_STREAM_LOCAL) == 0)
                && memcmp(q, m->bytes, m->len) == 0)
            {
                /* the state it began in is the end of the one replayed */
                m->after = (unsigned char) replayed;

                s->content_docs += m->content_docs;
                q += m->len;

                if (m->next == MEMO_TEXT
                    && (t = memo_text_tail(memo, mark, q, end, &q, &full)))
                {
                    /*
                     * A token's chunk whole: its framing, its text and
                     * the framing after, as slot k, a text and slot t
                     * would be replayed one by one, with one copy of the
                     * state, the last.
                     */
                    memcpy(s, t->to, NEBULA_STREAM_LOCAL);
                    s->content_docs += (full ? m->text_adds : 0)
                                       + t->content_docs;
                    e = (nebula_event_e) t->ev;
                    replayed = memo_next(EV_TEXT_CLOSE);
                    mark = t->next;

                    if (nebula_stream_stops(s, e, (size_t) (q - p))) {
                        goto done;
                    }

                    continue;
                }

                memcpy(s, m->to, NEBULA_STREAM_LOCAL);
                e = (nebula_event_e) m->ev;
                replayed = mark;
                mark = m->next;

                if (nebula_stream_stops(s, e, (size_t) (q - p))) {
                    goto done;
                }

                continue;
            }
        }

        prev = replayed;
        replayed = NEBULA_MEMO_NONE;

        if (mark == MEMO_TEXT) {
            /*
             * A token's text, most often a few plain bytes and its closing
             * quote: what json_run() does to them, without its setting up.
             * Any other byte first (an escape, a control byte, the end of
             * the slice) and json_run() reads it.
             */
            n = (size_t) (nebula_find_stop(q, end) - q);

            if (q + n != end && q[n] == '"') {
                if (n != 0 && !s->doc_content) {
                    s->doc_content = 1;
                    s->content_docs++;
                }

                s->json_flags &= ~(F_OPEN | F_MODEL);
                s->json_state = J_VALUE;
                s->in_content = 0;
                mark = memo_next(EV_TEXT_CLOSE);
                q += n + 1;

                if (prev < NEBULA_MEMO_SLOTS) {
                    replayed = MEMO_AFTER_TEXT(prev, n);
                }

                continue;
            }
        }

        q += memo_walk(s, q, end, &mark, prev, &e);

        if (e == NEBULA_EV_NONE
            || nebula_stream_stops(s, e, (size_t) (q - p)))
        {
            goto done;
        }
    }

    e = NEBULA_EV_NONE;

done:

    s->mark = (unsigned char) mark;
    s->replayed = (unsigned char) replayed;
    *ev = e;

    return (size_t) (q - p);
}


/*
 * A quiet scanner without a memo: the event ends it passes, one by one.
 * Not inlined: in nebula_stream_scan() its loop would have registers
 * saved on every call, with a memo too, for some 10 instructions a call.
 */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static size_t
quiet_scan(nebula_stream_t *s, const unsigned char *p, size_t len,
    nebula_event_e *ev)
{
    size_t  n;

    n = 0;

    for ( ;; ) {
        n += nebula_stream_walk(s, p + n, len - n, ev);

        if (*ev == NEBULA_EV_NONE || nebula_stream_stops(s, *ev, n)) {
            return n;
        }

        if (n == len) {
            *ev = NEBULA_EV_NONE;
            return n;
        }
    }
}


/*
 * The scanner's entry: here, beside the memo, so that the walk
 * (nebula_stream.c) never calls back into the memo that calls it.
 */
size_t
nebula_stream_scan(nebula_stream_t *s, const unsigned char *p, size_t len,
    nebula_event_e *ev)
{
    s->ended = 0;

    if (s->memo) {
        return nebula_memo_scan(s, p, len, ev);
    }

    if (s->quiet) {
        return quiet_scan(s, p, len, ev);
    }

    return nebula_stream_walk(s, p, len, ev);
}
