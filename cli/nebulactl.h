/*
 * nebulactl: Nebula's admin API from a terminal.  What the commands
 * share: the gateway's address and token, one HTTP call, the JSON of its
 * answer, and the tables they print.
 */

#ifndef NEBULACTL_H
#define NEBULACTL_H

#include <stddef.h>
#include <yajl/yajl_tree.h>


/* exit codes (nebulactl.1, docs/nebulactl.md) */
#define NCTL_OK            0
#define NCTL_API_ERROR     1   /* the API refused: 4xx, 5xx */
#define NCTL_USAGE         2   /* a bad command line or configuration */
#define NCTL_UNREACHABLE   3   /* no answer: refused, timed out, not HTTP */
#define NCTL_AUTH          4   /* 401 or 403: the admin token */


typedef struct {
    const char  *url;          /* http://127.0.0.1:8080, no trailing / */
    const char  *token;
    long         timeout;      /* seconds */
    int          json;         /* --json: the answer as it came */
    int          csv;
} nctl_conf_t;


typedef struct {
    long         status;       /* 0: no HTTP answer */
    char        *body;         /* malloc()ed, NUL-terminated */
    size_t       len;
    double       seconds;      /* the whole exchange */
    char         error[256];   /* why there was no answer */
} nctl_reply_t;


/* the words after a command: "--name value" pairs and the rest */
typedef struct {
    int          argc;
    char       **argv;
    const char  *opt[16][2];   /* --name value */
    int          nopt;
    const char  *pos[8];       /* the words that are not options */
    int          npos;
} nctl_args_t;


/* nebulactl.c: what the commands share */
int nctl_usage(const char *why);
int nctl_split(int argc, char **argv, nctl_args_t *a, const char **known);
const char *nctl_opt(nctl_args_t *a, const char *name);
int nctl_request(nctl_conf_t *conf, const char *method, const char *path,
    const char *body, nctl_reply_t *reply);
int nctl_as_json(nctl_conf_t *conf, nctl_reply_t *reply);

/* nebulactl_watch.c */
int nctl_status(nctl_conf_t *conf);
int nctl_top(nctl_conf_t *conf, int argc, char **argv);

/* nebulactl_http.c */
int nctl_call(nctl_conf_t *conf, const char *method, const char *path,
    const char *body, nctl_reply_t *reply);
void nctl_reply_free(nctl_reply_t *reply);
int nctl_check(nctl_conf_t *conf, nctl_reply_t *reply);
char *nctl_escape(const char *s);

/* nebulactl_json.c */
yajl_val nctl_parse(nctl_reply_t *reply);
yajl_val nctl_get(yajl_val v, const char *path);
const char *nctl_str(yajl_val v, const char *path, const char *none);
char *nctl_num(yajl_val v, const char *path, char *buf, size_t size);
char *nctl_usd(yajl_val v, const char *path, char *buf, size_t size);
char *nctl_tokens(yajl_val v, const char *path, char *buf, size_t size);
char *nctl_json_string(const char *s);

/* a table: rows of cells, printed with columns as wide as they need */
typedef struct {
    int          ncols;
    const char **head;
    char       **cells;        /* ncols a row */
    int          nrows;
    int          cap;
} nctl_table_t;

void nctl_table_init(nctl_table_t *t, int ncols, const char **head);
void nctl_table_row(nctl_table_t *t, ...);
void nctl_table_print(nctl_table_t *t);
void nctl_table_free(nctl_table_t *t);

#endif /* NEBULACTL_H */
