/*
 * Nebula: the model catalog, plans and pools declared in nginx.conf.
 *
 *   nebula_model NAME pool=UPSTREAM upstream_model=NAME context=TOKENS
 *                input_price=USD output_price=USD [max_output=TOKENS]
 *                [kind=chat|embedding] [modalities=text,image]
 *                [group=NAME] [private] [owned_by=NAME] [created=UNIXTIME]
 *                ["description=TEXT"];
 *   nebula_plan NAME input_tokens=N output_tokens=N groups=G[,G...]|*
 *               [requests_per_minute=N];
 *   nebula_pool UPSTREAM [https] [host=NAME] [api_key=SECRET];
 *
 * Directives are checked one by one as they are read; what depends on the
 * whole http{} block (pools, groups) is checked in ngx_nebula_catalog_init,
 * whose messages name the directive's own file and line.
 */

#include "ngx_nebula.h"


#define NGX_NEBULA_MAX_GROUPS  64


static ngx_str_t *
ngx_nebula_param(ngx_str_t *arg, const char *name)
{
    static ngx_str_t  value;
    size_t            len;

    len = ngx_strlen(name);

    if (arg->len > len && arg->data[len] == '='
        && ngx_strncmp(arg->data, name, len) == 0)
    {
        value.data = arg->data + len + 1;
        value.len = arg->len - len - 1;
        return &value;
    }

    return NULL;
}


static ngx_int_t
ngx_nebula_parse_count(ngx_str_t *s, uint64_t *out)
{
    size_t    i;
    uint64_t  v;

    if (s->len == 0 || s->len > 15) {
        return NGX_ERROR;
    }

    v = 0;

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < '0' || s->data[i] > '9') {
            return NGX_ERROR;
        }

        v = v * 10 + (s->data[i] - '0');
    }

    *out = v;
    return NGX_OK;
}


/* the perks a plan may list */
#define NGX_NEBULA_PLAN_PERKS  16


/*
 * "0.20" USD per 1M tokens becomes 200000 micro-USD per 1M tokens (a
 * plan's monthly price is read alike)
 */
static ngx_int_t
ngx_nebula_parse_price(ngx_str_t *s, uint64_t *out)
{
    size_t    i, frac, whole;
    uint64_t  v;
    ngx_int_t dot;

    if (s->len == 0 || s->len > 16) {
        return NGX_ERROR;
    }

    v = 0;
    dot = 0;
    frac = 0;
    whole = 0;

    for (i = 0; i < s->len; i++) {

        if (s->data[i] == '.' && !dot && i > 0) {
            dot = 1;
            continue;
        }

        if (s->data[i] < '0' || s->data[i] > '9') {
            return NGX_ERROR;
        }

        if (dot && ++frac > 6) {
            return NGX_ERROR;
        }

        /*
         * up to $999,999.999999: a cost (tokens times micro-USD per 1M,
         * in picodollars) and a plan's price in picodollars then fit in
         * 64 bits with room to spare
         */
        if (!dot && ++whole > 6) {
            return NGX_ERROR;
        }

        v = v * 10 + (s->data[i] - '0');
    }

    if (dot && frac == 0) {
        return NGX_ERROR;
    }

    for ( /* void */ ; frac < 6; frac++) {
        v *= 10;
    }

    *out = v;
    return NGX_OK;
}


static ngx_int_t
ngx_nebula_copy_quoted(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *quoted)
{
    quoted->data = ngx_pnalloc(cf->pool, 6 * name->len + 2);
    if (quoted->data == NULL) {
        return NGX_ERROR;
    }

    quoted->len = nebula_json_quote(quoted->data, name->data, name->len);

    return NGX_OK;
}


