/*
 * Nebula: the module definition, its directives and configuration.
 */

#include "ngx_nebula.h"


static ngx_int_t ngx_nebula_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_nebula_postconfiguration(ngx_conf_t *cf);
static void *ngx_nebula_create_main_conf(ngx_conf_t *cf);
static char *ngx_nebula_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_nebula_create_loc_conf(ngx_conf_t *cf);
static char *ngx_nebula_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_nebula_api_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_nebula_commands[] = {

    { ngx_string("nebula_model"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_nebula_model_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("nebula_plan"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_nebula_plan_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("nebula_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_nebula_pool_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("nebula"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_nebula_api_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_nebula_module_ctx = {
    ngx_nebula_preconfiguration,           /* preconfiguration */
    ngx_nebula_postconfiguration,          /* postconfiguration */

    ngx_nebula_create_main_conf,           /* create main configuration */
    ngx_nebula_init_main_conf,             /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_nebula_create_loc_conf,            /* create location configuration */
    ngx_nebula_merge_loc_conf              /* merge location configuration */
};


ngx_module_t  ngx_http_nebula_module = {
    NGX_MODULE_V1,
    &ngx_nebula_module_ctx,                /* module context */
    ngx_nebula_commands,                   /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_conf_enum_t  ngx_nebula_apis[] = {
    { ngx_string("chat"), NGX_NEBULA_API_CHAT },
    { ngx_string("ollama_chat"), NGX_NEBULA_API_OLLAMA_CHAT },
    { ngx_string("ollama_generate"), NGX_NEBULA_API_OLLAMA_GENERATE },
    { ngx_string("models"), NGX_NEBULA_API_MODELS },
    { ngx_string("ollama_tags"), NGX_NEBULA_API_OLLAMA_TAGS },
    { ngx_string("error"), NGX_NEBULA_API_ERROR },
    { ngx_null_string, 0 }
};


static ngx_int_t
ngx_nebula_preconfiguration(ngx_conf_t *cf)
{
    return ngx_nebula_add_variables(cf);
}


static ngx_int_t
ngx_nebula_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_nebula_access_handler;

    return ngx_nebula_filter_init(cf);
}


static void *
ngx_nebula_create_main_conf(ngx_conf_t *cf)
{
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_pcalloc(cf->pool, sizeof(ngx_nebula_main_conf_t));
    if (nmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&nmcf->models, cf->pool, 8, sizeof(ngx_nebula_model_t))
        != NGX_OK
        || ngx_array_init(&nmcf->plans, cf->pool, 4, sizeof(ngx_nebula_plan_t))
           != NGX_OK
        || ngx_array_init(&nmcf->pools, cf->pool, 4, sizeof(ngx_nebula_pool_t))
           != NGX_OK
        || ngx_array_init(&nmcf->groups, cf->pool, 4, sizeof(ngx_str_t))
           != NGX_OK)
    {
        return NULL;
    }

    return nmcf;
}


static char *
ngx_nebula_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    if (ngx_nebula_catalog_init(cf, nmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_nebula_build_listings(cf, nmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_nebula_create_loc_conf(ngx_conf_t *cf)
{
    ngx_nebula_loc_conf_t  *nlcf;

    nlcf = ngx_pcalloc(cf->pool, sizeof(ngx_nebula_loc_conf_t));
    if (nlcf == NULL) {
        return NULL;
    }

    nlcf->api = NGX_CONF_UNSET_UINT;

    return nlcf;
}


static char *
ngx_nebula_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_nebula_loc_conf_t  *prev = parent;
    ngx_nebula_loc_conf_t  *conf = child;

    /*
     * Not inherited: each location says what it serves, so a nested
     * location never proxies a body it has not validated.
     */
    (void) prev;

    if (conf->api == NGX_CONF_UNSET_UINT) {
        conf->api = NGX_NEBULA_API_NONE;
    }

    return NGX_CONF_OK;
}


static char *
ngx_nebula_api_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_nebula_loc_conf_t  *nlcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    if (nlcf->api != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 0; ngx_nebula_apis[i].name.len; i++) {
        if (ngx_nebula_apis[i].name.len == value[1].len
            && ngx_strncmp(ngx_nebula_apis[i].name.data, value[1].data,
                           value[1].len) == 0)
        {
            break;
        }
    }

    if (ngx_nebula_apis[i].name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown nebula endpoint \"%V\": expected chat, "
                           "ollama_chat, ollama_generate, models, "
                           "ollama_tags or error", &value[1]);
        return NGX_CONF_ERROR;
    }

    nlcf->api = ngx_nebula_apis[i].value;

    switch (nlcf->api) {

    case NGX_NEBULA_API_MODELS:
    case NGX_NEBULA_API_OLLAMA_TAGS:
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->handler = ngx_nebula_listing_handler;
        break;

    case NGX_NEBULA_API_ERROR:
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->handler = ngx_nebula_error_handler;
        break;

    default:
        /* proxied: the access handler runs, proxy_pass carries it */
        break;
    }

    return NGX_CONF_OK;
}
