/*
 * nebulactl: Nebula's admin API from a terminal, as kubectl or redis-cli
 * are to theirs.  Configured by flags, then NEBULA_URL and
 * NEBULA_ADMIN_TOKEN, then a file (~/.config/nebulactl.conf, or
 * --config): "url = ..." and "token = ..." lines.  Tables by default,
 * --json for scripts (the API's answer as it came).
 *
 *   nebulactl [--url URL] [--token TOKEN] [--config FILE] [--timeout S]
 *             [--json] COMMAND ...
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include "nebulactl.h"


#define NCTL_BODY_MAX  4096


static const char  *nctl_usage_text =
"usage: nebulactl [--url URL] [--token TOKEN] [--config FILE] [--timeout SECS]\n"
"                 [--json] COMMAND ...\n"
"\n"
"  status                               the gateway, Redis and each pool\n"
"  models | plans                       the catalog, the plans\n"
"  accounts list [--plan P] [--status S] [--name PART] [--limit N]\n"
"  accounts show|suspend|resume|revoke ID\n"
"  accounts create --name NAME --plan PLAN [--email E] [--key NAME]\n"
"  accounts update ID [--name NAME] [--email E] [--plan PLAN]\n"
"  keys list|show|revoke|suspend|resume [ID] [--account ID]\n"
"  keys create --name NAME (--plan PLAN | --account ID)\n"
"  keys update ID [--account ID] [--name NAME] [--plan PLAN] [--disabled true|false]\n"
"  usage [--period YYYY-MM] [--by account|key|model|day|plan] [--csv|--json]\n"
"  top [--interval SECS] [--count N]    requests, tokens and errors a model, live\n"
"\n"
"Environment: NEBULA_URL (http://127.0.0.1:8080), NEBULA_ADMIN_TOKEN.\n"
"Exit codes: 0 done, 1 the API refused, 2 bad usage, 3 gateway unreachable,\n"
"4 the admin token refused.  See nebulactl(1).\n";




int
nctl_usage(const char *why)
{
    if (why) {
        fprintf(stderr, "nebulactl: %s\n", why);
    }

    fputs(nctl_usage_text, why ? stderr : stdout);

    return NCTL_USAGE;
}


/* the words after the command: "--name value" pairs and the rest */
int
nctl_split(int argc, char **argv, nctl_args_t *a, const char **known)
{
    memset(a, 0, sizeof(*a));

    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0) {
            int ok = 0;

            for (const char **k = known; k && *k; k++) {
                if (strcmp(argv[i] + 2, *k) == 0) {
                    ok = 1;
                }
            }

            if (!ok || i + 1 >= argc || a->nopt == 16) {
                fprintf(stderr, "nebulactl: %s: %s\n", argv[i],
                        ok ? "needs a value" : "unknown option here");
                return -1;
            }

            a->opt[a->nopt][0] = argv[i] + 2;
            a->opt[a->nopt][1] = argv[++i];
            a->nopt++;

        } else if (a->npos < 8) {
            a->pos[a->npos++] = argv[i];

        } else {
            fprintf(stderr, "nebulactl: too many arguments\n");
            return -1;
        }
    }

    return 0;
}


const char *
nctl_opt(nctl_args_t *a, const char *name)
{
    for (int i = 0; i < a->nopt; i++) {
        if (strcmp(a->opt[i][0], name) == 0) {
            return a->opt[i][1];
        }
    }

    return NULL;
}


/* a call whose answer is checked: NCTL_OK with reply filled, or the code */
int
nctl_request(nctl_conf_t *conf, const char *method, const char *path,
    const char *body, nctl_reply_t *reply)
{
    int  rc;

    if (nctl_call(conf, method, path, body, reply) != 0) {
        fprintf(stderr, "nebulactl: cannot reach %s: %s\n", conf->url,
                reply->error);
        return NCTL_UNREACHABLE;
    }

    rc = nctl_check(conf, reply);
    if (rc != NCTL_OK) {
        nctl_reply_free(reply);
    }

    return rc;
}


/* prints the answer as it came (--json), or returns 0 to draw a table */
int
nctl_as_json(nctl_conf_t *conf, nctl_reply_t *reply)
{
    if (!conf->json) {
        return 0;
    }

    fputs(reply->body, stdout);
    if (reply->len && reply->body[reply->len - 1] != '\n') {
        putchar('\n');
    }

    return 1;
}


