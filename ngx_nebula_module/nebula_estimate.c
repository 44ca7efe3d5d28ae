/*
 * Nebula: the prompt estimate and image sizes (see nebula_estimate.h).
 *
 * An image comes as base64, often megabytes of it, and its size sits in
 * the first bytes (or, for a JPEG, after its APP segments).  Base64 maps
 * each 4 characters to 3 bytes, so any byte can be decoded alone: the
 * reader below jumps to the group that holds it and decodes that group,
 * never the whole image.
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nebula_estimate.h"


/* a JPEG walked further than this before its frame header is refused */
#define JPEG_MAX_STEPS    4096

/* and a WebP with more chunks than this before its frame */
#define WEBP_MAX_CHUNKS   64


uint64_t
nebula_estimate_tokens(const nebula_estimate_t *e)
{
    uint64_t  counted, floor, rest;

    counted = ((uint64_t) e->text_bytes + 3) / 4
              + ((uint64_t) e->other_bytes + 3) / 4
              + e->context_ids
              + 4 * (uint64_t) e->messages + 3
              + e->image_tokens;

    rest = (e->body_bytes > e->image_bytes)
           ? e->body_bytes - e->image_bytes : 0;

    floor = (rest + 3) / 4 + e->image_tokens;

    return (counted > floor) ? counted : floor;
}


uint64_t
nebula_image_tokens(uint32_t width, uint32_t height)
{
    uint64_t  t;

    t = (((uint64_t) width + NEBULA_IMAGE_PATCH - 1) / NEBULA_IMAGE_PATCH)
        * (((uint64_t) height + NEBULA_IMAGE_PATCH - 1) / NEBULA_IMAGE_PATCH);

    if (t < NEBULA_IMAGE_TOKENS) {
        return NEBULA_IMAGE_TOKENS;
    }

    if (t > NEBULA_IMAGE_TOKENS_MAX) {
        return NEBULA_IMAGE_TOKENS_MAX;
    }

    return t;
}


long
nebula_image_data_url(const unsigned char *url, size_t len)
{
    size_t  i, n;

    static const char  *prefixes[] = {
        "data:image/jpeg;base64,",
        "data:image/jpg;base64,",
        "data:image/png;base64,",
        "data:image/webp;base64,",
        "data:;base64,",
        NULL
    };

    for (i = 0; prefixes[i]; i++) {
        n = strlen(prefixes[i]);

        if (len >= n && memcmp(url, prefixes[i], n) == 0) {
            return (long) n;
        }
    }

    return -1;
}


const char *
nebula_image_error(nebula_image_e err)
{
    switch (err) {
    case NEBULA_IMAGE_BAD_BASE64:
        return "the image's base64 data cannot be decoded";
    case NEBULA_IMAGE_UNKNOWN:
        return "the image is not a PNG, JPEG, GIF or WebP";
    case NEBULA_IMAGE_BAD_HEADER:
        return "the image's width and height cannot be read from its header";
    case NEBULA_IMAGE_TOO_LARGE:
        return "the image has more than 50 million pixels";
    default:
        return "";
    }
}


/*
 * Random access into base64.  Go's decoder, Ollama's, skips CR and LF
 * anywhere, so a jump over n groups is 4n characters only when none
 * lies between: checked with memchr over what is skipped, and walked
 * character by character when one does (rare: JSON needs them escaped).
 */
typedef struct {
    const unsigned char  *s;
    size_t                len;
    size_t                pos;       /* where group `group` starts */
    size_t                group;
    size_t                cached;    /* the group in out[], or SIZE_MAX */
    size_t                n;         /* its bytes: 3, or 1-2 at the end */
    unsigned char         out[3];
} b64_t;


#define B64_OK    0
#define B64_EOF   1     /* past the end of the data */
#define B64_BAD   2     /* not base64 */


static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '+') {
        return 62;
    }

    if (c == '/') {
        return 63;
    }

    return (c == '=') ? 64 : -1;
}


static int
b64_break(unsigned char c)
{
    return c == '\r' || c == '\n';
}


