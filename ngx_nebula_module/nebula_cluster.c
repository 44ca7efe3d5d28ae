/*
 * Nebula: a Redis Cluster's slots, redirections and map (see
 * nebula_cluster.h).
 */

#include <string.h>

#include "nebula_cluster.h"


/*
 * crc16_table[b]: the CRC of the one byte b, so that a byte costs one
 * lookup; computed from the polynomial 0x1021, it is Redis's own table
 * (src/crc16.c).
 */
static const uint16_t  crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0
};


static int cluster_host(const char *s, size_t len, char *host);
static int cluster_node(const redisReply *node, int master, char *host,
    unsigned *port);
static const redisReply *cluster_meta_ip(const redisReply *node);
static int cluster_uint(const char **p, const char *last, unsigned max,
    unsigned *out);


uint16_t
nebula_cluster_crc16(const unsigned char *p, size_t len)
{
    size_t    i;
    uint16_t  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc = (uint16_t) ((crc << 8)
                          ^ crc16_table[((crc >> 8) ^ p[i]) & 0xff]);
    }

    return crc;
}


unsigned
nebula_cluster_slot(const unsigned char *key, size_t len)
{
    const unsigned char  *tag, *end;

    tag = len ? memchr(key, '{', len) : NULL;

    if (tag != NULL) {
        tag++;
        end = memchr(tag, '}', len - (size_t) (tag - key));

        /* "{}" is no tag: the whole key is hashed, as Redis does */
        if (end != NULL && end > tag) {
            key = tag;
            len = (size_t) (end - tag);
        }
    }

    return nebula_cluster_crc16(key, len) & (NEBULA_CLUSTER_SLOTS - 1);
}


nebula_cluster_redirect_e
nebula_cluster_redirect(const char *str, size_t len,
    nebula_cluster_redirect_t *out)
{
    size_t                     wlen;
    unsigned                   slot, port;
    const char                *p, *last, *colon;
    nebula_cluster_redirect_e  kind;

    memset(out, 0, sizeof(nebula_cluster_redirect_t));

    p = str;
    last = str + len;

    /* the first word */
    for (wlen = 0; wlen < len && str[wlen] != ' '; wlen++) {
        /* void */
    }

    if (wlen == 5 && memcmp(str, "MOVED", 5) == 0) {
        kind = NEBULA_CLUSTER_MOVED;

    } else if (wlen == 3 && memcmp(str, "ASK", 3) == 0) {
        kind = NEBULA_CLUSTER_ASK;

    } else {
        return NEBULA_CLUSTER_NONE;
    }

    p += wlen;

    if (p == last || *p++ != ' '
        || cluster_uint(&p, last, NEBULA_CLUSTER_SLOTS - 1, &slot) != 0
        || p == last || *p++ != ' ')
    {
        goto bad;
    }

    /* an IPv6 address has colons of its own: the port is after the last */
    for (colon = last; colon > p && colon[-1] != ':'; colon--) {
        /* void */
    }

    if (colon == p) {
        goto bad;
    }

    colon--;

    if (cluster_host(p, (size_t) (colon - p), out->host) != 0) {
        goto bad;
    }

    p = colon + 1;

    if (cluster_uint(&p, last, 65535, &port) != 0 || p != last || port == 0) {
        goto bad;
    }

    out->kind = kind;
    out->slot = slot;
    out->port = port;

    return kind;

bad:

    memset(out, 0, sizeof(nebula_cluster_redirect_t));
    out->kind = NEBULA_CLUSTER_BAD;

    return NEBULA_CLUSTER_BAD;
}


int
nebula_cluster_slots(const redisReply *reply, nebula_cluster_range_t *ranges,
    size_t max)
{
    size_t                   i, j;
    const redisReply        *r, *start, *end;
    nebula_cluster_range_t  *range;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements > max || reply->elements > NEBULA_CLUSTER_SLOTS)
    {
        return -1;
    }

    for (i = 0; i < reply->elements; i++) {
        r = reply->element[i];

        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3) {
            return -1;
        }

        start = r->element[0];
        end = r->element[1];

        if (start == NULL || start->type != REDIS_REPLY_INTEGER
            || end == NULL || end->type != REDIS_REPLY_INTEGER
            || start->integer < 0 || start->integer > end->integer
            || end->integer >= NEBULA_CLUSTER_SLOTS)
        {
            return -1;
        }

        range = &ranges[i];
        range->start = (unsigned) start->integer;
        range->end = (unsigned) end->integer;

        if (cluster_node(r->element[2], 1, range->host, &range->port) != 0) {
            return -1;
        }

        /* the replicas, unused, but a reply broken there is broken */
        for (j = 3; j < r->elements; j++) {
            if (cluster_node(r->element[j], 0, NULL, NULL) != 0) {
                return -1;
            }
        }
    }

    return (int) reply->elements;
}


