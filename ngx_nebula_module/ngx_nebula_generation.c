/*
 * Nebula: OpenRouter's generation records.
 *
 * Every request a key was admitted for leaves, when it ends, a record of
 * how it went: its model, its tokens and their cost (as settled), how long
 * it took and how long until its first byte, how it finished, its status,
 * and which key made it.  The record is a line of words after the unix
 * time it was made, pushed onto its account's list of records, nb:{A}:g
 * (the account's hash tag: its slot; a key made before accounts is an
 * account of its own), which keeps the account's last
 * NGX_NEBULA_GENERATION_KEEP (a few hundred more between trims) and lives
 * a quarter more than nebula_generation_ttl after the last push that set
 * its expiry; a lookup takes no record older than the ttl.  So an
 * account's records take a bounded memory, whatever its traffic, as its
 * usage records do.  A worker gathers its records and sends them
 * together, every NGX_NEBULA_GENERATION_WAIT or NGX_NEBULA_GENERATION_BATCH
 * records, an account's in one LPUSH, plain commands pipelined with no
 * reply awaited; it sets a list's expiry once a quarter of the ttl, and
 * trims it once it has pushed NGX_NEBULA_GENERATION_TRIM records there
 * (ngx_nebula_generation_keys: what it did to which list).  Redis packs a
 * list's entries together and is paid by the byte, where a key or a hash
 * field for each record (SET ... EX, HSET) cost it 5 to 8 us a request, a
 * script that pushed them 3 to 9 us more than plain commands (Lua copies
 * every argument twice), and an EXPIRE a push 2 us more: a sixth of the
 * gateway's requests a second on the benchmark.  No request waits for
 * them, and they are no part of the usage (settlement keeps that): Redis
 * down, they are lost, and so are those a worker holds when it exits (its
 * connection is closed without being written out).
 *
 * A lookup (GEN_GET) walks the account's list for the id and the
 * caller's key.
 *
 * GET /v1/generation?id=REQUEST (nebula generation) reads one back for
 * the key that made it: the lookup names the caller's own key, so another
 * key's request is not found, of its account or another.  The account's
 * holder reads them all: GET /v1/activity (ngx_nebula_accounts.c).
 */

#include "ngx_nebula_records.h"


/* the id a response gives in x-request-id: 32 hex digits */
#define NGX_NEBULA_GENERATION_ID_LEN  32

/* a batch goes when it holds this many records, or is this old (ms) */
#define NGX_NEBULA_GENERATION_BATCH   64
#define NGX_NEBULA_GENERATION_WAIT    100

/* the memory of a batch: its records, about 450 bytes each */
#define NGX_NEBULA_GENERATION_BYTES   (64 * 1024)

/* the records a key keeps: its last requests; trimmed after 256 pushes */
#define NGX_NEBULA_GENERATION_KEEP    1000
#define NGX_NEBULA_GENERATION_TRIM    256

/*
 * The lists a worker remembers pushing to, by a hash of their key id: 640
 * KB a worker.  Keys that share a slot trim and set their expiry at every
 * batch, a command or two more a record: with 1,000 busy keys, one in
 * sixteen does (at 1,024 slots, a third did: the 1,000-key benchmark lost
 * 7% of its requests a second)
 */
#define NGX_NEBULA_GENERATION_KEYS    16384


typedef struct {
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN + 1];
    time_t                    expiry;        /* when its expiry was set */
    ngx_uint_t                pushed;        /* since its last trim */
} ngx_nebula_generation_key_t;


static ngx_nebula_generation_key_t
    ngx_nebula_generation_keys[NGX_NEBULA_GENERATION_KEYS];


typedef struct {
    u_char                    tag[NGX_NEBULA_KEY_ID_LEN + 1];
    u_char                   *doc;           /* "TIME {JSON}" */
    size_t                    len;
    unsigned                  sent:1;
} ngx_nebula_generation_t;