/* moves to the start of group g */
static int
b64_seek(b64_t *r, size_t g)
{
    size_t  skip, k;

    if (g < r->group) {
        r->pos = 0;
        r->group = 0;
    }

    skip = (g - r->group) * 4;

    if (skip <= r->len - r->pos
        && memchr(r->s + r->pos, '\n', skip) == NULL
        && memchr(r->s + r->pos, '\r', skip) == NULL)
    {
        r->pos += skip;
        r->group = g;
        return B64_OK;
    }

    while (r->group < g) {
        for (k = 0; k < 4; k++) {
            while (r->pos < r->len && b64_break(r->s[r->pos])) {
                r->pos++;
            }

            if (r->pos == r->len) {
                return B64_EOF;
            }

            r->pos++;
        }

        r->group++;
    }

    return B64_OK;
}


static int
b64_decode_group(b64_t *r, size_t g)
{
    int     v[4];
    size_t  k, i;

    if (b64_seek(r, g) != B64_OK) {
        return B64_EOF;
    }

    i = r->pos;

    for (k = 0; k < 4; k++) {
        while (i < r->len && b64_break(r->s[i])) {
            i++;
        }

        if (i == r->len) {
            /* Go's StdEncoding wants whole, padded groups */
            return (k == 0) ? B64_EOF : B64_BAD;
        }

        v[k] = b64_value(r->s[i++]);

        if (v[k] < 0) {
            return B64_BAD;
        }
    }

    if (v[0] == 64 || v[1] == 64 || (v[2] == 64 && v[3] != 64)) {
        return B64_BAD;
    }

    r->n = (v[2] == 64) ? 1 : (v[3] == 64) ? 2 : 3;

    if (r->n < 3) {
        /* padding ends the data: only line breaks may follow */
        for (k = i; k < r->len; k++) {
            if (!b64_break(r->s[k])) {
                return B64_BAD;
            }
        }

        v[2] &= 63;
        v[3] &= 63;
    }

    r->out[0] = (unsigned char) (v[0] << 2 | v[1] >> 4);
    r->out[1] = (unsigned char) ((v[1] & 15) << 4 | v[2] >> 2);
    r->out[2] = (unsigned char) ((v[2] & 3) << 6 | v[3]);

    r->cached = g;
    r->pos = i;
    r->group = g + 1;

    return B64_OK;
}


/* n decoded bytes at offset off */
static int
b64_read(b64_t *r, uint64_t off, unsigned char *buf, size_t n)
{
    int       rc;
    size_t    k;
    uint64_t  g;

    for (k = 0; k < n; k++, off++) {
        g = off / 3;

        if (g > SIZE_MAX / 4) {
            return B64_EOF;
        }

        if (r->cached != g) {
            rc = b64_decode_group(r, (size_t) g);
            if (rc != B64_OK) {
                return rc;
            }
        }

        if (off % 3 >= r->n) {
            return B64_EOF;
        }

        buf[k] = r->out[off % 3];
    }

    return B64_OK;
}


static nebula_image_e
image_error(int rc)
{
    return (rc == B64_BAD) ? NEBULA_IMAGE_BAD_BASE64 : NEBULA_IMAGE_BAD_HEADER;
}


static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}


static uint32_t
le16(const unsigned char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8;
}


static uint32_t
le24(const unsigned char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16;
}


static uint32_t
le32(const unsigned char *p)
{
    return le24(p) | (uint32_t) p[3] << 24;
}


/* the IHDR chunk must come first; Go takes 1 to 2^31 - 1 pixels a side */
static nebula_image_e
png_size(b64_t *r, uint32_t *w, uint32_t *h)
{
    int            rc;
    unsigned char  b[24];

    static const unsigned char  sig[8] = {
        0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'
    };

    rc = b64_read(r, 0, b, sizeof(b));
    if (rc != B64_OK) {
        return image_error(rc);
    }

    if (memcmp(b, sig, 8) != 0 || be32(b + 8) != 13
        || memcmp(b + 12, "IHDR", 4) != 0)
    {
        return NEBULA_IMAGE_BAD_HEADER;
    }

    *w = be32(b + 16);
    *h = be32(b + 20);

    if (*w == 0 || *h == 0 || *w > 0x7fffffff || *h > 0x7fffffff) {
        return NEBULA_IMAGE_BAD_HEADER;
    }

    return NEBULA_IMAGE_OK;
}


/*
 * The segments are walked as Go's decoder (and libjpeg, and stb_image)
 * walk them, to the first frame header: bytes between segments that are
 * not a marker are skipped, so are fill bytes (0xff) before a marker and
 * "\xff\x00"; every other marker but RSTn has a length.  Image data
 * (SOS) or the end (EOI) before any frame header has no size to read.
 */