int
nebula_cluster_map(const nebula_cluster_range_t *ranges, size_t n,
    nebula_cluster_node_t *nodes, size_t max_nodes, size_t *nnodes,
    uint16_t *map)
{
    size_t                         i, k, covered;
    unsigned                       s;
    const nebula_cluster_range_t  *range;

    /* an index is a uint16_t, and NEBULA_CLUSTER_NO_NODE is none */
    if (max_nodes > NEBULA_CLUSTER_NO_NODE) {
        max_nodes = NEBULA_CLUSTER_NO_NODE;
    }

    for (s = 0; s < NEBULA_CLUSTER_SLOTS; s++) {
        map[s] = NEBULA_CLUSTER_NO_NODE;
    }

    covered = 0;

    for (i = 0; i < n; i++) {
        range = &ranges[i];

        if (range->start > range->end || range->end >= NEBULA_CLUSTER_SLOTS)
        {
            return -1;
        }

        for (k = 0; k < *nnodes; k++) {
            if (nodes[k].port == range->port
                && strcmp(nodes[k].host, range->host) == 0)
            {
                break;
            }
        }

        if (k == *nnodes) {
            if (k >= max_nodes) {
                return -1;
            }

            nodes[k].port = range->port;
            memcpy(nodes[k].host, range->host, NEBULA_CLUSTER_HOST_MAX);
            nodes[k].host[NEBULA_CLUSTER_HOST_MAX - 1] = '\0';
            (*nnodes)++;
        }

        for (s = range->start; s <= range->end; s++) {
            if (map[s] != NEBULA_CLUSTER_NO_NODE) {
                return -1;
            }

            map[s] = (uint16_t) k;
        }

        covered += range->end - range->start + 1;
    }

    return covered == NEBULA_CLUSTER_SLOTS;
}


/*
 * A host as it may be connected to: printable ASCII with no space, for a
 * log line and getaddrinfo() alike.  "?" is Redis 7's "no host name
 * announced": as good as none.
 */
static int
cluster_host(const char *s, size_t len, char *host)
{
    size_t  i;

    if (len >= NEBULA_CLUSTER_HOST_MAX) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        if (s[i] <= ' ' || s[i] >= 0x7f) {
            return -1;
        }
    }

    if (len == 1 && s[0] == '?') {
        len = 0;
    }

    if (host != NULL) {
        memcpy(host, s, len);
        host[len] = '\0';
    }

    return 0;
}


/*
 * A node of CLUSTER SLOTS: [endpoint, port, ...].  Of a replica only the
 * shape is checked; its host and port are not the caller's business.
 */
static int
cluster_node(const redisReply *node, int master, char *host,
    unsigned *port)
{
    const redisReply  *ep, *pt;

    if (node == NULL || node->type != REDIS_REPLY_ARRAY || node->elements < 2)
    {
        return -1;
    }

    ep = node->element[0];
    pt = node->element[1];

    if (ep == NULL || pt == NULL || pt->type != REDIS_REPLY_INTEGER
        || (ep->type != REDIS_REPLY_STRING && ep->type != REDIS_REPLY_NIL))
    {
        return -1;
    }

    if (!master) {
        return 0;
    }

    if (pt->integer < 1 || pt->integer > 65535) {
        return -1;
    }

    *port = (unsigned) pt->integer;

    if (ep->type == REDIS_REPLY_STRING
        && cluster_host(ep->str, ep->len, host) != 0)
    {
        return -1;
    }

    if (ep->type == REDIS_REPLY_NIL) {
        host[0] = '\0';
    }

    if (host[0] == '\0') {
        /* Redis 7 names no endpoint, but may still give the address */
        ep = cluster_meta_ip(node);

        if (ep != NULL && cluster_host(ep->str, ep->len, host) != 0) {
            host[0] = '\0';
        }
    }

    return 0;
}


/*
 * The "ip" of a node's metadata, its fourth element ([key, value, ...]:
 * a map as RESP2 sends it), or NULL.  Metadata is Redis 7's addition, one
 * a later Redis may change: what is not understood is ignored, not
 * refused.
 */
static const redisReply *
cluster_meta_ip(const redisReply *node)
{
    size_t             i;
    const redisReply  *meta, *k, *v;

    if (node->elements < 4) {
        return NULL;
    }

    meta = node->element[3];

    if (meta == NULL || meta->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }

    for (i = 0; i + 1 < meta->elements; i += 2) {
        k = meta->element[i];
        v = meta->element[i + 1];

        if (k != NULL && k->type == REDIS_REPLY_STRING && k->len == 2
            && memcmp(k->str, "ip", 2) == 0
            && v != NULL && v->type == REDIS_REPLY_STRING && v->len > 0)
        {
            return v;
        }
    }

    return NULL;
}


/*
 * Decimal digits at *p, at least one, of a value up to max; stops early
 * on a value too large, so any number of digits is read safely.
 */
static int
cluster_uint(const char **p, const char *last, unsigned max, unsigned *out)
{
    unsigned     v;
    const char  *s;

    v = 0;

    for (s = *p; s < last && *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (unsigned) (*s - '0');

        if (v > max) {
            return -1;
        }
    }

    if (s == *p) {
        return -1;
    }

    *p = s;
    *out = v;

    return 0;
}
