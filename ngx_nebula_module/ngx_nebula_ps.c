/*
 * Nebula: GET /api/ps (nebula ollama_ps), the models the fleet has
 * loaded, as far as the caller's key reaches them.
 *
 * Every pool that serves a model the key reaches is asked, at once, with
 * a background subrequest to the location's own URI: nginx's access
 * phases pass a subrequest by, so the location's proxy_pass carries it to
 * the pool its post_subrequest data names ($nebula_pool_url and the rest
 * read it there, as the filters find it there: a module ctx would be
 * lost to an internal redirect of the subrequest, an X-Accel-Redirect).  The
 * response filter keeps each answer in memory instead of sending it
 * (ngx_nebula_ps_header_filter(), ngx_nebula_ps_body_filter()).  When the
 * last pool has answered, or NGX_NEBULA_PS_WAIT has passed, the answers
 * are made the catalog's (nebula_ps.c: the public names, the catalog's
 * context, nothing outside the catalog or the plan) and joined into one.
 *
 * A pool that fails, or answers late, is left out of the list, not an
 * error: Ollama's clients (Open WebUI, ollama-js) read the list as "what
 * is warm", and a pool down has nothing warm.
 *
 * The request itself is answered from the precontent phase, as a content
 * handler's would be: the location's content handler is proxy_pass, which
 * the subrequests need.
 */

#include "ngx_nebula_records.h"
#include "nebula_ps.h"


/* how long the list waits for a pool: Ollama answers from memory */
#define NGX_NEBULA_PS_WAIT   3000

/* an answer larger than this lists no model of ours worth the memory */
#define NGX_NEBULA_PS_MAX    (1024 * 1024)


struct ngx_nebula_ps_pool_s {
    ngx_nebula_ps_t          *ps;
    ngx_nebula_pool_t        *pool;
    nebula_ps_model_t        *models;         /* the key's, on this pool */
    ngx_uint_t                nmodels;
    ngx_nebula_json_t         answer;         /* its body, as it came */
    ngx_uint_t                status;
    unsigned                  done:1;
    unsigned                  ok:1;
    unsigned                  too_large:1;
};

struct ngx_nebula_ps_s {
    ngx_http_request_t       *request;
    ngx_nebula_ps_pool_t     *pools;
    ngx_uint_t                npools;
    ngx_uint_t                pending;
    ngx_event_t               deadline;
    unsigned                  answered:1;
};


static ngx_int_t ngx_nebula_ps_answer(ngx_nebula_call_ctx_t *call,
    redisReply *reply);
static ngx_int_t ngx_nebula_ps_start(ngx_http_request_t *r,
    ngx_nebula_ctx_t *ctx, const redisReply *k);
static ngx_int_t ngx_nebula_ps_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc);
static void ngx_nebula_ps_wake(ngx_http_request_t *r);
static void ngx_nebula_ps_timeout(ngx_event_t *ev);
static void ngx_nebula_ps_cleanup(void *data);
static ngx_int_t ngx_nebula_ps_send(ngx_nebula_ps_t *ps);


/* from the precontent phase: the request is answered here */
ngx_int_t
ngx_nebula_ps_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_nebula_ctx_t        *ctx;
    ngx_nebula_main_conf_t  *nmcf;

    if (ngx_http_get_module_ctx(r, ngx_http_nebula_module)) {
        /* the phases run again while Redis or the pools answer */
        return NGX_DONE;
    }

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis) {
        rc = ngx_nebula_own_key_lookup(r, ngx_nebula_ps_answer);

    } else if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        rc = ngx_nebula_api_error(r, NGX_HTTP_NOT_ALLOWED,
                                  "method_not_allowed", NULL,
                                  "This endpoint takes GET only.");

    } else {
        /* keys are not checked: the whole public catalog */
        rc = ngx_http_discard_request_body(r);

        if (rc == NGX_OK) {
            ctx = ngx_pcalloc(r->pool, sizeof(ngx_nebula_ctx_t));
            if (ctx == NULL) {
                rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

            } else {
                ngx_http_set_ctx(r, ctx, ngx_http_nebula_module);
                rc = ngx_nebula_ps_start(r, ctx, NULL);
            }
        }
    }

    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}


static ngx_int_t
ngx_nebula_ps_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    ngx_int_t          rc;
    ngx_nebula_ctx_t  *ctx;

    if (ngx_nebula_own_key_check(call, reply, &rc) != NGX_OK) {
        return rc;
    }

    ctx = ngx_http_get_module_ctx(call->r, ngx_http_nebula_module);

    return ngx_nebula_ps_start(call->r, ctx, reply);
}


/*
 * The models the key reaches, by pool, and a subrequest to each pool that
 * has one.  NGX_DONE: the answer comes when they end, the request held
 * for it (as a content handler holds one it answers later).
 */
