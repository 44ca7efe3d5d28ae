/*
 * Nebula: Ollama's native endpoints the gateway answers itself, never a
 * pool.
 *
 *   GET /api/version    (nebula ollama_version) the Ollama API level the
 *                       gateway speaks; public, as Ollama's is: clients
 *                       (Open WebUI, ollama-js) check a server with it
 *   /api/pull, /api/push, /api/create, /api/copy, /api/delete,
 *   /api/blobs/...      (nebula ollama_forbidden) change the fleet: 403,
 *                       whatever the key, the method or the body
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"


/*
 * The Ollama release whose APIs the gateway serves: the native API, the
 * OpenAI API with /v1/responses (0.13.3) and the Anthropic Messages API
 * (0.14.0).  Clients compare it to decide what they may call.
 */
#define NGX_NEBULA_OLLAMA_VERSION  "0.14.0"


ngx_int_t
ngx_nebula_ollama_version_handler(ngx_http_request_t *r)
{
    ngx_int_t          rc;
    ngx_nebula_json_t  j;

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    ngx_nebula_json_init(&j, r->pool);
    ngx_nebula_json_lit(&j, "{\"version\":\"" NGX_NEBULA_OLLAMA_VERSION
                            "\"}");

    return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
}


ngx_int_t
ngx_nebula_ollama_forbidden_handler(ngx_http_request_t *r)
{
    /* an upload (/api/blobs) is not read to its end: the connection goes */
    r->keepalive = 0;

    return ngx_nebula_send_error(r, NGX_HTTP_FORBIDDEN, "permission_error",
                                 "endpoint_forbidden", NULL,
                                 "This endpoint changes the model fleet, "
                                 "which its operator manages: it is not "
                                 "served here.");
}