typedef struct {
    u_char                   *buf;           /* the records' JSON */
    size_t                    used;
    ngx_nebula_generation_t   recs[NGX_NEBULA_GENERATION_BATCH];
    ngx_uint_t                n;
    time_t                    ttl;
    ngx_event_t               tick;
} ngx_nebula_generations_t;


static ngx_nebula_generations_t  ngx_nebula_generations;


static void ngx_nebula_generation_send(ngx_event_t *ev);
static void ngx_nebula_generation_sent(void *data, redisReply *reply);
static ngx_int_t ngx_nebula_generation_answer(ngx_nebula_call_ctx_t *call,
    redisReply *reply);
static ngx_int_t ngx_nebula_generation_found(ngx_nebula_call_ctx_t *call,
    redisReply *reply);


/* how the request finished, as OpenRouter normalizes it; NULL: none */
static const char *
ngx_nebula_generation_finish(ngx_http_request_t *r, ngx_nebula_ctx_t *ctx,
    uint64_t out, ngx_uint_t cancelled)
{
    if (ctx->upstream_failed || ctx->stream_broken
        || r->headers_out.status >= NGX_HTTP_SPECIAL_RESPONSE)
    {
        return "error";
    }

    if (cancelled || ctx->api->embeds) {
        return NULL;
    }

    if (ctx->cut) {
        return "length";
    }

    if (ctx->stream.tool_bytes) {
        return "tool_calls";
    }

    /* the pool stopped at the limit it was sent */
    if (ctx->reserved_out && out >= ctx->reserved_out) {
        return "length";
    }

    return "stop";
}


/*
 * The request's record, from its settlement (ngx_nebula_charge.c): in and
 * out are what it is charged, estimated how.  Written into the worker's
 * batch (the request's pool is being destroyed: its cleanup runs this).
 */
void
ngx_nebula_generation_record(ngx_nebula_ctx_t *ctx, uint64_t in,
    uint64_t out, ngx_uint_t estimated, ngx_uint_t cancelled)
{
    u_char                    *p, *doc, *last;
    ngx_msec_int_t             latency;
    ngx_time_t                *tp;
    const char                *finish;
    ngx_http_request_t        *r;
    ngx_nebula_generation_t   *rec;
    ngx_nebula_generations_t  *g = &ngx_nebula_generations;

    if (g->buf == NULL || ctx->request_id[0] == '\0') {
        /* records are not kept, or the worker could not make room */
        return;
    }

    /* the longest record: its fixed part and the model's name */
    if (g->used + 256 + ctx->model->name.len
        > NGX_NEBULA_GENERATION_BYTES)
    {
        ngx_nebula_generation_send(&g->tick);

        if (g->used + 256 + ctx->model->name.len
            > NGX_NEBULA_GENERATION_BYTES)
        {
            return;
        }
    }

    r = ctx->request;

    tp = ngx_timeofday();
    latency = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                                + (tp->msec - r->start_msec));
    latency = ngx_max(latency, 0);

    finish = ngx_nebula_generation_finish(r, ctx, out, cancelled);

    doc = g->buf + g->used;
    last = g->buf + NGX_NEBULA_GENERATION_BYTES;

    /*
     * A line of words, a fifth of the JSON it is shown as (Redis's work
     * is by the byte: it keeps a thousand an account): the time, the id,
     * the key's id, the API, the status, the finish reason ("-": none),
     * streamed, cancelled and estimated as digits, the tokens, the cost in
     * picodollars, the latency, the time to the first byte (-1: none),
     * and last the model, a name that may hold anything
     * (ngx_nebula_generation_parse())
     */
    p = ngx_slprintf(doc, last,
                     "%T %*s %s %V %ui %s %d%d%d %uL %uL %uL %M %i %V",
                     ngx_time(),
                     (size_t) NGX_NEBULA_GENERATION_ID_LEN, ctx->request_id,
                     ctx->key_id, &ctx->api->name, r->headers_out.status,
                     finish ? finish : "-",
                     ctx->stream.format != NEBULA_FORMAT_JSON
                     || (ctx->req && ctx->req->stream == 1),
                     cancelled ? 1 : 0, estimated ? 1 : 0,
                     in, out, ctx->cost, (ngx_msec_t) latency,
                     ctx->first_byte ? (ngx_int_t) ctx->ttft : -1,
                     &ctx->model->name);

    rec = &g->recs[g->n++];
    ngx_memcpy(rec->tag, ctx->tag, NGX_NEBULA_KEY_ID_LEN + 1);
    rec->doc = doc;
    rec->len = p - doc;
    rec->sent = 0;
    g->used = p - g->buf;

    if (g->n == NGX_NEBULA_GENERATION_BATCH) {
        ngx_nebula_generation_send(&g->tick);

    } else if (!g->tick.timer_set) {
        ngx_add_timer(&g->tick, NGX_NEBULA_GENERATION_WAIT);
    }
}


