/*
 * Nebula: the ids that name a request in Redis (its reservation and its
 * settlement), a lease, and $nebula_request_id.
 *
 * Two ids that meet lose a settlement: the second finds the first's
 * reservation gone and is taken for a repeat, its usage never recorded,
 * and its own reservation leaks.  random(), which nginx seeds from the
 * pid and the time, makes the same ids on two edges started alike (two
 * containers, each with its master as pid 1).  So an id is the
 * SipHash-2-4 of a counter under a key each worker draws from OpenSSL's
 * CSPRNG when it starts: distinct counters give ids that differ but by a
 * 2^-128 chance, across workers, edges and restarts, and an id tells
 * nothing of the worker's traffic.  One hash a request, no CSPRNG call.
 */

#include "ngx_nebula.h"
#include "nebula_siphash.h"

#include <openssl/rand.h>


static uint64_t    ngx_nebula_id_key[2];
static uint64_t    ngx_nebula_id_counter;
static ngx_uint_t  ngx_nebula_id_ready;


/*
 * Once a worker (and in the master, for what it names before a worker
 * runs: nothing today).  Without a CSPRNG the worker does not start: an
 * id that may collide costs money silently.
 */
ngx_int_t
ngx_nebula_id_init(ngx_cycle_t *cycle)
{
    if (RAND_bytes((u_char *) ngx_nebula_id_key, sizeof(ngx_nebula_id_key))
        != 1)
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "nebula: RAND_bytes() failed: no request ids");
        return NGX_ERROR;
    }

    ngx_nebula_id_counter = 0;
    ngx_nebula_id_ready = 1;

    return NGX_OK;
}


/* 32 lower-case hex digits into out (not terminated) */
void
ngx_nebula_id_next(u_char *out)
{
    u_char    in[8];
    uint64_t  n, h[2];

    if (!ngx_nebula_id_ready) {
        /* a process that did not run init (nginx -t has no requests) */
        (void) ngx_nebula_id_init((ngx_cycle_t *) ngx_cycle);
    }

    n = ++ngx_nebula_id_counter;

    /* the counter's bytes in one order whatever the machine's */
    in[0] = (u_char) n;
    in[1] = (u_char) (n >> 8);
    in[2] = (u_char) (n >> 16);
    in[3] = (u_char) (n >> 24);
    in[4] = (u_char) (n >> 32);
    in[5] = (u_char) (n >> 40);
    in[6] = (u_char) (n >> 48);
    in[7] = (u_char) (n >> 56);

    nebula_siphash128(ngx_nebula_id_key, in, sizeof(in), h);

    (void) ngx_nebula_hex(out, (u_char *) h, sizeof(h));
}
