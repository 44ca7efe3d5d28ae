/*
 * Nebula: shared types of the nginx module.
 */

#ifndef NGX_NEBULA_H
#define NGX_NEBULA_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "nebula_request.h"
#include "nebula_stream.h"


/* what a location serves, from the "nebula" directive */
typedef enum {
    NGX_NEBULA_API_NONE = 0,
    NGX_NEBULA_API_CHAT,               /* proxied: /v1/chat/completions */
    NGX_NEBULA_API_OLLAMA_CHAT,        /* proxied: /api/chat */
    NGX_NEBULA_API_OLLAMA_GENERATE,    /* proxied: /api/generate */
    NGX_NEBULA_API_MODELS,             /* content: /v1/models */
    NGX_NEBULA_API_OLLAMA_TAGS,        /* content: /api/tags */
    NGX_NEBULA_API_ERROR               /* content: error_page target */
} ngx_nebula_api_e;


#define NGX_NEBULA_MODALITY_TEXT   0x01
#define NGX_NEBULA_MODALITY_IMAGE  0x02


/* where a directive stood, for errors found once the http{} block is read */
typedef struct {
    u_char                   *file;
    ngx_uint_t                line;
} ngx_nebula_conf_pos_t;


typedef struct {
    ngx_str_t                 name;            /* the upstream{} block */
    ngx_str_t                 url;             /* for proxy_pass */
    ngx_str_t                 host;            /* the Host header to send */
    ngx_str_t                 authorization;   /* "Bearer ..." or empty */
    unsigned                  https:1;
    unsigned                  declared:1;      /* by nebula_pool */
    ngx_nebula_conf_pos_t     pos;
} ngx_nebula_pool_t;


typedef struct {
    ngx_str_t                 name;            /* public */
    ngx_str_t                 quoted;          /* as a JSON string */
    ngx_str_t                 upstream_model;
    ngx_str_t                 upstream_quoted;
    ngx_str_t                 pool_name;
    ngx_nebula_pool_t        *pool;
    uint64_t                  context;         /* tokens */
    uint64_t                  input_price;     /* micro-USD per 1M tokens */
    uint64_t                  output_price;
    ngx_uint_t                modalities;
    ngx_str_t                 group;
    ngx_uint_t                group_index;
    ngx_str_t                 owned_by;
    time_t                    created;
    unsigned                  private:1;       /* reached through keys only */
    ngx_nebula_conf_pos_t     pos;
} ngx_nebula_model_t;


typedef struct {
    ngx_str_t                 name;
    uint64_t                  input_tokens;    /* a month */
    uint64_t                  output_tokens;
    uint64_t                  requests_per_minute;    /* 0: no limit */
    ngx_array_t               group_names;     /* of ngx_str_t */
    uint64_t                  groups;          /* bit i: groups[i] */
    ngx_nebula_conf_pos_t     pos;
} ngx_nebula_plan_t;


typedef struct {
    ngx_array_t               models;          /* ngx_nebula_model_t */
    ngx_array_t               plans;           /* ngx_nebula_plan_t */
    ngx_array_t               pools;           /* ngx_nebula_pool_t */
    ngx_array_t               groups;          /* ngx_str_t */
    ngx_hash_t                models_hash;
    ngx_str_t                 models_json;     /* GET /v1/models */
    ngx_str_t                 tags_json;       /* GET /api/tags */
} ngx_nebula_main_conf_t;


typedef struct {
    ngx_uint_t                api;             /* ngx_nebula_api_e */
} ngx_nebula_loc_conf_t;


/* the state of one request */
typedef struct {
    ngx_nebula_model_t       *model;
    nebula_request_t         *req;

    /* the response filter */
    nebula_stream_t           stream;
    ngx_chain_t              *free;
    ngx_chain_t              *busy;

    unsigned                  body_done:1;     /* validated and rewritten */
    unsigned                  refused:1;       /* an error was sent */
    unsigned                  proxied:1;       /* handed to proxy_pass */
    unsigned                  filtering:1;
    unsigned                  skipping:1;      /* inside the model value */
} ngx_nebula_ctx_t;


extern ngx_module_t  ngx_http_nebula_module;


/* ngx_nebula_catalog.c */
char *ngx_nebula_model_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_nebula_plan_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_nebula_pool_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_nebula_catalog_init(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf);
ngx_nebula_model_t *ngx_nebula_find_model(ngx_nebula_main_conf_t *nmcf,
    u_char *name, size_t len);

/* ngx_nebula_listing.c */
ngx_int_t ngx_nebula_build_listings(ngx_conf_t *cf,
    ngx_nebula_main_conf_t *nmcf);
ngx_int_t ngx_nebula_listing_handler(ngx_http_request_t *r);

/* ngx_nebula_error.c */
ngx_int_t ngx_nebula_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *message);
ngx_int_t ngx_nebula_error_handler(ngx_http_request_t *r);

/* ngx_nebula_access.c */
ngx_int_t ngx_nebula_access_handler(ngx_http_request_t *r);

/* ngx_nebula_filter.c */
ngx_int_t ngx_nebula_filter_init(ngx_conf_t *cf);

/* ngx_nebula_variables.c */
ngx_int_t ngx_nebula_add_variables(ngx_conf_t *cf);

#endif /* NGX_NEBULA_H */
