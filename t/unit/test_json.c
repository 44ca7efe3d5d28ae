/*
 * Unit tests of the JSON writer (ngx_nebula_json.c) when the pool runs out
 * of memory: its first buffer or a later one not given, the buffer of the
 * response not given.  The end-to-end tests cannot make an allocation
 * fail; here the writer is built against nginx's headers and the few
 * nginx functions it calls are stand-ins, ngx_pnalloc() one that fails
 * when told.  A writer that failed must drop what comes after without
 * touching memory it does not have, and its answer must be a 500 sent by
 * nobody but nginx (no header of ours).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "ngx_nebula_json.h"
#include "tap.h"


/* ngx_pnalloc(): the next fail_at-th call fails (0: none does) */
static ngx_uint_t   fail_at, calls;
static void        *blocks[4096];
static ngx_uint_t   nblocks;
static ngx_uint_t   headers_sent, bodies_sent;
static ngx_buf_t   *body_sent;


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    (void) pool;

    if (++calls == fail_at || nblocks == sizeof(blocks) / sizeof(void *)) {
        return NULL;
    }

    p = malloc(size);

    if (p) {
        blocks[nblocks++] = p;
    }

    return p;
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_pnalloc(pool, size);

    if (p) {
        memset(p, 0, size);
    }

    return p;
}


/* as nginx 1.22 escapes: \" \\ \n \r \t \b \f, \u00XX below 0x20 */
uintptr_t
ngx_escape_json(u_char *dst, u_char *src, size_t size)
{
    u_char      ch;
    ngx_uint_t  len;

    if (dst == NULL) {
        len = 0;

        while (size--) {
            ch = *src++;

            if (ch == '\\' || ch == '"') {
                len++;

            } else if (ch <= 0x1f) {
                len += (ch == '\n' || ch == '\r' || ch == '\t' || ch == '\b'
                        || ch == '\f') ? 1 : 5;
            }
        }

        return (uintptr_t) len;
    }

    while (size--) {
        ch = *src++;

        if (ch > 0x1f && ch != '\\' && ch != '"') {
            *dst++ = ch;
            continue;
        }

        *dst++ = '\\';

        switch (ch) {
        case '\\':
        case '"':
            *dst++ = ch;
            break;
        case '\n':
            *dst++ = 'n';
            break;
        case '\r':
            *dst++ = 'r';
            break;
        case '\t':
            *dst++ = 't';
            break;
        case '\b':
            *dst++ = 'b';
            break;
        case '\f':
            *dst++ = 'f';
            break;
        default:
            dst += sprintf((char *) dst, "u%04x", ch);
        }
    }

    return (uintptr_t) dst;
}


/* the writer's formats only: %L, %uL and text */
u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);

    while (*fmt) {
        if (strncmp(fmt, "%L", 2) == 0) {
            buf += sprintf((char *) buf, "%lld",
                           (long long) va_arg(ap, int64_t));
            fmt += 2;

        } else if (strncmp(fmt, "%uL", 3) == 0) {
            buf += sprintf((char *) buf, "%llu",
                           (unsigned long long) va_arg(ap, uint64_t));
            fmt += 3;

        } else if (*fmt == '%') {
            printf("# ngx_sprintf stand-in: format %s\n", fmt);
            abort();

        } else {
            *buf++ = (u_char) *fmt++;
        }
    }

    va_end(ap);

    return buf;
}


ngx_int_t
ngx_http_send_header(ngx_http_request_t *r)
{
    (void) r;

    headers_sent++;

    return NGX_OK;
}


ngx_int_t
ngx_http_output_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    (void) r;

    bodies_sent++;
    body_sent = in->buf;

    return NGX_OK;
}


static void
reset(ngx_uint_t fail)
{
    ngx_uint_t  i;

    for (i = 0; i < nblocks; i++) {
        free(blocks[i]);
    }

    nblocks = 0;
    calls = 0;
    fail_at = fail;
    headers_sent = 0;
    bodies_sent = 0;
    body_sent = NULL;
}


/* what the writer holds, as a C string (static: one at a time) */
static const char *
text(ngx_nebula_json_t *j)
{
    static char  buf[65536];
    size_t       n;

    n = j->start ? (size_t) (j->pos - j->start) : 0;

    if (n >= sizeof(buf)) {
        return "(too long)";
    }

    if (n) {
        memcpy(buf, j->start, n);
    }

    buf[n] = '\0';

    return buf;
}


