/*
 * Nebula: the commands a worker sends to Redis, in RESP: EVALSHA of a
 * script (ngx_nebula_scripts.c) and plain commands.  The connection that
 * carries them is ngx_nebula_redis.c's.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_redis.h"


/*
 * A command in RESP, in one malloc()ed buffer as redisFreeCommand() frees
 * it.  hiredis's own formatter prints every length with sprintf(): on the
 * request path that cost more than the rest of the module together.
 */
static u_char *
ngx_nebula_redis_len(u_char *p, u_char type, size_t n)
{
    u_char   digits[NGX_SIZE_T_LEN];
    u_char  *d;

    d = digits + sizeof(digits);

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    *p++ = type;
    p = ngx_cpymem(p, d, digits + sizeof(digits) - d);
    *p++ = CR;
    *p++ = LF;

    return p;
}


static int
ngx_nebula_redis_format(char **out, ngx_uint_t argc, const char **argv,
    const size_t *argvlen)
{
    size_t       size;
    u_char      *buf, *p;
    ngx_uint_t   i;

    /* "*N\r\n", then "$LEN\r\nARG\r\n" an argument */
    size = 1 + NGX_SIZE_T_LEN + 2;

    for (i = 0; i < argc; i++) {
        size += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    buf = malloc(size);
    if (buf == NULL) {
        return -1;
    }

    p = ngx_nebula_redis_len(buf, '*', argc);

    for (i = 0; i < argc; i++) {
        p = ngx_nebula_redis_len(p, '$', argvlen[i]);

        /* an empty argument may have no data: memcpy(p, NULL, 0) is UB */
        if (argvlen[i]) {
            p = ngx_cpymem(p, argv[i], argvlen[i]);
        }

        *p++ = CR;
        *p++ = LF;
    }

    *out = (char *) buf;

    return (int) (p - buf);
}


ngx_nebula_redis_op_t *
ngx_nebula_redis_eval(ngx_nebula_script_e script, ngx_uint_t nkeys,
    ngx_uint_t argc, ngx_str_t *argv, ngx_nebula_redis_handler_pt handler,
    void *data)
{
    char                 *cmd;
    int                   len;
    ngx_uint_t            i;
    const char           *avs[32], **av;
    size_t                als[32], *al;
    u_char                nk[NGX_INT_T_LEN];
    ngx_nebula_script_t  *s;

    if (!ngx_nebula_redis_ready()) {
        return NULL;
    }

    av = avs;
    al = als;

    if (argc + 3 > 32) {
        /* a batch of settlements */
        av = malloc((argc + 3) * (sizeof(const char *) + sizeof(size_t)));
        if (av == NULL) {
            return NULL;
        }

        al = (size_t *) (av + argc + 3);
    }

    s = ngx_nebula_script(script);

    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = (const char *) s->sha1;
    al[1] = 40;
    av[2] = (const char *) nk;
    al[2] = ngx_sprintf(nk, "%ui", nkeys) - nk;

    for (i = 0; i < argc; i++) {
        av[i + 3] = (const char *) argv[i].data;
        al[i + 3] = argv[i].len;
    }

    len = ngx_nebula_redis_format(&cmd, argc + 3, av, al);

    if (av != avs) {
        free(av);
    }

    if (len <= 0) {
        return NULL;
    }

    return ngx_nebula_redis_send(cmd, len, script, handler, data, 0);
}


ngx_nebula_redis_op_t *
ngx_nebula_redis_command(ngx_uint_t argc, ngx_str_t *argv,
    ngx_nebula_redis_handler_pt handler, void *data)
{
    char        *cmd;
    int          len;
    ngx_uint_t   i;
    const char  *av[8];
    size_t       al[8];

    if (!ngx_nebula_redis_ready() || argc == 0 || argc > 8) {
        return NULL;
    }

    for (i = 0; i < argc; i++) {
        av[i] = (const char *) argv[i].data;
        al[i] = argv[i].len;
    }

    len = redisFormatCommandArgv(&cmd, (int) argc, av, al);
    if (len <= 0) {
        return NULL;
    }

    /* no script: a NOSCRIPT reply, which it cannot get, is not retried */
    return ngx_nebula_redis_send(cmd, len, NGX_NEBULA_SCRIPT_N, handler,
                                 data, 0);
}
