/*
 * nebulactl: watching a gateway.  "status": the gateway, its Redis and
 * each pool's servers (GET /admin/health), with round trips; "top": the
 * Prometheus metrics read again and again, as requests, errors and
 * tokens a second per model.
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nebulactl.h"


/* ---- status: the gateway, Redis, the pools */

int
nctl_status(nctl_conf_t *conf)
{
    int           rc;
    char          ms[32];
    yajl_val      v, pools;
    nctl_reply_t  reply;
    nctl_table_t  t;
    static const char *head[] = { "PART", "STATE", "ROUND TRIP", "DETAIL" };

    rc = nctl_request(conf, "GET", "/admin/health", NULL, &reply);
    if (rc != NCTL_OK) {
        return rc;
    }

    if (nctl_as_json(conf, &reply)) {
        nctl_reply_free(&reply);
        return NCTL_OK;
    }

    v = nctl_parse(&reply);
    nctl_table_init(&t, 4, head);

    snprintf(ms, sizeof(ms), "%.1f ms", reply.seconds * 1000);
    nctl_table_row(&t, "gateway", nctl_str(v, "status", "?"), ms, conf->url);

    nctl_num(v, "redis/round_trip_ms", ms, sizeof(ms));
    if (strcmp(ms, "-") != 0) {
        strcat(ms, " ms");
    }
    nctl_table_row(&t, "redis", nctl_str(v, "redis/state", "?"), ms,
                   nctl_str(v, "redis/address", ""));

    pools = nctl_get(v, "pools");
    for (size_t i = 0; YAJL_IS_ARRAY(pools) && i < pools->u.array.len; i++) {
        yajl_val p = pools->u.array.values[i];
        yajl_val servers = nctl_get(p, "servers");
        char part[160], up[64];

        snprintf(up, sizeof(up), "%s of %zu servers up",
                 nctl_num(p, "servers_up", ms, sizeof(ms)),
                 YAJL_IS_ARRAY(servers) ? servers->u.array.len : 0);
        snprintf(part, sizeof(part), "pool %s", nctl_str(p, "name", "?"));
        nctl_table_row(&t, part, up, "-", nctl_str(p, "scheme", ""));

        for (size_t s = 0; YAJL_IS_ARRAY(servers) && s < servers->u.array.len; s++) {
            yajl_val sv = servers->u.array.values[s];
            char fails[64];

            snprintf(part, sizeof(part), "  %s", nctl_str(sv, "address", "?"));
            snprintf(fails, sizeof(fails), "%s failures",
                     nctl_num(sv, "fails", ms, sizeof(ms)));
            nctl_table_row(&t, part, nctl_str(sv, "state", "?"), "-", fails);
        }
    }

    nctl_table_print(&t);
    nctl_table_free(&t);

    rc = strcmp(nctl_str(v, "status", ""), "unavailable") == 0
         ? NCTL_API_ERROR : NCTL_OK;

    yajl_tree_free(v);
    nctl_reply_free(&reply);

    return rc;
}


/* ---- top: the metrics endpoint, read twice, the difference a model */

#define NCTL_TOP_MODELS  64

typedef struct {
    char    model[128];
    double  requests, errors, input, output;
} nctl_top_row_t;


