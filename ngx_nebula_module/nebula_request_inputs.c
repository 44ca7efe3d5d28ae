/*
 * Nebula: the "input" of an embedding request, read as the parser walks
 * it (nebula_request.c calls in here for its values and arrays).
 *
 * OpenAI's /v1/embeddings takes a string, an array of strings, an array
 * of token ids, or an array of arrays of token ids; Ollama's /api/embed a
 * string or an array of strings.  Each text or id list is one input: the
 * estimate counts every string's bytes and every id (what the pool
 * reads), and the longest input is kept, for the context bounds each
 * input, not their sum.  An empty input, or none at all, is refused: the
 * pool would load the model for it and embed nothing.
 */

#include "nebula_request_int.h"


/* what an input array held: F_INPUT's part_type bits */
#define INPUT_TEXTS   0x01
#define INPUT_IDS     0x02
#define INPUT_LISTS   0x04


void
nebula_req_input_invalid(parse_t *p)
{
    nebula_req_fail(p, NEBULA_REQ_INVALID_VALUE, "input",
         p->shape->token_ids
         ? "Invalid value for '%s': expected a non-empty string, an array "
           "of non-empty strings, an array of token ids, or an array of "
           "arrays of token ids."
         : "Invalid value for '%s': expected a non-empty string or an "
           "array of non-empty strings.", "input");
}


static void
input_counted(parse_t *p, uint64_t tokens)
{
    nebula_request_t  *req = p->req;

    req->inputs++;

    if (tokens > req->longest_input) {
        req->longest_input = tokens;
    }

    p->has_input = 1;
}


/* a text: the input itself (S_INPUT), or one of its array (S_INPUT_ITEM) */
void
nebula_req_input_string(parse_t *p, frame_t *parent, slot_e slot,
    size_t len)
{
    if (len == 0) {
        nebula_req_input_invalid(p);
        return;
    }

    if (slot == S_INPUT_ITEM) {
        if (parent->slot != S_INPUT) {
            /* a string in a list of ids */
            nebula_req_input_invalid(p);
            return;
        }

        parent->part_type |= INPUT_TEXTS;
    }

    p->req->text_bytes += len;
    input_counted(p, (len + 3) / 4);
}


/* a token id, in the input's array or in one of its lists */
void
nebula_req_input_id(parse_t *p, frame_t *parent, const char *s, size_t len)
{
    int64_t  id;

    if (!p->shape->token_ids || nebula_json_integer(s, len, &id) != 0
        || id < 0)
    {
        nebula_req_input_invalid(p);
        return;
    }

    parent->part_type |= INPUT_IDS;
    p->req->context_ids++;
}


/* the frame an array or object in the input opens */
frame_kind_e
nebula_req_input_frame(parse_t *p, frame_t *parent, slot_e slot, int is_map)
{
    if (is_map
        || (slot == S_INPUT_ITEM
            && (!p->shape->token_ids || parent->slot != S_INPUT)))
    {
        /* an object, or a list deeper than a list of ids */
        nebula_req_input_invalid(p);
        return F_SKIP;
    }

    if (slot == S_INPUT_ITEM) {
        parent->part_type |= INPUT_LISTS;
    }

    return F_INPUT;
}


/* an input array ends: what it held must be of one kind */
void
nebula_req_input_done(parse_t *p, frame_t *f)
{
    int  kinds;

    kinds = f->part_type;

    if (f->index == 0 || (kinds & (kinds - 1)) != 0) {
        /* empty, or texts, ids and lists mixed */
        nebula_req_input_invalid(p);
        return;
    }

    if (kinds == INPUT_IDS) {
        /* a list of ids is one input */
        input_counted(p, f->index);
    }
}
