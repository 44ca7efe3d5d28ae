/*
 * Nebula: OpenAI-style error responses.
 *
 * Every refusal, ours or nginx's own (through error_page to a location with
 * "nebula error"), is {"error": {"message", "type", "param", "code"}} with
 * Content-Type application/json, never an HTML page.
 */

#include "ngx_nebula.h"


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


ngx_int_t
ngx_nebula_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *message)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    static const char  head[] = "{\"error\":{\"message\":";

    if (param && param[0] == '\0') {
        param = NULL;
    }

    /* the body may not have been read: do not let it be taken as a request */
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    len = sizeof(head) - 1
          + ngx_nebula_json_field_len(message)
          + sizeof(",\"type\":") - 1 + ngx_nebula_json_field_len(type)
          + sizeof(",\"param\":") - 1 + ngx_nebula_json_field_len(param)
          + sizeof(",\"code\":") - 1 + ngx_nebula_json_field_len(code)
          + sizeof("}}\n") - 1;

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, head, sizeof(head) - 1);
    b->last = ngx_nebula_json_field(b->last, message);
    b->last = ngx_cpymem(b->last, ",\"type\":", sizeof(",\"type\":") - 1);
    b->last = ngx_nebula_json_field(b->last, type);
    b->last = ngx_cpymem(b->last, ",\"param\":", sizeof(",\"param\":") - 1);
    b->last = ngx_nebula_json_field(b->last, param);
    b->last = ngx_cpymem(b->last, ",\"code\":", sizeof(",\"code\":") - 1);
    b->last = ngx_nebula_json_field(b->last, code);
    b->last = ngx_cpymem(b->last, "}}\n", 3);

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

    return ngx_http_output_filter(r, &out);
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
