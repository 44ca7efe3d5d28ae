/*
 * Nebula: the admin's usage report of a month, grouped by account, key,
 * model, day or plan, as JSON or CSV (a spreadsheet, a billing run):
 *
 *   GET /admin/usage?period=YYYY-MM&group_by=account&account=A
 *   GET /admin/usage.csv?period=YYYY-MM&group_by=key
 *
 * One script, USAGE_BY (ngx_nebula_scripts_accounts.c), adds up what the
 * settlements wrote (on a Redis Cluster, one a master: ngx_nebula_fanout.c);
 * the grouping is OpenAI's usage API's group_by.
 */

#include "ngx_nebula_accounts.h"


typedef struct {
    ngx_uint_t                csv;
    ngx_str_t                 by;
    ngx_uint_t                labels;       /* the labels a row has */
} ngx_nebula_report_t;


static const char  *ngx_nebula_report_groups[] = {
    "account", "key", "model", "day", "plan", NULL
};

/* the labels of a row, by group: their names in the JSON and the CSV */
static const char  *ngx_nebula_report_labels[][3] = {
    { "account", "name", "plan" },
    { "account", "key", "name" },
    { "model", NULL, NULL },
    { "date", NULL, NULL },
    { "plan", NULL, NULL }
};

static const char  *ngx_nebula_report_counts[] = {
    "input_tokens", "output_tokens", "requests", "cost_usd",
    "estimated_requests", "estimated_input_tokens", "estimated_output_tokens"
};


static ngx_int_t ngx_nebula_report_answer(ngx_nebula_call_ctx_t *call,
    redisReply *reply);


/* the CSV, to be saved as a file named for its month */
static ngx_int_t
ngx_nebula_report_send_csv(ngx_http_request_t *r, ngx_nebula_json_t *j,
    u_char *month)
{
    ngx_table_elt_t  *h;

    static ngx_str_t  type = ngx_string("text/csv; charset=utf-8");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Content-Disposition");
    h->value.data = ngx_pnalloc(r->pool, 64);
    if (h->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->value.len = ngx_sprintf(h->value.data,
                               "attachment; filename=\"nebula-usage-%*s.csv\"",
                               (size_t) 7, month)
                   - h->value.data;

    return ngx_nebula_json_send_as(r, j, NGX_HTTP_OK, &type);
}


/* the days of a month "YYYY-MM": 28 to 31 */
static ngx_uint_t
ngx_nebula_report_days(u_char *month)
{
    ngx_uint_t  y, m;

    y = ngx_atoi(month, 4);
    m = ngx_atoi(month + 5, 2);

    if (m == 2) {
        return ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0) ? 29 : 28;
    }

    return (m == 4 || m == 6 || m == 9 || m == 11) ? 30 : 31;
}


/* a CSV field: quoted when it must be, and never read as a formula */
static void
ngx_nebula_report_csv_field(ngx_nebula_json_t *j, const redisReply *v)
{
    u_char  *p, *last;

    if (v == NULL || v->type != REDIS_REPLY_STRING || v->len == 0) {
        return;
    }

    p = (u_char *) v->str;
    last = p + v->len;

    ngx_nebula_json_lit(j, "\"");

    /* =, +, -, @ first: a spreadsheet would run it (OWASP: CSV injection) */
    if (*p == '=' || *p == '+' || *p == '-' || *p == '@' || *p == '\t'
        || *p == '\r')
    {
        ngx_nebula_json_lit(j, "'");
    }

    for ( /* void */ ; p < last; p++) {
        if (*p == '"') {
            ngx_nebula_json_lit(j, "\"\"");

        } else {
            ngx_nebula_json_raw(j, (char *) p, 1);
        }
    }

    ngx_nebula_json_lit(j, "\"");
}


