/*
 * Unit tests of the prompt estimate and the image reader
 * (nebula_estimate.c), and of how the request parser feeds them.
 */

#include <stdlib.h>

#include "nebula_estimate.h"
#include "nebula_request.h"
#include "tap.h"


/* real images, the smallest of each kind: 1 x 1 */
#define PNG_1X1   "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4" \
                  "nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
#define JPEG_1X1  "/9j/2wBDAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB" \
                  "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQH/wAALCAAB" \
                  "AAEBAREA/8QAFAABAAAAAAAAAAAAAAAAAAAAAP/EABQQAQAAAAAAAAAA" \
                  "AAAAAAAAAAD/2gAIAQEAAD8AP//Z"
#define GIF_1X1   "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
#define WEBP_VP8  "UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA"
#define WEBP_VP8L "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="
#define WEBP_VP8X "UklGRkoAAABXRUJQVlA4WAoAAAAQAAAAAAAAAAAAQUxQSAwAAAAR" \
                  "BxAR/Q9ERP8DAABWUDggGAAAABQBAJ0BKgEAAQAAAP4AAA3AAP7mtQAA" \
                  "AA=="


static const char  b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* base64 of n bytes, a CRLF after every `line` characters when line > 0 */
static char *
b64(const unsigned char *d, size_t n, size_t line, size_t *len)
{
    size_t    i, k, o;
    uint32_t  v;
    char     *out;

    out = malloc(n / 3 * 6 + 16 + (line ? (n * 4 / 3 / line + 1) * 2 : 0));
    o = 0;
    k = 0;

    for (i = 0; i < n; i += 3) {
        v = (uint32_t) d[i] << 16;
        v |= (i + 1 < n) ? (uint32_t) d[i + 1] << 8 : 0;
        v |= (i + 2 < n) ? d[i + 2] : 0;

        char  g[4] = {
            b64_chars[v >> 18 & 63], b64_chars[v >> 12 & 63],
            (i + 1 < n) ? b64_chars[v >> 6 & 63] : '=',
            (i + 2 < n) ? b64_chars[v & 63] : '='
        };

        for (size_t j = 0; j < 4; j++) {
            out[o++] = g[j];

            if (line && ++k % line == 0) {
                out[o++] = '\r';
                out[o++] = '\n';
            }
        }
    }

    out[o] = '\0';
    *len = o;

    return out;
}


static nebula_image_e
size_of_bytes(const unsigned char *d, size_t n, size_t line, uint32_t *w,
    uint32_t *h)
{
    size_t          len;
    char           *s;
    nebula_image_e  rc;

    s = b64(d, n, line, &len);
    rc = nebula_image_size((unsigned char *) s, len, w, h);
    free(s);

    return rc;
}


static nebula_image_e
size_of(const char *s, uint32_t *w, uint32_t *h)
{
    return nebula_image_size((const unsigned char *) s, strlen(s), w, h);
}


static void
put_be32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}


static void
put_le(unsigned char *p, uint32_t v, int n)
{
    int  i;

    for (i = 0; i < n; i++) {
        p[i] = v >> (8 * i);
    }
}


