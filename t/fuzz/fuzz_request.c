/*
 * libFuzzer target: the request parser and validator, and the body edit.
 *
 * The first byte picks the API; the rest is the body.  Beyond "no crash,
 * no sanitizer report", a body the parser accepts must still be accepted,
 * naming the new model, once its model is rewritten as the gateway does.
 */

#include <stdlib.h>
#include <string.h>

#include "nebula_request.h"


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t             n;
    unsigned char      q[64], *out;
    nebula_api_e       api;
    nebula_edit_t      edit;
    nebula_request_t   req, again;

    if (size < 1) {
        return 0;
    }

    api = (nebula_api_e) (data[0] % 3);

    if (nebula_request_parse(&req, api, data + 1, size - 1)
        != NEBULA_REQ_OK)
    {
        return 0;
    }

    edit.start = req.model_span.start;
    edit.end = req.model_span.end;
    edit.data = q;
    edit.len = nebula_json_quote(q, (const unsigned char *) "up/stream:1",
                                 11);

    n = nebula_edit_length(size - 1, &edit, 1);
    out = malloc(n);
    if (out == NULL) {
        return 0;
    }

    nebula_edit_apply(data + 1, size - 1, &edit, 1, out);

    if (nebula_request_parse(&again, api, out, n) != NEBULA_REQ_OK
        || strcmp(again.model, "up/stream:1") != 0
        || again.messages != req.messages
        || again.max_tokens != req.max_tokens
        || again.stream != req.stream)
    {
        abort();
    }

    free(out);
    return 0;
}