static int
nctl_simple(nctl_conf_t *conf, const char *method, const char *path,
    const char *body, void (*draw)(yajl_val v))
{
    int           rc;
    yajl_val      v;
    nctl_reply_t  reply;

    rc = nctl_request(conf, method, path, body, &reply);
    if (rc != NCTL_OK) {
        return rc;
    }

    if (!nctl_as_json(conf, &reply)) {
        v = nctl_parse(&reply);
        if (v == NULL) {
            fprintf(stderr, "nebulactl: the answer is not JSON\n");
            nctl_reply_free(&reply);
            return NCTL_API_ERROR;
        }
        draw(v);
        yajl_tree_free(v);
    }

    nctl_reply_free(&reply);
    return NCTL_OK;
}


/* ---- models, plans */

static void
nctl_draw_models(yajl_val v)
{
    char            c[32], in[32], out[32];
    nctl_table_t    t;
    yajl_val        data = nctl_get(v, "data");
    static const char *head[] = { "MODEL", "CONTEXT", "INPUT/1M", "OUTPUT/1M",
                                  "USE" };

    nctl_table_init(&t, 5, head);

    for (size_t i = 0; YAJL_IS_ARRAY(data) && i < data->u.array.len; i++) {
        yajl_val m = data->u.array.values[i];
        double pi = strtod(nctl_str(m, "pricing/prompt", "0"), NULL) * 1e6;
        double po = strtod(nctl_str(m, "pricing/completion", "0"), NULL) * 1e6;

        snprintf(in, sizeof(in), pi ? "$%.2f" : "free", pi);
        snprintf(out, sizeof(out), po ? "$%.2f" : "free", po);
        nctl_table_row(&t, nctl_str(m, "id", "?"),
                       nctl_tokens(m, "context_length", c, sizeof(c)), in, out,
                       nctl_str(m, "description", ""));
    }

    nctl_table_print(&t);
    nctl_table_free(&t);
}


static void
nctl_draw_plans(yajl_val v)
{
    char            p[32], in[32], out[32], rpm[32];
    nctl_table_t    t;
    yajl_val        data = nctl_get(v, "data");
    static const char *head[] = { "PLAN", "NAME", "PRICE/MO", "INPUT/MO",
                                  "OUTPUT/MO", "RPM", "MODELS" };

    nctl_table_init(&t, 7, head);

    for (size_t i = 0; YAJL_IS_ARRAY(data) && i < data->u.array.len; i++) {
        yajl_val pl = data->u.array.values[i];
        yajl_val models = nctl_get(pl, "models");
        char nm[16];

        snprintf(nm, sizeof(nm), "%zu",
                 YAJL_IS_ARRAY(models) ? models->u.array.len : 0);
        nctl_table_row(&t, nctl_str(pl, "id", "?"), nctl_str(pl, "name", ""),
                       nctl_usd(pl, "price_usd_monthly", p, sizeof(p)),
                       nctl_tokens(pl, "limits/input_tokens", in, sizeof(in)),
                       nctl_tokens(pl, "limits/output_tokens", out, sizeof(out)),
                       nctl_num(pl, "limits/requests_per_minute", rpm,
                                sizeof(rpm)),
                       nm);
    }

    nctl_table_print(&t);
    nctl_table_free(&t);
}


/* ---- accounts */

/*
 * Accounts and keys, as the admin API answers them: {"data": [...]},
 * {"data": {...}}, or the record itself; a secret made now (a management
 * key, a key) is printed once, after the table
 */
static void
nctl_draw_records(yajl_val v)
{
    char            in[32], out[32], cost[32], req[32];
    size_t          n;
    yajl_val        data, one[1], *rows, key;
    nctl_table_t    t;
    static const char *head[] = { "ID", "NAME", "PLAN", "STATUS", "REQUESTS",
                                  "INPUT", "OUTPUT", "COST" };

    data = nctl_get(v, "data");

    if (YAJL_IS_ARRAY(data)) {
        rows = data->u.array.values;
        n = data->u.array.len;

    } else {
        one[0] = YAJL_IS_OBJECT(data) ? data : v;
        rows = one;
        n = 1;
    }

    nctl_table_init(&t, 8, head);

    for (size_t i = 0; i < n; i++) {
        yajl_val r = rows[i];

        nctl_table_row(&t, nctl_str(r, "id", "?"), nctl_str(r, "name", ""),
                       nctl_str(r, "plan", "-"), nctl_str(r, "status", ""),
                       nctl_num(r, "usage/requests", req, sizeof(req)),
                       nctl_tokens(r, "usage/input_tokens", in, sizeof(in)),
                       nctl_tokens(r, "usage/output_tokens", out, sizeof(out)),
                       nctl_usd(r, "usage/cost_usd", cost, sizeof(cost)));
    }

    nctl_table_print(&t);
    nctl_table_free(&t);

    if (nctl_str(v, "management_key", NULL)) {
        printf("\nmanagement key (shown once): %s\n",
               nctl_str(v, "management_key", ""));
    }

    key = nctl_get(v, "key");

    if (YAJL_IS_STRING(key)) {
        printf("\nkey (shown once): %s\n", YAJL_GET_STRING(key));

    } else if (nctl_str(key, "key", NULL)) {
        printf("API key \"%s\" (shown once): %s\n", nctl_str(key, "name", ""),
               nctl_str(key, "key", ""));
    }
}