/* a PNG's signature and IHDR (and a few bytes after, as a real one has) */
static size_t
png(unsigned char *p, uint32_t w, uint32_t h)
{
    memcpy(p, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
    put_be32(p + 16, w);
    put_be32(p + 20, h);
    memcpy(p + 24, "\x08\x02\0\0\0\0\0\0\0", 9);

    return 33;
}


static size_t
gif(unsigned char *p, uint32_t w, uint32_t h)
{
    memcpy(p, "GIF89a", 6);
    put_le(p + 6, w, 2);
    put_le(p + 8, h, 2);
    memcpy(p + 10, "\x80\0\0", 3);

    return 13;
}


/* JPEG: SOI, `apps` APP1 segments of `app` bytes each, SOFn, EOI */
static size_t
jpeg(unsigned char *p, uint32_t w, uint32_t h, unsigned sof, size_t apps,
    size_t app)
{
    size_t  n, i;

    n = 0;
    p[n++] = 0xff;
    p[n++] = 0xd8;

    for (i = 0; i < apps; i++) {
        p[n++] = 0xff;
        p[n++] = 0xe1;
        p[n++] = (app + 2) >> 8;
        p[n++] = (app + 2) & 0xff;
        memset(p + n, 0xab, app);
        n += app;
    }

    p[n++] = 0xff;
    p[n++] = sof;
    p[n++] = 0;
    p[n++] = 11;
    p[n++] = 8;
    p[n++] = h >> 8;
    p[n++] = h & 0xff;
    p[n++] = w >> 8;
    p[n++] = w & 0xff;
    memcpy(p + n, "\x01\x01\x11\x00", 4);
    n += 4;
    p[n++] = 0xff;
    p[n++] = 0xd9;

    return n;
}


/* a RIFF WEBP header; chunks follow at 12 */
static size_t
riff(unsigned char *p, const char *form)
{
    memcpy(p, "RIFF\0\0\0\0", 8);
    memcpy(p + 8, form, 4);

    return 12;
}


static size_t
chunk_vp8(unsigned char *p, uint32_t w, uint32_t h)
{
    memcpy(p, "VP8 ", 4);
    put_le(p + 4, 10, 4);
    memcpy(p + 8, "\x30\x01\x00\x9d\x01\x2a", 6);
    put_le(p + 14, w, 2);
    put_le(p + 16, h, 2);

    return 18;
}


static size_t
chunk_vp8l(unsigned char *p, uint32_t w, uint32_t h)
{
    uint32_t  bits;

    memcpy(p, "VP8L", 4);
    put_le(p + 4, 5, 4);
    p[8] = 0x2f;
    bits = (w - 1) | (h - 1) << 14;
    put_le(p + 9, bits, 4);
    p[13] = 0;

    return 14;
}


static size_t
chunk_vp8x(unsigned char *p, uint32_t w, uint32_t h)
{
    memcpy(p, "VP8X", 4);
    put_le(p + 4, 10, 4);
    memset(p + 8, 0, 4);
    put_le(p + 12, w - 1, 3);
    put_le(p + 15, h - 1, 3);

    return 18;
}


static size_t
chunk_other(unsigned char *p, const char *id, uint32_t size)
{
    memcpy(p, id, 4);
    put_le(p + 4, size, 4);
    memset(p + 8, 0x5a, size + (size & 1));

    return 8 + size + (size & 1);
}


static void
test_real_images(void)
{
    uint32_t  w, h;

    static const char  *real[] = {
        PNG_1X1, JPEG_1X1, GIF_1X1, WEBP_VP8, WEBP_VP8L, WEBP_VP8X, NULL
    };
    static const char  *names[] = {
        "PNG", "JPEG", "GIF", "WebP (VP8)", "WebP (VP8L)", "WebP (VP8X)"
    };
    int  i;

    for (i = 0; real[i]; i++) {
        is_int(size_of(real[i], &w, &h), NEBULA_IMAGE_OK, "a real %s",
               names[i]);
        ok(w == 1 && h == 1, "%s: 1 x 1 (%u x %u)", names[i], w, h);
        is_int(nebula_image_tokens(w, h), NEBULA_IMAGE_TOKENS,
               "%s: the least an image costs", names[i]);
    }
}


static void
test_tokens(void)
{
    is_int(nebula_image_tokens(1, 1), 256, "1 x 1: 256");
    is_int(nebula_image_tokens(448, 448), 256, "448 x 448: 16 x 16 = 256");
    is_int(nebula_image_tokens(449, 448), 17 * 16, "449 x 448: 17 x 16");
    is_int(nebula_image_tokens(896, 896), 1024, "896 x 896: 32 x 32");
    is_int(nebula_image_tokens(1000, 500), 36 * 18, "1000 x 500: 36 x 18");
    is_int(nebula_image_tokens(3584, 3584), 16384, "3584 x 3584: 16384");
    is_int(nebula_image_tokens(3585, 3584), 16384, "just over: clamped");
    is_int(nebula_image_tokens(0xffffffff, 0xffffffff), 16384,
           "2^32 - 1 a side: clamped, no overflow");
    is_int(nebula_image_tokens(100000, 1), 3572, "a strip of 100000 x 1");
    is_int(nebula_image_tokens(100000, 28 * 5), 16384, "100000 x 140: clamped");
}


static void
test_png(void)
{
    unsigned char  d[64];
    uint32_t       w, h;
    size_t         n, k;

    n = png(d, 1920, 1080);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK, "PNG 1920 x 1080");
    ok(w == 1920 && h == 1080, "its size read (%u x %u)", w, h);
    is_int(nebula_image_tokens(w, h), 69 * 39, "costs 69 x 39 tokens");

    n = png(d, 0x7fffffff, 0x7fffffff);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_TOO_LARGE,
           "PNG 2^31 - 1 a side: read, and too large to decode");
    ok(w == 0x7fffffff && h == 0x7fffffff, "its size still read");
    is_int(nebula_image_tokens(w, h), 16384, "and clamped");

    n = png(d, 8000, 6250);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK,
           "PNG of 50 million pixels: within the cap");
    n = png(d, 8000, 6251);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_TOO_LARGE,
           "one row more: past it");
    is_int(nebula_image_error(NEBULA_IMAGE_TOO_LARGE)[0] != '\0', 1,
           "and said in words");

    n = png(d, 0x80000000, 1);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "PNG 2^31 wide: refused, as Go refuses it");
    n = png(d, 5, 0);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "PNG 0 high: refused");

    n = png(d, 5, 5);
    d[15] = 'X';
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "PNG whose first chunk is not IHDR");
    n = png(d, 5, 5);
    d[11] = 14;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "PNG whose IHDR is not 13 bytes");
    n = png(d, 5, 5);
    d[6] = 0;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "PNG with a broken signature");

    n = png(d, 640, 480);

    for (k = 4; k < 24; k++) {
        if (size_of_bytes(d, k, 0, &w, &h) != NEBULA_IMAGE_BAD_HEADER) {
            break;
        }
    }

    is_int(k, 24, "PNG cut anywhere in its header: refused");
    is_int(size_of_bytes(d, 24, 0, &w, &h), NEBULA_IMAGE_OK,
           "PNG of just its header: read");
}


