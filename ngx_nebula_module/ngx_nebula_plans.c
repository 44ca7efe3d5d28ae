/*
 * Nebula: GET /v1/plans (nebula plans), the plans as the API document's
 * table shows them: each plan's title, monthly price, monthly tokens,
 * per-minute limit, perks, and the models it reaches, in the order
 * nginx.conf declares them.  Public, as /v1/models is: a pricing page
 * draws it.  Built once, when the configuration is read.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_json.h"


/* the JSON of every plan, into nmcf->plans_json */
ngx_int_t
ngx_nebula_plans_build(ngx_conf_t *cf, ngx_nebula_main_conf_t *nmcf)
{
    u_char              *title;
    ngx_str_t           *perk;
    ngx_uint_t           i, k, m, first;
    ngx_nebula_json_t    j;
    ngx_nebula_plan_t   *plan;
    ngx_nebula_model_t  *model;

    plan = nmcf->plans.elts;
    model = nmcf->models.elts;

    ngx_nebula_json_init(&j, cf->pool);
    ngx_nebula_json_lit(&j, "{\"object\":\"list\",\"data\":[");

    for (i = 0; i < nmcf->plans.nelts; i++) {
        if (i) {
            ngx_nebula_json_lit(&j, ",");
        }

        ngx_nebula_json_lit(&j, "{\"id\":");
        ngx_nebula_json_str(&j, plan[i].name.data, plan[i].name.len);
        ngx_nebula_json_lit(&j, ",\"object\":\"plan\",\"name\":");

        if (plan[i].title.len) {
            ngx_nebula_json_str(&j, plan[i].title.data, plan[i].title.len);

        } else {
            /* no title=: "free" is shown as "Free" */
            title = ngx_pnalloc(cf->pool, plan[i].name.len);
            if (title == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(title, plan[i].name.data, plan[i].name.len);
            title[0] = ngx_toupper(title[0]);
            ngx_nebula_json_str(&j, title, plan[i].name.len);
        }

        ngx_nebula_json_lit(&j, ",\"price_usd_monthly\":");
        /* micro-USD: the cost writer takes picodollars */
        ngx_nebula_json_usd(&j, plan[i].price * 1000000);
        ngx_nebula_json_lit(&j, ",\"popular\":");

        if (plan[i].popular) {
            ngx_nebula_json_lit(&j, "true");
        } else {
            ngx_nebula_json_lit(&j, "false");
        }

        ngx_nebula_json_lit(&j, ",\"limits\":{\"input_tokens\":");
        ngx_nebula_json_int(&j, (int64_t) plan[i].input_tokens);
        ngx_nebula_json_lit(&j, ",\"output_tokens\":");
        ngx_nebula_json_int(&j, (int64_t) plan[i].output_tokens);
        ngx_nebula_json_lit(&j, ",\"requests_per_minute\":");

        if (plan[i].requests_per_minute) {
            ngx_nebula_json_int(&j, (int64_t) plan[i].requests_per_minute);
        } else {
            ngx_nebula_json_lit(&j, "null");
        }

        /* what it reaches: the catalog's models of its groups */
        ngx_nebula_json_lit(&j, "},\"models\":[");
        first = 1;

        for (m = 0; m < nmcf->models.nelts; m++) {
            if (model[m].private
                || !(plan[i].groups & ((uint64_t) 1 << model[m].group_index)))
            {
                continue;
            }

            if (!first) {
                ngx_nebula_json_lit(&j, ",");
            }

            first = 0;
            ngx_nebula_json_str(&j, model[m].name.data, model[m].name.len);
        }

        ngx_nebula_json_lit(&j, "],\"perks\":[");
        perk = plan[i].perks.elts;

        for (k = 0; k < plan[i].perks.nelts; k++) {
            if (k) {
                ngx_nebula_json_lit(&j, ",");
            }

            ngx_nebula_json_str(&j, perk[k].data, perk[k].len);
        }

        ngx_nebula_json_lit(&j, "]}");
    }

    /* whether a pricing page may offer "Get Started": nebula_signup */
    ngx_nebula_json_lit(&j, "],\"signup\":");

    if (nmcf->signup_plan.len && nmcf->redis) {
        ngx_nebula_json_lit(&j, "{\"plan\":");
        ngx_nebula_json_str(&j, nmcf->signup_plan.data, nmcf->signup_plan.len);
        if (nmcf->signup_invite.len) {
            ngx_nebula_json_lit(&j, ",\"invite_required\":true}");
        } else {
            ngx_nebula_json_lit(&j, ",\"invite_required\":false}");
        }
    } else {
        ngx_nebula_json_lit(&j, "null");
    }

    ngx_nebula_json_lit(&j, "}\n");

    if (j.failed) {
        return NGX_ERROR;
    }

    nmcf->plans_json.data = j.start;
    nmcf->plans_json.len = j.pos - j.start;

    return NGX_OK;
}


/* GET /v1/plans: the list built above */
ngx_int_t
ngx_nebula_plans_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_buf_t               *b;
    ngx_chain_t              out;
    ngx_nebula_main_conf_t  *nmcf;

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = nmcf->plans_json.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->pos = nmcf->plans_json.data;
    b->last = b->pos + nmcf->plans_json.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
