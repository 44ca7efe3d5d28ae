/*
 * Nebula: the images of a request, as the parser meets them: an OpenAI
 * content part's image_url (a data URL Ollama takes, judged when the part
 * ends, as "type" may come after it), an Anthropic image block's base64
 * source (judged the same way), a native message's or generate's bare
 * base64.  Each is sized from its header (nebula_estimate.c) and
 * counted, or refused in words a client understands.  And the tools a
 * request offers, where a pool runs some of its own.
 */

#include <stdio.h>

#include "nebula_request_int.h"
#include "nebula_estimate.h"


/*
 * An OpenAI content part's image: kept in the part's frame until the
 * part ends, as Ollama reads image_url only in a part of type image_url,
 * and "type" may come after it.
 */
void
nebula_req_part_image(frame_t *part, const unsigned char *s, size_t len)
{
    long  at;

    at = nebula_image_data_url(s, len);

    if (at < 0) {
        /* an http(s) URL, another type: Ollama refuses, we cannot bound */
        part->img = IMG_URL;
        return;
    }

    /* the base64 after the prefix, as an Anthropic source's; the URL's
       bytes, prefix and all, are the image's in the body */
    nebula_req_source_image(part, s + at, len - at);
    part->img_bytes = len;
}


/*
 * An Anthropic image block's source.data: bare base64, kept in the
 * block's frame until it ends (its "type", and the source's, may come
 * after it)
 */
void
nebula_req_source_image(frame_t *part, const unsigned char *s, size_t len)
{
    uint32_t  w, h;

    part->img_err = nebula_image_size(s, len, &w, &h);

    if (part->img_err != NEBULA_IMAGE_OK) {
        part->img = IMG_DATA;
        return;
    }

    part->img = IMG_OK;
    part->img_tokens = nebula_image_tokens(w, h);
    part->img_bytes = len;
}


/*
 * A tool's type, in the Messages and Responses APIs: Ollama answers
 * Anthropic's server tool web_search (web_search_20250305, ...) by
 * searching the web itself, on the operator's ollama.com account, and
 * by running the model again on each result: work no reservation
 * bounds, for a client to ask of the fleet.  Refused.
 */
void
nebula_req_tool_type(parse_t *p, const unsigned char *s, size_t len)
{
    char  param[NEBULA_PARAM_MAX];

    if (len < 10 || memcmp(s, "web_search", 10) != 0) {
        return;
    }

    snprintf(param, sizeof(param), "tools[%zu].type",
             p->frames[p->depth - 2].index);
    nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
         "Invalid value for '%s': server tools (web_search) are not "
         "available through this gateway; define the tool as a function "
         "your client runs.", param);
}


/* a native image: bare base64, in messages[i].images or images */
void
nebula_req_native_image(parse_t *p, frame_t *images, const unsigned char *s,
    size_t len)
{
    char            param[NEBULA_PARAM_MAX], msg[NEBULA_MESSAGE_MAX];
    uint32_t        w, h;
    nebula_image_e  err;

    err = nebula_image_size(s, len, &w, &h);

    if (err != NEBULA_IMAGE_OK) {
        if (p->depth == 2) {
            snprintf(param, sizeof(param), "images[%zu]", images->index);

        } else {
            snprintf(param, sizeof(param), "messages[%zu].images[%zu]",
                     images->owner, images->index);
        }

        snprintf(msg, sizeof(msg), "Invalid value for '%s': %s.", param,
                 nebula_image_error(err));
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param, "%s", msg);
        return;
    }

    p->req->images++;
    p->req->image_tokens += nebula_image_tokens(w, h);
    p->req->image_bytes += len;
}


/* a part's image, read whole: toward the estimate */
static void
image_counted(nebula_request_t *req, frame_t *f)
{
    req->images++;
    req->image_tokens += f->img_tokens;
    req->image_bytes += f->img_bytes;
}


/* an Anthropic image block ends: its source */
static void
nebula_req_source_done(parse_t *p, frame_t *f)
{
    char               param[NEBULA_PARAM_MAX], msg[NEBULA_MESSAGE_MAX];
    nebula_request_t  *req = p->req;

    snprintf(param, sizeof(param), "messages[%zu].content[%zu].source",
             f->owner, f->part);

    if (f->src_other) {
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param,
             "Invalid value for '%s': only base64 image sources are read "
             "(\"type\": \"base64\"); image URLs are not fetched.", param);
        return;
    }

    switch (f->img) {

    case IMG_OK:
        image_counted(req, f);
        return;

    case IMG_DATA:
        snprintf(msg, sizeof(msg), "Invalid value for '%s.data': %s.", param,
                 nebula_image_error(f->img_err));
        nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param, "%s", msg);
        return;

    default:
        nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, param,
             "Missing required parameter: '%s.data'.", param);
    }
}


/* a content part ends: its image, if it is a part of type image_url */
void
nebula_req_part_done(parse_t *p, frame_t *f)
{
    char               param[NEBULA_PARAM_MAX], msg[NEBULA_MESSAGE_MAX];
    nebula_request_t  *req = p->req;

    if (f->part_type != 2) {
        return;     /* Ollama reads no image from a text part */
    }

    if (p->req->api == NEBULA_API_MESSAGES) {
        nebula_req_source_done(p, f);
        return;
    }

    snprintf(param, sizeof(param), "%s[%zu].content[%zu].image_url",
             NEBULA_REQ_ITEMS(p), f->owner, f->part);

    switch (f->img) {

    case IMG_OK:
        image_counted(req, f);
        return;

    case IMG_NONE:
        nebula_req_fail(p, NEBULA_REQ_MISSING_FIELD, param,
             "Missing required parameter: '%s'.", param);
        return;

    case IMG_SHAPE:
        snprintf(msg, sizeof(msg), "Invalid value for '%s': expected a "
                 "data URL, or an object with a 'url' data URL.", param);
        break;

    case IMG_URL:
        snprintf(msg, sizeof(msg), "Invalid value for '%s': expected a "
                 "data URL of a base64 image (data:image/png;base64,...); "
                 "image URLs are not fetched.", param);
        break;

    default:
        snprintf(msg, sizeof(msg), "Invalid value for '%s': %s.", param,
                 nebula_image_error(f->img_err));
    }

    nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, param, "%s", msg);
}