/*
 * The batch goes to Redis: for each key, LPUSH its records (newest
 * last, so first in the list); EXPIRE its list when this worker has not
 * for a quarter of the ttl, and LTRIM it when it has pushed
 * NGX_NEBULA_GENERATION_TRIM records there since.  A command Redis cannot
 * take now is lost.
 */
static void
ngx_nebula_generation_send(ngx_event_t *ev)
{
    int                           len;
    char                         *cmd;
    u_char                        name[NGX_NEBULA_KEY_ID_LEN + 16],
                                  ttl[NGX_TIME_T_LEN], keep[NGX_INT_T_LEN];
    size_t                        al[NGX_NEBULA_GENERATION_BATCH + 2];
    time_t                        now;
    ngx_str_t                     argv[4];
    ngx_uint_t                    i, j, c;
    const char                   *av[NGX_NEBULA_GENERATION_BATCH + 2];
    ngx_nebula_generation_t      *a, *b;
    ngx_nebula_generation_key_t  *k;
    ngx_nebula_generations_t     *g = &ngx_nebula_generations;

    if (g->tick.timer_set) {
        ngx_del_timer(&g->tick);
    }

    if (g->n == 0) {
        return;
    }

    now = ngx_time();

    argv[1].data = name;

    for (i = 0; i < g->n; i++) {
        a = &g->recs[i];

        if (a->sent) {
            continue;
        }

        argv[1].len = ngx_sprintf(name, "nb:{%s}:g", a->tag) - name;

        av[0] = "LPUSH";
        al[0] = 5;
        av[1] = (const char *) name;
        al[1] = argv[1].len;
        c = 2;

        for (j = i; j < g->n; j++) {
            b = &g->recs[j];

            if (!b->sent && ngx_strcmp(b->tag, a->tag) == 0) {
                av[c] = (const char *) b->doc;
                al[c] = b->len;
                c++;
                b->sent = 1;
            }
        }

        if (!ngx_nebula_redis_ready()) {
            break;
        }

        len = redisFormatCommandArgv(&cmd, (int) c, av, al);
        if (len <= 0) {
            break;
        }

        (void) ngx_nebula_redis_send(cmd, len, NGX_NEBULA_SCRIPT_N,
                                     ngx_nebula_generation_sent, NULL, 0);

        /* what this worker did to the list lately; another key's slot: new */
        k = &ngx_nebula_generation_keys[ngx_hash_key(a->tag,
                                                     NGX_NEBULA_KEY_ID_LEN)
                                        % NGX_NEBULA_GENERATION_KEYS];

        if (ngx_strcmp(k->tag, a->tag) != 0) {
            /*
             * Another key's slot, or none: what was done to this list is
             * not known, so it is done now (two busy keys that share a
             * slot trim and set their expiry at every batch, never never)
             */
            ngx_memcpy(k->tag, a->tag, NGX_NEBULA_KEY_ID_LEN + 1);
            k->expiry = 0;
            k->pushed = NGX_NEBULA_GENERATION_TRIM;
        }

        k->pushed += c - 2;

        if (now - k->expiry >= g->ttl / 4) {
            k->expiry = now;

            ngx_str_set(&argv[0], "EXPIRE");
            argv[2].data = ttl;
            argv[2].len = ngx_sprintf(ttl, "%T", g->ttl + g->ttl / 4 + 1)
                          - ttl;

            (void) ngx_nebula_redis_command(3, argv,
                                            ngx_nebula_generation_sent, NULL);
        }

        if (k->pushed >= NGX_NEBULA_GENERATION_TRIM) {
            k->pushed = 0;

            ngx_str_set(&argv[0], "LTRIM");
            argv[2].data = (u_char *) "0";
            argv[2].len = 1;
            argv[3].data = keep;
            argv[3].len = ngx_sprintf(keep, "%ui",
                                      (ngx_uint_t) NGX_NEBULA_GENERATION_KEEP
                                      - 1)
                          - keep;

            (void) ngx_nebula_redis_command(4, argv,
                                            ngx_nebula_generation_sent, NULL);
        }
    }

    g->n = 0;
    g->used = 0;
}