/* GET /admin/usage?group_by=... and /admin/usage.csv */
ngx_int_t
ngx_nebula_usage_report(ngx_http_request_t *r, ngx_uint_t csv)
{
    u_char                 *p;
    ngx_int_t               rc;
    ngx_str_t               period, account, argv[36];
    ngx_uint_t              i, n, days;
    ngx_nebula_report_t    *rep;
    ngx_nebula_call_ctx_t  *call;
    u_char                  today[16];

    if (ngx_nebula_get_only(r, &rc) != NGX_OK) {
        return rc;
    }

    call = ngx_nebula_call_start(r, ngx_nebula_report_answer);
    rep = ngx_pcalloc(r->pool, sizeof(ngx_nebula_report_t));
    if (call == NULL || rep == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call->data = rep;
    rep->csv = csv;
    ngx_str_set(&rep->by, "account");

    if (ngx_http_arg(r, (u_char *) "group_by", 8, &rep->by) == NGX_OK) {
        for (i = 0; ngx_nebula_report_groups[i]; i++) {
            if (rep->by.len == ngx_strlen(ngx_nebula_report_groups[i])
                && ngx_strncmp(rep->by.data, ngx_nebula_report_groups[i],
                               rep->by.len) == 0)
            {
                break;
            }
        }

        if (ngx_nebula_report_groups[i] == NULL) {
            return ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST,
                                        "invalid_value", "group_by",
                                        "'group_by' is account, key, model, "
                                        "day or plan.");
        }

        rep->labels = i;
    }

    if (ngx_http_arg(r, (u_char *) "period", 6, &period) == NGX_OK) {
        if (period.len != 7 || period.data[4] != '-'
            || ngx_atoi(period.data, 4) == NGX_ERROR
            || ngx_atoi(period.data + 5, 2) < 1
            || ngx_atoi(period.data + 5, 2) > 12)
        {
            return ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST,
                                        "invalid_value", "period",
                                        "'period' is YYYY-MM.");
        }

        ngx_memcpy(call->month, period.data, 7);
    }

    ngx_str_set(&account, "");

    if (ngx_http_arg(r, (u_char *) "account", 7, &account) == NGX_OK) {
        for (i = 0; i < account.len; i++) {
            if (!((account.data[i] >= '0' && account.data[i] <= '9')
                  || (account.data[i] >= 'a' && account.data[i] <= 'f')))
            {
                break;
            }
        }

        if (account.len != NGX_NEBULA_KEY_ID_LEN || i != account.len) {
            return ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST,
                                        "invalid_value", "account",
                                        "'account' is an account's id.");
        }
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_str_set(&argv[0], "nb:accounts");
    ngx_str_set(&argv[1], "nb:keys");
    argv[2].data = call->month;
    argv[2].len = 7;
    argv[3] = rep->by;
    argv[4] = account;
    n = 5;

    /* the month's days, none past today */
    days = ngx_nebula_report_days(call->month);
    *ngx_nebula_day(today, call->now) = '\0';

    p = ngx_pnalloc(r->pool, days * 11);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 1; i <= days; i++) {
        argv[n].data = p;
        p = ngx_sprintf(p, "%s-%02ui", call->month, i);
        argv[n].len = p - argv[n].data;

        if (ngx_strncmp(argv[n].data, today, 10) > 0) {
            break;
        }

        n++;
    }

    rc = ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_USAGE_BY, 2, n, argv);

    if (rc != NGX_AGAIN) {
        return rc;
    }

    r->main->count++;
    return NGX_DONE;
}


/*
 * A row's counts: in, out, req, cost, est_req, est_in, est_out; the
 * cost comes in two parts (USAGE_BY: a double is exact to 2^53 only),
 * its billions of picodollars and the rest
 */
static ngx_int_t
ngx_nebula_report_row(const redisReply *row, int64_t *v)
{
    ngx_uint_t  i;

    if (row->type != REDIS_REPLY_ARRAY || row->elements != 9
        || row->element[0]->type != REDIS_REPLY_ARRAY)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < 8; i++) {
        if (row->element[i + 1]->type != REDIS_REPLY_INTEGER
            || row->element[i + 1]->integer < 0)
        {
            return NGX_ERROR;
        }

        if (i < 7) {
            v[i] = row->element[i + 1]->integer;
        }
    }

    v[3] = v[3] * 1000000000 + row->element[8]->integer;

    return NGX_OK;
}


