/*
 * Nebula: the public catalog's listings.
 *
 *   GET /v1/models  (nebula models) OpenAI's list with OpenRouter's
 *                   fields, built once from the catalog when the
 *                   configuration is read and served as it is; and
 *   GET /v1/models/{model}, one entry of it
 *   GET /api/tags   (nebula ollama_tags) Ollama's list of the models the
 *                   caller's key reaches, picked from entries built then
 *                   too; the key's plan and own models come from Redis
 */

#include "ngx_nebula_records.h"


static ngx_int_t ngx_nebula_model_path(ngx_http_request_t *r,
    ngx_str_t *name);
static ngx_int_t ngx_nebula_model_not_found(ngx_http_request_t *r,
    ngx_str_t *name);
static ngx_int_t ngx_nebula_tags_handler(ngx_http_request_t *r);


/* USD per token, as OpenRouter writes it: micro-USD per 1M over 10^12 */
static u_char *
ngx_nebula_write_price(u_char *p, uint64_t micro_per_million)
{
    *p++ = '"';
    p = ngx_nebula_decimal12(p, micro_per_million);
    *p++ = '"';

    return p;
}


static u_char *
ngx_nebula_write_json_string(u_char *p, ngx_str_t *s)
{
    *p++ = '"';
    p = (u_char *) ngx_escape_json(p, s->data, s->len);
    *p++ = '"';
    return p;
}


/* one entry of GET /v1/models */
static u_char *
ngx_nebula_models_entry(u_char *p, ngx_nebula_model_t *model,
    ngx_uint_t first)
{
    if (!first) {
        *p++ = ',';
    }

    p = ngx_cpymem(p, "{\"id\":", 6);
    p = ngx_nebula_write_json_string(p, &model->name);
    p = ngx_sprintf(p, ",\"object\":\"model\",\"created\":%T,\"owned_by\":",
                    model->created);
    p = ngx_nebula_write_json_string(p, &model->owned_by);
    p = ngx_cpymem(p, ",\"name\":", 8);
    p = ngx_nebula_write_json_string(p, &model->name);

    /* OpenRouter's field; the API document's "use case" column */
    if (model->description.len) {
        p = ngx_cpymem(p, ",\"description\":", 15);
        p = ngx_nebula_write_json_string(p, &model->description);
    }
    p = ngx_sprintf(p, ",\"context_length\":%uL,\"pricing\":{\"prompt\":",
                    model->context);
    p = ngx_nebula_write_price(p, model->input_price);
    p = ngx_cpymem(p, ",\"completion\":", 14);
    p = ngx_nebula_write_price(p, model->output_price);
    p = ngx_cpymem(p, "},\"architecture\":{\"input_modalities\":[\"text\"",
                   sizeof("},\"architecture\":{\"input_modalities\":"
                          "[\"text\"") - 1);

    if (model->modalities & NGX_NEBULA_MODALITY_IMAGE) {
        p = ngx_cpymem(p, ",\"image\"", 8);
    }

    /* an embedding model's output is its vectors, as OpenRouter says */
    p = ngx_sprintf(p, "],\"output_modalities\":[\"%s\"]},"
                    "\"top_provider\":{\"context_length\":%uL,"
                    "\"max_completion_tokens\":%uL,\"is_moderated\":false}}",
                    model->embedding ? "embeddings" : "text",
                    model->context, model->max_output);

    return p;
}


