/*
 * Unit tests of the Redis reply reader (nebula_reply.c): the ADMIT
 * script's replies, admitted, refused and broken, and the fields of a
 * flat HGETALL list.  Replies are made by hiredis's own reader from RESP
 * bytes, as the module receives them from Redis.
 */

#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "nebula_reply.h"
#include "tap.h"


/* one reply from RESP bytes; NULL if they are not one */
static redisReply *
resp(const char *bytes)
{
    void         *r;
    redisReader  *reader;

    reader = redisReaderCreate();
    if (reader == NULL) {
        return NULL;
    }

    r = NULL;

    if (redisReaderFeed(reader, bytes, strlen(bytes)) != REDIS_OK
        || redisReaderGetReply(reader, &r) != REDIS_OK)
    {
        r = NULL;
    }

    redisReaderFree(reader);

    return r;
}


/* the status nebula_admit_parse gives the reply in bytes */
static nebula_admit_status_e
admit(const char *bytes, nebula_admit_t *a)
{
    redisReply            *r;
    nebula_admit_status_e  st;

    r = resp(bytes);
    if (r == NULL) {
        printf("# not a RESP reply: %s\n", bytes);
        return (nebula_admit_status_e) -1;
    }

    st = nebula_admit_parse(r, a);
    freeReplyObject(r);

    return st;
}


/* a refused reply leaves nothing behind that could pass for an admission */
static int
is_clear(const nebula_admit_t *a)
{
    return a->reserved_out == 0 && a->in_limit == 0 && a->out_limit == 0
           && a->in_left == 0 && a->out_left == 0 && a->name[0] == '\0';
}


static void
test_admitted(void)
{
    nebula_admit_t  a;
    char            buf[512], plan[200];

    /* {0, out, in_limit, out_limit, rpm, in_left, out_left, rpm_left,
     *  plan, name}, as the script returns it */
    is_int(admit("*10\r\n:0\r\n:500\r\n:100000\r\n:20000\r\n:20\r\n"
                 ":99990\r\n:19500\r\n:19\r\n$4\r\nfree\r\n"
                 "$5\r\nalice\r\n", &a),
           NEBULA_ADMIT_OK, "admitted");
    is_int(a.status, NEBULA_ADMIT_OK, "admitted: status kept");
    is_int(a.reserved_out, 500, "admitted: reserved output");
    is_int(a.in_limit, 100000, "admitted: input limit");
    is_int(a.out_limit, 20000, "admitted: output limit");
    is_int(a.rpm, 20, "admitted: requests a minute");
    is_int(a.in_left, 99990, "admitted: input left");
    is_int(a.out_left, 19500, "admitted: output left");
    is_int(a.rpm_left, 19, "admitted: requests left this minute");
    is_int(a.retry_after, 0, "admitted: no retry");
    is_str(a.plan, "free", "admitted: plan");
    is_str(a.name, "alice", "admitted: name");

    /* a plan without a rate limit, a key without a name */
    is_int(admit("*10\r\n:0\r\n:8192\r\n:1000000000\r\n:1000000000\r\n"
                 ":0\r\n:999999000\r\n:999991808\r\n:-1\r\n"
                 "$10\r\nenterprise\r\n$0\r\n\r\n", &a),
           NEBULA_ADMIT_OK, "admitted, no rate limit");
    is_int(a.rpm, 0, "no rate limit: rpm 0");
    is_int(a.rpm_left, -1, "no rate limit: rpm_left -1");
    is_str(a.name, "", "no name: empty");
    is_str(a.plan, "enterprise", "no rate limit: plan");

    /* numbers as bulk strings, as a script may hand them back */
    is_int(admit("*10\r\n$1\r\n0\r\n$3\r\n250\r\n$3\r\n100\r\n$3\r\n300\r\n"
                 "$1\r\n0\r\n$2\r\n90\r\n$2\r\n50\r\n$2\r\n-1\r\n"
                 "$3\r\npro\r\n$1\r\nb\r\n", &a),
           NEBULA_ADMIT_OK, "admitted, numbers as strings");
    is_int(a.reserved_out, 250, "numbers as strings: reserved");
    is_int(a.out_left, 50, "numbers as strings: output left");

    /* left may go negative (usage over the limit): it is reported */
    is_int(admit("*10\r\n:0\r\n:1\r\n:10\r\n:10\r\n:0\r\n:-5\r\n:-3\r\n"
                 ":-1\r\n$4\r\nfree\r\n$1\r\nx\r\n", &a),
           NEBULA_ADMIT_OK, "admitted, negative left");
    is_int(a.in_left, -5, "negative left kept");

    /* no output reserved: an embedding request, which makes none */
    is_int(admit("*10\r\n:0\r\n:0\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
                 "$4\r\nfree\r\n$1\r\nn\r\n", &a),
           NEBULA_ADMIT_OK, "admitted, no output reserved");
    is_int(a.reserved_out, 0, "nothing reserved");

    /* a plan name longer than the buffer is cut, still a C string */
    memset(plan, 'p', 150);
    plan[150] = '\0';
    snprintf(buf, sizeof(buf),
             "*10\r\n:0\r\n:1\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
             "$150\r\n%s\r\n$1\r\nn\r\n", plan);
    is_int(admit(buf, &a), NEBULA_ADMIT_OK, "admitted, long plan name");
    is_int(strlen(a.plan), NEBULA_NAME_MAX - 1, "long plan name: cut");

    /* a plan that is not a string is no plan */
    is_int(admit("*10\r\n:0\r\n:1\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
                 ":7\r\n$-1\r\n", &a),
           NEBULA_ADMIT_OK, "admitted, plan and name not strings");
    is_str(a.plan, "", "plan not a string: empty");
    is_str(a.name, "", "name nil: empty");
}