static void
test_gif(void)
{
    unsigned char  d[16];
    uint32_t       w, h;
    size_t         n, k;

    n = gif(d, 65535, 300);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK, "GIF 65535 x 300");
    ok(w == 65535 && h == 300, "its logical screen read (%u x %u)", w, h);
    is_int(nebula_image_tokens(w, h), 16384, "clamped");

    n = gif(d, 20, 30);
    memcpy(d, "GIF87a", 6);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK, "GIF87a");
    memcpy(d, "GIF88a", 6);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "GIF88a refused");

    n = gif(d, 0, 30);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "GIF 0 wide refused");

    n = gif(d, 20, 30);

    for (k = 4; k < 10; k++) {
        if (size_of_bytes(d, k, 0, &w, &h) != NEBULA_IMAGE_BAD_HEADER) {
            break;
        }
    }

    is_int(k, 10, "GIF cut in its header: refused");
}


static void
test_jpeg(void)
{
    unsigned char  *d;
    uint32_t        w, h;
    size_t          n, k, i;
    unsigned        sof;

    d = malloc(400000);

    n = jpeg(d, 4032, 3024, 0xc0, 0, 0);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK, "JPEG 4032 x 3024");
    ok(w == 4032 && h == 3024, "width and height from SOF0 (%u x %u)", w, h);
    is_int(nebula_image_tokens(w, h), 144 * 108, "144 x 108 tokens");

    for (sof = 0xc0; sof <= 0xcf; sof++) {
        if (sof == 0xc4 || sof == 0xc8 || sof == 0xcc) {
            continue;
        }

        n = jpeg(d, 100, 200, sof, 1, 10);
        if (size_of_bytes(d, n, 0, &w, &h) != NEBULA_IMAGE_OK
            || w != 100 || h != 200)
        {
            break;
        }
    }

    is_int(sof, 0xd0, "every SOFn is a frame header");

    /* DHT where a SOF would be: a segment, skipped; no frame after it */
    n = jpeg(d, 100, 200, 0xc4, 0, 0);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "DHT is not a frame header: the end comes first");

    /* the frame header after 5 APP1 segments of 65 KB: 325 KB in */
    n = jpeg(d, 1280, 720, 0xc2, 5, 65533);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK,
           "JPEG with its SOF2 after 325 KB of APP segments");
    ok(w == 1280 && h == 720, "read (%u x %u)", w, h);

    is_int(size_of_bytes(d, n, 76, &w, &h), NEBULA_IMAGE_OK,
           "the same in base64 with CRLF every 76 characters");
    ok(w == 1280 && h == 720, "read the same (%u x %u)", w, h);

    /* an EXIF thumbnail inside APP1 has its own SOF: not the image's */
    n = jpeg(d, 3000, 2000, 0xc0, 1, 40);
    memcpy(d + 10, "\xff\xd8\xff\xc0\x00\x0b\x08\x00\x10\x00\x10", 11);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK,
           "JPEG with a thumbnail in APP1");
    ok(w == 3000 && h == 2000, "the image's size, not the thumbnail's");

    /* what decoders skip: fill bytes, junk, "\xff\x00", RSTn */
    n = 0;
    memcpy(d, "\xff\xd8\xff\xff\xff\xe0\x00\x04" "ab" "junk\xff\x00\xff\xd3"
           "\xff\xc1\x00\x0b\x08\x01\x00\x02\x00\x01\x01\x11\x00", 31);
    n = 31;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK,
           "JPEG with fill bytes, junk, FF00 and RST3 before its SOF1");
    ok(w == 512 && h == 256, "read (%u x %u)", w, h);

    memcpy(d, "\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00", 12);
    is_int(size_of_bytes(d, 12, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "JPEG with its scan before any frame header");
    is_int(size_of_bytes((unsigned char *) "\xff\xd8\xff\xd9", 4, 0, &w, &h),
           NEBULA_IMAGE_BAD_HEADER, "JPEG that ends at once");
    memcpy(d, "\xff\xd8\xff\xe0\x00\x01", 6);
    is_int(size_of_bytes(d, 6, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "JPEG with a segment length below 2");

    n = jpeg(d, 100, 0, 0xc0, 0, 0);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "JPEG of height 0 (given later by DNL): refused");

    n = jpeg(d, 640, 480, 0xc0, 1, 1000);

    for (k = 4; k < 1015; k++) {
        if (size_of_bytes(d, k, 0, &w, &h) != NEBULA_IMAGE_BAD_HEADER) {
            break;
        }
    }

    is_int(k, 1015, "JPEG cut anywhere before its size: refused");

    /* 5000 empty COM segments: more walking than any real JPEG needs */
    n = 2;
    memcpy(d, "\xff\xd8", 2);

    for (i = 0; i < 5000; i++) {
        memcpy(d + n, "\xff\xfe\x00\x02", 4);
        n += 4;
    }

    k = jpeg(d + 350000, 8, 8, 0xc0, 0, 0);
    memcpy(d + n, d + 350002, k - 2);
    n += k - 2;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "JPEG whose SOF lies past 4096 steps: refused");

    free(d);
}