/* "key" and its value, as JSON, after a comma when not the first */
static void
nctl_field(char *body, size_t size, const char *key, const char *value,
    int raw)
{
    char    *s;
    size_t   len = strlen(body);

    s = raw ? strdup(value) : nctl_json_string(value);
    if (s == NULL) {
        return;
    }

    snprintf(body + len, size - len, "%s\"%s\":%s", len > 1 ? "," : "", key, s);
    free(s);
}


static int
nctl_accounts(nctl_conf_t *conf, int argc, char **argv)
{
    int           rc;
    char          path[512], body[NCTL_BODY_MAX], *id, *q;
    const char   *v, *verb;
    nctl_args_t   a;
    static const char *known[] = { "plan", "status", "name", "limit", "email",
                                   "key", NULL };

    if (argc < 1 || nctl_split(argc - 1, argv + 1, &a, known) != 0) {
        return nctl_usage(argc < 1 ? "accounts: which? list, show, create, "
                                     "update, suspend, resume, revoke" : NULL);
    }

    verb = argv[0];

    if (strcmp(verb, "list") && strcmp(verb, "create") && strcmp(verb, "show")
        && strcmp(verb, "update") && strcmp(verb, "suspend")
        && strcmp(verb, "resume") && strcmp(verb, "revoke")
        && strcmp(verb, "delete"))
    {
        return nctl_usage("accounts: unknown command");
    }

    if (strcmp(verb, "list") == 0) {
        strcpy(path, "/admin/accounts?limit=");
        v = nctl_opt(&a, "limit");
        q = nctl_escape(v ? v : "100");
        strcat(path, q);
        free(q);

        for (const char **k = (const char *[]) { "plan", "status", "name", NULL };
             *k; k++)
        {
            if ((v = nctl_opt(&a, *k)) != NULL) {
                q = nctl_escape(v);
                snprintf(path + strlen(path), sizeof(path) - strlen(path),
                         "&%s=%s", *k, q);
                free(q);
            }
        }

        return nctl_simple(conf, "GET", path, NULL, nctl_draw_records);
    }

    if (strcmp(verb, "create") == 0) {
        if (nctl_opt(&a, "plan") == NULL) {
            return nctl_usage("accounts create: --plan is required");
        }

        strcpy(body, "{");
        nctl_field(body, sizeof(body), "plan", nctl_opt(&a, "plan"), 0);
        if ((v = nctl_opt(&a, "name"))) nctl_field(body, sizeof(body), "name", v, 0);
        if ((v = nctl_opt(&a, "email"))) nctl_field(body, sizeof(body), "email", v, 0);
        if ((v = nctl_opt(&a, "key"))) {
            char *n = nctl_json_string(v), k[512];
            snprintf(k, sizeof(k), "{\"name\":%s}", n ? n : "\"\"");
            free(n);
            nctl_field(body, sizeof(body), "key", k, 1);
        }
        strcat(body, "}");

        return nctl_simple(conf, "POST", "/admin/accounts", body,
                           nctl_draw_records);
    }

    if (a.npos != 1) {
        return nctl_usage("accounts: an account's ID is needed");
    }

    id = nctl_escape(a.pos[0]);
    snprintf(path, sizeof(path), "/admin/accounts/%s", id);
    free(id);

    if (strcmp(verb, "show") == 0) {
        rc = nctl_simple(conf, "GET", path, NULL, nctl_draw_records);

    } else if (strcmp(verb, "update") == 0) {
        strcpy(body, "{");
        if ((v = nctl_opt(&a, "name"))) nctl_field(body, sizeof(body), "name", v, 0);
        if ((v = nctl_opt(&a, "email"))) nctl_field(body, sizeof(body), "email", v, 0);
        if ((v = nctl_opt(&a, "plan"))) nctl_field(body, sizeof(body), "plan", v, 0);
        strcat(body, "}");
        if (strcmp(body, "{}") == 0) {
            return nctl_usage("accounts update: nothing to change");
        }
        rc = nctl_simple(conf, "PATCH", path, body, nctl_draw_records);

    } else if (strcmp(verb, "suspend") == 0 || strcmp(verb, "resume") == 0) {
        strcat(path, "/");
        strcat(path, verb);
        rc = nctl_simple(conf, "POST", path, "{}", nctl_draw_records);

    } else if (strcmp(verb, "revoke") == 0 || strcmp(verb, "delete") == 0) {
        rc = nctl_simple(conf, "DELETE", path, NULL, nctl_draw_records);

    } else {
        return nctl_usage("accounts: unknown command");
    }

    return rc;
}


