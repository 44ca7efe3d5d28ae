/*
 * nebulactl: reading the API's JSON (yajl's tree), the numbers as people
 * read them, and tables.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nebulactl.h"


yajl_val
nctl_parse(nctl_reply_t *reply)
{
    char  err[128];

    return yajl_tree_parse(reply->body ? reply->body : "", err, sizeof(err));
}


/* "data/usage/cost_usd": a path of object keys, '/' between them */
yajl_val
nctl_get(yajl_val v, const char *path)
{
    char         buf[256], *p, *parts[16];
    const char  *keys[17];
    int          n;

    if (v == NULL || strlen(path) >= sizeof(buf)) {
        return NULL;
    }

    strcpy(buf, path);
    n = 0;

    for (p = strtok(buf, "/"); p && n < 16; p = strtok(NULL, "/")) {
        parts[n++] = p;
    }

    for (int i = 0; i < n; i++) {
        keys[i] = parts[i];
    }

    keys[n] = NULL;

    return yajl_tree_get(v, keys, yajl_t_any);
}


const char *
nctl_str(yajl_val v, const char *path, const char *none)
{
    yajl_val  s = nctl_get(v, path);

    return YAJL_IS_STRING(s) ? YAJL_GET_STRING(s) : none;
}


/* a number as written in the JSON; "-" for null or none */
char *
nctl_num(yajl_val v, const char *path, char *buf, size_t size)
{
    yajl_val  n = nctl_get(v, path);

    snprintf(buf, size, "%s", YAJL_IS_NUMBER(n) ? YAJL_GET_NUMBER(n) : "-");
    return buf;
}


/* the number at path: 1, or 0 with "-" written for null or none */
static int
nctl_double(yajl_val v, const char *path, double *d, char *buf, size_t size)
{
    yajl_val  n = nctl_get(v, path);

    if (!YAJL_IS_NUMBER(n)) {
        snprintf(buf, size, "-");
        return 0;
    }

    *d = strtod(YAJL_GET_NUMBER(n), NULL);
    return 1;
}


/* $0.0042, $12.50 */
char *
nctl_usd(yajl_val v, const char *path, char *buf, size_t size)
{
    double  d;

    if (!nctl_double(v, path, &d, buf, size)) {
        return buf;
    }

    if (d == 0) {
        snprintf(buf, size, "$0");
    } else if (d >= 0.01) {
        snprintf(buf, size, "$%.2f", d);
    } else {
        snprintf(buf, size, "$%.2g", d);
        /* %g may write 8.4e-06: a person reads $0.0000084 */
        if (strchr(buf, 'e')) {
            snprintf(buf, size, "$%.10f", d);
            for (char *p = buf + strlen(buf) - 1; *p == '0'; p--) {
                *p = '\0';
            }
        }
    }

    return buf;
}


/* 1.2M, 20K, 999 */
char *
nctl_tokens(yajl_val v, const char *path, char *buf, size_t size)
{
    double  d;

    if (!nctl_double(v, path, &d, buf, size)) {
        return buf;
    }

    if (d >= 1e9) {
        snprintf(buf, size, "%.3gB", d / 1e9);
    } else if (d >= 1e6) {
        snprintf(buf, size, "%.3gM", d / 1e6);
    } else if (d >= 1e3) {
        snprintf(buf, size, "%.3gK", d / 1e3);
    } else {
        snprintf(buf, size, "%.0f", d);
    }

    return buf;
}


/* a JSON string literal of s (malloc()ed), for request bodies */
char *
nctl_json_string(const char *s)
{
    char  *out, *p;

    out = malloc(strlen(s) * 6 + 3);
    if (out == NULL) {
        return NULL;
    }

    p = out;
    *p++ = '"';

    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;

        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char) c;
        } else if (c < 0x20) {
            p += sprintf(p, "\\u%04x", c);
        } else {
            *p++ = (char) c;
        }
    }

    *p++ = '"';
    *p = '\0';

    return out;
}


void
nctl_table_init(nctl_table_t *t, int ncols, const char **head)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    t->head = head;
}


/* ncols strings (copied); a control character in one is shown as '?' */
void
nctl_table_row(nctl_table_t *t, ...)
{
    va_list      ap;
    const char  *s;
    char        *c;

    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, sizeof(char *) * t->cap * t->ncols);
        if (t->cells == NULL) {
            fprintf(stderr, "nebulactl: out of memory\n");
            exit(1);
        }
    }

    va_start(ap, t);

    for (int i = 0; i < t->ncols; i++) {
        s = va_arg(ap, const char *);
        c = strdup(s ? s : "");
        for (char *p = c; p && *p; p++) {
            /* a name is user input: no escape sequence reaches the terminal */
            if ((unsigned char) *p < 0x20 || *p == 0x7f) {
                *p = '?';
            }
        }
        t->cells[t->nrows * t->ncols + i] = c;
    }

    va_end(ap);
    t->nrows++;
}


static int
nctl_width(const char *s)
{
    int  w = 0;

    /* characters, not bytes: UTF-8 continuation bytes take no column */
    for (; *s; s++) {
        if (((unsigned char) *s & 0xc0) != 0x80) {
            w++;
        }
    }

    return w;
}


void
nctl_table_print(nctl_table_t *t)
{
    int  w[32];

    for (int i = 0; i < t->ncols && i < 32; i++) {
        w[i] = nctl_width(t->head[i]);
        for (int r = 0; r < t->nrows; r++) {
            int cw = nctl_width(t->cells[r * t->ncols + i]);
            if (cw > w[i]) {
                w[i] = cw;
            }
        }
    }

    for (int r = -1; r < t->nrows; r++) {
        for (int i = 0; i < t->ncols; i++) {
            const char *s = r < 0 ? t->head[i] : t->cells[r * t->ncols + i];
            int last = (i == t->ncols - 1);
            fputs(s, stdout);
            if (!last) {
                for (int pad = nctl_width(s); pad < w[i] + 2; pad++) {
                    putchar(' ');
                }
            }
        }
        putchar('\n');
    }
}


void
nctl_table_free(nctl_table_t *t)
{
    for (int i = 0; i < t->nrows * t->ncols; i++) {
        free(t->cells[i]);
    }

    free(t->cells);
    t->cells = NULL;
}
