/*
 * Nebula: a small JSON writer for the answers the gateway builds itself
 * (the admin API, /v1/key, /api/tags), growing in the request's pool.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"


/*
 * Room for n more bytes.  A writer that could not grow stays failed: what
 * is written after is dropped, and ngx_nebula_json_send() answers 500, so
 * a caller writes on without checking each call and checks once, there.
 */
static ngx_int_t
ngx_nebula_json_reserve(ngx_nebula_json_t *j, size_t n)
{
    u_char  *p;
    size_t   size, used;

    if (j->failed) {
        return NGX_ERROR;
    }

    if (j->start && (size_t) (j->end - j->pos) >= n) {
        return NGX_OK;
    }

    /* the first buffer: no pointer arithmetic on NULL, no memcpy from it */
    used = j->start ? (size_t) (j->pos - j->start) : 0;
    size = j->start ? (size_t) (j->end - j->start) * 2 : 0;
    size = ngx_max(size, used + n + 256);

    p = ngx_pnalloc(j->pool, size);
    if (p == NULL) {
        j->failed = 1;
        return NGX_ERROR;
    }

    if (used) {
        ngx_memcpy(p, j->start, used);
    }

    j->start = p;
    j->pos = p + used;
    j->end = p + size;

    return NGX_OK;
}


void
ngx_nebula_json_init(ngx_nebula_json_t *j, ngx_pool_t *pool)
{
    ngx_memzero(j, sizeof(ngx_nebula_json_t));
    j->pool = pool;
}


void
ngx_nebula_json_raw(ngx_nebula_json_t *j, const char *s, size_t len)
{
    if (ngx_nebula_json_reserve(j, len) == NGX_OK) {
        j->pos = ngx_cpymem(j->pos, s, len);
    }
}


void
ngx_nebula_json_str(ngx_nebula_json_t *j, u_char *s, size_t len)
{
    size_t  n;

    n = len + ngx_escape_json(NULL, s, len) + 2;

    if (ngx_nebula_json_reserve(j, n) == NGX_OK) {
        *j->pos++ = '"';
        j->pos = (u_char *) ngx_escape_json(j->pos, s, len);
        *j->pos++ = '"';
    }
}


void
ngx_nebula_json_cstr(ngx_nebula_json_t *j, const char *s)
{
    ngx_nebula_json_str(j, (u_char *) s, ngx_strlen(s));
}


void
ngx_nebula_json_int(ngx_nebula_json_t *j, int64_t v)
{
    if (ngx_nebula_json_reserve(j, NGX_INT64_LEN) == NGX_OK) {
        j->pos = ngx_sprintf(j->pos, "%L", v);
    }
}


/* v / 10^12 as a decimal number, exactly, without trailing zeros */
u_char *
ngx_nebula_decimal12(u_char *p, uint64_t v)
{
    u_char    frac[12];
    int       i, last;
    uint64_t  f;

    p = ngx_sprintf(p, "%uL", v / 1000000000000ULL);
    f = v % 1000000000000ULL;

    if (f == 0) {
        return p;
    }

    last = 0;

    for (i = 11; i >= 0; i--) {
        frac[i] = (u_char) ('0' + f % 10);
        f /= 10;

        if (last == 0 && frac[i] != '0') {
            last = i + 1;
        }
    }

    *p++ = '.';

    return ngx_cpymem(p, frac, last);
}


/* a picodollar amount as a number of dollars */
void
ngx_nebula_json_usd(ngx_nebula_json_t *j, uint64_t pico)
{
    if (ngx_nebula_json_reserve(j, NGX_INT64_LEN + 14) == NGX_OK) {
        j->pos = ngx_nebula_decimal12(j->pos, pico);
    }
}


/* sends what was written as the whole response */
ngx_int_t
ngx_nebula_json_send(ngx_http_request_t *r, ngx_nebula_json_t *j,
    ngx_uint_t status)
{
    static ngx_str_t  type = ngx_string("application/json");

    ngx_nebula_json_raw(j, "\n", 1);

    return ngx_nebula_json_send_as(r, j, status, &type);
}


/* what j holds, as it is, of the content type given (CSV: its report) */
ngx_int_t
ngx_nebula_json_send_as(ngx_http_request_t *r, ngx_nebula_json_t *j,
    ngx_uint_t status, ngx_str_t *type)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (j->failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = j->start;
    b->last = j->pos;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    /*
     * NGX_AGAIN (the socket took part of it) would read as "waiting on
     * Redis" to a call's answer (ngx_nebula_call_finish()): the request
     * is finalized all the same, and nginx sends the rest
     */
    rc = ngx_http_output_filter(r, &out);

    return rc == NGX_AGAIN ? NGX_OK : rc;
}
