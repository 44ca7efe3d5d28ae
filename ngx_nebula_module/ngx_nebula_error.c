/*
 * Nebula: error responses, in the shape of the API the client speaks.
 *
 * Every refusal, ours or nginx's own (through error_page to a location with
 * "nebula error"), is JSON with Content-Type application/json, never an
 * HTML page: OpenAI's {"error": {"message", "type", "param", "code"}} on
 * the OpenAI API and ours, Ollama's {"error": "..."} on its native API,
 * Anthropic's {"type": "error", "error": {"type", "message"}} on its
 * Messages API.  The callers say it the OpenAI way (a type and a code);
 * the other shapes keep what they have room for.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_metrics.h"


#define ngx_nebula_lit(p, s)  ngx_cpymem(p, s, sizeof(s) - 1)


static size_t
ngx_nebula_json_field_len(const char *s)
{
    return s ? ngx_escape_json(NULL, (u_char *) s, ngx_strlen(s))
               + ngx_strlen(s) + 2
             : sizeof("null") - 1;
}


static u_char *
ngx_nebula_json_field(u_char *p, const char *s)
{
    if (s == NULL) {
        return ngx_cpymem(p, "null", 4);
    }

    *p++ = '"';
    p = (u_char *) ngx_escape_json(p, (u_char *) s, ngx_strlen(s));
    *p++ = '"';

    return p;
}


/* Anthropic's error type for a status, as its API documents them */
static const char *
ngx_nebula_anthropic_type(ngx_uint_t status)
{
    switch (status) {

    case NGX_HTTP_UNAUTHORIZED:
        return "authentication_error";

    case NGX_HTTP_FORBIDDEN:
        return "permission_error";

    case NGX_HTTP_NOT_FOUND:
        return "not_found_error";

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return "request_too_large";

    case NGX_HTTP_TOO_MANY_REQUESTS:
        return "rate_limit_error";

    case 529:
        return "overloaded_error";

    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}


/*
 * The shape r's errors take: its location's API's; on an error page, the
 * API of the location the request came from (its ctx outlives the
 * redirect), or, for an error nginx raised before any of ours ran, the
 * API its path belongs to.
 */
ngx_nebula_errors_e
ngx_nebula_error_shape(ngx_http_request_t *r)
{
    ngx_str_t              *uri;
    ngx_nebula_ctx_t       *ctx;
    ngx_nebula_loc_conf_t  *nlcf;

    nlcf = ngx_http_get_module_loc_conf(r, ngx_http_nebula_module);

    if (nlcf->api != NGX_NEBULA_API_ERROR) {
        return ngx_nebula_api(nlcf->api)->errors;
    }

    ctx = ngx_nebula_find_ctx(r);

    if (ctx && ctx->api) {
        return ctx->api->errors;
    }

    uri = &r->uri;

    if (uri->len >= 5 && ngx_strncmp(uri->data, "/api/", 5) == 0) {
        return NGX_NEBULA_ERRORS_OLLAMA;
    }

    if (uri->len >= 12 && ngx_strncmp(uri->data, "/v1/messages", 12) == 0
        && (uri->len == 12 || uri->data[12] == '/'))
    {
        return NGX_NEBULA_ERRORS_ANTHROPIC;
    }

    return NGX_NEBULA_ERRORS_OPENAI;
}


/*
 * An error's body in a shape: the message is len bytes, not escaped; type,
 * code and param are NUL-terminated (code and param may be NULL).
 */
ngx_buf_t *
ngx_nebula_error_body(ngx_pool_t *pool, ngx_nebula_errors_e shape,
    ngx_uint_t status, const char *type, const char *code, const char *param,
    u_char *message, size_t mlen)
{
    size_t      len;
    ngx_buf_t  *b;

    if (param && param[0] == '\0') {
        param = NULL;
    }

    if (shape == NGX_NEBULA_ERRORS_ANTHROPIC) {
        type = ngx_nebula_anthropic_type(status);
    }

    len = sizeof("{\"type\":\"error\",\"error\":{\"message\":\"\"") - 1
          + mlen + ngx_escape_json(NULL, message, mlen)
          + sizeof(",\"type\":") - 1 + ngx_nebula_json_field_len(type)
          + sizeof(",\"param\":") - 1 + ngx_nebula_json_field_len(param)
          + sizeof(",\"code\":") - 1 + ngx_nebula_json_field_len(code)
          + sizeof("}}\n") - 1;

    b = ngx_create_temp_buf(pool, len);
    if (b == NULL) {
        return NULL;
    }

    switch (shape) {

    case NGX_NEBULA_ERRORS_OLLAMA:
        b->last = ngx_nebula_lit(b->last, "{\"error\":\"");
        b->last = (u_char *) ngx_escape_json(b->last, message, mlen);
        b->last = ngx_nebula_lit(b->last, "\"}\n");
        break;

    case NGX_NEBULA_ERRORS_ANTHROPIC:
        b->last = ngx_nebula_lit(b->last,
                                 "{\"type\":\"error\",\"error\":{\"type\":");
        b->last = ngx_nebula_json_field(b->last, type);
        b->last = ngx_nebula_lit(b->last, ",\"message\":\"");
        b->last = (u_char *) ngx_escape_json(b->last, message, mlen);
        b->last = ngx_nebula_lit(b->last, "\"}}\n");
        break;

    default: /* NGX_NEBULA_ERRORS_OPENAI */
        b->last = ngx_nebula_lit(b->last, "{\"error\":{\"message\":\"");
        b->last = (u_char *) ngx_escape_json(b->last, message, mlen);
        b->last = ngx_nebula_lit(b->last, "\",\"type\":");
        b->last = ngx_nebula_json_field(b->last, type);
        b->last = ngx_nebula_lit(b->last, ",\"param\":");
        b->last = ngx_nebula_json_field(b->last, param);
        b->last = ngx_nebula_lit(b->last, ",\"code\":");
        b->last = ngx_nebula_json_field(b->last, code);
        b->last = ngx_nebula_lit(b->last, "}}\n");
    }

    return b;
}


ngx_int_t
ngx_nebula_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *message)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    /* the body may not have been read: do not let it be taken as a request */
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    ngx_nebula_metrics_error(code);

    b = ngx_nebula_error_body(r->pool, ngx_nebula_error_shape(r), status,
                              type, code, param, (u_char *) message,
                              ngx_strlen(message));
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;

    if (r->err_status) {
        /* ngx_http_send_header() sends an error page's err_status */
        r->err_status = status;
    }

    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    ngx_http_clear_accept_ranges(r);
    ngx_http_clear_last_modified(r);
    ngx_http_clear_etag(r);

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    /* as ngx_nebula_json_send_as(): sent in part is sent */
    rc = ngx_http_output_filter(r, &out);

    return rc == NGX_AGAIN ? NGX_OK : rc;
}


