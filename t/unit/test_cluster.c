/*
 * Unit tests of the Redis Cluster parsers (nebula_cluster.c): CRC16 and
 * the hash slot, against vectors a real redis-server gave; MOVED and ASK,
 * good and malformed; CLUSTER SLOTS replies made by hiredis's own reader
 * from RESP bytes, as the module receives them, and the map made of them.
 */

#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "nebula_cluster.h"
#include "tap.h"


#define U(s)  (const unsigned char *) s, sizeof(s) - 1


/*
 * Redis 7.0.15's CLUSTER SLOTS, asked of a node of a cluster of three
 * masters (127.0.0.1:23991..23993), the first and the third with a
 * replica (23994, 23995); the bytes as they came off the socket.
 */
static const char  real_slots[] =
    "*3\r\n"
    "*4\r\n:0\r\n:5460\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:23991\r\n"
    "$40\r\nfe7b3eb050fe408a4fadf7edeebd4dadf5d95f32\r\n*0\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:23994\r\n"
    "$40\r\nbc7c02b422954b3fe050c84a3ad17ac08e740d43\r\n*0\r\n"
    "*3\r\n:5461\r\n:10922\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:23992\r\n"
    "$40\r\nd9df7601d17db5086d64b5ea20e31c35704be912\r\n*0\r\n"
    "*4\r\n:10923\r\n:16383\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:23993\r\n"
    "$40\r\n24915675c753582b1056c1327d7915db875861b9\r\n*0\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:23995\r\n"
    "$40\r\n597ef0fb6e7a620f3d030edb6bf7f5de3fdfd0d2\r\n*0\r\n";

/*
 * The same cluster's first range with cluster-preferred-endpoint-type
 * hostname and no hostname announced ("?", the address in the metadata),
 * then unknown-endpoint (a NULL endpoint, the same metadata).
 */
#define META_IP  "*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"
#define NODE_ID  "$40\r\nfe7b3eb050fe408a4fadf7edeebd4dadf5d95f32\r\n"

static const char  hostname_slots[] =
    "*1\r\n*3\r\n:0\r\n:5460\r\n"
    "*4\r\n$1\r\n?\r\n:23991\r\n" NODE_ID META_IP;

static const char  unknown_slots[] =
    "*1\r\n*3\r\n:0\r\n:5460\r\n"
    "*4\r\n$-1\r\n:23991\r\n" NODE_ID META_IP;


/* one reply from RESP bytes; NULL if they are not one */
static redisReply *
resp(const char *bytes, size_t len)
{
    void         *r;
    redisReader  *reader;

    reader = redisReaderCreate();
    if (reader == NULL) {
        return NULL;
    }

    r = NULL;

    if (redisReaderFeed(reader, bytes, len) != REDIS_OK
        || redisReaderGetReply(reader, &r) != REDIS_OK)
    {
        r = NULL;
    }

    redisReaderFree(reader);

    return r;
}


static nebula_cluster_range_t  ranges[8];


/* nebula_cluster_slots() of the reply in bytes, at most max ranges */
static int
slots_max(const char *bytes, size_t max)
{
    int          n;
    redisReply  *r;

    memset(ranges, 0x5a, sizeof(ranges));

    r = resp(bytes, strlen(bytes));
    if (r == NULL) {
        printf("# not a RESP reply: %s\n", bytes);
        return -2;
    }

    n = nebula_cluster_slots(r, ranges, max);
    freeReplyObject(r);

    return n;
}


static int
slots(const char *bytes)
{
    return slots_max(bytes, sizeof(ranges) / sizeof(ranges[0]));
}


/* CRC16 a bit at a time, as the polynomial says: the table's reference */
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