static void
test_webp(void)
{
    unsigned char  d[1024];
    uint32_t       w, h;
    size_t         n, k;

    n = riff(d, "WEBP");
    n += chunk_vp8(d + n, 16383, 3000);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK, "WebP VP8");
    ok(w == 16383 && h == 3000, "read (%u x %u)", w, h);

    n = riff(d, "WEBP");
    n += chunk_vp8(d + n, 300, 200);
    d[20] |= 1;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP VP8 that is not a key frame");
    n = riff(d, "WEBP");
    n += chunk_vp8(d + n, 300, 200);
    d[23] = 0;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP VP8 without its start code");

    n = riff(d, "WEBP");
    n += chunk_vp8l(d + n, 16384, 3);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK, "WebP VP8L");
    ok(w == 16384 && h == 3, "read (%u x %u)", w, h);
    d[24] = 0x20;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP VP8L of an unknown version");
    d[20] = 0x2e;
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP VP8L without its signature");

    /* a VP8X canvas, an ICC profile, alpha, then the frame */
    n = riff(d, "WEBP");
    n += chunk_vp8x(d + n, 800, 600);
    n += chunk_other(d + n, "ICCP", 101);
    n += chunk_other(d + n, "ALPH", 20);
    n += chunk_vp8(d + n, 800, 600);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK,
           "WebP VP8X, ICCP, ALPH, VP8");
    ok(w == 800 && h == 600, "read (%u x %u)", w, h);

    /* Go decodes the frame at its own size, whatever the canvas says */
    n = riff(d, "WEBP");
    n += chunk_vp8x(d + n, 1, 1);
    n += chunk_vp8l(d + n, 4000, 3000);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_OK,
           "WebP: a 1 x 1 canvas, a 4000 x 3000 frame");
    ok(w == 4000 && h == 3000, "the frame's size counts (%u x %u)", w, h);

    n = riff(d, "WEBP");
    n += chunk_vp8x(d + n, 16777216, 200);
    n += chunk_vp8(d + n, 10, 10);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_TOO_LARGE,
           "WebP: a canvas of 2^24 x 200, a small frame: too large");
    ok(w == 16777216 && h == 200, "the canvas counts (%u x %u)", w, h);
    is_int(nebula_image_tokens(w, h), 16384, "clamped");

    n = riff(d, "WEBP");
    n += chunk_vp8x(d + n, 16777216, 16777216);
    n += chunk_vp8(d + n, 10, 10);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP canvas over 2^32 - 1 pixels: refused (RFC 9649)");

    /* an animation: frames in ANMF chunks, which Go does not decode */
    n = riff(d, "WEBP");
    n += chunk_vp8x(d + n, 100, 100);
    n += chunk_other(d + n, "ANIM", 6);
    n += chunk_other(d + n, "ANMF", 40);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP without a VP8 or VP8L frame: refused");

    n = riff(d, "WEBP");
    n += chunk_vp8x(d + n, 100, 100);
    n += chunk_vp8x(d + n, 100, 100);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP with two VP8X");

    n = riff(d, "WEBP");

    for (k = 0; k < 70; k++) {
        n += chunk_other(d + n, "JUNK", 0);
    }

    n += chunk_vp8(d + n, 10, 10);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "WebP with 70 chunks before its frame: refused");

    n = riff(d, "WAVE");
    n += chunk_other(d + n, "fmt ", 16);
    is_int(size_of_bytes(d, n, 0, &w, &h), NEBULA_IMAGE_UNKNOWN,
           "RIFF WAVE (audio) is no image we read");

    n = riff(d, "WEBP");
    n += chunk_vp8(d + n, 640, 480);

    for (k = 4; k < n; k++) {
        if (size_of_bytes(d, k, 0, &w, &h) != NEBULA_IMAGE_BAD_HEADER) {
            break;
        }
    }

    is_int(k, n, "WebP cut anywhere in its header: refused");
}


