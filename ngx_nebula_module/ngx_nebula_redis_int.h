/*
 * Nebula: what the Redis connection's files share (ngx_nebula_redis.c,
 * ngx_nebula_redis_cluster.c, ngx_nebula_redis_sentinel.c).  Not for
 * the rest of the module: ngx_nebula_redis.h is its way in.
 */

#ifndef NGX_NEBULA_REDIS_INT_H
#define NGX_NEBULA_REDIS_INT_H

#include "ngx_nebula.h"
#include "ngx_nebula_redis.h"


#define NGX_NEBULA_REDIS_BACKOFF_MIN   50
#define NGX_NEBULA_REDIS_BACKOFF_MAX   2000

#define NGX_NEBULA_REDIS_MAX_NODES     64
#define NGX_NEBULA_REDIS_SLOTS         16384
#define NGX_NEBULA_REDIS_NO_NODE       0xff

/* a command followed this many MOVED or ASK replies: the map is wrong */
#define NGX_NEBULA_REDIS_MAX_REDIRECTS 5


typedef struct ngx_nebula_redis_node_s  ngx_nebula_redis_node_t;


struct ngx_nebula_redis_op_s {
    ngx_queue_t                   queue;
    ngx_nebula_redis_handler_pt   handler;
    void                         *data;         /* NULL once cancelled */
    ngx_msec_t                    deadline;
    ngx_nebula_script_e           script;
    char                         *cmd;          /* for a NOSCRIPT retry,
                                                   a redirection */
    int                           cmd_len;
    const char                   *what;         /* an internal command's */
    ngx_nebula_redis_node_t      *node;         /* whose queue holds it */
    ngx_int_t                     slot;         /* -1: names no key */
    ngx_nebula_redis_op_t        *wait;         /* the WAIT after it */
    redisReply                   *held;         /* its reply, a copy,
                                                   until the WAIT's */
    ngx_queue_t                   held_ops;     /* a WAIT's: the replies
                                                   it holds */
    unsigned                      durable:1;    /* answered after WAIT */
    unsigned                      retried:1;
    unsigned                      internal:1;
    unsigned                      written:1;
    unsigned                      handshake:1;  /* a step of it */
    unsigned                      redirects:3;
};


/* one connection: the only one, a cluster's master, or a sentinel */
struct ngx_nebula_redis_node_s {
    u_char                        ip[NGX_SOCKADDR_STRLEN + 1];
    ngx_int_t                     port;
    u_char                       *unix_path;
    ngx_str_t                     name;         /* for messages */
    u_char                        name_buf[NGX_SOCKADDR_STRLEN + 8];
    ngx_uint_t                    index;
    redisAsyncContext            *ac;
    ngx_connection_t             *conn;
    ngx_event_t                   timer;
    ngx_event_t                   reconnect;
    ngx_msec_t                    backoff;
    ngx_queue_t                   pending;
    ngx_uint_t                    npending;
    ngx_uint_t                    handshake;    /* replies the handshake
                                                   waits for */
    ngx_queue_t                   waiting;      /* commands held until
                                                   the handshake is done */
    ngx_event_t                   wait_ev;      /* posted: one WAIT a
                                                   turn of the loop */
    ngx_uint_t                    unwaited;
    unsigned                      wait_short:1; /* replicas short: said */
    unsigned                      connected:1;
    unsigned                      answered:1;   /* a good reply came on
                                                   this connection */
    unsigned                      down:1;       /* in an outage, until a
                                                   good reply */
    unsigned                      sentinel:1;   /* a sentinel, not data */
    unsigned                      unused:1;     /* serves no slot: not
                                                   reconnected */
};


