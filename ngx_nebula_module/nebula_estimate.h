/*
 * Nebula: the prompt estimate, and the size of an image read from its
 * header.
 *
 * Plain C with no nginx types, so unit tests and fuzzers drive it
 * directly.  The request parser (nebula_request.c) counts what the pool
 * reads as it parses and calls in here for each image and, at the end,
 * for the estimate.
 */

#ifndef NEBULA_ESTIMATE_H
#define NEBULA_ESTIMATE_H

#include <stddef.h>
#include <stdint.h>


/*
 * What an image costs, at least and at most.  The least is what one
 * image costs a model that encodes every image to a fixed number of
 * tokens (gemma3: 256).  The most is what Qwen-VL's vision encoder makes
 * of the largest image it takes: it resizes an image to at most
 * 12,845,056 pixels and spends a token on each 28 x 28 pixels, 16,384
 * tokens.
 */
#define NEBULA_IMAGE_TOKENS       256
#define NEBULA_IMAGE_TOKENS_MAX   16384
#define NEBULA_IMAGE_PATCH        28


typedef struct {
    size_t     body_bytes;     /* the whole body */
    size_t     image_bytes;    /* of it, the images' data (decoded length) */
    size_t     text_bytes;     /* decoded strings the pool reads */
    size_t     other_bytes;    /* tools and tool calls, raw JSON */
    size_t     messages;
    uint64_t   context_ids;    /* /api/generate's context: a token each */
    uint64_t   image_tokens;   /* the sum of nebula_image_tokens() */
} nebula_estimate_t;


/*
 * The prompt's tokens: the larger of what is counted,
 *   ceil(text / 4) + ceil(other / 4) + context ids + 4 * messages + 3
 *   + image tokens,
 * and a floor from the body's size,
 *   ceil((body - image data) / 4) + image tokens,
 * so that no string the pool reads can escape the estimate, whatever
 * field it hides in.
 */
uint64_t nebula_estimate_tokens(const nebula_estimate_t *e);


typedef enum {
    NEBULA_IMAGE_OK = 0,
    NEBULA_IMAGE_BAD_BASE64,   /* a character or padding not of base64 */
    NEBULA_IMAGE_UNKNOWN,      /* not a PNG, JPEG, GIF or WebP */
    NEBULA_IMAGE_BAD_HEADER,   /* its header is cut short or corrupt */
    NEBULA_IMAGE_TOO_LARGE     /* more pixels than a pool should decode */
} nebula_image_e;


/*
 * The most pixels an image may have: a pool's decoder (Go's image
 * package, in Ollama) allocates the whole image before it resizes it, 4
 * bytes a pixel, so a small PNG that claims 100,000 x 100,000 pixels
 * would have a node allocate 40 GB: a fleet-wide denial of service for
 * the price of a few bytes.  50 megapixels passes a 48 MP phone photo
 * (8000 x 6000), 200 MB of a node's memory at most.
 */
#define NEBULA_IMAGE_PIXELS_MAX   50000000ULL


/*
 * The offset of the base64 data in an OpenAI image_url, or -1 when it is
 * not a data URL Ollama's OpenAI layer takes: "data:image/jpeg;base64,",
 * "data:image/jpg;base64,", "data:image/png;base64,",
 * "data:image/webp;base64," or "data:;base64,", exactly so.
 */
long nebula_image_data_url(const unsigned char *url, size_t len);

/*
 * Reads the width and height of the image whose base64 is b64 (line
 * breaks allowed, as Go's decoder ignores them) from its header: a PNG's
 * IHDR, a JPEG's first SOFn, a GIF's logical screen, a WebP's VP8, VP8L
 * or VP8X (the larger of the canvas and the first frame).  Only the
 * header's bytes are decoded, however large the image.  One of more than
 * NEBULA_IMAGE_PIXELS_MAX pixels is NEBULA_IMAGE_TOO_LARGE (its size still
 * set).
 */
nebula_image_e nebula_image_size(const unsigned char *b64, size_t len,
    uint32_t *width, uint32_t *height);

/* clamp(ceil(w / 28) * ceil(h / 28), 256, 16384) */
uint64_t nebula_image_tokens(uint32_t width, uint32_t height);

/* what a client is told, after "Invalid value for 'x': " */
const char *nebula_image_error(nebula_image_e err);

#endif /* NEBULA_ESTIMATE_H */