static void
test_refused(void)
{
    nebula_admit_t  a;

    is_int(admit("*1\r\n:1\r\n", &a), NEBULA_ADMIT_UNKNOWN_KEY,
           "{1}: unknown key");
    ok(is_clear(&a), "unknown key: nothing admitted");
    is_int(a.rpm_left, -1, "unknown key: rpm_left -1");

    is_int(admit("*1\r\n:2\r\n", &a), NEBULA_ADMIT_REVOKED, "{2}: revoked");
    ok(is_clear(&a), "revoked: nothing admitted");

    /* accounts: why a key is refused; a suspended account; the scope */
    is_int(admit("*2\r\n:2\r\n$7\r\nexpired\r\n", &a),
           NEBULA_ADMIT_REVOKED, "{2, why}: refused key");
    is_str(a.detail, "expired", "{2, why}: why");
    is_int(admit("*2\r\n:7\r\n$9\r\nsuspended\r\n", &a),
           NEBULA_ADMIT_SUSPENDED, "{7, status}: suspended account");
    is_str(a.detail, "suspended", "{7, status}: the status");
    is_int(a.reserved_out, 0, "suspended: nothing reserved");
    is_int(admit("*8\r\n:4\r\n:42\r\n:20\r\n:1\r\n:1\r\n:1\r\n:1\r\n"
                 "$3\r\nkey\r\n", &a),
           NEBULA_ADMIT_RATE_LIMITED, "{4, ..., scope}: rate limited");
    is_str(a.detail, "key", "{4, ..., scope}: the key's limit");
    is_int(a.rpm, 20, "{4, ..., scope}: rpm");
    is_int(admit("*9\r\n:5\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
                 ":1\r\n$7\r\naccount\r\n", &a),
           NEBULA_ADMIT_NO_QUOTA, "{5, ..., held, scope}: no quota");
    is_str(a.detail, "account", "{5, ..., scope}: the account's quota");
    is_int(a.leased, 1, "{5, ..., scope}: blocks held");

    /* a known key's refusals carry its limits, for the x-ratelimit headers:
     * {3, plan, in_limit, out_limit, rpm, in_left, out_left, rpm_left} */
    is_int(admit("*8\r\n:3\r\n$4\r\nfree\r\n:100000\r\n:20000\r\n"
                 ":20\r\n:900\r\n:800\r\n:19\r\n", &a),
           NEBULA_ADMIT_MODEL_NOT_ALLOWED, "{3, plan, ...}: model not allowed");
    is_str(a.plan, "free", "model not allowed: the plan named");
    is_int(a.in_limit, 100000, "model not allowed: input limit");
    is_int(a.out_limit, 20000, "model not allowed: output limit");
    is_int(a.rpm, 20, "model not allowed: rpm");
    is_int(a.in_left, 900, "model not allowed: input left");
    is_int(a.out_left, 800, "model not allowed: output left");
    is_int(a.rpm_left, 19, "model not allowed: rpm left");
    is_int(a.reserved_out, 0, "model not allowed: nothing reserved");

    /* a plan field that is missing comes as nil: no plan, still refused */
    is_int(admit("*8\r\n:3\r\n$-1\r\n:1\r\n:1\r\n:0\r\n:1\r\n:1\r\n"
                 ":-1\r\n", &a),
           NEBULA_ADMIT_MODEL_NOT_ALLOWED, "model not allowed, no plan");
    is_str(a.plan, "", "model not allowed, no plan: empty");
    is_int(a.rpm_left, -1, "model not allowed, no rate limit: -1");

    is_int(admit("*2\r\n:6\r\n$4\r\ngold\r\n", &a),
           NEBULA_ADMIT_UNKNOWN_PLAN, "{6, plan}: unknown plan");
    is_str(a.plan, "gold", "unknown plan: named");
    ok(is_clear(&a), "unknown plan: nothing admitted");

    is_int(admit("*1\r\n:6\r\n", &a), NEBULA_ADMIT_UNKNOWN_PLAN,
           "{6}: unknown plan, unnamed");
    is_str(a.plan, "", "unknown plan, unnamed: empty");

    /* {4, retry, rpm, in_limit, out_limit, in_left, out_left} */
    is_int(admit("*7\r\n:4\r\n:42\r\n:20\r\n:100000\r\n:20000\r\n"
                 ":5000\r\n:600\r\n", &a),
           NEBULA_ADMIT_RATE_LIMITED, "{4, retry, rpm, ...}: rate limited");
    is_int(a.retry_after, 42, "rate limited: retry after");
    is_int(a.rpm, 20, "rate limited: rpm");
    is_int(a.rpm_left, 0, "rate limited: none left");
    is_int(a.in_limit, 100000, "rate limited: input limit");
    is_int(a.out_limit, 20000, "rate limited: output limit");
    is_int(a.in_left, 5000, "rate limited: input left");
    is_int(a.out_left, 600, "rate limited: output left");
    is_int(a.reserved_out, 0, "rate limited: nothing reserved");

    /* a retry of 0 s (the minute just turned) is still a wait */
    is_int(admit("*7\r\n:4\r\n:0\r\n:20\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
                 &a),
           NEBULA_ADMIT_RATE_LIMITED, "rate limited, retry 0");
    is_int(a.retry_after, 1, "retry 0: 1 s");

    /* {5, in_limit, out_limit, in_left, out_left, rpm, rpm_left} */
    is_int(admit("*7\r\n:5\r\n:100000\r\n:20000\r\n:0\r\n:0\r\n"
                 ":20\r\n:18\r\n", &a),
           NEBULA_ADMIT_NO_QUOTA, "{5, ...}: no quota");
    is_int(a.in_limit, 100000, "no quota: input limit");
    is_int(a.out_limit, 20000, "no quota: output limit");
    is_int(a.in_left, 0, "no quota: input left");
    is_int(a.out_left, 0, "no quota: output left");
    is_int(a.rpm, 20, "no quota: rpm");
    is_int(a.rpm_left, 18, "no quota: rpm left");
    is_int(a.reserved_out, 0, "no quota: nothing reserved");
    is_int(a.leased, 0, "no quota: no block said to be held");

    /* ... and an 8th: leases hold unused blocks of the key */
    is_int(admit("*8\r\n:5\r\n:100000\r\n:20000\r\n:0\r\n:92\r\n"
                 ":0\r\n:-1\r\n:1\r\n", &a),
           NEBULA_ADMIT_NO_QUOTA, "{5, ..., 1}: no quota, blocks held");
    is_int(a.leased, 1, "blocks held: leased");
    is_int(a.out_left, 92, "blocks held: what they hold is left");
    is_int(admit("*9\r\n:5\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
                 ":1\r\n:1\r\n", &a),
           NEBULA_ADMIT_BAD_REPLY, "{5, ...} of 9: not the script's");
}