static void
test_base64(void)
{
    uint32_t  w, h;

    is_int(size_of("", &w, &h), NEBULA_IMAGE_UNKNOWN, "no data");
    is_int(size_of("AA", &w, &h), NEBULA_IMAGE_BAD_BASE64,
           "an unpadded group");
    is_int(size_of("AA==AAAA", &w, &h), NEBULA_IMAGE_BAD_BASE64,
           "padding before the end");
    is_int(size_of("iVBO Kgo", &w, &h), NEBULA_IMAGE_BAD_BASE64,
           "a space in the header");
    is_int(size_of("iVBORw0K*goAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAA", &w, &h),
           NEBULA_IMAGE_BAD_BASE64, "a character not of base64");
    is_int(size_of("iVBORw0KGgoAAAANSUhEUgAAAAEA", &w, &h),
           NEBULA_IMAGE_BAD_HEADER, "a PNG cut in its IHDR");
    is_int(size_of("iVBORw0KGgo=", &w, &h), NEBULA_IMAGE_BAD_HEADER,
           "a PNG signature alone");
    is_int(size_of("SGVsbG8gd29ybGQ=", &w, &h), NEBULA_IMAGE_UNKNOWN,
           "text, not an image");
    is_int(size_of("iVBORw0K\r\nGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAA",
                   &w, &h), NEBULA_IMAGE_OK, "CRLF inside: as Go skips it");
    is_int(size_of("iV\nBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptV\n", &w, &h),
           NEBULA_IMAGE_OK, "LF inside and at the end");
    is_int(size_of("R0lGODlhAQABAA==\r\n", &w, &h),
           NEBULA_IMAGE_OK, "padding, then a line break");
}


