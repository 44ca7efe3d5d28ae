/*
 * Nebula: plain-C helpers over a request body's bytes (see nebula_body.h).
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nebula_body.h"


/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF.  yajl checks only a sequence's shape, and a body it lets
 * through is one a pool may refuse, after we counted it.  Returns 1, with
 * the offending byte's offset, for a body that is not UTF-8.
 */
int
nebula_utf8_invalid(const unsigned char *p, size_t len, size_t *at)
{
    size_t          i, k, n;
    unsigned char   c, lo, hi;
    uint64_t        w;

    i = 0;

    while (i < len) {

        /* ASCII, eight bytes at a time */
        while (i + 8 <= len) {
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL) {
                break;
            }
            i += 8;
        }

        if (i == len) {
            break;
        }

        c = p[i];

        if (c < 0x80) {
            i++;
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) {
                lo = 0xa0;              /* no overlong forms */
            } else if (c == 0xed) {
                hi = 0x9f;              /* no surrogates */
            }

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f;              /* nothing past U+10FFFF */
            }

        } else {
            *at = i;
            return 1;
        }

        if (i + n >= len) {
            /* cut short */
            *at = i;
            return 1;
        }

        if (p[i + 1] < lo || p[i + 1] > hi) {
            *at = i;
            return 1;
        }

        for (k = 2; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                *at = i;
                return 1;
            }
        }

        i += n + 1;
    }

    return 0;
}


/*
 * Ollama decodes bodies with Go's encoding/json, which matches a key to a
 * field whatever its case (and takes U+017F for s, U+212A for k), the last
 * one winning.  So keys are folded the same way before they are looked
 * up; a key that names one of our fields in another spelling is refused,
 * or a client could have us check "model" while Ollama reads "MODEL".
 */
size_t
nebula_fold_key(const unsigned char *key, size_t len, unsigned char *out,
    size_t size)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        if (n == size) {
            return size + 1;    /* longer than any field of ours */
        }

        if (key[i] >= 'A' && key[i] <= 'Z') {
            out[n++] = key[i] + ('a' - 'A');

        } else if (key[i] == 0xc5 && i + 1 < len && key[i + 1] == 0xbf) {
            out[n++] = 's';
            i++;

        } else if (key[i] == 0xe2 && i + 2 < len && key[i + 1] == 0x84
                   && key[i + 2] == 0xaa)
        {
            out[n++] = 'k';
            i += 2;

        } else {
            out[n++] = key[i];
        }
    }

    return n;
}


size_t
nebula_edit_length(size_t len, const nebula_edit_t *edits, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        len = len - (edits[i].end - edits[i].start) + edits[i].len;
    }

    return len;
}


void
nebula_edit_apply(const unsigned char *body, size_t len,
    const nebula_edit_t *edits, size_t n, unsigned char *out)
{
    size_t  i, pos;

    pos = 0;

    for (i = 0; i < n; i++) {
        memcpy(out, body + pos, edits[i].start - pos);
        out += edits[i].start - pos;

        if (edits[i].len) {
            /* a deletion may come without data (NULL) */
            memcpy(out, edits[i].data, edits[i].len);
            out += edits[i].len;
        }

        pos = edits[i].end;
    }

    memcpy(out, body + pos, len - pos);
}


void
nebula_edit_sort(nebula_edit_t *edits, size_t n)
{
    size_t         i, j;
    nebula_edit_t  e;

    for (i = 1; i < n; i++) {
        e = edits[i];

        for (j = i; j > 0; j--) {
            if (edits[j - 1].start < e.start
                || (edits[j - 1].start == e.start
                    && (edits[j - 1].end == edits[j - 1].start
                        || e.end != e.start)))
            {
                break;
            }

            edits[j] = edits[j - 1];
        }

        edits[j] = e;
    }
}


size_t
nebula_json_quote(unsigned char *out, const unsigned char *s, size_t len)
{
    static const char   hex[] = "0123456789abcdef";
    unsigned char      *p = out;
    size_t              i;

    *p++ = '"';

    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case '"':
        case '\\':
            *p++ = '\\';
            *p++ = s[i];
            break;
        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;
        case '\r':
            *p++ = '\\';
            *p++ = 'r';
            break;
        case '\t':
            *p++ = '\\';
            *p++ = 't';
            break;
        default:
            if (s[i] < 0x20) {
                *p++ = '\\';
                *p++ = 'u';
                *p++ = '0';
                *p++ = '0';
                *p++ = hex[s[i] >> 4];
                *p++ = hex[s[i] & 0xf];

            } else {
                *p++ = s[i];
            }
        }
    }

    *p++ = '"';

    return p - out;
}


/*
 * A JSON integer as the request parser reads one: 0 with its value, -1
 * when it is no integer or has more than 15 digits (more than any limit).
 */
int
nebula_json_integer(const char *s, size_t len, int64_t *out)
{
    size_t   i = 0;
    int      neg = 0;
    int64_t  v = 0;

    if (len && s[0] == '-') {
        neg = 1;
        i = 1;
    }

    if (i == len || len - i > 15) {
        return -1;
    }

    for ( /* void */ ; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }

    *out = neg ? -v : v;
    return 0;
}


/* a number too long for a buffer on the stack; NaN with no memory for it */
double
nebula_json_number_long(const char *s, size_t len)
{
    char    *copy;
    double   d;

    copy = malloc(len + 1);
    if (copy == NULL) {
        return NAN;
    }

    memcpy(copy, s, len);
    copy[len] = '\0';
    d = strtod(copy, NULL);
    free(copy);

    return d;
}
