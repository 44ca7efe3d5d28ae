/*
 * Nebula: the module definition, its directives and configuration.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_metrics.h"


static ngx_int_t ngx_nebula_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_nebula_postconfiguration(ngx_conf_t *cf);
static void *ngx_nebula_create_main_conf(ngx_conf_t *cf);
static char *ngx_nebula_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_nebula_signup_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_nebula_create_loc_conf(ngx_conf_t *cf);
static char *ngx_nebula_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_nebula_api_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_nebula_pass_options_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_nebula_init_zone(ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_nebula_init_process(ngx_cycle_t *cycle);
static void ngx_nebula_exit_process(ngx_cycle_t *cycle);


static ngx_conf_enum_t  ngx_nebula_failure_modes[] = {
    { ngx_string("closed"), 0 },
    { ngx_string("open"), 1 },
    { ngx_null_string, 0 }
};


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

    { ngx_string("nebula_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_nebula_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("nebula_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("nebula_redis_wait"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_nebula_redis_wait_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("nebula_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, redis_connect_timeout),
      NULL },

    { ngx_string("nebula_reservation_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, reservation_timeout),
      NULL },

    { ngx_string("nebula_redis_failure"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, failure_open),
      &ngx_nebula_failure_modes },

    { ngx_string("nebula_admin_token"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, admin_token),
      NULL },

    { ngx_string("nebula_lease"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, lease),
      NULL },

    { ngx_string("nebula_generation_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, generation_ttl),
      NULL },

    { ngx_string("nebula_signup"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_nebula_signup_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("nebula_pass_options"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_nebula_pass_options_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("nebula_test_clock"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_nebula_main_conf_t, test_clock),
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
    ngx_nebula_init_process,               /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_nebula_exit_process,               /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
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

    /*
     * The precontent phase, as the mirror module reads bodies: after
     * allow/deny, auth_basic and auth_request have had their say, so a
     * refused request neither reads its body nor touches Redis.
     */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_nebula_access_handler;

    /* the metrics count a request once it is answered */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_nebula_metrics_log_handler;

    if (ngx_nebula_scripts_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

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

    nmcf->failure_open = NGX_CONF_UNSET_UINT;
    nmcf->test_clock = NGX_CONF_UNSET;
    nmcf->lease = NGX_CONF_UNSET;
    nmcf->generation_ttl = NGX_CONF_UNSET;
    nmcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    nmcf->redis_connect_timeout = NGX_CONF_UNSET_MSEC;
    nmcf->redis_wait = NGX_CONF_UNSET;
    nmcf->redis_wait_timeout = NGX_CONF_UNSET_MSEC;
    nmcf->reservation_timeout = NGX_CONF_UNSET_MSEC;

    return nmcf;
}


/*
 * nebula_signup PLAN [invite=CODE]: POST /v1/accounts opens, for new
 * accounts of that plan (nebula signup)
 */
static char *
ngx_nebula_signup_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    ngx_str_t  *value;

    if (nmcf->signup_plan.data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    nmcf->signup_plan = value[1];

    if (cf->args->nelts == 3) {
        if (value[2].len <= 7
            || ngx_strncmp(value[2].data, "invite=", 7) != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\": the second is "
                               "invite=CODE", &value[2]);
            return NGX_CONF_ERROR;
        }

        nmcf->signup_invite.data = value[2].data + 7;
        nmcf->signup_invite.len = value[2].len - 7;
    }

    return NGX_CONF_OK;
}