/* the counts of a row or the total, as JSON members or CSV fields */
static void
ngx_nebula_report_counts_write(ngx_nebula_report_t *rep,
    ngx_nebula_json_t *j, int64_t *v)
{
    ngx_uint_t  i;

    for (i = 0; i < 7; i++) {
        if (rep->csv) {
            ngx_nebula_json_lit(j, ",");

        } else {
            ngx_nebula_json_lit(j, ",\"");
            ngx_nebula_json_raw(j, ngx_nebula_report_counts[i],
                                ngx_strlen(ngx_nebula_report_counts[i]));
            ngx_nebula_json_lit(j, "\":");
        }

        if (i == 3) {
            ngx_nebula_json_usd(j, (uint64_t) ngx_max(v[i], 0));

        } else {
            ngx_nebula_json_int(j, v[i]);
        }
    }
}


static ngx_int_t
ngx_nebula_report_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    size_t                i, k;
    int64_t               v[7], total[7];
    ngx_uint_t            l;
    ngx_nebula_json_t     j;
    const redisReply     *row, *label;
    ngx_nebula_report_t  *rep;
    ngx_http_request_t   *r;

    r = call->r;
    rep = call->data;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return ngx_nebula_call_bad_reply(r, reply);
    }

    ngx_memzero(total, sizeof(total));
    ngx_nebula_json_init(&j, r->pool);

    if (rep->csv) {
        ngx_nebula_json_lit(&j, "period");

        for (l = 0; l < 3 && ngx_nebula_report_labels[rep->labels][l]; l++) {
            ngx_nebula_json_lit(&j, ",");
            ngx_nebula_json_raw(&j, ngx_nebula_report_labels[rep->labels][l],
                               ngx_strlen(
                                   ngx_nebula_report_labels[rep->labels][l]));
        }

        for (i = 0; i < 7; i++) {
            ngx_nebula_json_lit(&j, ",");
            ngx_nebula_json_raw(&j, ngx_nebula_report_counts[i],
                                ngx_strlen(ngx_nebula_report_counts[i]));
        }

        ngx_nebula_json_lit(&j, "\r\n");

    } else {
        ngx_nebula_json_lit(&j, "{\"object\":\"list\",\"period\":");
        ngx_nebula_json_str(&j, call->month, 7);
        ngx_nebula_json_lit(&j, ",\"group_by\":");
        ngx_nebula_json_str(&j, rep->by.data, rep->by.len);
        ngx_nebula_json_lit(&j, ",\"data\":[");
    }

    for (i = 0; i < reply->elements; i++) {
        row = reply->element[i];

        if (ngx_nebula_report_row(row, v) != NGX_OK) {
            return ngx_nebula_call_bad_reply(r, reply);
        }

        for (k = 0; k < 7; k++) {
            total[k] += v[k];
        }

        if (rep->csv) {
            ngx_nebula_json_raw(&j, (char *) call->month, 7);

        } else {
            if (i) {
                ngx_nebula_json_lit(&j, ",");
            }

            ngx_nebula_json_lit(&j, "{");
        }

        for (l = 0; l < 3 && ngx_nebula_report_labels[rep->labels][l]; l++) {
            label = (l < row->element[0]->elements)
                    ? row->element[0]->element[l] : NULL;

            if (rep->csv) {
                ngx_nebula_json_lit(&j, ",");
                ngx_nebula_report_csv_field(&j, label);
                continue;
            }

            if (l) {
                ngx_nebula_json_lit(&j, ",");
            }

            ngx_nebula_json_lit(&j, "\"");
            ngx_nebula_json_raw(&j, ngx_nebula_report_labels[rep->labels][l],
                               ngx_strlen(
                                   ngx_nebula_report_labels[rep->labels][l]));
            ngx_nebula_json_lit(&j, "\":");

            if (label && label->type == REDIS_REPLY_STRING && label->len) {
                ngx_nebula_json_str(&j, (u_char *) label->str, label->len);

            } else {
                ngx_nebula_json_lit(&j, "null");
            }
        }

        ngx_nebula_report_counts_write(rep, &j, v);

        if (rep->csv) {
            ngx_nebula_json_lit(&j, "\r\n");

        } else {
            ngx_nebula_json_lit(&j, "}");
        }
    }

    if (rep->csv) {
        return ngx_nebula_report_send_csv(r, &j, call->month);
    }

    ngx_nebula_json_lit(&j, "],\"total\":{\"rows\":");
    ngx_nebula_json_int(&j, (int64_t) reply->elements);
    ngx_nebula_report_counts_write(rep, &j, total);
    ngx_nebula_json_lit(&j, "}}");

    return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
}
