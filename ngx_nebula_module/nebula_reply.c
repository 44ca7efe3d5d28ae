/*
 * Nebula: reading the replies of the Redis scripts (see nebula_reply.h).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nebula_reply.h"


static int
reply_int(const redisReply *r, int64_t *out)
{
    char  *end;

    if (r == NULL) {
        return -1;
    }

    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return 0;
    }

    if (r->type == REDIS_REPLY_STRING && r->len > 0 && r->len < 21) {
        *out = strtoll(r->str, &end, 10);
        return (end == r->str + r->len) ? 0 : -1;
    }

    return -1;
}


static void
reply_str(const redisReply *r, char *out, size_t size)
{
    size_t  n;

    out[0] = '\0';

    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        return;
    }

    n = r->len < size - 1 ? r->len : size - 1;
    memcpy(out, r->str, n);
    out[n] = '\0';
}


nebula_admit_status_e
nebula_admit_parse(const redisReply *reply, nebula_admit_t *out)
{
    int64_t   v[8];
    size_t    i;

    memset(out, 0, sizeof(nebula_admit_t));
    out->status = NEBULA_ADMIT_BAD_REPLY;
    out->rpm_left = -1;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1 || reply_int(reply->element[0], &v[0]) != 0)
    {
        return out->status;
    }

    switch (v[0]) {

    case NEBULA_ADMIT_OK:
        /* 10, or 12 with a lease granted: its input and output tokens */
        if (reply->elements != 10 && reply->elements != 12) {
            return out->status;
        }

        if (reply->elements == 12) {
            if (reply_int(reply->element[10], &out->lease_in) != 0
                || reply_int(reply->element[11], &out->lease_out) != 0
                || out->lease_in < 0 || out->lease_out < 0)
            {
                out->lease_in = 0;
                out->lease_out = 0;
                return out->status;
            }
        }

        for (i = 1; i < 8; i++) {
            if (reply_int(reply->element[i], &v[i]) != 0) {
                return out->status;
            }
        }

        /* no output reserved: an embedding's, which makes none */
        if (v[1] < 0 || v[2] < 0 || v[3] < 0 || v[4] < 0) {
            return out->status;
        }

        out->reserved_out = v[1];
        out->in_limit = v[2];
        out->out_limit = v[3];
        out->rpm = v[4];
        out->in_left = v[5];
        out->out_left = v[6];
        out->rpm_left = v[7];
        reply_str(reply->element[8], out->plan, sizeof(out->plan));
        reply_str(reply->element[9], out->name, sizeof(out->name));
        break;

    case NEBULA_ADMIT_UNKNOWN_KEY:
        break;

    /* why: revoked, disabled, expired; the account's status */
    case NEBULA_ADMIT_REVOKED:
    case NEBULA_ADMIT_SUSPENDED:
        if (reply->elements >= 2) {
            reply_str(reply->element[1], out->detail, sizeof(out->detail));
        }
        break;

    case NEBULA_ADMIT_UNKNOWN_PLAN:
        if (reply->elements >= 2) {
            reply_str(reply->element[1], out->plan, sizeof(out->plan));
        }
        break;

    /* the refusals of a known key carry its limits, for the headers */

    case NEBULA_ADMIT_MODEL_NOT_ALLOWED:
        if (reply->elements != 8) {
            return out->status;
        }

        for (i = 2; i < 8; i++) {
            if (reply_int(reply->element[i], &v[i - 1]) != 0) {
                return out->status;
            }
        }

        reply_str(reply->element[1], out->plan, sizeof(out->plan));
        out->in_limit = v[1];
        out->out_limit = v[2];
        out->rpm = v[3];
        out->in_left = v[4];
        out->out_left = v[5];
        out->rpm_left = v[6];
        break;

    case NEBULA_ADMIT_RATE_LIMITED:
        /* the 8th, the limit's scope (key, account), came with accounts */
        if (reply->elements != 7 && reply->elements != 8) {
            return out->status;
        }

        if (reply->elements == 8) {
            if (reply->element[7]->type != REDIS_REPLY_STRING) {
                return out->status;
            }

            reply_str(reply->element[7], out->detail, sizeof(out->detail));
        }

        for (i = 1; i < 7; i++) {
            if (reply_int(reply->element[i], &v[i]) != 0) {
                return out->status;
            }
        }

        out->retry_after = v[1] > 0 ? v[1] : 1;
        out->rpm = v[2];
        out->rpm_left = 0;
        out->in_limit = v[3];
        out->out_limit = v[4];
        out->in_left = v[5];
        out->out_left = v[6];
        break;

    case NEBULA_ADMIT_NO_QUOTA:
        /*
         * the 8th, whether leases hold unused blocks, came later; the 9th,
         * the quota's scope (key, account), with accounts
         */
        if (reply->elements < 7 || reply->elements > 9) {
            return out->status;
        }

        if (reply->elements == 9) {
            if (reply->element[8]->type != REDIS_REPLY_STRING) {
                return out->status;
            }

            reply_str(reply->element[8], out->detail, sizeof(out->detail));
        }

        for (i = 1; i < reply->elements && i < 8; i++) {
            if (reply_int(reply->element[i], &v[i]) != 0) {
                return out->status;
            }
        }

        out->leased = (reply->elements >= 8 && v[7] != 0);

        out->in_limit = v[1];
        out->out_limit = v[2];
        out->in_left = v[3];
        out->out_left = v[4];
        out->rpm = v[5];
        out->rpm_left = v[6];
        break;

    default:
        return out->status;
    }

    out->status = (nebula_admit_status_e) v[0];
    return out->status;
}


const redisReply *
nebula_reply_field(const redisReply *list, const char *name)
{
    size_t             i, len;
    const redisReply  *k;

    if (list == NULL || list->type != REDIS_REPLY_ARRAY) {
        return NULL;
    }

    len = strlen(name);

    for (i = 0; i + 1 < list->elements; i += 2) {
        k = list->element[i];

        if (k && k->type == REDIS_REPLY_STRING && k->len == len
            && memcmp(k->str, name, len) == 0)
        {
            return list->element[i + 1];
        }
    }

    return NULL;
}


int64_t
nebula_reply_int(const redisReply *list, const char *name, int64_t dflt)
{
    int64_t  v;

    if (reply_int(nebula_reply_field(list, name), &v) != 0) {
        return dflt;
    }

    return v;
}