static void
test_bad(void)
{
    size_t          i;
    nebula_admit_t  a;

    static const struct {
        const char  *bytes;
        const char  *what;
    } bad[] = {
        { "-NOSCRIPT No matching script. Please use EVAL.\r\n",
          "an error reply (NOSCRIPT)" },
        { "-ERR Error running script: bad argument\r\n",
          "an error reply (script error)" },
        { "-BUSY Redis is busy running a script\r\n", "BUSY" },
        { "+OK\r\n", "a status reply" },
        { ":0\r\n", "an integer, not a table" },
        { "$-1\r\n", "nil" },
        { "$2\r\nok\r\n", "a string" },
        { "*0\r\n", "an empty table" },
        { "*-1\r\n", "a nil table" },
        { "*1\r\n:8\r\n", "an unknown status" },
        { "*1\r\n:-1\r\n", "a negative status" },
        { "*1\r\n:100\r\n", "the bad-reply status itself" },
        { "*1\r\n$2\r\nok\r\n", "a status that is no number" },
        { "*1\r\n$0\r\n\r\n", "an empty status" },
        { "*1\r\n$2\r\n0x\r\n", "a status with junk after it" },
        { "*1\r\n$-1\r\n", "a nil status" },
        { "*1\r\n*1\r\n:0\r\n", "a table for a status" },
        { "*1\r\n:0\r\n", "admitted without its fields" },
        { "*9\r\n:0\r\n:500\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n", "admitted, one field short" },
        { "*11\r\n:0\r\n:500\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n:0\r\n", "admitted, one field more" },
        { "*10\r\n:0\r\n:-8\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n", "admitted, negative reservation" },
        { "*10\r\n:0\r\n:5\r\n:-1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n", "admitted, negative input limit" },
        { "*10\r\n:0\r\n:5\r\n:1\r\n:-1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n", "admitted, negative output limit" },
        { "*10\r\n:0\r\n:5\r\n:1\r\n:1\r\n:-2\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n", "admitted, negative rpm" },
        { "*10\r\n:0\r\n$3\r\n5x5\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n", "admitted, a number with junk" },
        { "*10\r\n:0\r\n$21\r\n100000000000000000000\r\n:1\r\n:1\r\n:0\r\n"
          ":0\r\n:0\r\n:-1\r\n$4\r\nfree\r\n$1\r\nn\r\n",
          "admitted, a number of 21 digits" },
        { "*10\r\n:0\r\n:5\r\n$-1\r\n:1\r\n:0\r\n:0\r\n:0\r\n:-1\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n", "admitted, a nil limit" },
        { "*10\r\n:0\r\n:5\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n*0\r\n"
          "$4\r\nfree\r\n$1\r\nn\r\n", "admitted, a table for rpm_left" },
        { "*2\r\n:3\r\n$4\r\nfree\r\n",
          "model not allowed without the limits" },
        { "*1\r\n:3\r\n", "model not allowed, nothing more" },
        { "*8\r\n:3\r\n$4\r\nfree\r\n:1\r\n:1\r\n:0\r\n$1\r\nx\r\n"
          ":1\r\n:-1\r\n", "model not allowed, a limit no number" },
        { "*9\r\n:3\r\n$4\r\nfree\r\n:1\r\n:1\r\n:0\r\n:1\r\n:1\r\n"
          ":-1\r\n:0\r\n", "model not allowed, a field more" },
        { "*3\r\n:4\r\n:42\r\n:20\r\n", "rate limited without limits" },
        { "*2\r\n:4\r\n:42\r\n", "rate limited without rpm" },
        { "*8\r\n:4\r\n:42\r\n:20\r\n:1\r\n:1\r\n:1\r\n:1\r\n:0\r\n",
          "rate limited, a field more" },
        { "*7\r\n:4\r\n$1\r\nx\r\n:20\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
          "rate limited, retry no number" },
        { "*5\r\n:5\r\n:1\r\n:1\r\n:0\r\n:0\r\n",
          "no quota without rpm" },
        { "*6\r\n:5\r\n:1\r\n:1\r\n:0\r\n:0\r\n:0\r\n",
          "no quota, a field short" },
        { "*7\r\n:5\r\n:1\r\n:1\r\n:0\r\n$-1\r\n:0\r\n:-1\r\n",
          "no quota, a nil field" },
    };

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        is_int(admit(bad[i].bytes, &a), NEBULA_ADMIT_BAD_REPLY,
               "bad reply: %s", bad[i].what);
        ok(a.status == NEBULA_ADMIT_BAD_REPLY && is_clear(&a)
           && a.rpm == 0 && a.retry_after == 0 && a.plan[0] == '\0'
           && a.rpm_left == -1,
           "bad reply: %s: nothing admitted", bad[i].what);
    }

    /* no reply at all: the connection failed or timed out */
    is_int(nebula_admit_parse(NULL, &a), NEBULA_ADMIT_BAD_REPLY,
           "no reply: bad");
    ok(is_clear(&a), "no reply: nothing admitted");
}


