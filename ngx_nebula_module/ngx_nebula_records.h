/*
 * Nebula: what the APIs the gateway answers from Redis share (the
 * operator's admin API, the key holder's, Ollama's /api/tags): a call
 * waiting on Redis, and keys' records read from the replies and written
 * as JSON.
 */

#ifndef NGX_NEBULA_RECORDS_H
#define NGX_NEBULA_RECORDS_H

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"


/*
 * Answers a reply of the call's command: the status to finalize the
 * request with, or NGX_AGAIN when it sent another command and waits on.
 */
typedef ngx_int_t (*ngx_nebula_call_answer_pt)(ngx_nebula_call_ctx_t *call,
    redisReply *reply);


/* an API call waiting on Redis; its request's pool cleanup cancels it */
struct ngx_nebula_call_ctx_s {
    ngx_http_request_t         *r;
    ngx_nebula_redis_op_t      *op;          /* the command it waits on */
    ngx_nebula_redis_op_t      *extra_op;    /* one sent beside it: a new
                                                key's SADD */
    ngx_nebula_call_answer_pt   answer;
    void                       *data;        /* the endpoint's own state */
    u_char                      id[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                      tag[NGX_NEBULA_KEY_ID_LEN + 1];  /* its
                                                account's; "": its own */
    u_char                      digest[65];
    u_char                      month[8];    /* the period it shows */
    time_t                      now;
};


/* the call */
ngx_nebula_call_ctx_t *ngx_nebula_call_start(ngx_http_request_t *r,
    ngx_nebula_call_answer_pt answer);
ngx_int_t ngx_nebula_call_eval(ngx_nebula_call_ctx_t *call,
    ngx_nebula_script_e script, ngx_uint_t nkeys, ngx_uint_t argc,
    ngx_str_t *argv);
ngx_int_t ngx_nebula_call_command(ngx_nebula_call_ctx_t *call,
    ngx_uint_t argc, ngx_str_t *argv);
void ngx_nebula_call_finish(ngx_nebula_call_ctx_t *call, ngx_int_t rc);
ngx_int_t ngx_nebula_call_unavailable(ngx_http_request_t *r);
ngx_int_t ngx_nebula_call_bad_reply(ngx_http_request_t *r,
    redisReply *reply);

/*
 * KEY_GET's reply has 4 elements; KEY_GET_OF's, a key of an account's,
 * this many: {key, account, usage, per model, per key, minute count, the
 * key's own minute count}
 */
#define NGX_NEBULA_RECORD_ACCOUNT_KEY  7

/* a key's records in Redis */
ngx_str_t *ngx_nebula_record_name(ngx_pool_t *pool, const char *fmt,
    u_char *id, u_char *month);
ngx_int_t ngx_nebula_record_get(ngx_nebula_call_ctx_t *call);
ngx_int_t ngx_nebula_record_found(redisReply *reply);
ngx_nebula_plan_t *ngx_nebula_record_plan(ngx_http_request_t *r,
    const redisReply *k);
void ngx_nebula_record_limits(ngx_http_request_t *r, const redisReply *k,
    int64_t *in, int64_t *out, int64_t *rpm);
ngx_uint_t ngx_nebula_record_lists(const redisReply *k, ngx_str_t *name);
uint64_t ngx_nebula_record_groups(ngx_http_request_t *r,
    const redisReply *reply);
ngx_uint_t ngx_nebula_record_reaches(const redisReply *reply, uint64_t groups,
    ngx_nebula_model_t *model);

/* the caller's own key, by its secret */
ngx_int_t ngx_nebula_own_key_lookup(ngx_http_request_t *r,
    ngx_nebula_call_answer_pt answer);
ngx_int_t ngx_nebula_own_key_check(ngx_nebula_call_ctx_t *call,
    redisReply *reply, ngx_int_t *rc);

/* a key of an account, from KEY_GET_OF's reply (ngx_nebula_account_json.c) */
void ngx_nebula_account_key_admit(ngx_http_request_t *r,
    const redisReply *reply, nebula_admit_t *a);
void ngx_nebula_account_write_own(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *reply, u_char *month, time_t now);

/* a generation record's line, in words (ngx_nebula_generation.c) */
typedef struct {
    u_char                     *w[12];       /* time, id, key, api, status,
                                                finish, flags, in, out,
                                                cost, latency, ttft */
    size_t                      n[12];
    ngx_str_t                   model;
    time_t                      time;
    ngx_int_t                   latency;
    ngx_int_t                   ttft;
    ngx_uint_t                  none;        /* no first byte */
} ngx_nebula_generation_line_t;

ngx_int_t ngx_nebula_generation_parse(u_char *p, size_t len,
    ngx_nebula_generation_line_t *g);
void ngx_nebula_generation_write(ngx_nebula_json_t *j,
    ngx_nebula_generation_line_t *g);

/* records as JSON */
void ngx_nebula_write_key(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *k, const redisReply *u, const redisReply *m,
    u_char *month, time_t now, ngx_uint_t holder);
void ngx_nebula_write_estimated(ngx_nebula_json_t *j, const redisReply *h,
    const char *prefix);
void ngx_nebula_write_model_usage(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *m);
void ngx_nebula_write_estimated_counts(ngx_nebula_json_t *j, int64_t *v);

#endif /* NGX_NEBULA_RECORDS_H */