typedef struct {
    ngx_nebula_redis_conf_t      *conf;
    ngx_log_t                    *log;
    ngx_nebula_redis_node_t      *nodes[NGX_NEBULA_REDIS_MAX_NODES];
    ngx_uint_t                    nnodes;

    /* the data's node; a cluster's: the one asked for the map first */
    ngx_nebula_redis_node_t      *data;

    /* a cluster: the node of each slot, an index in nodes */
    uint8_t                      *slots;
    ngx_event_t                   refresh;
    ngx_msec_t                    refresh_backoff;
    ngx_uint_t                    next_seed;
    ngx_nebula_redis_node_t      *asked;        /* CLUSTER SLOTS in flight */

    /* Sentinel */
    ngx_nebula_redis_node_t      *sentinel;     /* the one asked now */
    ngx_uint_t                    next_sentinel;
    ngx_event_t                   discover;
    ngx_msec_t                    discover_backoff;

    unsigned                      mapped:1;     /* a cluster's map known */
    unsigned                      active:1;     /* the worker uses Redis */
} ngx_nebula_redis_t;


/* each worker has its own; the master never connects */
extern ngx_nebula_redis_t  ngx_nebula_redis;


/* ngx_nebula_redis.c: an op, and hiredis's reply callback */
ngx_nebula_redis_op_t *ngx_nebula_redis_op(char *cmd, int len,
    ngx_nebula_script_e script, ngx_nebula_redis_handler_pt handler,
    void *data);
void ngx_nebula_redis_reply(redisAsyncContext *ac, void *r, void *privdata);

/* ngx_nebula_redis_wait.c */
void ngx_nebula_redis_wait_handler(ngx_event_t *ev);
void ngx_nebula_redis_waited(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *w, redisReply *reply);

/* ngx_nebula_redis_node.c: a node's connection */
void ngx_nebula_redis_arm_timer(ngx_nebula_redis_node_t *n);
ngx_nebula_redis_op_t *ngx_nebula_redis_load(ngx_nebula_redis_node_t *n,
    ngx_nebula_script_e s);
ngx_nebula_redis_node_t *ngx_nebula_redis_node(u_char *ip, ngx_int_t port,
    ngx_uint_t sentinel);
void ngx_nebula_redis_node_connect(ngx_nebula_redis_node_t *n);
void ngx_nebula_redis_node_lost(ngx_nebula_redis_node_t *n, const char *why);
ngx_int_t ngx_nebula_redis_node_send(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op);
ngx_int_t ngx_nebula_redis_node_submit(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op);
ngx_nebula_redis_op_t *ngx_nebula_redis_node_internal(
    ngx_nebula_redis_node_t *n, int argc, const char **argv,
    const size_t *argvlen, const char *what, ngx_uint_t handshake);
void ngx_nebula_redis_op_fail(ngx_nebula_redis_op_t *op);
void ngx_nebula_redis_fail_waiting(ngx_nebula_redis_node_t *n);
void ngx_nebula_redis_handshake_step(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op);

/* ngx_nebula_redis_cluster.c */
void ngx_nebula_redis_cluster_start(void);
ngx_nebula_redis_node_t *ngx_nebula_redis_cluster_route(
    ngx_nebula_redis_op_t *op);
ngx_int_t ngx_nebula_redis_cluster_redirected(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op, redisReply *reply);
void ngx_nebula_redis_cluster_reply(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op, redisReply *reply);
void ngx_nebula_redis_cluster_lost(ngx_nebula_redis_node_t *n);
ngx_int_t ngx_nebula_redis_cluster_ready(void);
const char *ngx_nebula_redis_cluster_state(void);
ngx_int_t ngx_nebula_redis_cmd_slot(const char *cmd, int len);

/* ngx_nebula_redis_sentinel.c */
void ngx_nebula_redis_sentinel_start(void);
void ngx_nebula_redis_sentinel_reply(ngx_nebula_redis_node_t *n,
    ngx_nebula_redis_op_t *op, redisReply *reply);
void ngx_nebula_redis_sentinel_lost(ngx_nebula_redis_node_t *n);
void ngx_nebula_redis_sentinel_check(void);

#endif /* NGX_NEBULA_REDIS_INT_H */