static void
test_data_url(void)
{
    static const char  *good[] = {
        "data:image/jpeg;base64,", "data:image/jpg;base64,",
        "data:image/png;base64,", "data:image/webp;base64,",
        "data:;base64,", NULL
    };
    static const char  *bad[] = {
        "http://example.com/a.png", "https://example.com/a.png",
        "data:image/gif;base64,R0lG", "DATA:image/png;base64,iVBO",
        "data:image/png;base64", "data:image/png,iVBO",
        "data:image/PNG;base64,iVBO", "", NULL
    };
    int  i;

    for (i = 0; good[i]; i++) {
        is_int(nebula_image_data_url((const unsigned char *) good[i],
                                     strlen(good[i])),
               (long) strlen(good[i]), "a data URL Ollama takes: %s",
               good[i]);
    }

    for (i = 0; bad[i]; i++) {
        is_int(nebula_image_data_url((const unsigned char *) bad[i],
                                     strlen(bad[i])),
               -1, "not one: '%s'", bad[i]);
    }
}


static void
test_formula(void)
{
    nebula_estimate_t  e;

    memset(&e, 0, sizeof(e));
    e.body_bytes = 40;
    e.text_bytes = 5;
    e.messages = 1;
    /* counted: 2 + 4 + 3 = 9; floor: 10 */
    is_int(nebula_estimate_tokens(&e), 10, "a small body: the floor");

    e.context_ids = 50000;
    e.body_bytes = 50000 * 6 + 40;
    /* counted: 2 + 50000 + 4 + 3; floor: 75010 */
    is_int(nebula_estimate_tokens(&e), 75010,
           "50,000 context ids of 5 digits: the floor still");
    e.body_bytes = 50000 * 2 + 40;
    is_int(nebula_estimate_tokens(&e), 50009,
           "50,000 one-digit ids: a token each");

    memset(&e, 0, sizeof(e));
    e.body_bytes = 1000000;
    e.image_bytes = 999000;
    e.image_tokens = 16384;
    e.messages = 1;
    is_int(nebula_estimate_tokens(&e), 250 + 16384,
           "an image's data is counted as its tokens, not its bytes");

    e.image_bytes = 2000000;
    is_int(nebula_estimate_tokens(&e), 16384 + 7,
           "image data over the body (decoded): no underflow");
}