static nebula_image_e
jpeg_size(b64_t *r, uint32_t *w, uint32_t *h)
{
    int            rc;
    size_t         steps;
    uint32_t       len;
    uint64_t       off;
    unsigned char  b[5], m;

    rc = b64_read(r, 0, b, 2);
    if (rc != B64_OK) {
        return image_error(rc);
    }

    if (b[0] != 0xff || b[1] != 0xd8) {
        return NEBULA_IMAGE_BAD_HEADER;
    }

    off = 2;

    for (steps = 0; steps < JPEG_MAX_STEPS; steps++) {

        rc = b64_read(r, off++, &m, 1);
        if (rc != B64_OK) {
            return image_error(rc);
        }

        if (m != 0xff) {
            continue;           /* extraneous data */
        }

        do {
            rc = b64_read(r, off++, &m, 1);
            if (rc != B64_OK) {
                return image_error(rc);
            }

        } while (m == 0xff && ++steps < JPEG_MAX_STEPS);

        if (m == 0x00 || (m >= 0xd0 && m <= 0xd7) || m == 0xff) {
            continue;           /* stuffed data, RSTn; or out of steps */
        }

        if (m == 0xd9 || m == 0xda) {
            return NEBULA_IMAGE_BAD_HEADER;
        }

        rc = b64_read(r, off, b, 2);
        if (rc != B64_OK) {
            return image_error(rc);
        }

        len = (uint32_t) b[0] << 8 | b[1];

        if (len < 2) {
            return NEBULA_IMAGE_BAD_HEADER;
        }

        /* SOF0-SOF15 but DHT (c4), JPG (c8) and DAC (cc) */
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            rc = b64_read(r, off + 2, b, 5);
            if (rc != B64_OK) {
                return image_error(rc);
            }

            *h = (uint32_t) b[1] << 8 | b[2];
            *w = (uint32_t) b[3] << 8 | b[4];

            /* a height of 0 is given later by DNL, which Go refuses */
            if (len < 8 || *w == 0 || *h == 0) {
                return NEBULA_IMAGE_BAD_HEADER;
            }

            return NEBULA_IMAGE_OK;
        }

        off += len;
    }

    return NEBULA_IMAGE_BAD_HEADER;
}


/* Go's decoder keeps the first frame within the logical screen */
static nebula_image_e
gif_size(b64_t *r, uint32_t *w, uint32_t *h)
{
    int            rc;
    unsigned char  b[10];

    rc = b64_read(r, 0, b, sizeof(b));
    if (rc != B64_OK) {
        return image_error(rc);
    }

    if (memcmp(b, "GIF87a", 6) != 0 && memcmp(b, "GIF89a", 6) != 0) {
        return NEBULA_IMAGE_BAD_HEADER;
    }

    *w = le16(b + 6);
    *h = le16(b + 8);

    return (*w && *h) ? NEBULA_IMAGE_OK : NEBULA_IMAGE_BAD_HEADER;
}


/* a VP8 (lossy) or VP8L (lossless) frame's size, from its chunk's data */
static nebula_image_e
webp_frame(b64_t *r, uint64_t off, int lossless, uint32_t *w, uint32_t *h)
{
    int            rc;
    unsigned char  b[10];

    rc = b64_read(r, off, b, lossless ? 5 : 10);
    if (rc != B64_OK) {
        return image_error(rc);
    }

    if (lossless) {
        /* 0x2f, then 14 bits of width - 1, 14 of height - 1, 1, 3 */
        if (b[0] != 0x2f || (b[4] >> 5) != 0) {
            return NEBULA_IMAGE_BAD_HEADER;
        }

        *w = 1 + (b[1] | (uint32_t) (b[2] & 0x3f) << 8);
        *h = 1 + (b[2] >> 6 | (uint32_t) b[3] << 2
                  | (uint32_t) (b[4] & 0x0f) << 10);

        return NEBULA_IMAGE_OK;
    }

    /* a key frame: its tag's low bit clear, then the start code */
    if ((b[0] & 1) != 0 || b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a) {
        return NEBULA_IMAGE_BAD_HEADER;
    }

    *w = le16(b + 6) & 0x3fff;
    *h = le16(b + 8) & 0x3fff;

    return (*w && *h) ? NEBULA_IMAGE_OK : NEBULA_IMAGE_BAD_HEADER;
}


