/*
 * Nebula: reading the replies of the Redis scripts.
 *
 * Plain C over hiredis's reply type, no nginx types, so the unit tests and
 * the fuzzers feed it any reply a broken or hostile Redis could send: a
 * reply of the wrong shape is an error, never a crash or a false "yes".
 */

#ifndef NEBULA_REPLY_H
#define NEBULA_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>


typedef enum {
    NEBULA_ADMIT_OK = 0,
    NEBULA_ADMIT_UNKNOWN_KEY = 1,
    NEBULA_ADMIT_REVOKED = 2,
    NEBULA_ADMIT_MODEL_NOT_ALLOWED = 3,
    NEBULA_ADMIT_RATE_LIMITED = 4,
    NEBULA_ADMIT_NO_QUOTA = 5,
    NEBULA_ADMIT_UNKNOWN_PLAN = 6,
    NEBULA_ADMIT_SUSPENDED = 7,       /* the key's account */
    NEBULA_ADMIT_BAD_REPLY = 100      /* not a reply of the script */
} nebula_admit_status_e;


#define NEBULA_NAME_MAX  128

typedef struct {
    nebula_admit_status_e  status;
    int64_t                reserved_out;
    int64_t                in_limit;
    int64_t                out_limit;
    int64_t                rpm;            /* 0: no limit */
    int64_t                in_left;
    int64_t                out_left;
    int64_t                rpm_left;       /* -1: no limit */
    int64_t                retry_after;    /* seconds */
    int64_t                lease_in;       /* a block granted: nebula_lease */
    int64_t                lease_out;
    int                    leased;         /* refused: blocks held unused */
    char                   plan[NEBULA_NAME_MAX];
    char                   name[NEBULA_NAME_MAX];
    char                   detail[16];     /* why a key is refused
                                              (revoked, disabled, expired),
                                              the account's status, or
                                              whose limit refused: "key" */
} nebula_admit_t;


/* fills *out from the ADMIT script's reply; returns out->status */
nebula_admit_status_e nebula_admit_parse(const redisReply *reply,
    nebula_admit_t *out);

/*
 * A flat list of field, value, ... (HGETALL's reply): the value of field
 * name, or NULL.
 */
const redisReply *nebula_reply_field(const redisReply *list,
    const char *name);

/* the integer value of a field (a string of digits), or dflt */
int64_t nebula_reply_int(const redisReply *list, const char *name,
    int64_t dflt);

#endif /* NEBULA_REPLY_H */
