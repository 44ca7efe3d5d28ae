/*
 * Nebula: a small JSON writer over the request's pool.
 */

#ifndef NGX_NEBULA_JSON_H
#define NGX_NEBULA_JSON_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


typedef struct {
    ngx_pool_t  *pool;
    u_char      *start;
    u_char      *pos;
    u_char      *end;
    unsigned     failed:1;
} ngx_nebula_json_t;


#define ngx_nebula_json_lit(j, s)  ngx_nebula_json_raw(j, s, sizeof(s) - 1)

void ngx_nebula_json_init(ngx_nebula_json_t *j, ngx_pool_t *pool);
void ngx_nebula_json_raw(ngx_nebula_json_t *j, const char *s, size_t len);
void ngx_nebula_json_str(ngx_nebula_json_t *j, u_char *s, size_t len);
void ngx_nebula_json_cstr(ngx_nebula_json_t *j, const char *s);
void ngx_nebula_json_int(ngx_nebula_json_t *j, int64_t v);
void ngx_nebula_json_usd(ngx_nebula_json_t *j, uint64_t pico);
u_char *ngx_nebula_decimal12(u_char *p, uint64_t v);
ngx_int_t ngx_nebula_json_send(ngx_http_request_t *r, ngx_nebula_json_t *j,
    ngx_uint_t status);
ngx_int_t ngx_nebula_json_send_as(ngx_http_request_t *r, ngx_nebula_json_t *j,
    ngx_uint_t status, ngx_str_t *type);

#endif /* NGX_NEBULA_JSON_H */