static ngx_int_t
ngx_nebula_valid_name(ngx_str_t *name)
{
    size_t  i;

    if (name->len == 0 || name->len >= NEBULA_MODEL_NAME_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < name->len; i++) {
        if (name->data[i] <= ' ' || name->data[i] == '"'
            || name->data[i] == '\\' || name->data[i] == 0x7f)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_nebula_pool_t *
ngx_nebula_get_pool(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf,
    ngx_str_t *name)
{
    ngx_uint_t          i;
    ngx_nebula_pool_t  *pool;

    pool = nmcf->pools.elts;

    for (i = 0; i < nmcf->pools.nelts; i++) {
        if (pool[i].name.len == name->len
            && ngx_strncmp(pool[i].name.data, name->data, name->len) == 0)
        {
            return &pool[i];
        }
    }

    pool = ngx_array_push(&nmcf->pools);
    if (pool == NULL) {
        return NULL;
    }

    ngx_memzero(pool, sizeof(ngx_nebula_pool_t));
    pool->name = *name;
    pool->pos.file = cf->conf_file->file.name.data;
    pool->pos.line = cf->conf_file->line;

    return pool;
}


/*
 * An Ollama keep_alive the operator sets: a Go duration of whole units
 * ("30s", "5m", "1h", "1h30m", "0"), or "-1" (for ever).
 */
static ngx_int_t
ngx_nebula_valid_duration(ngx_str_t *v)
{
    size_t  i;

    if (v->len == 0 || v->len > 32) {
        return NGX_ERROR;
    }

    if ((v->len == 1 && v->data[0] == '0')
        || (v->len == 2 && ngx_strncmp(v->data, "-1", 2) == 0))
    {
        return NGX_OK;
    }

    for (i = 0; i < v->len; /* void */) {
        if (v->data[i] < '0' || v->data[i] > '9') {
            return NGX_ERROR;
        }

        while (i < v->len && v->data[i] >= '0' && v->data[i] <= '9') {
            i++;
        }

        if (i == v->len) {
            return NGX_ERROR;
        }

        if (v->len - i >= 2 && ngx_strncmp(v->data + i, "ms", 2) == 0) {
            i += 2;

        } else if (v->data[i] == 's' || v->data[i] == 'm'
                   || v->data[i] == 'h')
        {
            i++;

        } else {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


char *
ngx_nebula_model_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    uint64_t             created;
    ngx_str_t           *value, *v, name;
    ngx_uint_t           i, n, have;
    ngx_nebula_model_t  *model;

    value = cf->args->elts;
    name = value[1];

    if (ngx_nebula_valid_name(&name) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid model name \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    if (ngx_nebula_find_model(nmcf, name.data, name.len) != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate model \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    model = ngx_array_push(&nmcf->models);
    if (model == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(model, sizeof(ngx_nebula_model_t));
    model->name = name;
    model->modalities = NGX_NEBULA_MODALITY_TEXT;
    model->created = ngx_time();
    ngx_str_set(&model->owned_by, "nebula");
    model->pos.file = cf->conf_file->file.name.data;
    model->pos.line = cf->conf_file->line;

    /* bits of what was given: pool, upstream_model, context, prices */
    have = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if ((v = ngx_nebula_param(&value[i], "pool")) != NULL) {
            model->pool_name = *v;
            have |= 0x01;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "upstream_model")) != NULL) {
            if (ngx_nebula_valid_name(v) != NGX_OK) {
                goto invalid;
            }
            model->upstream_model = *v;
            have |= 0x02;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "context")) != NULL) {
            if (ngx_nebula_parse_count(v, &model->context) != NGX_OK
                || model->context == 0)
            {
                goto invalid;
            }
            have |= 0x04;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "max_output")) != NULL) {
            if (ngx_nebula_parse_count(v, &model->max_output) != NGX_OK
                || model->max_output == 0)
            {
                goto invalid;
            }
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "input_price")) != NULL) {
            if (ngx_nebula_parse_price(v, &model->input_price) != NGX_OK) {
                goto invalid;
            }
            have |= 0x08;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "output_price")) != NULL) {
            if (ngx_nebula_parse_price(v, &model->output_price) != NGX_OK) {
                goto invalid;
            }
            have |= 0x10;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "modalities")) != NULL) {
            model->modalities = 0;

            for (n = 0; n < v->len; /* void */) {
                if (v->len - n >= 4
                    && ngx_strncmp(v->data + n, "text", 4) == 0)
                {
                    model->modalities |= NGX_NEBULA_MODALITY_TEXT;
                    n += 4;

                } else if (v->len - n >= 5
                           && ngx_strncmp(v->data + n, "image", 5) == 0)
                {
                    model->modalities |= NGX_NEBULA_MODALITY_IMAGE;
                    n += 5;

                } else {
                    goto invalid;
                }

                if (n < v->len && v->data[n++] != ',') {
                    goto invalid;
                }
            }

            if (!(model->modalities & NGX_NEBULA_MODALITY_TEXT)) {
                goto invalid;
            }

            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "group")) != NULL) {
            if (ngx_nebula_valid_name(v) != NGX_OK) {
                goto invalid;
            }
            model->group = *v;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "owned_by")) != NULL) {
            if (ngx_nebula_valid_name(v) != NGX_OK) {
                goto invalid;
            }
            model->owned_by = *v;
            continue;
        }

        /* what /v1/models shows of it: "description=General, reasoning" */
        if ((v = ngx_nebula_param(&value[i], "description")) != NULL) {
            if (v->len == 0 || v->len > 200 || model->description.len) {
                goto invalid;
            }
            model->description = *v;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "created")) != NULL) {
            if (ngx_nebula_parse_count(v, &created) != NGX_OK) {
                goto invalid;
            }
            model->created = (time_t) created;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "keep_alive")) != NULL) {
            if (ngx_nebula_valid_duration(v) != NGX_OK) {
                goto invalid;
            }
            model->keep_alive = *v;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "choices")) != NULL) {
            if (ngx_nebula_parse_count(v, &model->choices) != NGX_OK
                || model->choices == 0 || model->choices > 128)
            {
                goto invalid;
            }
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "kind")) != NULL) {
            if (v->len == 9 && ngx_strncmp(v->data, "embedding", 9) == 0) {
                model->embedding = 1;

            } else if (v->len != 4 || ngx_strncmp(v->data, "chat", 4) != 0) {
                goto invalid;
            }

            continue;
        }

        if (value[i].len == 7 && ngx_strncmp(value[i].data, "private", 7) == 0)
        {
            model->private = 1;
            continue;
        }

        goto invalid;
    }

    if (model->embedding) {
        /* it reads, and writes no token: priced on input alone */
        if (model->output_price || model->max_output || model->choices
            || (model->modalities & NGX_NEBULA_MODALITY_IMAGE))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "embedding model \"%V\" takes no "
                               "output_price, max_output, choices or image "
                               "modality: it is priced on input alone",
                               &name);
            return NGX_CONF_ERROR;
        }

        have |= 0x10;
    }

    if (have != 0x1f) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "model \"%V\" needs pool=, upstream_model=, "
                           "context=, input_price=%s", &name,
                           model->embedding ? "" : " and output_price=");
        return NGX_CONF_ERROR;
    }

    if (model->choices == 0) {
        /* Ollama answers one choice whatever n asks */
        model->choices = 1;
    }

    if ((model->max_output == 0 || model->max_output > model->context)
        && !model->embedding)
    {
        model->max_output = model->context;
    }

    if (model->group.len == 0 && !model->private) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "model \"%V\" needs group= unless it is private",
                           &name);
        return NGX_CONF_ERROR;
    }

    if (ngx_nebula_copy_quoted(cf, &model->name, &model->quoted) != NGX_OK
        || ngx_nebula_copy_quoted(cf, &model->upstream_model,
                                  &model->upstream_quoted)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_nebula_get_pool(cf, nmcf, &model->pool_name) == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" of model \"%V\"",
                       &value[i], &name);
    return NGX_CONF_ERROR;
}