static void
test_crc16(void)
{
    size_t         i;
    unsigned char  all[256];

    is_int(nebula_cluster_crc16(U("123456789")), 0x31c3,
           "crc16(\"123456789\") is XMODEM's check value");
    is_int(nebula_cluster_crc16(U("")), 0, "crc16 of nothing is 0");

    for (i = 0; i < sizeof(all); i++) {
        all[i] = (unsigned char) (255 - i);
    }

    for (i = 0; i <= sizeof(all); i += 37) {
        if (nebula_cluster_crc16(all, i) != crc16_bits(all, i)) {
            break;
        }
    }

    ok(i > sizeof(all), "the table agrees with the polynomial, every byte");
}


static void
test_slot(void)
{
    unsigned  s;

    /* CLUSTER KEYSLOT of a redis-server 7.0.15 in cluster mode */
    is_int(nebula_cluster_slot(U("foo")), 12182, "foo");
    is_int(nebula_cluster_slot(U("bar")), 5061, "bar");
    is_int(nebula_cluster_slot(U("123456789")), 12739, "123456789");
    is_int(nebula_cluster_slot(U("")), 0, "the empty key");
    is_int(nebula_cluster_slot(U("{user1000}.following")), 3443,
           "{user1000}.following");
    is_int(nebula_cluster_slot(U("{user1000}.followers")), 3443,
           "{user1000}.followers: the same slot");
    is_int(nebula_cluster_slot(U("foo{}{bar}")), 8363,
           "foo{}{bar}: an empty tag, the whole key hashed");
    is_int(nebula_cluster_slot(U("foo{{bar}}zap")), 4015,
           "foo{{bar}}zap hashes {bar");
    is_int(nebula_cluster_slot(U("{bar")), 4015, "{bar");
    is_int(nebula_cluster_slot(U("foo{bar}{zap}")), 5061,
           "foo{bar}{zap} hashes bar");
    is_int(nebula_cluster_slot(U("a{b}c")), 3300, "a{b}c");
    is_int(nebula_cluster_slot(U("{}")), 15257, "{}: no tag");
    is_int(nebula_cluster_slot(U("{")), 4092, "{ alone");
    is_int(nebula_cluster_slot(U("}")), 12090, "} alone");
    is_int(nebula_cluster_slot(U("nb:{0123456789abcdef}:u:2026-12")), 10405,
           "an account's month");
    is_int(nebula_cluster_slot(U("0123456789abcdef")), 10405,
           "... is its tag's slot");
    is_int(nebula_cluster_slot(U("nb:{0123456789abcdef}:res:2026-12")),
           10405, "... as are its reservations");
    is_int(nebula_cluster_slot(U("nb:{2ec88022a7c67f13}:acct")), 11952,
           "an account");
    is_int(nebula_cluster_slot(U("nb:{2ec88022a7c67f13}:k:0f1e2d3c4b5a6978")),
           11952, "... and its key");
    is_int(nebula_cluster_slot(U("nb:{9d1e78a7e95884b6}:keys")), 5165,
           "another account's keys");

    /* what a server was not asked, by the rule itself */
    s = nebula_cluster_slot(U("x"));
    is_int(nebula_cluster_slot(U("a\0b{x}")), s, "a NUL before the tag");
    is_int(nebula_cluster_slot(U("{x}}}")), s, "the first '}' closes");
    is_int(nebula_cluster_slot(U("}{x}")), s, "a '}' before the '{'");
    is_int(nebula_cluster_slot(U("{\0}")), nebula_cluster_slot(U("\0")),
           "a NUL is a tag");
    is_int(nebula_cluster_slot(U("{x")),
           nebula_cluster_crc16(U("{x")) & 16383, "an open tag: the whole key");
}


