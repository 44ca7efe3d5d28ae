/*
 * libFuzzer target: the Redis Cluster parsers (nebula_cluster.c).
 *
 * Each input is three things at once: a key, whose slot must be the one
 * Redis's rule gives, with CRC16 computed a bit at a time; the text of an
 * error reply, whose MOVED or ASK, if taken, must hold a slot, port and
 * host a connection can use, and read the same once written back; and
 * RESP bytes, which hiredis's own reader turns into replies of any shape
 * a broken or hostile node could send, and which the CLUSTER SLOTS reader
 * must refuse or turn into ranges that make a map saying what they say.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "nebula_cluster.h"


#define MAX_RANGES  64
#define MAX_NODES   8


static nebula_cluster_range_t  ranges[MAX_RANGES];
static nebula_cluster_node_t   nodes[MAX_NODES];
static uint16_t                map[NEBULA_CLUSTER_SLOTS];


static uint16_t
crc16_bits(const unsigned char *p, size_t len)
{
    int       b;
    size_t    i;
    uint16_t  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t) (p[i] << 8);

        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


/* Redis's keyHashSlot(), written as plainly as it reads */
static unsigned
slot_ref(const unsigned char *key, size_t len)
{
    size_t  s, e;

    for (s = 0; s < len && key[s] != '{'; s++) {
        /* void */
    }

    if (s == len) {
        return crc16_bits(key, len) & 16383;
    }

    for (e = s + 1; e < len && key[e] != '}'; e++) {
        /* void */
    }

    if (e == len || e == s + 1) {
        return crc16_bits(key, len) & 16383;
    }

    return crc16_bits(key + s + 1, e - s - 1) & 16383;
}


static int
usable_host(const char *host)
{
    size_t  i;

    if (memchr(host, '\0', NEBULA_CLUSTER_HOST_MAX) == NULL
        || strcmp(host, "?") == 0)
    {
        return 0;
    }

    for (i = 0; host[i]; i++) {
        if (host[i] <= ' ' || host[i] >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


static void
redirect(const unsigned char *data, size_t size)
{
    int                        n;
    char                       text[NEBULA_CLUSTER_HOST_MAX + 32];
    nebula_cluster_redirect_t  rr, again;
    nebula_cluster_redirect_e  kind;

    kind = nebula_cluster_redirect((const char *) data, size, &rr);

    if (kind != rr.kind) {
        abort();
    }

    if (kind != NEBULA_CLUSTER_MOVED && kind != NEBULA_CLUSTER_ASK) {
        if (kind > NEBULA_CLUSTER_BAD || rr.slot || rr.port || rr.host[0]) {
            abort();
        }

        return;
    }

    if (rr.slot >= NEBULA_CLUSTER_SLOTS || rr.port == 0 || rr.port > 65535
        || !usable_host(rr.host))
    {
        abort();
    }

    /* written back (shorter: no leading zeros, no "?"), read the same */
    n = snprintf(text, sizeof(text), "%s %u %s:%u",
                 kind == NEBULA_CLUSTER_MOVED ? "MOVED" : "ASK",
                 rr.slot, rr.host, rr.port);

    if (n < 0 || (size_t) n >= sizeof(text) || (size_t) n > size
        || nebula_cluster_redirect(text, (size_t) n, &again) != kind
        || again.slot != rr.slot || again.port != rr.port
        || strcmp(again.host, rr.host) != 0)
    {
        abort();
    }
}


/*
 * hiredis 0.14 allocates what a RESP header announces ("*999999999"): that
 * is hiredis trusting its Redis, not what is tested here, so inputs that
 * announce more than 4096 elements or bytes are skipped.
 */
static int
too_large(const unsigned char *data, size_t size)
{
    size_t  i, j;
    long    n;

    for (i = 0; i + 1 < size; i++) {
        if (data[i] != '*' && data[i] != '$') {
            continue;
        }

        n = 0;

        for (j = i + 1; j < size && data[j] >= '0' && data[j] <= '9'; j++) {
            n = n * 10 + (data[j] - '0');

            if (n > 4096) {
                return 1;
            }
        }
    }

    return 0;
}


static void
slots(const redisReply *r)
{
    int                            n, i, full;
    size_t                         nnodes, covered, s;
    const nebula_cluster_range_t  *range;
    const nebula_cluster_node_t   *node;

    n = nebula_cluster_slots(r, ranges, MAX_RANGES);

    if (n < 0) {
        return;
    }

    if (n > MAX_RANGES
        || (n > 0 && nebula_cluster_slots(r, ranges, (size_t) n - 1) != -1)
        || nebula_cluster_slots(r, ranges, (size_t) n) != n)
    {
        abort();
    }

    covered = 0;

    for (i = 0; i < n; i++) {
        range = &ranges[i];

        if (range->start > range->end || range->end >= NEBULA_CLUSTER_SLOTS
            || range->port == 0 || range->port > 65535
            || !usable_host(range->host))
        {
            abort();
        }

        covered += range->end - range->start + 1;
    }

    nnodes = 0;
    full = nebula_cluster_map(ranges, (size_t) n, nodes, MAX_NODES, &nnodes,
                              map);

    if (nnodes > MAX_NODES) {
        abort();
    }

    if (full < 0) {
        /* overlapping ranges, or more masters than nodes */
        return;
    }

    if (full != (covered == NEBULA_CLUSTER_SLOTS)) {
        abort();
    }

    for (i = 0; i < n; i++) {
        range = &ranges[i];

        for (s = range->start; s <= range->end; s++) {
            if (map[s] >= nnodes) {
                abort();
            }

            node = &nodes[map[s]];

            if (node->port != range->port
                || strcmp(node->host, range->host) != 0)
            {
                abort();
            }
        }
    }

    for (s = 0; s < NEBULA_CLUSTER_SLOTS; s++) {
        covered -= (map[s] != NEBULA_CLUSTER_NO_NODE);
    }

    if (covered != 0) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    void         *r;
    redisReader  *reader;

    if (size > 65536) {
        return 0;
    }

    if (nebula_cluster_slot(data, size) != slot_ref(data, size)
        || nebula_cluster_crc16(data, size) != crc16_bits(data, size))
    {
        abort();
    }

    redirect(data, size);

    if (too_large(data, size)) {
        return 0;
    }

    reader = redisReaderCreate();
    if (reader == NULL) {
        return 0;
    }

    if (redisReaderFeed(reader, (const char *) data, size) == REDIS_OK) {

        while (redisReaderGetReply(reader, &r) == REDIS_OK && r != NULL) {
            slots(r);
            freeReplyObject(r);
        }
    }

    redisReaderFree(reader);
    return 0;
}