/* ---- keys: standalone (/admin/keys), or an account's */

static int
nctl_keys(nctl_conf_t *conf, int argc, char **argv)
{
    char          base[256], path[512], body[NCTL_BODY_MAX], *q;
    const char   *v, *verb, *account;
    nctl_args_t   a;
    static const char *known[] = { "account", "name", "plan", "disabled", NULL };

    if (argc < 1 || nctl_split(argc - 1, argv + 1, &a, known) != 0) {
        return nctl_usage(argc < 1 ? "keys: which? list, show, create, update, "
                                     "revoke" : NULL);
    }

    verb = argv[0];
    account = nctl_opt(&a, "account");

    if (strcmp(verb, "list") && strcmp(verb, "create") && strcmp(verb, "show")
        && strcmp(verb, "update") && strcmp(verb, "revoke")
        && strcmp(verb, "suspend") && strcmp(verb, "resume"))
    {
        return nctl_usage("keys: unknown command");
    }

    if (account) {
        q = nctl_escape(account);
        snprintf(base, sizeof(base), "/admin/accounts/%s/keys", q);
        free(q);
    } else {
        strcpy(base, "/admin/keys");
    }

    if (strcmp(verb, "list") == 0) {
        return nctl_simple(conf, "GET", base, NULL, nctl_draw_records);
    }

    if (strcmp(verb, "create") == 0) {
        if (account == NULL && nctl_opt(&a, "plan") == NULL) {
            return nctl_usage("keys create: --plan (a key of its own) or "
                              "--account (a key of an account)");
        }
        strcpy(body, "{");
        if ((v = nctl_opt(&a, "name"))) nctl_field(body, sizeof(body), "name", v, 0);
        if ((v = nctl_opt(&a, "plan"))) nctl_field(body, sizeof(body), "plan", v, 0);
        strcat(body, "}");
        return nctl_simple(conf, "POST", base, body, nctl_draw_records);
    }

    if (a.npos != 1) {
        return nctl_usage("keys: a key's ID is needed");
    }

    q = nctl_escape(a.pos[0]);
    snprintf(path, sizeof(path), "%s/%s", base, q);
    free(q);

    if (strcmp(verb, "show") == 0) {
        return nctl_simple(conf, "GET", path, NULL, nctl_draw_records);
    }

    if (strcmp(verb, "revoke") == 0) {
        return nctl_simple(conf, "DELETE", path, NULL, nctl_draw_records);
    }

    /* a key of an account is suspended by disabling it, and resumed */
    if (strcmp(verb, "suspend") == 0 || strcmp(verb, "resume") == 0) {
        if (account == NULL) {
            return nctl_usage("keys suspend|resume: for a key of an account "
                              "(--account); a key of its own is revoked");
        }

        return nctl_simple(conf, "PATCH", path,
                           verb[0] == 's' ? "{\"disabled\":true}"
                                          : "{\"disabled\":false}",
                           nctl_draw_records);
    }

    if (strcmp(verb, "update") == 0) {
        strcpy(body, "{");
        if ((v = nctl_opt(&a, "name"))) nctl_field(body, sizeof(body), "name", v, 0);
        if ((v = nctl_opt(&a, "plan"))) nctl_field(body, sizeof(body), "plan", v, 0);
        if ((v = nctl_opt(&a, "disabled"))) {
            if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
                return nctl_usage("keys update: --disabled is true or false");
            }
            if (account == NULL) {
                return nctl_usage("keys update: --disabled is for a key of an "
                                  "account (--account); a key of its own is "
                                  "revoked");
            }
            nctl_field(body, sizeof(body), "disabled", v, 1);
        }
        strcat(body, "}");
        if (strcmp(body, "{}") == 0) {
            return nctl_usage("keys update: nothing to change");
        }
        return nctl_simple(conf, "PATCH", path, body, nctl_draw_records);
    }

    return nctl_usage("keys: unknown command");
}