/* the kind of a redirection, and host, port and slot when there is one */
static void
is_redirect(const char *text, size_t len, nebula_cluster_redirect_e kind,
    unsigned slot, const char *host, unsigned port, const char *name)
{
    nebula_cluster_redirect_t  rr;

    memset(&rr, 0x5a, sizeof(rr));

    is_int(nebula_cluster_redirect(text, len, &rr), kind, "%s: kind", name);
    is_int(rr.kind, kind, "%s: its kind in the result", name);

    if (kind == NEBULA_CLUSTER_MOVED || kind == NEBULA_CLUSTER_ASK) {
        is_int(rr.slot, slot, "%s: slot", name);
        is_str(rr.host, host, "%s: host", name);
        is_int(rr.port, port, "%s: port", name);
        return;
    }

    ok(rr.slot == 0 && rr.port == 0 && rr.host[0] == '\0',
       "%s: nothing else", name);
}


#define MOVED(text, slot, host, port, name)                                   \
    is_redirect(text, sizeof(text) - 1, NEBULA_CLUSTER_MOVED, slot, host,     \
                port, name)

#define ASK(text, slot, host, port, name)                                     \
    is_redirect(text, sizeof(text) - 1, NEBULA_CLUSTER_ASK, slot, host,       \
                port, name)

#define BAD(text, name)                                                       \
    is_redirect(text, sizeof(text) - 1, NEBULA_CLUSTER_BAD, 0, "", 0, name)

#define NONE(text, name)                                                      \
    is_redirect(text, sizeof(text) - 1, NEBULA_CLUSTER_NONE, 0, "", 0, name)


static void
test_redirect(void)
{
    char  text[400], host[300];

    /* from redis-server 7.0.15, GET foo to the wrong node; ASK while
     * slot 12182 migrated; the empty host with unknown-endpoint, "?" with
     * hostname and none announced */
    MOVED("MOVED 12182 127.0.0.1:23993", 12182, "127.0.0.1", 23993, "MOVED");
    ASK("ASK 12182 127.0.0.1:23992", 12182, "127.0.0.1", 23992, "ASK");
    MOVED("MOVED 12182 :23993", 12182, "", 23993, "an empty host");
    MOVED("MOVED 12182 ?:23993", 12182, "", 23993, "\"?\" is no host");

    MOVED("MOVED 0 ::1:6379", 0, "::1", 6379, "IPv6: split at the last ':'");
    ASK("ASK 16383 fe80::1%eth0:65535", 16383, "fe80::1%eth0", 65535,
        "IPv6 with a zone, the last slot, the last port");
    MOVED("MOVED 7 redis-0.redis.nebula.svc.cluster.local:6379", 7,
          "redis-0.redis.nebula.svc.cluster.local", 6379, "a host name");
    MOVED("MOVED 0007 h:00080", 7, "h", 80, "leading zeros are decimal");
    MOVED("MOVED 1 ??:1", 1, "??", 1, "\"??\" is a host");

    /* a host of 255 bytes, then of 256 */
    memset(host, 'h', 255);
    host[255] = '\0';
    snprintf(text, sizeof(text), "MOVED 1 %s:1", host);
    is_redirect(text, strlen(text), NEBULA_CLUSTER_MOVED, 1, host, 1,
                "a host of 255 bytes");
    snprintf(text, sizeof(text), "MOVED 1 h%s:1", host);
    is_redirect(text, strlen(text), NEBULA_CLUSTER_BAD, 0, "", 0,
                "a host of 256 bytes");

    NONE("NOSCRIPT No matching script. Please use EVAL.", "NOSCRIPT");
    NONE("CLUSTERDOWN The cluster is down", "CLUSTERDOWN");
    NONE("TRYAGAIN Multiple keys request during rehashing of slot", "TRYAGAIN");
    NONE("CROSSSLOT Keys in request don't hash to the same slot", "CROSSSLOT");
    NONE("ERR unknown command 'ASKING'", "ERR");
    NONE("", "no text");
    NONE("MOVEDX 1 h:1", "a longer word");
    NONE("moved 1 h:1", "in lower case");
    NONE("ASKING", "ASKING");
    NONE(" MOVED 1 h:1", "a space first");

    BAD("MOVED", "MOVED alone");
    BAD("ASK ", "ASK and a space");
    BAD("MOVED 16384 h:1", "slot 16384");
    BAD("MOVED 4294967296 h:1", "a slot past 32 bits");
    BAD("MOVED 99999999999999999999999999999999 h:1", "a slot of 32 digits");
    BAD("MOVED -1 h:1", "a negative slot");
    BAD("MOVED +1 h:1", "a slot with a sign");
    BAD("MOVED 0x10 h:1", "a slot in hex");
    BAD("MOVED 1", "no address");
    BAD("MOVED 1 ", "an empty address");
    BAD("MOVED 1 h", "no port");
    BAD("MOVED 1 h:", "an empty port");
    BAD("MOVED 1 h:0", "port 0");
    BAD("MOVED 1 h:65536", "port 65536");
    BAD("MOVED 1 h:4294967297", "a port past 32 bits");
    BAD("MOVED 1 h:-1", "a negative port");
    BAD("MOVED 1 h:6379 ", "a space after");
    BAD("MOVED 1 h:6379x", "garbage after the port");
    BAD("MOVED 1 h:6379 h:6380", "an address more");
    BAD("MOVED 1 h:1\r\n", "CRLF after");
    BAD("MOVED  1 h:1", "two spaces");
    BAD("MOVED 1  h:1", "two spaces before the address");
    BAD("MOVED 1x h:1", "garbage after the slot");
    BAD("MOVED 1 a b:1", "a space in the host");
    BAD("MOVED 1 a\tb:1", "a tab in the host");
    BAD("MOVED 1 a\x01:1", "a control byte in the host");
    BAD("MOVED 1 a\x7f:1", "DEL in the host");
    BAD("MOVED 1 \xc3\xa9:1", "a byte over 127 in the host");
    BAD("MOVED 1 a\0b:1", "a NUL in the host");
    BAD("ASK 1 :", "ASK with neither host nor port");
}


