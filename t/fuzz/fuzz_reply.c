/*
 * libFuzzer target: reading the Redis scripts' replies.
 *
 * The input is a RESP byte stream: hiredis's own reader (as the module
 * uses it) turns it into replies of any shape a broken or hostile Redis
 * could send, and the admission parser must refuse what is not the
 * script's reply without crashing, and never admit with nonsense numbers.
 */

#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "nebula_reply.h"


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


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    void            *r;
    redisReader     *reader;
    nebula_admit_t   a;

    if (size > 65536 || too_large(data, size)) {
        return 0;
    }

    reader = redisReaderCreate();
    if (reader == NULL) {
        return 0;
    }

    if (redisReaderFeed(reader, (const char *) data, size) == REDIS_OK) {

        while (redisReaderGetReply(reader, &r) == REDIS_OK && r != NULL) {

            if (nebula_admit_parse(r, &a) == NEBULA_ADMIT_OK
                && (a.reserved_out < 0 || a.in_limit < 0 || a.out_limit < 0
                    || memchr(a.plan, '\0', sizeof(a.plan)) == NULL))
            {
                abort();
            }

            (void) nebula_reply_field(r, "digest");
            (void) nebula_reply_int(r, "in", 0);

            freeReplyObject(r);
        }
    }

    redisReaderFree(reader);
    return 0;
}