ngx_int_t
ngx_nebula_build_listings(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf)
{
    u_char              *p, *tp;
    size_t               size;
    ngx_tm_t             tm;
    ngx_uint_t           i, first;
    ngx_nebula_model_t  *model;

    model = nmcf->models.elts;

    size = 64;

    for (i = 0; i < nmcf->models.nelts; i++) {
        size += 512 + 12 * (model[i].name.len + model[i].owned_by.len
                            + model[i].description.len);
    }

    p = ngx_pnalloc(cf->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    nmcf->models_json.data = p;

    p = ngx_cpymem(p, "{\"object\":\"list\",\"data\":[",
                   sizeof("{\"object\":\"list\",\"data\":[") - 1);

    first = 1;

    for (i = 0; i < nmcf->models.nelts; i++) {

        /* /api/tags lists, per key, the entries built here */
        tp = ngx_pnalloc(cf->pool, 512 + 12 * model[i].name.len);
        if (tp == NULL) {
            return NGX_ERROR;
        }

        model[i].tags_entry.data = tp;

        if (!model[i].private) {
            /* GET /v1/models/{model} answers the entry alone */
            model[i].models_entry.data = p + (first ? 0 : 1);
            p = ngx_nebula_models_entry(p, &model[i], first);
            model[i].models_entry.len = p - model[i].models_entry.data;
            first = 0;
        }

        tp = ngx_cpymem(tp, "{\"name\":", 8);
        tp = ngx_nebula_write_json_string(tp, &model[i].name);
        tp = ngx_cpymem(tp, ",\"model\":", 9);
        tp = ngx_nebula_write_json_string(tp, &model[i].name);
        tp = ngx_cpymem(tp, ",\"modified_at\":\"", 16);
        ngx_gmtime(model[i].created, &tm);
        tp = ngx_sprintf(tp, "%4d-%02d-%02dT%02d:%02d:%02dZ\","
                         "\"size\":0,\"digest\":\"\",\"details\":{"
                         "\"format\":\"\",\"family\":\"\",\"families\":null,"
                         "\"parameter_size\":\"\",\"quantization_level\":\"\""
                         "}}",
                         tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                         tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

        model[i].tags_entry.len = tp - model[i].tags_entry.data;
    }

    p = ngx_cpymem(p, "]}\n", 3);

    nmcf->models_json.len = p - nmcf->models_json.data;

    return NGX_OK;
}


ngx_int_t
ngx_nebula_listing_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t               *body, name;
    ngx_buf_t               *b, *nl;
    ngx_uint_t               one;
    ngx_chain_t              out[2];
    ngx_nebula_model_t      *model;
    ngx_nebula_loc_conf_t   *nlcf;
    ngx_nebula_main_conf_t  *nmcf;

    one = 0;

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    nlcf = ngx_http_get_module_loc_conf(r, ngx_http_nebula_module);
    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nlcf->api == NGX_NEBULA_API_OLLAMA_TAGS) {
        /* what a key may use: behind the key, like the rest of /api */
        return ngx_nebula_tags_handler(r);
    }

    body = &nmcf->models_json;

    if (ngx_nebula_model_path(r, &name) == NGX_OK) {
        model = ngx_nebula_find_model(nmcf, name.data, name.len);

        if (model == NULL || model->private) {
            return ngx_nebula_model_not_found(r, &name);
        }

        body = &model->models_entry;
        one = 1;
    }

    /* before the header: a 500 cannot follow a 200 already sent */
    b = ngx_calloc_buf(r->pool);
    nl = ngx_calloc_buf(r->pool);
    if (b == NULL || nl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = body->len + one;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;

    out[0].buf = b;
    out[0].next = NULL;

    if (one) {
        /* the entry in the list has no line end of its own */
        nl->pos = (u_char *) "\n";
        nl->last = nl->pos + 1;
        nl->memory = 1;

        out[0].next = &out[1];
        out[1].buf = nl;
        out[1].next = NULL;
        b = nl;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    return ngx_http_output_filter(r, &out[0]);
}


/*
 * The model a path names after its first "/models/" (names hold '/', as
 * "qwen/qwen3-coder:free" does; nginx has decoded the path): NGX_OK with
 * it in *name, NGX_DECLINED for the list.
 */
static ngx_int_t
ngx_nebula_model_path(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char  *p, *last;

    last = r->uri.data + r->uri.len;
    p = ngx_strlcasestrn(r->uri.data, last, (u_char *) "/models/",
                         sizeof("/models/") - 1 - 1);

    if (p == NULL || p + sizeof("/models/") - 1 == last) {
        return NGX_DECLINED;
    }

    name->data = p + sizeof("/models/") - 1;
    name->len = last - name->data;

    return NGX_OK;
}


static ngx_int_t
ngx_nebula_model_not_found(ngx_http_request_t *r, ngx_str_t *name)
{
    char  *msg;

    msg = ngx_nebula_unknown_model(r->pool, name->data, name->len);
    if (msg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_nebula_send_error(r, NGX_HTTP_NOT_FOUND,
                                 "invalid_request_error", "model_not_found",
                                 "model", msg);
}


/*
 * Ollama's model list, of the models a key reaches (k: KEY_GET's reply;
 * NULL, all: no keys)
 */
static void
ngx_nebula_tags_write(ngx_http_request_t *r, ngx_nebula_json_t *j,
    const redisReply *k)
{
    uint64_t                 groups;
    ngx_uint_t               i, first;
    ngx_nebula_model_t      *model;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    groups = ngx_nebula_record_groups(r, k);
    model = nmcf->models.elts;
    first = 1;

    ngx_nebula_json_lit(j, "{\"models\":[");

    for (i = 0; i < nmcf->models.nelts; i++) {
        if (!ngx_nebula_record_reaches(k, groups, &model[i])) {
            continue;
        }

        if (!first) {
            ngx_nebula_json_lit(j, ",");
        }

        first = 0;
        ngx_nebula_json_raw(j, (char *) model[i].tags_entry.data,
                            model[i].tags_entry.len);
    }

    ngx_nebula_json_lit(j, "]}");
}


static ngx_int_t
ngx_nebula_tags_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    ngx_int_t           rc;
    ngx_nebula_json_t   j;

    if (ngx_nebula_own_key_check(call, reply, &rc) != NGX_OK) {
        return rc;
    }

    ngx_nebula_json_init(&j, call->r->pool);
    ngx_nebula_tags_write(call->r, &j, reply);

    return ngx_nebula_json_send(call->r, &j, NGX_HTTP_OK);
}


/* GET /api/tags: the models the caller's key reaches */
static ngx_int_t
ngx_nebula_tags_handler(ngx_http_request_t *r)
{
    ngx_nebula_json_t        j;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL) {
        ngx_nebula_json_init(&j, r->pool);
        ngx_nebula_tags_write(r, &j, NULL);
        return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
    }

    return ngx_nebula_own_key_lookup(r, ngx_nebula_tags_answer);
}