static void
test_slots(void)
{
    int                     n;
    char                    buf[1024], host[300];
    size_t                  nnodes, i;
    uint16_t                map[NEBULA_CLUSTER_SLOTS];
    nebula_cluster_node_t   nodes[4];

    n = slots(real_slots);
    is_int(n, 3, "a real reply: three ranges");
    is_int(ranges[0].start, 0, "first starts at 0");
    is_int(ranges[0].end, 5460, "... ends at 5460");
    is_str(ranges[0].host, "127.0.0.1", "... its master's host");
    is_int(ranges[0].port, 23991, "... its master, not its replica");
    is_int(ranges[1].start, 5461, "second starts at 5461");
    is_int(ranges[1].end, 10922, "... ends at 10922");
    is_int(ranges[1].port, 23992, "... with no replica");
    is_int(ranges[2].start, 10923, "third starts at 10923");
    is_int(ranges[2].end, 16383, "... ends at 16383");
    is_int(ranges[2].port, 23993, "... its master");

    nnodes = 0;
    is_int(nebula_cluster_map(ranges, 3, nodes, 4, &nnodes, map), 1,
           "its map has every slot");
    is_int(nnodes, 3, "three nodes");
    is_int(map[0], 0, "slot 0 on the first");
    is_int(map[5460], 0, "slot 5460 on the first");
    is_int(map[5461], 1, "slot 5461 on the second");
    is_int(map[16383], 2, "slot 16383 on the third");
    is_int(nodes[map[nebula_cluster_slot(U("foo"))]].port, 23993,
           "foo on 23993, where the server's MOVED sent it");

    /* a refresh keeps the indexes the caller has */
    nnodes = 1;
    strcpy(nodes[0].host, "127.0.0.1");
    nodes[0].port = 23993;
    is_int(nebula_cluster_map(ranges, 3, nodes, 4, &nnodes, map), 1,
           "a refresh: every slot");
    is_int(nnodes, 3, "... one node known, two new");
    ok(map[16383] == 0 && map[0] == 1 && map[5461] == 2,
       "... the known one keeps its index");

    is_int(slots(hostname_slots), 1, "hostname, none announced");
    is_str(ranges[0].host, "127.0.0.1", "... \"?\": the metadata's ip");
    is_int(slots(unknown_slots), 1, "unknown-endpoint");
    is_str(ranges[0].host, "127.0.0.1", "... NULL: the metadata's ip");
    is_int(ranges[0].port, 23991, "... and the port");

    is_int(slots("*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$1\r\n?\r\n:7000\r\n"
                 "$2\r\nid\r\n"), 1, "\"?\" and no metadata");
    is_str(ranges[0].host, "", "... no host: the caller's");
    is_int(slots("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$-1\r\n:7000\r\n"), 1,
           "NULL and no metadata");
    is_str(ranges[0].host, "", "... no host");
    is_int(slots("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$0\r\n\r\n:7000\r\n"), 1,
           "an empty endpoint");
    is_str(ranges[0].host, "", "... no host");
    is_int(slots("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:7000\r\n"
                 NODE_ID ":5\r\n"), 1, "metadata not understood");
    is_str(ranges[0].host, "", "... ignored");
    is_int(slots("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:7000\r\n"
                 NODE_ID "*4\r\n$8\r\nhostname\r\n$1\r\nh\r\n"
                 "$2\r\nip\r\n$3\r\na b\r\n"), 1, "a metadata ip with a space");
    is_str(ranges[0].host, "", "... ignored");

    is_int(slots("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$3\r\n::1\r\n:7000\r\n"),
           1, "Redis 3.0's [ip, port], IPv6");
    is_str(ranges[0].host, "::1", "... its host");

    is_int(slots("*0\r\n"), 0, "no range: no slot assigned yet");
    nnodes = 0;
    is_int(nebula_cluster_map(ranges, 0, nodes, 4, &nnodes, map), 0,
           "... a map with no slot");
    ok(nnodes == 0 && map[0] == NEBULA_CLUSTER_NO_NODE
       && map[16383] == NEBULA_CLUSTER_NO_NODE, "... and no node");

    /* the middle master gone, its slots not yet taken over */
    n = slots("*2\r\n"
              "*3\r\n:0\r\n:5460\r\n*3\r\n$8\r\n10.0.0.1\r\n:6379\r\n$1\r\na\r\n"
              "*3\r\n:10923\r\n:16383\r\n*3\r\n$8\r\n10.0.0.3\r\n:6379\r\n"
              "$1\r\nc\r\n");
    is_int(n, 2, "a gap: two ranges");
    nnodes = 0;
    is_int(nebula_cluster_map(ranges, 2, nodes, 4, &nnodes, map), 0,
           "... not every slot has a master");
    ok(map[5460] == 0 && map[5461] == NEBULA_CLUSTER_NO_NODE
       && map[10922] == NEBULA_CLUSTER_NO_NODE && map[10923] == 1,
       "... the gap is NO_NODE");

    /* one master, two ranges: one node */
    n = slots("*2\r\n"
              "*3\r\n:0\r\n:99\r\n*2\r\n$1\r\nh\r\n:1\r\n"
              "*3\r\n:100\r\n:16383\r\n*2\r\n$1\r\nh\r\n:1\r\n");
    nnodes = 0;
    is_int(nebula_cluster_map(ranges, n, nodes, 4, &nnodes, map), 1,
           "two ranges of one master");
    is_int(nnodes, 1, "... one node");

    n = slots("*2\r\n"
              "*3\r\n:0\r\n:100\r\n*2\r\n$1\r\nh\r\n:1\r\n"
              "*3\r\n:100\r\n:16383\r\n*2\r\n$1\r\ni\r\n:1\r\n");
    is_int(n, 2, "overlapping ranges parse");
    nnodes = 0;
    is_int(nebula_cluster_map(ranges, n, nodes, 4, &nnodes, map), -1,
           "... but make no map");

    n = slots(real_slots);
    nnodes = 0;
    is_int(nebula_cluster_map(ranges, n, nodes, 2, &nnodes, map), -1,
           "three masters, room for two nodes");
    is_int(nnodes, 2, "... two made");
    ranges[0].end = 16384;
    nnodes = 0;
    is_int(nebula_cluster_map(ranges, 1, nodes, 4, &nnodes, map), -1,
           "a caller's range past the last slot");

    is_int(slots_max(real_slots, 2), -1, "more ranges than max");
    is_int(slots_max(real_slots, 3), 3, "as many as max");

    /* shapes no Redis sends */
    is_int(slots(":1\r\n"), -1, "an integer");
    is_int(slots("$3\r\nfoo\r\n"), -1, "a string");
    is_int(slots("-ERR This instance has cluster support disabled\r\n"), -1,
           "an error");
    is_int(slots("$-1\r\n"), -1, "nil");
    is_int(slots("*1\r\n:0\r\n"), -1, "a range not an array");
    is_int(slots("*1\r\n*-1\r\n"), -1, "a range nil");
    is_int(slots("*1\r\n*2\r\n:0\r\n:16383\r\n"), -1, "a range with no master");
    is_int(slots("*1\r\n*3\r\n$1\r\n0\r\n:16383\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
           -1, "a start as a string");
    is_int(slots("*1\r\n*3\r\n:-1\r\n:16383\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
           -1, "a negative start");
    is_int(slots("*1\r\n*3\r\n:0\r\n:-1\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
           -1, "a negative end");
    is_int(slots("*1\r\n*3\r\n:10\r\n:9\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
           -1, "start > end");
    is_int(slots("*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
           -1, "end 16384");
    is_int(slots("*1\r\n*3\r\n:0\r\n:9223372036854775807\r\n"
                 "*2\r\n$1\r\nh\r\n:1\r\n"), -1, "end of 64 bits");
    is_int(slots("*1\r\n*3\r\n:5\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
           1, "a range of one slot");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n:7000\r\n"), -1,
           "a master not an array");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\nh\r\n"), -1,
           "a master without a port");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n"), -1,
           "port 0");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:65536\r\n"), -1,
           "port 65536");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:-6379\r\n"), -1,
           "a negative port");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n$4\r\n6379\r\n"),
           -1, "a port as a string");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n"), -1,
           "an endpoint as an integer");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n*0\r\n:1\r\n"), -1,
           "an endpoint as an array");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na b\r\n:1\r\n"), -1,
           "a space in a host");
    is_int(slots("*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na\nb\r\n:1\r\n"), -1,
           "a newline in a host");
    is_int(slots("*1\r\n*4\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n:2\r\n"), -1,
           "a replica not an array");
    is_int(slots("*1\r\n*4\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n"
                 "*1\r\n$1\r\nh\r\n"), -1, "a replica without a port");
    is_int(slots("*1\r\n*4\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n"
                 "*2\r\n*2\r\n$1\r\nh\r\n:1\r\n:1\r\n"), -1,
           "a replica nested once more");
    is_int(slots("*1\r\n*4\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n"
                 "*2\r\n$-1\r\n:0\r\n"), 1,
           "a replica with no endpoint and port 0: not the caller's");
    is_int(slots("*1\r\n*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
           -1, "the whole nested once more");

    /* a host of 255 bytes, then of 256 */
    for (i = 255; i <= 256; i++) {
        memset(host, 'h', i);
        host[i] = '\0';
        snprintf(buf, sizeof(buf), "*1\r\n*3\r\n:0\r\n:1\r\n"
                 "*2\r\n$%zu\r\n%s\r\n:1\r\n", i, host);
        n = slots(buf);

        if (i == 255) {
            is_int(n, 1, "a host of 255 bytes");
            is_str(ranges[0].host, host, "... whole");

        } else {
            is_int(n, -1, "a host of 256 bytes");
        }
    }
}


int
main(void)
{
    test_crc16();
    test_slot();
    test_redirect();
    test_slots();

    return done_testing();
}