static void
test_fields(void)
{
    redisReply        *list, *r;
    const redisReply  *v;

    /* HGETALL of a key: field, value, ... */
    list = resp("*10\r\n$4\r\nplan\r\n$4\r\nfree\r\n$2\r\nin\r\n$3\r\n100\r\n"
                "$3\r\nout\r\n$2\r\n-5\r\n$4\r\nname\r\n$0\r\n\r\n"
                "$3\r\nbad\r\n$2\r\n1x\r\n");
    ok(list != NULL, "an HGETALL list");

    v = nebula_reply_field(list, "plan");
    ok(v && v->type == REDIS_REPLY_STRING && strcmp(v->str, "free") == 0,
       "field plan: free");
    v = nebula_reply_field(list, "name");
    ok(v && v->type == REDIS_REPLY_STRING && v->len == 0, "field name: empty");
    ok(nebula_reply_field(list, "status") == NULL, "a missing field: NULL");
    ok(nebula_reply_field(list, "pla") == NULL, "a prefix is no field");
    ok(nebula_reply_field(list, "plans") == NULL, "a longer name is no field");
    ok(nebula_reply_field(list, "free") == NULL, "a value is no field");

    is_int(nebula_reply_int(list, "in", 0), 100, "int in: 100");
    is_int(nebula_reply_int(list, "out", 0), -5, "int out: -5");
    is_int(nebula_reply_int(list, "bad", 7), 7, "int of junk: the default");
    is_int(nebula_reply_int(list, "name", 7), 7, "int of empty: the default");
    is_int(nebula_reply_int(list, "rin", 0), 0, "a missing int: the default");
    is_int(nebula_reply_int(list, "rout", -1), -1, "a missing int: -1");
    is_int(nebula_reply_int(list, "plan", 3), 3, "int of a word: the default");

    freeReplyObject(list);

    /* a key with no fields, and replies that are no list */
    list = resp("*0\r\n");
    ok(nebula_reply_field(list, "plan") == NULL, "empty list: NULL");
    is_int(nebula_reply_int(list, "in", 9), 9, "empty list: the default");
    freeReplyObject(list);

    ok(nebula_reply_field(NULL, "plan") == NULL, "no reply: NULL");
    is_int(nebula_reply_int(NULL, "in", 4), 4, "no reply: the default");

    r = resp("$4\r\nplan\r\n");
    ok(nebula_reply_field(r, "plan") == NULL, "a string is no list");
    freeReplyObject(r);

    r = resp("-ERR wrong type\r\n");
    ok(nebula_reply_field(r, "plan") == NULL, "an error is no list");
    is_int(nebula_reply_int(r, "plan", 2), 2, "an error: the default");
    freeReplyObject(r);

    /* an odd list: its last field has no value */
    list = resp("*3\r\n$2\r\nin\r\n:42\r\n$3\r\nout\r\n");
    is_int(nebula_reply_int(list, "in", 0), 42, "an integer value: read");
    ok(nebula_reply_field(list, "out") == NULL, "a field without a value");
    freeReplyObject(list);

    /* names that are not strings are skipped, values of any type kept */
    list = resp("*6\r\n:1\r\n$2\r\nin\r\n$-1\r\n$1\r\nx\r\n"
                "$3\r\nrin\r\n*1\r\n:5\r\n");
    ok(nebula_reply_field(list, "in") == NULL, "a value is no name");
    v = nebula_reply_field(list, "rin");
    ok(v && v->type == REDIS_REPLY_ARRAY, "a table value is returned");
    is_int(nebula_reply_int(list, "rin", 6), 6, "int of a table: the default");
    freeReplyObject(list);

    /* the first of two equal fields wins */
    list = resp("*4\r\n$2\r\nin\r\n$1\r\n1\r\n$2\r\nin\r\n$1\r\n2\r\n");
    is_int(nebula_reply_int(list, "in", 0), 1, "the first field wins");
    freeReplyObject(list);
}


int
main(void)
{
    test_admitted();
    test_refused();
    test_bad();
    test_fields();

    return done_testing();
}