void
ngx_nebula_generation_init_worker(ngx_cycle_t *cycle, time_t ttl,
    ngx_uint_t redis)
{
    ngx_nebula_generations_t  *g = &ngx_nebula_generations;

    ngx_memzero(g, sizeof(ngx_nebula_generations_t));
    ngx_memzero(ngx_nebula_generation_keys,
                sizeof(ngx_nebula_generation_keys));

    if (ttl == 0 || !redis) {
        return;
    }

    g->buf = ngx_alloc(NGX_NEBULA_GENERATION_BYTES, cycle->log);
    if (g->buf == NULL) {
        return;
    }

    g->ttl = ttl;
    g->tick.handler = ngx_nebula_generation_send;
    g->tick.log = cycle->log;
    g->tick.data = g;

    /* records are no reason to keep a worker that shuts down */
    g->tick.cancelable = 1;
}


/* a worker that exits: its batch's memory goes (the batch is lost) */
void
ngx_nebula_generation_exit_worker(ngx_cycle_t *cycle)
{
    ngx_nebula_generations_t  *g = &ngx_nebula_generations;

    if (g->buf == NULL) {
        return;
    }

    if (g->tick.timer_set) {
        ngx_del_timer(&g->tick);
    }

    ngx_free(g->buf);
    g->buf = NULL;
}


static void
ngx_nebula_generation_sent(void *data, redisReply *reply)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "nebula: generation records were refused: %*s",
                      (size_t) reply->len, reply->str);
    }
}


/* GET /v1/generation?id=REQUEST: the caller's own request, as it went */
ngx_int_t
ngx_nebula_generation_handler(ngx_http_request_t *r)
{
    ngx_str_t                id;
    ngx_uint_t               i;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (nmcf->redis == NULL || nmcf->generation_ttl == 0) {
        return ngx_nebula_api_error(r, NGX_HTTP_NOT_FOUND, "not_found", NULL,
                                    "Generation records are not kept "
                                    "here.");
    }

    if (ngx_http_arg(r, (u_char *) "id", 2, &id) != NGX_OK || id.len == 0) {
        return ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST,
                                    "missing_required_parameter", "id",
                                    "Missing required parameter: 'id' (the "
                                    "x-request-id of a response).");
    }

    for (i = 0; i < id.len; i++) {
        if (!((id.data[i] >= '0' && id.data[i] <= '9')
              || (id.data[i] >= 'a' && id.data[i] <= 'f')))
        {
            break;
        }
    }

    if (id.len != NGX_NEBULA_GENERATION_ID_LEN || i != id.len) {
        return ngx_nebula_api_error(r, NGX_HTTP_BAD_REQUEST, "invalid_value",
                                    "id",
                                    "Invalid 'id': a generation id is the "
                                    "32 hex digits of a response's "
                                    "x-request-id.");
    }

    return ngx_nebula_own_key_lookup(r, ngx_nebula_generation_answer);
}