/*
 * Go's decoder (which Ollama uses, also to turn a WebP into a PNG for
 * llama.cpp) walks the RIFF chunks to the first VP8 or VP8L and decodes
 * that frame at its own size, whatever a VP8X canvas before it says: so
 * the size is the larger of both.  A WebP without such a frame (an
 * animation) is one Go does not decode.
 */
static nebula_image_e
webp_size(b64_t *r, uint32_t *w, uint32_t *h)
{
    int             rc, canvas;
    size_t          i;
    uint32_t        size, cw, ch;
    uint64_t        off;
    nebula_image_e  err;
    unsigned char   b[10];

    rc = b64_read(r, 8, b, 4);
    if (rc != B64_OK) {
        return image_error(rc);
    }

    if (memcmp(b, "WEBP", 4) != 0) {
        return NEBULA_IMAGE_UNKNOWN;
    }

    canvas = 0;
    cw = 0;
    ch = 0;
    off = 12;

    for (i = 0; i < WEBP_MAX_CHUNKS; i++) {

        rc = b64_read(r, off, b, 8);
        if (rc != B64_OK) {
            return image_error(rc);
        }

        size = le32(b + 4);

        if (memcmp(b, "VP8 ", 4) == 0 || memcmp(b, "VP8L", 4) == 0) {
            err = webp_frame(r, off + 8, b[3] == 'L', w, h);
            if (err != NEBULA_IMAGE_OK) {
                return err;
            }

            if (canvas) {
                *w = (cw > *w) ? cw : *w;
                *h = (ch > *h) ? ch : *h;
            }

            return NEBULA_IMAGE_OK;
        }

        if (memcmp(b, "VP8X", 4) == 0) {
            if (canvas || size != 10) {
                return NEBULA_IMAGE_BAD_HEADER;
            }

            rc = b64_read(r, off + 8, b, 10);
            if (rc != B64_OK) {
                return image_error(rc);
            }

            cw = 1 + le24(b + 4);
            ch = 1 + le24(b + 7);
            canvas = 1;

            /* RFC 9649: the canvas has at most 2^32 - 1 pixels */
            if ((uint64_t) cw * ch > 0xffffffff) {
                return NEBULA_IMAGE_BAD_HEADER;
            }
        }

        off += 8 + (uint64_t) size + (size & 1);
    }

    return NEBULA_IMAGE_BAD_HEADER;
}


static nebula_image_e
image_size(const unsigned char *b64, size_t len, uint32_t *width,
    uint32_t *height);


nebula_image_e
nebula_image_size(const unsigned char *b64, size_t len, uint32_t *width,
    uint32_t *height)
{
    nebula_image_e  rc;

    rc = image_size(b64, len, width, height);

    if (rc == NEBULA_IMAGE_OK
        && (uint64_t) *width * *height > NEBULA_IMAGE_PIXELS_MAX)
    {
        return NEBULA_IMAGE_TOO_LARGE;
    }

    return rc;
}


static nebula_image_e
image_size(const unsigned char *b64, size_t len, uint32_t *width,
    uint32_t *height)
{
    int            rc;
    b64_t          r;
    unsigned char  b[4];

    r.s = b64;
    r.len = len;
    r.pos = 0;
    r.group = 0;
    r.cached = SIZE_MAX;
    r.n = 0;

    *width = 0;
    *height = 0;

    rc = b64_read(&r, 0, b, 4);

    if (rc == B64_BAD) {
        return NEBULA_IMAGE_BAD_BASE64;
    }

    if (rc != B64_OK) {
        return NEBULA_IMAGE_UNKNOWN;     /* fewer than 4 bytes */
    }

    if (b[0] == 0x89 && b[1] == 'P' && b[2] == 'N' && b[3] == 'G') {
        return png_size(&r, width, height);
    }

    if (b[0] == 0xff && b[1] == 0xd8) {
        return jpeg_size(&r, width, height);
    }

    if (memcmp(b, "GIF8", 4) == 0) {
        return gif_size(&r, width, height);
    }

    if (memcmp(b, "RIFF", 4) == 0) {
        return webp_size(&r, width, height);
    }

    return NEBULA_IMAGE_UNKNOWN;
}
