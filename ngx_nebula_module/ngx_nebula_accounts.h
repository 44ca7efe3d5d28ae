/*
 * Nebula: accounts and their keys (ngx_nebula_accounts.c: the calls;
 * ngx_nebula_account_json.c: what they answer).
 */

#ifndef NGX_NEBULA_ACCOUNTS_H
#define NGX_NEBULA_ACCOUNTS_H

#include "ngx_nebula_records.h"


typedef enum {
    NGX_NEBULA_ACCOUNT_CREATE = 0,      /* the admin's only */
    NGX_NEBULA_ACCOUNT_SIGNUP,          /* anyone's, when it is open */
    NGX_NEBULA_ACCOUNT_LIST,
    NGX_NEBULA_ACCOUNT_PATCH,
    NGX_NEBULA_ACCOUNT_DELETE,
    NGX_NEBULA_ACCOUNT_SUSPEND,
    NGX_NEBULA_ACCOUNT_RESUME,
    NGX_NEBULA_ACCOUNT_SHOW,            /* the holder's too */
    NGX_NEBULA_ACCOUNT_KEYS,
    NGX_NEBULA_ACCOUNT_KEY_CREATE,
    NGX_NEBULA_ACCOUNT_KEY_SHOW,
    NGX_NEBULA_ACCOUNT_KEY_PATCH,
    NGX_NEBULA_ACCOUNT_KEY_DELETE,
    NGX_NEBULA_ACCOUNT_ACTIVITY
} ngx_nebula_account_op_e;


/* an account call's own state, its call's data */
typedef struct {
    ngx_nebula_call_ctx_t    *call;
    ngx_nebula_account_op_e   op;
    ngx_uint_t                holder;       /* with the management secret */
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    key_id[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                    mdigest[65];
    u_char                    digest[65];   /* a new key's */
    ngx_str_t                 auth;         /* the scripts' first argument:
                                               the management digest, or
                                               "" (the admin's) */
    ngx_nebula_key_fields_t   f;            /* the body's */

    /* a listing's query */
    ngx_int_t                 offset;
    ngx_int_t                 limit;
    ngx_uint_t                revoked;      /* keys revoked listed too */
    ngx_str_t                 after;
    ngx_str_t                 plan;
    ngx_str_t                 status;
    ngx_str_t                 name;
    ngx_str_t                 key;          /* activity: a key's */
    ngx_str_t                 model;        /* activity: a model's */

    /* secrets made, shown once */
    u_char                    secret[NGX_NEBULA_ACCOUNT_SECRET_LEN + 1];
    size_t                    secret_len;
    u_char                    msecret[NGX_NEBULA_MANAGEMENT_SECRET_LEN + 1];
    size_t                    msecret_len;

    ngx_str_t                 now;
    u_char                    now_buf[NGX_TIME_T_LEN];
    u_char                    limit_buf[NGX_INT_T_LEN];
    u_char                    offset_buf[NGX_INT_T_LEN];
    ngx_uint_t                attempts;
    ngx_nebula_json_t         json;         /* the answer */
    ngx_uint_t                http_status;
    ngx_event_t               in_effect;    /* a change's answer waits for
                                               it to hold on every edge */
    unsigned                  listing:1;    /* a new account's ZADD sent */
} ngx_nebula_account_ctx_t;


/* ngx_nebula_accounts.c */
ngx_int_t ngx_nebula_accounts_admin(ngx_http_request_t *r, u_char *p,
    u_char *last);
ngx_int_t ngx_nebula_account_start(ngx_http_request_t *r, ngx_uint_t holder,
    u_char *p, u_char *last);

/* ngx_nebula_account_calls.c */
ngx_int_t ngx_nebula_account_send(ngx_nebula_account_ctx_t *a);
ngx_int_t ngx_nebula_account_create(ngx_nebula_account_ctx_t *a);

/* ngx_nebula_usage_report.c */
ngx_int_t ngx_nebula_usage_report(ngx_http_request_t *r, ngx_uint_t csv);

/* ngx_nebula_account_json.c */
ngx_uint_t ngx_nebula_account_days(time_t now);
ngx_int_t ngx_nebula_account_unescape(ngx_http_request_t *r, ngx_str_t *s);
ngx_int_t ngx_nebula_account_refused(ngx_nebula_account_ctx_t *a,
    redisReply *reply);
ngx_int_t ngx_nebula_account_write(ngx_nebula_account_ctx_t *a,
    redisReply *reply);
ngx_int_t ngx_nebula_account_write_created(ngx_nebula_account_ctx_t *a);

#endif /* NGX_NEBULA_ACCOUNTS_H */