static ngx_int_t
ngx_nebula_generation_answer(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    u_char                  *p;
    ngx_int_t                rc;
    ngx_str_t                id, argv[3];
    ngx_nebula_main_conf_t  *nmcf;

    if (ngx_nebula_own_key_check(call, reply, &rc) != NGX_OK) {
        return rc;
    }

    nmcf = ngx_http_get_module_main_conf(call->r, ngx_http_nebula_module);

    (void) ngx_http_arg(call->r, (u_char *) "id", 2, &id);

    p = ngx_pnalloc(call->r->pool, NGX_NEBULA_KEY_ID_LEN + 16
                                   + NGX_NEBULA_GENERATION_ID_LEN + 16
                                   + NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * The account's list; how the record begins, its id and the caller's
     * key's (another key's request is not found); the oldest time it may
     * have
     */
    argv[0].data = p;
    p = ngx_sprintf(p, "nb:{%s}:g", call->tag);
    argv[0].len = p - argv[0].data;

    argv[1].data = p;
    p = ngx_sprintf(p, " %V %s ", &id, call->id);
    argv[1].len = p - argv[1].data;

    argv[2].data = p;
    p = ngx_sprintf(p, "%T", ngx_time() - nmcf->generation_ttl);
    argv[2].len = p - argv[2].data;

    call->answer = ngx_nebula_generation_found;

    return ngx_nebula_call_eval(call, NGX_NEBULA_SCRIPT_GEN_GET, 1, 3, argv);
}


/* the next word of a record's line, from *p; NULL at its end */
static u_char *
ngx_nebula_generation_word(u_char **p, u_char *last, size_t *len)
{
    u_char  *w;

    w = *p;

    while (*p < last && **p != ' ') {
        (*p)++;
    }

    *len = *p - w;

    if (*p < last) {
        (*p)++;
    }

    return *len ? w : NULL;
}


/*
 * A record's line into its words: NGX_OK; NGX_ERROR, it is none of ours.
 * The numbers go into the JSON as they are: digits only.
 */