/* one call of every kind; each after a failure must do nothing */
static void
write_all(ngx_nebula_json_t *j)
{
    ngx_nebula_json_lit(j, "{\"a\":");
    ngx_nebula_json_str(j, (u_char *) "x\"y\n", 4);
    ngx_nebula_json_lit(j, ",\"b\":");
    ngx_nebula_json_cstr(j, "z");
    ngx_nebula_json_lit(j, ",\"n\":");
    ngx_nebula_json_int(j, -42);
    ngx_nebula_json_lit(j, ",\"usd\":");
    ngx_nebula_json_usd(j, 8400000ULL);
    ngx_nebula_json_raw(j, "}", 1);
}


int
main(void)
{
    char                 want[65536], *w;
    ngx_int_t            rc;
    ngx_uint_t           i;
    ngx_pool_t           pool;
    ngx_nebula_json_t    j;
    ngx_http_request_t   r;

    memset(&pool, 0, sizeof(pool));

    /* the writer as it works */
    reset(0);
    ngx_nebula_json_init(&j, &pool);
    write_all(&j);
    ok(!j.failed, "written: not failed");
    is_str(text(&j), "{\"a\":\"x\\\"y\\n\",\"b\":\"z\",\"n\":-42,"
           "\"usd\":0.0000084}", "written: escaped, numbers, dollars");

    /* growing: many writes, every buffer copied into the next */
    reset(0);
    ngx_nebula_json_init(&j, &pool);
    w = want;

    for (i = 0; i < 5000; i++) {
        ngx_nebula_json_int(&j, (int64_t) i);
        ngx_nebula_json_lit(&j, ",");
        w += sprintf(w, "%u,", (unsigned) i);
    }

    ok(!j.failed && calls > 3, "grown %u times", (unsigned) calls);
    is_str(text(&j), want, "grown: every byte kept");

    memset(&r, 0, sizeof(r));
    r.pool = &pool;
    rc = ngx_nebula_json_send(&r, &j, NGX_HTTP_OK);
    is_int(rc, NGX_OK, "sent");
    ok(headers_sent == 1 && bodies_sent == 1, "a header and a body");
    is_int(r.headers_out.status, NGX_HTTP_OK, "status 200");
    is_int(r.headers_out.content_length_n, (long long) strlen(want) + 1,
           "Content-Length: what was written and a newline");
    ok(body_sent && body_sent->last_buf && body_sent->last[-1] == '\n',
       "the last buffer, ending in a newline");

    /* the first buffer not given */
    reset(1);
    ngx_nebula_json_init(&j, &pool);
    write_all(&j);
    ok(j.failed, "no first buffer: failed");
    ok(j.start == NULL && j.pos == NULL, "no first buffer: nothing held");
    is_int(calls, 1, "no first buffer: no allocation tried after it");

    memset(&r, 0, sizeof(r));
    r.pool = &pool;
    rc = ngx_nebula_json_send(&r, &j, NGX_HTTP_OK);
    is_int(rc, NGX_HTTP_INTERNAL_SERVER_ERROR, "no first buffer: 500");
    ok(headers_sent == 0 && bodies_sent == 0,
       "no first buffer: nothing sent (nginx sends the 500)");

    /* a later buffer not given: what came before stays, nothing after */
    reset(2);
    ngx_nebula_json_init(&j, &pool);
    ngx_nebula_json_lit(&j, "[");
    w = want;
    w += sprintf(w, "[");

    for (i = 0; i < 1000 && !j.failed; i++) {
        ngx_nebula_json_int(&j, 123456789);

        if (!j.failed) {
            w += sprintf(w, "123456789");
        }
    }

    ok(j.failed, "growth refused: failed (after %u numbers)", (unsigned) i);
    is_str(text(&j), want, "growth refused: what was written before kept");
    write_all(&j);
    ngx_nebula_json_lit(&j, "]");
    is_str(text(&j), want, "growth refused: nothing written after");
    is_int(calls, 2, "growth refused: no allocation tried after it");

    memset(&r, 0, sizeof(r));
    r.pool = &pool;
    rc = ngx_nebula_json_send(&r, &j, NGX_HTTP_OK);
    is_int(rc, NGX_HTTP_INTERNAL_SERVER_ERROR, "growth refused: 500");
    ok(headers_sent == 0 && bodies_sent == 0, "growth refused: nothing sent");

    /* the writer whole, the response's buffer not given */
    reset(2);
    ngx_nebula_json_init(&j, &pool);
    write_all(&j);
    ok(!j.failed, "one buffer: written");

    memset(&r, 0, sizeof(r));
    r.pool = &pool;
    rc = ngx_nebula_json_send(&r, &j, NGX_HTTP_OK);
    is_int(rc, NGX_HTTP_INTERNAL_SERVER_ERROR, "no response buffer: 500");
    ok(headers_sent == 0 && bodies_sent == 0,
       "no response buffer: no header sent before it");

    reset(0);

    return done_testing();
}