/* what the parser feeds the estimate */
static void
test_parser(void)
{
    nebula_request_t   req;
    char              *body, *p;
    size_t             n, i;
    uint64_t           floor;

    /* a 200 KB tool-call argument */
    n = 200000;
    body = malloc(2 * n + 1024);
    p = body + sprintf(body, "{\"model\":\"m\",\"messages\":[{\"role\":"
                       "\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"type\":"
                       "\"function\",\"function\":{\"name\":\"f\","
                       "\"arguments\":\"");
    memset(p, 'a', n);
    strcpy(p + n, "\"}}]}]}");

    is_int(nebula_request_parse(&req, NEBULA_API_CHAT, (unsigned char *) body,
                                strlen(body)), NEBULA_REQ_OK,
           "a 200 KB tool-call argument");
    ok(req.other_bytes > n, "the tool calls counted (%zu bytes)",
       req.other_bytes);
    ok(req.prompt_tokens >= n / 4, "estimated at %llu tokens, not 12",
       (unsigned long long) req.prompt_tokens);

    /* native: tool calls are objects; thinking is read too */
    p = body + sprintf(body, "{\"model\":\"m\",\"messages\":[{\"role\":"
                       "\"assistant\",\"content\":\"\",\"thinking\":\"");
    memset(p, 'b', n);
    p += n;
    p += sprintf(p, "\",\"tool_calls\":[{\"function\":{\"name\":\"f\","
                 "\"arguments\":{\"x\":\"");
    memset(p, 'c', n);
    strcpy(p + n, "\"}}}]}]}");

    is_int(nebula_request_parse(&req, NEBULA_API_OLLAMA_CHAT,
                                (unsigned char *) body, strlen(body)),
           NEBULA_REQ_OK, "native: thinking and a tool call of 200 KB each");
    is_int(req.text_bytes, n, "thinking counted as text");
    ok(req.other_bytes > n, "the tool calls counted");
    ok(req.prompt_tokens >= 2 * n / 4, "estimated at %llu tokens",
       (unsigned long long) req.prompt_tokens);

    /* /v1: reasoning */
    p = body + sprintf(body, "{\"model\":\"m\",\"messages\":[{\"role\":"
                       "\"assistant\",\"content\":\"x\",\"reasoning\":\"");
    memset(p, 'r', 1000);
    strcpy(p + 1000, "\"}]}");
    is_int(nebula_request_parse(&req, NEBULA_API_CHAT, (unsigned char *) body,
                                strlen(body)), NEBULA_REQ_OK, "/v1 reasoning");
    is_int(req.text_bytes, 1001, "reasoning counted as text");

    /* 50,000 context ids and a 100 KB suffix */
    free(body);
    body = malloc(400000);
    p = body + sprintf(body, "{\"model\":\"m\",\"prompt\":\"hi\","
                       "\"context\":[");

    for (i = 0; i < 50000; i++) {
        p += sprintf(p, "%s%zu", i ? "," : "", i % 10);
    }

    p += sprintf(p, "],\"suffix\":\"");
    memset(p, 's', 100000);
    p += 100000;
    p += sprintf(p, "\",\"template\":\"");
    memset(p, 't', 1000);
    strcpy(p + 1000, "\"}");

    is_int(nebula_request_parse(&req, NEBULA_API_OLLAMA_GENERATE,
                                (unsigned char *) body, strlen(body)),
           NEBULA_REQ_OK, "generate with a context, a suffix, a template");
    is_int(req.context_ids, 50000, "each context id counted");
    is_int(req.text_bytes, 2 + 100000 + 1000, "prompt, suffix, template");
    is_int(req.prompt_tokens, (2 + 100000 + 1000 + 3) / 4 + 50000 + 3,
           "a token an id, a token 4 bytes of text");
    free(body);

    /* the floor: a field the parser does not read */
    body = malloc(400100);
    p = body + sprintf(body, "{\"model\":\"m\",\"format\":\"");
    memset(p, 'f', 400000);
    strcpy(p + 400000, "\",\"prompt\":\"x\"}");
    is_int(nebula_request_parse(&req, NEBULA_API_OLLAMA_GENERATE,
                                (unsigned char *) body, strlen(body)),
           NEBULA_REQ_OK, "a 400 KB field the parser does not know");
    floor = (strlen(body) + 3) / 4;
    is_int(req.prompt_tokens, floor, "estimated by the body's size");
    free(body);

    /* images: by their size; their data out of the floor */
    body = malloc(1000);
    sprintf(body, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
            "\"content\":\"hi\",\"images\":[\"%s\",\"%s\"]}]}",
            PNG_1X1, JPEG_1X1);
    is_int(nebula_request_parse(&req, NEBULA_API_OLLAMA_CHAT,
                                (unsigned char *) body, strlen(body)),
           NEBULA_REQ_OK, "native images: a PNG, a JPEG");
    is_int(req.images, 2, "two images");
    is_int(req.image_tokens, 512, "256 each");
    is_int(req.image_bytes, strlen(PNG_1X1) + strlen(JPEG_1X1),
           "their data's bytes");
    is_int(req.prompt_tokens,
           (strlen(body) - req.image_bytes + 3) / 4 + 512,
           "the floor: the rest of the body, and the images' tokens");
    free(body);
}


/* a large image read from its header only */
static void
test_large(void)
{
    unsigned char     *d;
    char              *s, *body;
    size_t             n, len;
    nebula_request_t   req;

    n = 4000000;
    d = calloc(1, n);
    jpeg(d, 6000, 4000, 0xc0, 1, 60000);
    s = b64(d, n, 0, &len);
    body = malloc(len + 256);
    sprintf(body, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
            "\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
            "\"data:image/jpeg;base64,%s\"}}]}]}", s);

    is_int(nebula_request_parse(&req, NEBULA_API_CHAT, (unsigned char *) body,
                                strlen(body)), NEBULA_REQ_OK,
           "a 4 MB JPEG in a data URL");
    is_int(req.image_tokens, 16384, "6000 x 4000: the most an image costs");
    is_int(req.prompt_tokens,
           (strlen(body) - req.image_bytes + 3) / 4 + 16384,
           "the estimate: its tokens, not its 5 MB of base64");

    free(body);
    free(s);
    free(d);
}


int
main(void)
{
    test_real_images();
    test_tokens();
    test_png();
    test_gif();
    test_jpeg();
    test_webp();
    test_base64();
    test_data_url();
    test_formula();
    test_parser();
    test_large();

    return done_testing();
}