ngx_int_t
ngx_nebula_generation_parse(u_char *p, size_t len,
    ngx_nebula_generation_line_t *g)
{
    u_char      *last;
    ngx_uint_t   i;

    last = p + len;

    for (i = 0; i < 12; i++) {
        g->w[i] = ngx_nebula_generation_word(&p, last, &g->n[i]);

        if (g->w[i] == NULL) {
            return NGX_ERROR;
        }
    }

    g->model.data = p;
    g->model.len = last - p;

    g->time = ngx_atotm(g->w[0], g->n[0]);
    g->latency = ngx_atoi(g->w[10], g->n[10]);
    /* -1: no byte was sent (NGX_ERROR is -1 too: checked apart) */
    g->none = (g->n[11] == 2 && g->w[11][0] == '-' && g->w[11][1] == '1');
    g->ttft = g->none ? 0 : ngx_atoi(g->w[11], g->n[11]);

    if (g->time == NGX_ERROR || g->n[6] != 3 || g->latency == NGX_ERROR
        || g->ttft == NGX_ERROR || g->model.len == 0
        || g->n[2] != NGX_NEBULA_KEY_ID_LEN
        || ngx_atoi(g->w[4], g->n[4]) == NGX_ERROR
        || ngx_atoof(g->w[7], g->n[7]) == NGX_ERROR
        || ngx_atoof(g->w[8], g->n[8]) == NGX_ERROR
        || ngx_atoof(g->w[9], g->n[9]) == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A record as OpenRouter's generation JSON (its closing brace left open
 * for what a listing adds)
 */
void
ngx_nebula_generation_write(ngx_nebula_json_t *j,
    ngx_nebula_generation_line_t *g)
{
    u_char    *p, iso[32];
    ngx_tm_t   tm;

    ngx_gmtime(g->time, &tm);
    p = ngx_sprintf(iso, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);

    ngx_nebula_json_lit(j, "{\"id\":");
    ngx_nebula_json_str(j, g->w[1], g->n[1]);
    ngx_nebula_json_lit(j, ",\"model\":");
    ngx_nebula_json_str(j, g->model.data, g->model.len);
    ngx_nebula_json_lit(j, ",\"api_type\":");
    ngx_nebula_json_str(j, g->w[3], g->n[3]);
    ngx_nebula_json_lit(j, ",\"created_at\":");
    ngx_nebula_json_str(j, iso, p - iso);
    ngx_nebula_json_lit(j, ",\"streamed\":");
    ngx_nebula_json_raw(j, g->w[6][0] == '1' ? "true" : "false",
                        g->w[6][0] == '1' ? 4 : 5);
    ngx_nebula_json_lit(j, ",\"cancelled\":");
    ngx_nebula_json_raw(j, g->w[6][1] == '1' ? "true" : "false",
                        g->w[6][1] == '1' ? 4 : 5);
    ngx_nebula_json_lit(j, ",\"status\":");
    ngx_nebula_json_raw(j, (char *) g->w[4], g->n[4]);
    ngx_nebula_json_lit(j, ",\"finish_reason\":");

    if (g->n[5] == 1 && g->w[5][0] == '-') {
        ngx_nebula_json_lit(j, "null");

    } else {
        ngx_nebula_json_str(j, g->w[5], g->n[5]);
    }

    ngx_nebula_json_lit(j, ",\"tokens_prompt\":");
    ngx_nebula_json_raw(j, (char *) g->w[7], g->n[7]);
    ngx_nebula_json_lit(j, ",\"tokens_completion\":");
    ngx_nebula_json_raw(j, (char *) g->w[8], g->n[8]);
    ngx_nebula_json_lit(j, ",\"usage_source\":");
    ngx_nebula_json_cstr(j, g->w[6][2] == '1' ? "estimated" : "reported");
    ngx_nebula_json_lit(j, ",\"total_cost\":");
    ngx_nebula_json_usd(j, (uint64_t) ngx_atoof(g->w[9], g->n[9]));
    ngx_nebula_json_lit(j, ",\"latency\":");
    ngx_nebula_json_int(j, g->latency);
    ngx_nebula_json_lit(j, ",\"time_to_first_token\":");

    if (!g->none) {
        ngx_nebula_json_int(j, g->ttft);
        ngx_nebula_json_lit(j, ",\"generation_time\":");
        ngx_nebula_json_int(j, ngx_max(g->latency - g->ttft, 0));

    } else {
        ngx_nebula_json_lit(j, "null,\"generation_time\":null");
    }
}


/* the record's line, shown as OpenRouter's JSON */
static ngx_int_t
ngx_nebula_generation_found(ngx_nebula_call_ctx_t *call, redisReply *reply)
{
    ngx_nebula_json_t             j;
    ngx_nebula_generation_line_t  g;

    if (reply->type == REDIS_REPLY_NIL) {
        return ngx_nebula_api_error(call->r, NGX_HTTP_NOT_FOUND,
                                    "generation_not_found", "id",
                                    "No generation with this id: it was "
                                    "made with another key, or has expired.");
    }

    if (reply->type != REDIS_REPLY_STRING
        || ngx_nebula_generation_parse((u_char *) reply->str, reply->len, &g)
           != NGX_OK)
    {
        return ngx_nebula_call_bad_reply(call->r, reply);
    }

    ngx_nebula_json_init(&j, call->r->pool);
    ngx_nebula_json_lit(&j, "{\"data\":");
    ngx_nebula_generation_write(&j, &g);
    ngx_nebula_json_lit(&j, "}}");

    return ngx_nebula_json_send(call->r, &j, NGX_HTTP_OK);
}