char *
ngx_nebula_plan_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    u_char             *p, *last, *start;
    ngx_str_t          *value, *v, *g;
    ngx_uint_t          i, have;
    ngx_nebula_plan_t  *plan;

    value = cf->args->elts;

    plan = nmcf->plans.elts;

    for (i = 0; i < nmcf->plans.nelts; i++) {
        if (plan[i].name.len == value[1].len
            && ngx_strncmp(plan[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate plan \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_nebula_valid_name(&value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid plan name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    plan = ngx_array_push(&nmcf->plans);
    if (plan == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(plan, sizeof(ngx_nebula_plan_t));
    plan->name = value[1];
    plan->pos.file = cf->conf_file->file.name.data;
    plan->pos.line = cf->conf_file->line;

    if (ngx_array_init(&plan->group_names, cf->pool, 4, sizeof(ngx_str_t))
        != NGX_OK
        || ngx_array_init(&plan->perks, cf->pool, 4, sizeof(ngx_str_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    have = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if ((v = ngx_nebula_param(&value[i], "input_tokens")) != NULL) {
            if (ngx_nebula_parse_count(v, &plan->input_tokens) != NGX_OK) {
                goto invalid;
            }
            have |= 0x01;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "output_tokens")) != NULL) {
            if (ngx_nebula_parse_count(v, &plan->output_tokens) != NGX_OK) {
                goto invalid;
            }
            have |= 0x02;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "requests_per_minute")) != NULL)
        {
            if (ngx_nebula_parse_count(v, &plan->requests_per_minute)
                != NGX_OK
                || plan->requests_per_minute == 0)
            {
                goto invalid;
            }
            continue;
        }

        /* what GET /v1/plans shows: "title=Pro", "perk=24/7 support" */
        if ((v = ngx_nebula_param(&value[i], "title")) != NULL) {
            if (v->len == 0 || v->len > 64 || plan->title.len) {
                goto invalid;
            }
            plan->title = *v;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "price")) != NULL) {
            if (ngx_nebula_parse_price(v, &plan->price) != NGX_OK) {
                goto invalid;
            }
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "perk")) != NULL) {
            if (v->len == 0 || v->len > 200
                || plan->perks.nelts == NGX_NEBULA_PLAN_PERKS)
            {
                goto invalid;
            }

            g = ngx_array_push(&plan->perks);
            if (g == NULL) {
                return NGX_CONF_ERROR;
            }

            *g = *v;
            continue;
        }

        if (value[i].len == 7 && ngx_strncmp(value[i].data, "popular", 7) == 0)
        {
            plan->popular = 1;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "groups")) != NULL) {
            p = v->data;
            last = v->data + v->len;

            while (p < last) {
                start = p;

                while (p < last && *p != ',') {
                    p++;
                }

                if (p == start) {
                    goto invalid;
                }

                g = ngx_array_push(&plan->group_names);
                if (g == NULL) {
                    return NGX_CONF_ERROR;
                }

                g->data = start;
                g->len = p - start;

                if (p < last && ++p == last) {
                    goto invalid;   /* a trailing comma */
                }
            }

            have |= 0x04;
            continue;
        }

        goto invalid;
    }

    if (have != 0x07) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "plan \"%V\" needs input_tokens=, output_tokens= "
                           "and groups=", &plan->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" of plan \"%V\"",
                       &value[i], &value[1]);
    return NGX_CONF_ERROR;
}