static int
nctl_top_read(nctl_conf_t *conf, nctl_top_row_t *rows, int *n)
{
    int           rc;
    char         *line, *save, model[128];
    double        value;
    nctl_reply_t  reply;

    rc = nctl_request(conf, "GET", "/metrics", NULL, &reply);
    if (rc != NCTL_OK) {
        return rc;
    }

    *n = 0;

    for (line = strtok_r(reply.body, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save))
    {
        char *m, *sp;
        int   kind, i;

        if (strncmp(line, "nebula_requests_total{", 22) == 0) {
            kind = 0;
        } else if (strncmp(line, "nebula_input_tokens_total{", 26) == 0) {
            kind = 1;
        } else if (strncmp(line, "nebula_output_tokens_total{", 27) == 0) {
            kind = 2;
        } else {
            continue;
        }

        m = strstr(line, "model=\"");
        sp = strrchr(line, ' ');
        if (m == NULL || sp == NULL) {
            continue;
        }

        m += 7;
        for (i = 0; m[i] && m[i] != '"' && i < 127; i++) {
            model[i] = m[i];
        }
        model[i] = '\0';
        value = strtod(sp + 1, NULL);

        for (i = 0; i < *n && strcmp(rows[i].model, model) != 0; i++) {
            /* void */
        }

        if (i == *n) {
            if (*n == NCTL_TOP_MODELS) {
                continue;
            }
            memset(&rows[i], 0, sizeof(rows[i]));
            strcpy(rows[i].model, model);
            (*n)++;
        }

        if (kind == 0) {
            rows[i].requests += value;
            /* a status of 4xx or 5xx is an error */
            if (strstr(line, "status=\"4") || strstr(line, "status=\"5")) {
                rows[i].errors += value;
            }
        } else if (kind == 1) {
            rows[i].input += value;
        } else {
            rows[i].output += value;
        }
    }

    nctl_reply_free(&reply);
    return NCTL_OK;
}


static volatile sig_atomic_t  nctl_stop;

static void
nctl_on_int(int sig)
{
    (void) sig;
    nctl_stop = 1;
}


int
nctl_top(nctl_conf_t *conf, int argc, char **argv)
{
    int             rc, n0, n1, count, iter;
    double          interval;
    nctl_args_t     a;
    nctl_table_t    t;
    nctl_top_row_t  before[NCTL_TOP_MODELS], now[NCTL_TOP_MODELS];
    static const char *known[] = { "interval", "count", NULL };
    static const char *head[] = { "MODEL", "REQ/S", "ERR/S", "IN TOK/S",
                                  "OUT TOK/S" };

    if (nctl_split(argc, argv, &a, known) != 0 || a.npos) {
        return nctl_usage(a.npos ? "top: unexpected argument" : NULL);
    }

    interval = nctl_opt(&a, "interval") ? atof(nctl_opt(&a, "interval")) : 2;
    count = nctl_opt(&a, "count") ? atoi(nctl_opt(&a, "count")) : 0;

    if (interval <= 0 || count < 0) {
        return nctl_usage("top: --interval is seconds, --count a number");
    }

    signal(SIGINT, nctl_on_int);

    rc = nctl_top_read(conf, before, &n0);
    if (rc != NCTL_OK) {
        return rc;
    }

    for (iter = 0; !nctl_stop && (count == 0 || iter < count); iter++) {
        struct timespec ts = { (time_t) interval,
                               (long) ((interval - (time_t) interval) * 1e9) };

        while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !nctl_stop) {
            /* void */
        }

        if (nctl_stop) {
            break;
        }

        rc = nctl_top_read(conf, now, &n1);
        if (rc != NCTL_OK) {
            return rc;
        }

        nctl_table_init(&t, 5, head);

        for (int i = 0; i < n1; i++) {
            nctl_top_row_t  z, *b = &z;
            char r[32], e[32], in[32], out[32];

            memset(&z, 0, sizeof(z));
            for (int j = 0; j < n0; j++) {
                if (strcmp(before[j].model, now[i].model) == 0) {
                    b = &before[j];
                }
            }

            snprintf(r, sizeof(r), "%.1f", (now[i].requests - b->requests) / interval);
            snprintf(e, sizeof(e), "%.1f", (now[i].errors - b->errors) / interval);
            snprintf(in, sizeof(in), "%.0f", (now[i].input - b->input) / interval);
            snprintf(out, sizeof(out), "%.0f", (now[i].output - b->output) / interval);
            nctl_table_row(&t, now[i].model[0] ? now[i].model : "(none)", r, e,
                           in, out);
        }

        if (isatty(STDOUT_FILENO) && count != 1) {
            fputs("\033[H\033[2J", stdout);
        }

        printf("%s, every %.3g s\n", conf->url, interval);
        nctl_table_print(&t);
        nctl_table_free(&t);
        fflush(stdout);

        memcpy(before, now, sizeof(now));
        n0 = n1;
    }

    return NCTL_OK;
}