/* ---- usage */

static void
nctl_draw_usage(yajl_val v)
{
    char            in[32], out[32], cost[32], req[32];
    const char     *by = nctl_str(v, "group_by", "account");
    nctl_table_t    t;
    yajl_val        data = nctl_get(v, "data");
    static const char *head[] = { "WHAT", "NAME", "REQUESTS", "INPUT", "OUTPUT",
                                  "COST" };

    nctl_table_init(&t, 6, head);

    for (size_t i = 0; YAJL_IS_ARRAY(data) && i < data->u.array.len; i++) {
        yajl_val r = data->u.array.values[i];
        const char *what = nctl_str(r, by, NULL);

        if (what == NULL) {
            what = nctl_str(r, "date", "?");
        }

        nctl_table_row(&t, what, nctl_str(r, "name", ""),
                       nctl_num(r, "requests", req, sizeof(req)),
                       nctl_tokens(r, "input_tokens", in, sizeof(in)),
                       nctl_tokens(r, "output_tokens", out, sizeof(out)),
                       nctl_usd(r, "cost_usd", cost, sizeof(cost)));
    }

    nctl_table_row(&t, "total", "",
                   nctl_num(v, "total/requests", req, sizeof(req)),
                   nctl_tokens(v, "total/input_tokens", in, sizeof(in)),
                   nctl_tokens(v, "total/output_tokens", out, sizeof(out)),
                   nctl_usd(v, "total/cost_usd", cost, sizeof(cost)));

    printf("period %s, by %s\n", nctl_str(v, "period", "?"), by);
    nctl_table_print(&t);
    nctl_table_free(&t);
}


static int
nctl_usage_cmd(nctl_conf_t *conf, int argc, char **argv)
{
    int           rc;
    char          path[256], *q;
    const char   *by, *period;
    nctl_args_t   a;
    nctl_reply_t  reply;
    static const char *known[] = { "period", "by", NULL };

    /* --csv and --json take no value */
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--csv") == 0 || strcmp(argv[i], "--json") == 0) {
            if (argv[i][2] == 'c') conf->csv = 1; else conf->json = 1;
            memmove(argv + i, argv + i + 1, sizeof(char *) * (argc - i - 1));
            argc--;
            i--;
        }
    }

    if (nctl_split(argc, argv, &a, known) != 0 || a.npos) {
        return nctl_usage(a.npos ? "usage: unexpected argument" : NULL);
    }

    by = nctl_opt(&a, "by");
    period = nctl_opt(&a, "period");

    if (by && strcmp(by, "account") && strcmp(by, "key") && strcmp(by, "model")
        && strcmp(by, "day") && strcmp(by, "plan"))
    {
        return nctl_usage("usage: --by is account, key, model, day or plan");
    }

    q = nctl_escape(period ? period : "");
    snprintf(path, sizeof(path), "/admin/usage%s?group_by=%s%s%s",
             conf->csv ? ".csv" : "", by ? by : "account",
             period ? "&period=" : "", period ? q : "");
    free(q);

    if (!conf->csv) {
        return nctl_simple(conf, "GET", path, NULL, nctl_draw_usage);
    }

    rc = nctl_request(conf, "GET", path, NULL, &reply);
    if (rc == NCTL_OK) {
        fputs(reply.body, stdout);
        nctl_reply_free(&reply);
    }

    return rc;
}


/* ---- configuration */

static int
nctl_read_config(const char *file, int must, char **url, char **token)
{
    FILE  *f;
    char   line[1024], *k, *v, *e;

    f = fopen(file, "r");
    if (f == NULL) {
        if (must) {
            fprintf(stderr, "nebulactl: %s: %s\n", file, strerror(errno));
            return -1;
        }
        return 0;
    }

    while (fgets(line, sizeof(line), f)) {
        for (k = line; *k == ' ' || *k == '\t'; k++) { /* void */ }
        if (*k == '#' || *k == '\n' || *k == '\0') {
            continue;
        }

        v = strchr(k, '=');
        if (v == NULL) {
            fprintf(stderr, "nebulactl: %s: a line is not \"name = value\"\n",
                    file);
            fclose(f);
            return -1;
        }

        for (e = v; e > k && (e[-1] == ' ' || e[-1] == '\t'); e--) { /* void */ }
        *e = '\0';
        for (v++; *v == ' ' || *v == '\t'; v++) { /* void */ }
        for (e = v + strlen(v); e > v && (e[-1] == '\n' || e[-1] == ' '
                                          || e[-1] == '\r'); e--) { /* void */ }
        *e = '\0';

        if (strcmp(k, "url") == 0 && *url == NULL) {
            *url = strdup(v);
        } else if (strcmp(k, "token") == 0 && *token == NULL) {
            *token = strdup(v);
        } else if (strcmp(k, "url") != 0 && strcmp(k, "token") != 0) {
            fprintf(stderr, "nebulactl: %s: unknown setting \"%s\"\n", file, k);
            fclose(f);
            return -1;
        }
    }

    fclose(f);
    return 0;
}


