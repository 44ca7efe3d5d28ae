/*
 * What the request parser's unit tests share: the request parsed into, and
 * a parse that must succeed or fail with its param.
 */

#ifndef TEST_REQUEST_H
#define TEST_REQUEST_H

#include <string.h>

#include "nebula_request.h"
#include "tap.h"


static nebula_request_t  req;


static inline nebula_req_error_e
parse(nebula_api_e api, const char *body)
{
    return nebula_request_parse(&req, api, (const unsigned char *) body,
                                strlen(body));
}


static inline void
refused_api(nebula_api_e api, const char *body, nebula_req_error_e err,
    const char *param, const char *name)
{
    is_int(nebula_request_parse(&req, api, (const unsigned char *) body,
                                strlen(body)),
           err, "%s: refused with %s", name, nebula_req_error_code(err));
    is_str(req.param, param, "%s: param", name);
}

#endif /* TEST_REQUEST_H */