/*
 * What a model the catalog does not have is refused with, NUL-terminated;
 * a private model, to a key that does not list it, is refused with the
 * same words, byte for byte (ngx_nebula_admission.c).  NULL: no memory.
 */
char *
ngx_nebula_unknown_model(ngx_pool_t *pool, u_char *name, size_t len)
{
    u_char  *msg;
    size_t   size;

    len = ngx_min(len, NEBULA_MODEL_NAME_MAX);
    size = len + sizeof("The model '' does not exist. See GET /v1/models "
                        "for the models served here.");

    msg = ngx_pnalloc(pool, size);
    if (msg == NULL) {
        return NULL;
    }

    *ngx_snprintf(msg, size - 1, "The model '%*s' does not exist. See GET "
                  "/v1/models for the models served here.", len, name)
        = '\0';

    return (char *) msg;
}


/*
 * An error of the APIs the gateway answers itself (the admin API, the key
 * holder's, /api/tags): the type follows from the status.
 */
ngx_int_t
ngx_nebula_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *param, const char *message)
{
    return ngx_nebula_send_error(r, status,
                                 status >= 500 ? "api_error"
                                 : status == NGX_HTTP_FORBIDDEN
                                   ? "permission_error"
                                   : "invalid_request_error",
                                 code, param, message);
}


/*
 * An endpoint that only reads (GET, HEAD): NGX_OK, the body (if any)
 * discarded, and the handler goes on; otherwise NGX_DECLINED, and *rc is
 * what the handler returns (the 405 sent, or the discard's failure)
 */
ngx_int_t
ngx_nebula_get_only(ngx_http_request_t *r, ngx_int_t *rc)
{
    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        *rc = ngx_nebula_api_error(r, NGX_HTTP_NOT_ALLOWED,
                                   "method_not_allowed", NULL,
                                   "This endpoint takes GET only.");
        return NGX_DECLINED;
    }

    *rc = ngx_http_discard_request_body(r);

    return *rc == NGX_OK ? NGX_OK : NGX_DECLINED;
}


/*
 * The target of error_page: nginx's own errors (413 for a body over
 * client_max_body_size, 502 and 504 when a pool fails, ...) in the
 * contract's shape.  error_page keeps the original status in r->err_status.
 */
ngx_int_t
ngx_nebula_error_handler(ngx_http_request_t *r)
{
    ngx_uint_t   status;
    const char  *type, *code, *message;

    status = r->err_status ? r->err_status : NGX_HTTP_NOT_FOUND;

    type = "invalid_request_error";
    code = NULL;

    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
        message = "The request could not be understood.";
        break;

    case NGX_HTTP_UNAUTHORIZED:
        code = "invalid_api_key";
        message = "Missing or invalid API key.";
        break;

    case NGX_HTTP_FORBIDDEN:
        type = "permission_error";
        message = "Access to this resource is forbidden.";
        break;

    case NGX_HTTP_NOT_FOUND:
        code = "not_found";
        message = "Unknown endpoint: see GET /v1/models and "
                  "POST /v1/chat/completions.";
        break;

    case NGX_HTTP_NOT_ALLOWED:
        code = "method_not_allowed";
        message = "This method is not allowed on this endpoint.";
        break;

    case NGX_HTTP_REQUEST_TIME_OUT:
        code = "request_timeout";
        message = "The request took too long to arrive.";
        break;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        code = "request_too_large";
        message = "The request body is larger than this server accepts.";
        break;

    case NGX_HTTP_REQUEST_URI_TOO_LARGE:
        code = "request_too_large";
        message = "The request line is too large.";
        break;

    case NGX_HTTP_REQUEST_HEADER_TOO_LARGE:
        /* nginx's own 494 goes out as 400, as nginx sends it */
        status = NGX_HTTP_BAD_REQUEST;
        code = "request_too_large";
        message = "The request headers are too large.";
        break;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
        message = "Too many requests.";
        break;

    case NGX_HTTP_BAD_GATEWAY:
        type = "api_error";
        code = "upstream_error";
        message = "The model pool failed to answer.";
        break;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        type = "api_error";
        code = "service_unavailable";
        message = "The service is temporarily unavailable.";
        break;

    case NGX_HTTP_GATEWAY_TIME_OUT:
        type = "api_error";
        code = "upstream_timeout";
        message = "The model pool did not answer in time.";
        break;

    default:
        type = (status >= 500) ? "api_error" : "invalid_request_error";
        message = (status >= 500) ? "The server failed to handle the request."
                                  : "The request was refused.";
    }

    return ngx_nebula_send_error(r, status, type, code, NULL, message);
}
