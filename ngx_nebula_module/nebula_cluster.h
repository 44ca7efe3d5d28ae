/*
 * Nebula: what a Redis Cluster client has to read, and nothing it has to do.
 *
 * Plain C with no nginx types (hiredis's reply type only), so unit tests
 * and fuzzers drive it directly: a key's hash slot, as Redis computes it;
 * the MOVED and ASK redirections of an error reply; the reply to
 * CLUSTER SLOTS as ranges of slots and their masters; a slot map made of
 * those ranges.  hiredis 0.14 (Debian 12's) has no cluster support, and
 * the connections, the routing and the map's refresh are the module's
 * (ngx_nebula_redis_cluster.c).
 *
 * An address whose host is empty stands for "the node you asked", as
 * Redis 7 sends it when it does not know how the client reaches a node
 * (cluster-preferred-endpoint-type unknown-endpoint, or hostname with
 * none announced): the caller puts in the address it sent the command
 * to, with the port given.
 */

#ifndef NEBULA_CLUSTER_H
#define NEBULA_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>


#define NEBULA_CLUSTER_SLOTS       16384

/* a host name is at most 253 bytes, an IPv6 address with a zone fewer */
#define NEBULA_CLUSTER_HOST_MAX    256     /* 255 bytes and the NUL */

/* a cluster resharded slot by slot may give every slot a range of its own */
#define NEBULA_CLUSTER_MAX_RANGES  NEBULA_CLUSTER_SLOTS

/* a slot of a map that no range covers */
#define NEBULA_CLUSTER_NO_NODE     0xffff


typedef enum {
    NEBULA_CLUSTER_NONE = 0,      /* not a redirection: the caller's error */
    NEBULA_CLUSTER_MOVED,
    NEBULA_CLUSTER_ASK,
    NEBULA_CLUSTER_BAD            /* MOVED or ASK, malformed */
} nebula_cluster_redirect_e;


typedef struct {
    nebula_cluster_redirect_e  kind;
    unsigned                   slot;
    unsigned                   port;
    char                       host[NEBULA_CLUSTER_HOST_MAX];
} nebula_cluster_redirect_t;


/* slots start to end, both included, served by the master at host:port */
typedef struct {
    unsigned                   start;
    unsigned                   end;
    unsigned                   port;
    char                       host[NEBULA_CLUSTER_HOST_MAX];
} nebula_cluster_range_t;


typedef struct {
    unsigned                   port;
    char                       host[NEBULA_CLUSTER_HOST_MAX];
} nebula_cluster_node_t;


/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), Redis's key hash */
uint16_t nebula_cluster_crc16(const unsigned char *p, size_t len);

/*
 * The slot of a key, 0 to 16383, as Redis's keyHashSlot(): of the bytes
 * between the first '{' and the first '}' after it when there are some,
 * else of the whole key.  "nb:{A}:u:2026-12" is A's slot.
 */
unsigned nebula_cluster_slot(const unsigned char *key, size_t len);

/*
 * str/len: the text of an error reply (redisReply's str and len, with no
 * '-' and no CRLF).  "MOVED <slot> <host>:<port>" and "ASK <slot>
 * <host>:<port>", with single spaces and nothing after, fill *out and
 * return its kind.  The host is what comes before the last ':' (an IPv6
 * address has its own), NUL-terminated, printable ASCII with no space,
 * and may be empty: Redis 7 sends "" or "?" for a node it knows no
 * address of, and both come out as "" (the caller's node's host).  A slot
 * of 16384 or more, a port of 0 or over 65535, a field missing or one
 * more, a host longer than NEBULA_CLUSTER_HOST_MAX - 1 or with a control
 * byte make NEBULA_CLUSTER_BAD; any other error (NOSCRIPT, CLUSTERDOWN,
 * TRYAGAIN, ...) NEBULA_CLUSTER_NONE.  Unless MOVED or ASK, *out is all
 * zeroes but its kind.
 */
nebula_cluster_redirect_e nebula_cluster_redirect(const char *str,
    size_t len, nebula_cluster_redirect_t *out);

/*
 * The reply to CLUSTER SLOTS: an array of [start, end, master, replica,
 * ...], each node [endpoint, port, id, metadata...] (Redis 3.0 sent only
 * endpoint and port; Redis 7 adds metadata, a map that RESP2 flattens to
 * an array).  Writes each range and its master to ranges[], at most max,
 * in the reply's order, and returns how many (0: an empty array, a
 * cluster with no slot assigned), or -1 when the reply is no such array:
 * a type wrong at any depth, a negative number, start > end, end 16384 or
 * more, a master's port outside 1..65535, a host too long or not
 * printable, more ranges than max.  Ranges are not checked against each
 * other (nebula_cluster_map does).  An endpoint of NULL (unknown-endpoint),
 * "?" (hostname, none announced) or "" is the metadata's "ip" when it has
 * one, else "" (the node the caller asked).
 */
int nebula_cluster_slots(const redisReply *reply,
    nebula_cluster_range_t *ranges, size_t max);

/*
 * map (NEBULA_CLUSTER_SLOTS entries): for each slot, the index in nodes[]
 * of its master, or NEBULA_CLUSTER_NO_NODE.  nodes[0 .. *nnodes) are the
 * nodes known before and keep their indexes (a connection of the caller's
 * may stand behind each); a master not among them is added, up to
 * max_nodes, and *nnodes grows.  Nodes are the same when host and port
 * are: put in the caller's host for an empty one first, or "" and the
 * caller's host make two.  Returns 1 when every slot has a master, 0 when
 * some has none, -1 (map and nodes then partly written, *nnodes right)
 * when two ranges claim a slot, a range is outside 0..16383 or ends
 * before it starts, or there are more than max_nodes nodes.
 */
int nebula_cluster_map(const nebula_cluster_range_t *ranges, size_t n,
    nebula_cluster_node_t *nodes, size_t max_nodes, size_t *nnodes,
    uint16_t *map);

#endif /* NEBULA_CLUSTER_H */