static ngx_int_t
ngx_nebula_ps_start(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    const redisReply *k)
{
    uint64_t                  groups;
    ngx_uint_t                i, m, n;
    ngx_nebula_ps_t          *ps;
    nebula_ps_model_t        *pm;
    ngx_pool_cleanup_t       *cln;
    ngx_http_request_t       *sr;
    ngx_nebula_pool_t        *pool;
    ngx_nebula_model_t       *model;
    ngx_nebula_ps_pool_t     *pp;
    ngx_nebula_main_conf_t   *nmcf;
    ngx_http_post_subrequest_t  *post;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    groups = ngx_nebula_record_groups(r, k);

    ps = ngx_pcalloc(r->pool, sizeof(ngx_nebula_ps_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (ps == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_nebula_ps_cleanup;
    cln->data = ps;

    ps->request = r;
    ps->pools = ngx_pcalloc(r->pool,
                            nmcf->pools.nelts * sizeof(ngx_nebula_ps_pool_t));
    if (ps->pools == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->ps = ps;

    pool = nmcf->pools.elts;
    model = nmcf->models.elts;

    for (i = 0; i < nmcf->pools.nelts; i++) {

        n = 0;

        for (m = 0; m < nmcf->models.nelts; m++) {
            if (model[m].pool == &pool[i]
                && ngx_nebula_record_reaches(k, groups, &model[m]))
            {
                n++;
            }
        }

        if (n == 0) {
            continue;
        }

        pp = &ps->pools[ps->npools++];
        pp->ps = ps;
        pp->pool = &pool[i];
        pp->models = ngx_palloc(r->pool, n * sizeof(nebula_ps_model_t));
        if (pp->models == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        for (m = 0; m < nmcf->models.nelts; m++) {
            if (model[m].pool != &pool[i]
                || !ngx_nebula_record_reaches(k, groups, &model[m]))
            {
                continue;
            }

            pm = &pp->models[pp->nmodels++];
            pm->upstream = model[m].upstream_model.data;
            pm->upstream_len = model[m].upstream_model.len;
            pm->name = model[m].name.data;
            pm->name_len = model[m].name.len;
            pm->context = model[m].context;
        }
    }

    r->write_event_handler = ngx_nebula_ps_wake;

    for (i = 0; i < ps->npools; i++) {
        pp = &ps->pools[i];

        ngx_nebula_json_init(&pp->answer, r->pool);

        post = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
        if (post == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        post->handler = ngx_nebula_ps_done;
        post->data = pp;

        /*
         * In the background: the pools' answers never reach the client
         * as they are, so nothing orders them, and one that ends first
         * need not wait for those before it.
         */
        sr = NULL;

        if (ngx_http_subrequest(r, &r->uri, NULL, &sr, post,
                                NGX_HTTP_SUBREQUEST_BACKGROUND)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "nebula: GET /api/ps could not ask pool \"%V\"",
                          &pp->pool->name);

            if (sr == NULL) {
                pp->done = 1;
                continue;
            }

            /* made, counted, but not posted: it never runs */
            r->main->count--;
            pp->done = 1;
            continue;
        }

        /* the filters read its answer in memory, whatever the buffering */
        sr->filter_need_in_memory = 1;

        ps->pending++;
    }

    if (ps->pending == 0) {
        ps->answered = 1;
        return ngx_nebula_ps_send(ps);
    }

    ps->deadline.handler = ngx_nebula_ps_timeout;
    ps->deadline.data = ps;
    ps->deadline.log = r->connection->log;
    ngx_add_timer(&ps->deadline, NGX_NEBULA_PS_WAIT);

    r->main->count++;
    return NGX_DONE;
}


/*
 * A pool's subrequest ends (nginx may say so more than once).  Its status
 * is not the request's: a pool's 502 leaves it out of the list, and is no
 * error page.
 */
static ngx_int_t
ngx_nebula_ps_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_nebula_ps_pool_t  *pp = data;

    ngx_nebula_ps_t  *ps;

    if (pp->done) {
        return NGX_OK;
    }

    pp->done = 1;
    ps = pp->ps;

    pp->ok = (rc == NGX_OK && pp->status == NGX_HTTP_OK && !pp->too_large
              && !pp->answer.failed);

    if (!pp->ok && !ps->answered && pp->status == 0) {
        /* nginx has logged why: the connection failed, or the answer */
        ngx_log_error(NGX_LOG_WARN, sr->connection->log, 0,
                      "nebula: pool \"%V\" did not list its running models "
                      "(no answer): GET /api/ps leaves it out",
                      &pp->pool->name);

    } else if (!pp->ok && !ps->answered) {
        ngx_log_error(NGX_LOG_WARN, sr->connection->log, 0,
                      "nebula: pool \"%V\" did not list its running models "
                      "(status %ui%s): GET /api/ps leaves it out",
                      &pp->pool->name, pp->status,
                      pp->too_large ? ", answer too large" : "");
    }

    ps->pending--;

    if (ps->pending == 0 && !ps->answered) {
        /* the request answers when nginx runs it (ngx_nebula_ps_wake) */
        if (ngx_http_post_request(ps->request, NULL) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_nebula_ps_wake(ngx_http_request_t *r)
{
    ngx_nebula_ps_t   *ps;
    ngx_nebula_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_nebula_module);
    ps = ctx->ps;

    if (ps->answered || ps->pending) {
        return;
    }

    ps->answered = 1;

    if (ps->deadline.timer_set) {
        ngx_del_timer(&ps->deadline);
    }

    ngx_http_finalize_request(r, ngx_nebula_ps_send(ps));
}


/* a pool too slow: the list goes without it (its subrequest runs on) */
static void
ngx_nebula_ps_timeout(ngx_event_t *ev)
{
    ngx_nebula_ps_t  *ps = ev->data;

    ngx_uint_t           i;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ps->request;
    c = r->connection;

    for (i = 0; i < ps->npools; i++) {
        if (!ps->pools[i].done) {
            ngx_log_error(NGX_LOG_WARN, c->log, 0,
                          "nebula: pool \"%V\" did not list its running "
                          "models within %M ms: GET /api/ps leaves it out",
                          &ps->pools[i].pool->name,
                          (ngx_msec_t) NGX_NEBULA_PS_WAIT);
        }
    }

    ps->answered = 1;

    /*
     * The late subrequests hold the connection until they end (up to the
     * pool's proxy_read_timeout): a keepalive client's next request would
     * wait as long, unread.  It gets this answer and a new connection.
     */
    r->keepalive = 0;

    ngx_http_finalize_request(r, ngx_nebula_ps_send(ps));
    ngx_http_run_posted_requests(c);
}


static void
ngx_nebula_ps_cleanup(void *data)
{
    ngx_nebula_ps_t  *ps = data;

    if (ps->deadline.timer_set) {
        ngx_del_timer(&ps->deadline);
    }
}


/* the memory a pool's list is made the catalog's in */
static unsigned char *
ngx_nebula_ps_alloc(void *data, size_t size)
{
    return ngx_pnalloc(data, size);
}


/* Ollama's {"models":[...]}, of every pool that answered in time */
static ngx_int_t
ngx_nebula_ps_send(ngx_nebula_ps_t *ps)
{
    size_t                 len, count;
    u_char                *out;
    ngx_uint_t             i, first;
    ngx_nebula_json_t      j;
    ngx_http_request_t    *r;
    ngx_nebula_ps_pool_t  *pp;

    r = ps->request;
    first = 1;

    ngx_nebula_json_init(&j, r->pool);
    ngx_nebula_json_lit(&j, "{\"models\":[");

    for (i = 0; i < ps->npools; i++) {
        pp = &ps->pools[i];

        if (!pp->ok || pp->answer.start == NULL) {
            continue;
        }

        if (nebula_ps_filter(pp->models, pp->nmodels, pp->answer.start,
                             pp->answer.pos - pp->answer.start,
                             ngx_nebula_ps_alloc, r->pool, &out, &len,
                             &count)
            != 0)
        {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "nebula: pool \"%V\" listed its running models "
                          "in a body the gateway cannot read: GET /api/ps "
                          "leaves it out", &pp->pool->name);
            continue;
        }

        if (count == 0) {
            continue;
        }

        if (!first) {
            ngx_nebula_json_lit(&j, ",");
        }

        first = 0;
        ngx_nebula_json_raw(&j, (char *) out, len);
    }

    ngx_nebula_json_lit(&j, "]}");

    return ngx_nebula_json_send(r, &j, NGX_HTTP_OK);
}


/* a subrequest of GET /api/ps: the pool it asks, and its answer; or NULL */
ngx_nebula_ps_pool_t *
ngx_nebula_ps_subrequest(ngx_http_request_t *r)
{
    if (r == r->main || r->post_subrequest == NULL
        || r->post_subrequest->handler != ngx_nebula_ps_done)
    {
        return NULL;
    }

    return r->post_subrequest->data;
}


/* the pool a subrequest of GET /api/ps asks, for the $nebula_pool_* */
ngx_nebula_pool_t *
ngx_nebula_ps_pool(ngx_http_request_t *r)
{
    ngx_nebula_ps_pool_t  *pp;

    pp = ngx_nebula_ps_subrequest(r);

    return pp ? pp->pool : NULL;
}


/* a pool's answer: its status is kept (its header goes nowhere) ... */
void
ngx_nebula_ps_header_filter(ngx_http_request_t *r, ngx_nebula_ps_pool_t *pp)
{
    pp->status = r->headers_out.status;
}


/* ... and its body too, in memory: nothing of it goes on to the client */
ngx_int_t
ngx_nebula_ps_body_filter(ngx_http_request_t *r, ngx_nebula_ps_pool_t *pp,
    ngx_chain_t *in)
{
    size_t                 n, held;
    ngx_buf_t             *b;
    ngx_chain_t           *cl;
    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;
        n = ngx_buf_in_memory(b) ? (size_t) (b->last - b->pos) : 0;
        held = pp->answer.start ? (size_t) (pp->answer.pos - pp->answer.start)
                                : 0;

        if (n && held + n > NGX_NEBULA_PS_MAX) {
            pp->too_large = 1;

        } else if (n && !pp->too_large) {
            ngx_nebula_json_raw(&pp->answer, (char *) b->pos, n);
        }

        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }
    }

    return NGX_OK;
}