static char *
ngx_nebula_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    ngx_str_t   *name;
    ngx_uint_t   i;

    static ngx_str_t  zone_name = ngx_string("nebula");

    ngx_conf_init_uint_value(nmcf->failure_open, 0);
    ngx_conf_init_value(nmcf->test_clock, 0);
    ngx_conf_init_value(nmcf->lease, 1);
    ngx_conf_init_value(nmcf->generation_ttl, 3600);
    ngx_conf_init_msec_value(nmcf->redis_timeout, 1000);
    ngx_conf_init_msec_value(nmcf->redis_connect_timeout, 1000);
    ngx_conf_init_value(nmcf->redis_wait, 0);
    ngx_conf_init_msec_value(nmcf->redis_wait_timeout, 100);
    ngx_conf_init_msec_value(nmcf->reservation_timeout, 15 * 60 * 1000);

    if (nmcf->reservation_timeout < 1000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "nebula_reservation_timeout must be 1s or more");
        return NGX_CONF_ERROR;
    }

    if (nmcf->redis) {
        nmcf->redis->timeout = nmcf->redis_timeout;
        nmcf->redis->connect_timeout = nmcf->redis_connect_timeout;
        nmcf->redis->wait = nmcf->redis_wait;
        nmcf->redis->wait_timeout = nmcf->redis_wait_timeout;

        /* a WAIT holds the connection: past the command timeout, it is
           taken for a frozen Redis */
        if (nmcf->redis_wait
            && nmcf->redis_wait_timeout >= nmcf->redis_timeout)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "nebula_redis_wait's timeout must be shorter "
                               "than nebula_redis_timeout");
            return NGX_CONF_ERROR;
        }

        nmcf->shm_zone = ngx_shared_memory_add(cf, &zone_name,
                                               8 * ngx_pagesize,
                                               &ngx_http_nebula_module);
        if (nmcf->shm_zone == NULL) {
            return NGX_CONF_ERROR;
        }

        nmcf->shm_zone->init = ngx_nebula_init_zone;
    }

    if (nmcf->pass_options) {
        nmcf->pass_names = ngx_pcalloc(cf->pool,
                                       (nmcf->pass_options->nelts + 1)
                                       * sizeof(char *));
        if (nmcf->pass_names == NULL) {
            return NGX_CONF_ERROR;
        }

        name = nmcf->pass_options->elts;

        for (i = 0; i < nmcf->pass_options->nelts; i++) {
            nmcf->pass_names[i] = (const char *) name[i].data;
        }
    }

    if (ngx_nebula_catalog_init(cf, nmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (nmcf->signup_plan.len
        && ngx_nebula_find_plan(nmcf, nmcf->signup_plan.data,
                                nmcf->signup_plan.len) == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "nebula_signup names plan \"%V\", which no "
                           "nebula_plan declares", &nmcf->signup_plan);
        return NGX_CONF_ERROR;
    }

    if (ngx_nebula_build_listings(cf, nmcf) != NGX_OK
        || ngx_nebula_plans_build(cf, nmcf) != NGX_OK
        || ngx_nebula_admission_init(cf, nmcf) != NGX_OK
        || ngx_nebula_metrics_conf(cf, nmcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* state the workers share; kept across reloads, as limit_req keeps its */
static ngx_int_t
ngx_nebula_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t      *shpool;
    ngx_nebula_shctx_t   *sh;

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_nebula_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


static ngx_int_t
ngx_nebula_init_process(ngx_cycle_t *cycle)
{
    ngx_nebula_main_conf_t  *nmcf;

    if (ngx_nebula_id_init(cycle) != NGX_OK) {
        return NGX_ERROR;
    }

    nmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_nebula_module);

    if (ngx_nebula_metrics_init_worker(cycle, nmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (nmcf == NULL || nmcf->redis == NULL) {
        return NGX_OK;
    }

    nmcf->redis->outage = &((ngx_nebula_shctx_t *) nmcf->shm_zone->data)
                               ->redis_outage;

    ngx_nebula_settle_init_worker(cycle);
    ngx_nebula_hold_init_worker(cycle, nmcf->reservation_timeout);
    ngx_nebula_lease_init_worker(cycle, nmcf->lease);
    ngx_nebula_generation_init_worker(cycle, nmcf->generation_ttl,
                                      nmcf->redis != NULL);

    return ngx_nebula_redis_init_worker(cycle, nmcf->redis);
}


static void
ngx_nebula_exit_process(ngx_cycle_t *cycle)
{
    ngx_nebula_lease_exit_worker(cycle);
    ngx_nebula_hold_exit_worker(cycle);
    ngx_nebula_generation_exit_worker(cycle);
    ngx_nebula_redis_exit_worker(cycle);
    ngx_nebula_settle_exit_worker(cycle);
    ngx_nebula_metrics_exit_worker();
}


/*
 * nebula_pass_options NAME ...;
 *
 * Options of Ollama's native API that reach a pool besides the generation
 * options (docs/api.md): an operator's choice, for a fleet that is theirs
 * alone.  Names as Ollama spells them (it matches them exactly).
 */
static char *
ngx_nebula_pass_options_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    ngx_str_t   *value, *name;
    ngx_uint_t   i, j;

    if (nmcf->pass_options == NULL) {
        nmcf->pass_options = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
        if (nmcf->pass_options == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        for (j = 0; j < value[i].len; j++) {
            if (!((value[i].data[j] >= 'a' && value[i].data[j] <= 'z')
                  || (value[i].data[j] >= '0' && value[i].data[j] <= '9')
                  || value[i].data[j] == '_'))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid option name \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }
        }

        if (value[i].len == 0 || value[i].len > 64) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid option name \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if ((value[i].len == 11
             && ngx_strncmp(value[i].data, "num_predict", 11) == 0)
            || (value[i].len == 7
                && ngx_strncmp(value[i].data, "num_ctx", 7) == 0))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is the gateway's own: it is always "
                               "sent, within the quota and the catalog",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        name = ngx_array_push(nmcf->pass_options);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        /* NUL-terminated, for the plain-C parser's list */
        name->data = ngx_pnalloc(cf->pool, value[i].len + 1);
        if (name->data == NULL) {
            return NGX_CONF_ERROR;
        }

        *ngx_cpymem(name->data, value[i].data, value[i].len) = '\0';
        name->len = value[i].len;
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

    ngx_int_t                  id;
    ngx_str_t                 *value;
    ngx_nebula_api_t          *api;
    ngx_nebula_main_conf_t    *nmcf;
    ngx_http_core_loc_conf_t  *clcf;

    if (nlcf->api != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    id = ngx_nebula_api_id(&value[1]);

    if (id == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown nebula endpoint \"%V\": expected %s",
                           &value[1], ngx_nebula_api_names());
        return NGX_CONF_ERROR;
    }

    nlcf->api = (ngx_uint_t) id;
    api = ngx_nebula_api(nlcf->api);

    if (nlcf->api == NGX_NEBULA_API_METRICS) {
        nmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_nebula_module);
        nmcf->metrics_on = 1;
    }

    if (api->handler) {
        /* answered here; a proxied API's request goes through the gate */
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->handler = api->handler;
    }

    return NGX_CONF_OK;
}
