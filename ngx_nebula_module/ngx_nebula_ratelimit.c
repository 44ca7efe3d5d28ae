/*
 * Nebula: the x-ratelimit-* headers every authenticated response carries
 * (contract.md): the key's limits and what is left of them, from what an
 * admission (or a lookup of the key) said.
 */

#include "ngx_nebula.h"


static ngx_table_elt_t *
ngx_nebula_push_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = len;

    return h;
}


/* digits by hand: ngx_sprintf() reads its format for every number */
static ngx_int_t
ngx_nebula_add_number(ngx_http_request_t *r, const char *name, size_t len,
    int64_t v)
{
    u_char            digits[NGX_INT64_LEN], *d, *p;
    uint64_t          n;
    ngx_table_elt_t  *h;

    h = ngx_nebula_push_header(r, name, len);
    if (h == NULL) {
        return NGX_ERROR;
    }

    n = (v < 0) ? 0 : (uint64_t) v;
    d = digits + sizeof(digits);

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    p = ngx_pnalloc(r->pool, digits + sizeof(digits) - d);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h->value.data = p;
    h->value.len = ngx_cpymem(p, d, digits + sizeof(digits) - d) - p;

    return NGX_OK;
}


#define ngx_nebula_number(r, name, v)                                         \
    ngx_nebula_add_number(r, name, sizeof(name) - 1, v)


/* the contract's x-ratelimit-* headers, from what the admission said */
ngx_int_t
ngx_nebula_ratelimit_headers(ngx_http_request_t *r, nebula_admit_t *a,
    time_t now)
{
    ngx_table_elt_t  *h;

    /* the month's reset, written once a second a worker */
    static time_t     reset_at = -1;
    static u_char     reset[NGX_TIME_T_LEN * 4 + 4];
    static size_t     reset_len;

    if (a->rpm > 0) {
        if (ngx_nebula_number(r, "x-ratelimit-limit-requests", a->rpm)
            != NGX_OK
            || ngx_nebula_number(r, "x-ratelimit-remaining-requests",
                                 a->rpm_left)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (a->status == NEBULA_ADMIT_RATE_LIMITED
        && ngx_nebula_number(r, "retry-after", a->retry_after) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* on refusals too: every authenticated response carries them */

    if (ngx_nebula_number(r, "x-ratelimit-limit-input-tokens",
                          a->in_limit) != NGX_OK
        || ngx_nebula_number(r, "x-ratelimit-remaining-input-tokens",
                             a->in_left) != NGX_OK
        || ngx_nebula_number(r, "x-ratelimit-limit-output-tokens",
                             a->out_limit) != NGX_OK
        || ngx_nebula_number(r, "x-ratelimit-remaining-output-tokens",
                             a->out_left) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (now != reset_at) {
        reset_len = ngx_nebula_duration(reset, ngx_nebula_month_left(now))
                    - reset;
        reset_at = now;
    }

    h = ngx_nebula_push_header(r, "x-ratelimit-reset-tokens",
                               sizeof("x-ratelimit-reset-tokens") - 1);
    if (h == NULL) {
        return NGX_ERROR;
    }

    /* copied: the worker's own changes in a later second */
    h->value.data = ngx_pnalloc(r->pool, reset_len);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->value.len = ngx_cpymem(h->value.data, reset, reset_len)
                   - h->value.data;

    return NGX_OK;
}