int
main(int argc, char **argv)
{
    int           i, rc;
    char         *url, *token, *cfg, home[1024], *p;
    const char   *cmd;
    nctl_conf_t   conf;

    memset(&conf, 0, sizeof(conf));
    conf.timeout = 10;
    url = NULL;
    token = NULL;
    cfg = NULL;

    /* global options, before the command */
    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            conf.json = 1;
        } else if (strcmp(argv[i], "--help") == 0) {
            nctl_usage(NULL);
            return NCTL_OK;
        } else if (i + 1 < argc && strcmp(argv[i], "--url") == 0) {
            url = strdup(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--token") == 0) {
            token = strdup(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--config") == 0) {
            cfg = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--timeout") == 0) {
            conf.timeout = strtol(argv[++i], &p, 10);
            if (*p || conf.timeout <= 0) {
                return nctl_usage("--timeout is a number of seconds");
            }
        } else {
            fprintf(stderr, "nebulactl: %s: unknown option\n", argv[i]);
            return nctl_usage(NULL);
        }
    }

    if (i >= argc) {
        return nctl_usage("which command?");
    }

    /* flags, then the environment, then the file */
    if (url == NULL && getenv("NEBULA_URL") && *getenv("NEBULA_URL")) {
        url = strdup(getenv("NEBULA_URL"));
    }
    if (token == NULL && getenv("NEBULA_ADMIN_TOKEN") && *getenv("NEBULA_ADMIN_TOKEN")) {
        token = strdup(getenv("NEBULA_ADMIN_TOKEN"));
    }

    if (cfg) {
        if (nctl_read_config(cfg, 1, &url, &token) != 0) {
            return NCTL_USAGE;
        }
    } else if (getenv("HOME")) {
        snprintf(home, sizeof(home), "%s/.config/nebulactl.conf", getenv("HOME"));
        if (nctl_read_config(home, 0, &url, &token) != 0) {
            return NCTL_USAGE;
        }
    }

    if (url == NULL) {
        url = strdup("http://127.0.0.1:8080");
    }

    for (p = url + strlen(url); p > url && p[-1] == '/'; p--) {
        p[-1] = '\0';
    }

    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        return nctl_usage("the URL is http://HOST[:PORT] or https://...");
    }

    conf.url = url;
    conf.token = token;

    curl_global_init(CURL_GLOBAL_DEFAULT);

    cmd = argv[i++];

    if (strcmp(cmd, "status") == 0) {
        rc = nctl_status(&conf);
    } else if (strcmp(cmd, "models") == 0) {
        rc = nctl_simple(&conf, "GET", "/v1/models", NULL, nctl_draw_models);
    } else if (strcmp(cmd, "plans") == 0) {
        rc = nctl_simple(&conf, "GET", "/v1/plans", NULL, nctl_draw_plans);
    } else if (strcmp(cmd, "accounts") == 0) {
        rc = nctl_accounts(&conf, argc - i, argv + i);
    } else if (strcmp(cmd, "keys") == 0) {
        rc = nctl_keys(&conf, argc - i, argv + i);
    } else if (strcmp(cmd, "usage") == 0) {
        rc = nctl_usage_cmd(&conf, argc - i, argv + i);
    } else if (strcmp(cmd, "top") == 0) {
        rc = nctl_top(&conf, argc - i, argv + i);
    } else if (strcmp(cmd, "help") == 0) {
        nctl_usage(NULL);
        rc = NCTL_OK;
    } else {
        fprintf(stderr, "nebulactl: %s: unknown command\n", cmd);
        rc = nctl_usage(NULL);
    }

    curl_global_cleanup();
    free(url);
    free(token);

    return rc;
}
