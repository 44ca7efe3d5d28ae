/*
 * Nebula: one Redis connection per worker, on nginx's event loop.
 */

#ifndef NGX_NEBULA_REDIS_H
#define NGX_NEBULA_REDIS_H

#include <ngx_config.h>
#include <ngx_core.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


typedef struct ngx_nebula_redis_op_s  ngx_nebula_redis_op_t;

/*
 * Called once per command: with the reply, or with NULL when the command
 * failed (timeout, connection lost).  Never called for a cancelled op.
 */
typedef void (*ngx_nebula_redis_handler_pt)(void *data, redisReply *reply);


typedef enum {
    NGX_NEBULA_SCRIPT_ADMIT = 0,
    NGX_NEBULA_SCRIPT_SETTLE,
    NGX_NEBULA_SCRIPT_KEY_CREATE,
    NGX_NEBULA_SCRIPT_KEY_GET,
    NGX_NEBULA_SCRIPT_KEY_LIST,
    NGX_NEBULA_SCRIPT_KEY_UPDATE,
    NGX_NEBULA_SCRIPT_USAGE,
    NGX_NEBULA_SCRIPT_CHANGED,
    NGX_NEBULA_SCRIPT_GEN_GET,
    NGX_NEBULA_SCRIPT_ACCT_CREATE,     /* ngx_nebula_scripts_accounts.c */
    NGX_NEBULA_SCRIPT_ACCT_GET,
    NGX_NEBULA_SCRIPT_ACCT_EDIT,
    NGX_NEBULA_SCRIPT_KEY_ADD,
    NGX_NEBULA_SCRIPT_KEY_LIST_OF,
    NGX_NEBULA_SCRIPT_KEY_OF,
    NGX_NEBULA_SCRIPT_KEY_EDIT,
    NGX_NEBULA_SCRIPT_KEY_GET_OF,
    NGX_NEBULA_SCRIPT_ACCT_LIST,
    NGX_NEBULA_SCRIPT_ACTIVITY,
    NGX_NEBULA_SCRIPT_USAGE_BY,
    NGX_NEBULA_SCRIPT_KEY_LIST_NODE,   /* a cluster's only, Redis 7's: */
    NGX_NEBULA_SCRIPT_USAGE_NODE,      /* the four above that read every */
    NGX_NEBULA_SCRIPT_ACCT_LIST_NODE,  /* account, over one node's share */
    NGX_NEBULA_SCRIPT_USAGE_BY_NODE,   /* (ngx_nebula_fanout.c) */
    NGX_NEBULA_SCRIPT_N
} ngx_nebula_script_e;

/* the first of a cluster's own scripts: a single Redis is not sent them */
#define NGX_NEBULA_SCRIPT_CLUSTER_ONLY  NGX_NEBULA_SCRIPT_KEY_LIST_NODE


typedef struct {
    ngx_str_t                  source;
    u_char                     sha1[41];
} ngx_nebula_script_t;


/* an address of a node, a seed or a sentinel, resolved when read */
typedef struct {
    u_char                     ip[NGX_SOCKADDR_STRLEN + 1];
    ngx_int_t                  port;
} ngx_nebula_redis_addr_t;


typedef enum {
    NGX_NEBULA_REDIS_SINGLE = 0,
    NGX_NEBULA_REDIS_CLUSTER,           /* ngx_nebula_redis_cluster.c */
    NGX_NEBULA_REDIS_SENTINEL           /* ngx_nebula_redis_sentinel.c */
} ngx_nebula_redis_mode_e;


typedef struct {
    ngx_str_t                  name;        /* as written, for messages */
    ngx_nebula_redis_mode_e    mode;
    u_char                     ip[NGX_SOCKADDR_STRLEN + 1];
    ngx_int_t                  port;
    u_char                    *unix_path;
    ngx_array_t               *seeds;       /* of ngx_nebula_redis_addr_t:
                                               a cluster's nodes, or the
                                               sentinels */
    ngx_str_t                  master;      /* the sentinels' name of it */
    ngx_str_t                  sentinel_password;
    ngx_str_t                  user;
    ngx_str_t                  password;
    ngx_int_t                  db;
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 timeout;
    ngx_int_t                  wait;        /* replicas an admission and a
                                               settlement wait for; 0: none */
    ngx_msec_t                 wait_timeout;
    ngx_atomic_t              *outage;     /* in shared memory: one log line
                                              an outage, not one a worker */
} ngx_nebula_redis_conf_t;


ngx_int_t ngx_nebula_scripts_init(ngx_conf_t *cf);
ngx_nebula_script_t *ngx_nebula_script(ngx_nebula_script_e script);

ngx_int_t ngx_nebula_redis_init_worker(ngx_cycle_t *cycle,
    ngx_nebula_redis_conf_t *conf);
void ngx_nebula_redis_exit_worker(ngx_cycle_t *cycle);

/* a worker that shuts down and still has settlements to send */
void ngx_nebula_redis_reconnect_exiting(void);

/* an error reply that means "not now" (ngx_nebula_settle.c) */
ngx_uint_t ngx_nebula_redis_transient(redisReply *reply);

/* a reply kept past its callback: in the pool, or for freeReplyObject() */
redisReply *ngx_nebula_redis_copy(ngx_pool_t *pool, const redisReply *r);

/* a Redis Cluster: a script's keys must lie in one slot */
ngx_int_t ngx_nebula_redis_cluster(void);

/*
 * The index of the master that serves a slot now, as this worker's map
 * says (commands go there), or -1: none known now
 */
ngx_int_t ngx_nebula_redis_slot_node(ngx_uint_t slot);

/* whether a command sent now would be taken (not refused at once) */
ngx_int_t ngx_nebula_redis_ready(void);

/*
 * Runs a script with EVALSHA (loading it again on NOSCRIPT).  Returns the
 * op, or NULL when Redis is unavailable now: the caller applies its
 * failure mode at once rather than wait.
 */
ngx_nebula_redis_op_t *ngx_nebula_redis_eval(ngx_nebula_script_e script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_nebula_redis_handler_pt handler, void *data);

/*
 * A plain command (argv[0] is its name), for what a script must not do:
 * touch keys of another hash slot.  NULL when Redis is unavailable now.
 */
ngx_nebula_redis_op_t *ngx_nebula_redis_command(ngx_uint_t argc,
    ngx_str_t *argv, ngx_nebula_redis_handler_pt handler, void *data);

/*
 * A command formatted in RESP (malloc()ed: the op frees it) goes to Redis
 * now, or waits for the handshake; NULL when there is no connection.
 * ngx_nebula_redis_command.c's way in; script NGX_NEBULA_SCRIPT_N is none.
 */
ngx_nebula_redis_op_t *ngx_nebula_redis_send(char *cmd, int len,
    ngx_nebula_script_e script, ngx_nebula_redis_handler_pt handler,
    void *data, ngx_uint_t internal);

char *ngx_nebula_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_nebula_redis_wait_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* "up", "connecting" or "down": how this worker sees Redis now */
const char *ngx_nebula_redis_state(void);

/* the request behind an op went away: its reply will touch nothing */
void ngx_nebula_redis_cancel(ngx_nebula_redis_op_t *op);

#endif /* NGX_NEBULA_REDIS_H */
