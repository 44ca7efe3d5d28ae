/*
 * libFuzzer target: the image reader (nebula_estimate.c).
 *
 * The input is read twice: as base64 text (whatever it holds), and as an
 * image's bytes, encoded to base64 once without line breaks and once
 * with a CRLF every n characters (n from the first byte).  The reader
 * jumps over what it does not need; the breaks make it walk instead, so
 * both ways must read the same size, or fail the same way.
 */

#include <stdlib.h>
#include <string.h>

#include "nebula_estimate.h"


static const char  chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


static size_t
encode(const unsigned char *d, size_t n, size_t line, unsigned char *out)
{
    size_t    i, j, k, o;
    uint32_t  v;
    char      g[4];

    o = 0;
    k = 0;

    for (i = 0; i < n; i += 3) {
        v = (uint32_t) d[i] << 16;
        v |= (i + 1 < n) ? (uint32_t) d[i + 1] << 8 : 0;
        v |= (i + 2 < n) ? d[i + 2] : 0;

        g[0] = chars[v >> 18 & 63];
        g[1] = chars[v >> 12 & 63];
        g[2] = (i + 1 < n) ? chars[v >> 6 & 63] : '=';
        g[3] = (i + 2 < n) ? chars[v & 63] : '=';

        for (j = 0; j < 4; j++) {
            out[o++] = g[j];

            if (line && ++k % line == 0) {
                out[o++] = (k / line % 2) ? '\n' : '\r';
                out[o++] = '\n';
            }
        }
    }

    return o;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t           n, line;
    uint32_t         w1, h1, w2, h2;
    unsigned char   *b;
    nebula_image_e   r1, r2;

    r1 = nebula_image_size(data, size, &w1, &h1);

    if (r1 == NEBULA_IMAGE_OK && (w1 == 0 || h1 == 0)) {
        abort();
    }

    if (size < 1) {
        return 0;
    }

    line = 1 + data[0] % 80;
    data++;
    size--;

    b = malloc(size / 3 * 4 + 4 + (size / 3 + 1) * 4 / line * 2 + 2);
    if (b == NULL) {
        return 0;
    }

    n = encode(data, size, 0, b);
    r1 = nebula_image_size(b, n, &w1, &h1);

    n = encode(data, size, line, b);
    r2 = nebula_image_size(b, n, &w2, &h2);

    if (r1 != r2 || (r1 == NEBULA_IMAGE_OK && (w1 != w2 || h1 != h2))) {
        abort();
    }

    if (r1 == NEBULA_IMAGE_OK
        && (w1 == 0 || h1 == 0
            || nebula_image_tokens(w1, h1) < NEBULA_IMAGE_TOKENS
            || nebula_image_tokens(w1, h1) > NEBULA_IMAGE_TOKENS_MAX))
    {
        abort();
    }

    free(b);
    return 0;
}