char *
ngx_nebula_pool_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    u_char             *p;
    ngx_str_t          *value, *v;
    ngx_uint_t          i;
    ngx_nebula_pool_t  *pool;

    value = cf->args->elts;

    pool = ngx_nebula_get_pool(cf, nmcf, &value[1]);
    if (pool == NULL) {
        return NGX_CONF_ERROR;
    }

    if (pool->declared) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate pool \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    pool->declared = 1;
    pool->pos.file = cf->conf_file->file.name.data;
    pool->pos.line = cf->conf_file->line;

    for (i = 2; i < cf->args->nelts; i++) {

        if (value[i].len == 5 && ngx_strncmp(value[i].data, "https", 5) == 0) {
            pool->https = 1;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "host")) != NULL) {
            if (ngx_nebula_valid_name(v) != NGX_OK) {
                goto invalid;
            }
            pool->host = *v;
            continue;
        }

        if ((v = ngx_nebula_param(&value[i], "api_key")) != NULL) {
            if (ngx_nebula_valid_name(v) != NGX_OK) {
                goto invalid;
            }

            pool->authorization.len = sizeof("Bearer ") - 1 + v->len;
            pool->authorization.data = ngx_pnalloc(cf->pool,
                                                   pool->authorization.len);
            if (pool->authorization.data == NULL) {
                return NGX_CONF_ERROR;
            }

            p = ngx_cpymem(pool->authorization.data, "Bearer ",
                           sizeof("Bearer ") - 1);
            ngx_memcpy(p, v->data, v->len);
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    /* never echo the parameter: it may hold the pool's secret */
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter %ui of pool \"%V\"", i - 1,
                       &value[1]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_nebula_group_index(ngx_nebula_main_conf_t *nmcf, ngx_str_t *name,
    ngx_uint_t add)
{
    ngx_uint_t   i;
    ngx_str_t   *g;

    g = nmcf->groups.elts;

    for (i = 0; i < nmcf->groups.nelts; i++) {
        if (g[i].len == name->len
            && ngx_strncmp(g[i].data, name->data, name->len) == 0)
        {
            return i;
        }
    }

    if (!add || nmcf->groups.nelts == NGX_NEBULA_MAX_GROUPS) {
        return NGX_ERROR;
    }

    g = ngx_array_push(&nmcf->groups);
    if (g == NULL) {
        return NGX_ERROR;
    }

    *g = *name;

    return i;
}


char *
ngx_nebula_catalog_init(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf)
{
    u_char                          *p;
    ngx_int_t                        gi;
    ngx_str_t                       *g;
    ngx_uint_t                       i, j;
    ngx_hash_init_t                  hash;
    ngx_hash_key_t                  *hk;
    ngx_array_t                      keys;
    ngx_nebula_pool_t               *pool;
    ngx_nebula_plan_t               *plan;
    ngx_nebula_model_t              *model;
    ngx_http_upstream_srv_conf_t   **uscf;
    ngx_http_upstream_main_conf_t   *umcf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscf = umcf->upstreams.elts;

    pool = nmcf->pools.elts;

    for (i = 0; i < nmcf->pools.nelts; i++) {

        for (j = 0; j < umcf->upstreams.nelts; j++) {
            if ((uscf[j]->flags & NGX_HTTP_UPSTREAM_CREATE)
                && uscf[j]->host.len == pool[i].name.len
                && ngx_strncmp(uscf[j]->host.data, pool[i].name.data,
                               pool[i].name.len) == 0)
            {
                break;
            }
        }

        if (j == umcf->upstreams.nelts) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown pool \"%V\": no upstream \"%V\" block "
                          "in %s:%ui", &pool[i].name, &pool[i].name,
                          pool[i].pos.file, pool[i].pos.line);
            return NGX_CONF_ERROR;
        }

        /* its servers, for GET /admin/health */
        pool[i].upstream = uscf[j];

        pool[i].url.len = (pool[i].https ? sizeof("https://")
                                         : sizeof("http://")) - 1
                          + pool[i].name.len;
        pool[i].url.data = ngx_pnalloc(cf->pool, pool[i].url.len);
        if (pool[i].url.data == NULL) {
            return NGX_CONF_ERROR;
        }

        p = ngx_cpymem(pool[i].url.data,
                       pool[i].https ? "https://" : "http://",
                       pool[i].https ? 8 : 7);
        ngx_memcpy(p, pool[i].name.data, pool[i].name.len);

        if (pool[i].host.len == 0) {
            pool[i].host = pool[i].name;
        }
    }

    model = nmcf->models.elts;

    if (ngx_array_init(&keys, cf->temp_pool, nmcf->models.nelts + 1,
                       sizeof(ngx_hash_key_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < nmcf->models.nelts; i++) {

        for (j = 0; j < nmcf->pools.nelts; j++) {
            if (pool[j].name.len == model[i].pool_name.len
                && ngx_strncmp(pool[j].name.data, model[i].pool_name.data,
                               pool[j].name.len) == 0)
            {
                model[i].pool = &pool[j];
                break;
            }
        }

        if (model[i].group.len) {
            gi = ngx_nebula_group_index(nmcf, &model[i].group, 1);
            if (gi == NGX_ERROR) {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "too many model groups (at most %d) in %s:%ui",
                              NGX_NEBULA_MAX_GROUPS, model[i].pos.file,
                              model[i].pos.line);
                return NGX_CONF_ERROR;
            }

            model[i].group_index = gi;
        }

        hk = ngx_array_push(&keys);
        if (hk == NULL) {
            return NGX_CONF_ERROR;
        }

        hk->key = model[i].name;
        hk->key_hash = ngx_hash_key_lc(model[i].name.data,
                                       model[i].name.len);
        hk->value = &model[i];
    }

    plan = nmcf->plans.elts;

    for (i = 0; i < nmcf->plans.nelts; i++) {
        g = plan[i].group_names.elts;

        for (j = 0; j < plan[i].group_names.nelts; j++) {

            if (g[j].len == 1 && g[j].data[0] == '*') {
                plan[i].groups = (uint64_t) -1;
                continue;
            }

            gi = ngx_nebula_group_index(nmcf, &g[j], 0);
            if (gi == NGX_ERROR) {
                ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                              "plan \"%V\" names unknown group \"%V\": no "
                              "model has group=%V in %s:%ui", &plan[i].name,
                              &g[j], &g[j], plan[i].pos.file,
                              plan[i].pos.line);
                return NGX_CONF_ERROR;
            }

            plan[i].groups |= (uint64_t) 1 << gi;
        }
    }

    hash.hash = &nmcf->models_hash;
    hash.key = ngx_hash_key;
    hash.max_size = 4096;
    hash.bucket_size = ngx_align(64 + NEBULA_MODEL_NAME_MAX,
                                 ngx_cacheline_size);
    hash.name = "nebula_models_hash";
    hash.pool = cf->pool;
    hash.temp_pool = NULL;

    if (ngx_hash_init(&hash, keys.elts, keys.nelts) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Model names are matched exactly, as Ollama and OpenAI match them; nginx's
 * hash keeps its keys in lower case, so the match is checked once found.
 */
ngx_nebula_model_t *
ngx_nebula_find_model(ngx_nebula_main_conf_t *nmcf, u_char *name, size_t len)
{
    u_char               lc[NEBULA_MODEL_NAME_MAX];
    ngx_uint_t           i, key;
    ngx_nebula_model_t  *model;

    if (len == 0 || len >= NEBULA_MODEL_NAME_MAX) {
        return NULL;
    }

    if (nmcf->models_hash.buckets) {
        key = ngx_hash_strlow(lc, name, len);
        model = ngx_hash_find(&nmcf->models_hash, key, lc, len);

        if (model && ngx_strncmp(model->name.data, name, len) == 0) {
            return model;
        }

        return NULL;
    }

    /* while the configuration is read, before the hash is built */

    model = nmcf->models.elts;

    for (i = 0; i < nmcf->models.nelts; i++) {
        if (model[i].name.len == len
            && ngx_strncasecmp(model[i].name.data, name, len) == 0)
        {
            return &model[i];
        }
    }

    return NULL;
}


/* plans are few: a walk of the list, names matched exactly */
ngx_nebula_plan_t *
ngx_nebula_find_plan(ngx_nebula_main_conf_t *nmcf, u_char *name, size_t len)
{
    ngx_uint_t          i;
    ngx_nebula_plan_t  *plan;

    plan = nmcf->plans.elts;

    for (i = 0; i < nmcf->plans.nelts; i++) {
        if (plan[i].name.len == len
            && ngx_strncmp(plan[i].name.data, name, len) == 0)
        {
            return &plan[i];
        }
    }

    return NULL;
}
