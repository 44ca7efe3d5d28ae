/*
 * nebulactl: one HTTP call to the gateway with libcurl, and what its
 * answer means for the exit code.  An API error is printed as one line:
 * the status and the message of OpenAI's error shape.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include "nebulactl.h"


static size_t
nctl_write(char *data, size_t size, size_t n, void *user)
{
    nctl_reply_t  *reply = user;
    char          *p;
    size_t         len;

    len = size * n;

    p = realloc(reply->body, reply->len + len + 1);
    if (p == NULL) {
        return 0;
    }

    memcpy(p + reply->len, data, len);
    reply->len += len;
    p[reply->len] = '\0';
    reply->body = p;

    return len;
}


/* 0: an HTTP answer came (any status); -1: none, reply->error says why */
int
nctl_call(nctl_conf_t *conf, const char *method, const char *path,
    const char *body, nctl_reply_t *reply)
{
    int                 rc;
    char               *url, *auth;
    CURL               *curl;
    CURLcode            res;
    struct curl_slist  *headers;

    memset(reply, 0, sizeof(*reply));

    curl = curl_easy_init();
    url = malloc(strlen(conf->url) + strlen(path) + 1);
    auth = malloc(strlen(conf->token ? conf->token : "") + 32);
    if (curl == NULL || url == NULL || auth == NULL) {
        snprintf(reply->error, sizeof(reply->error), "out of memory");
        free(url);
        free(auth);
        if (curl) {
            curl_easy_cleanup(curl);
        }
        return -1;
    }

    sprintf(url, "%s%s", conf->url, path);

    headers = NULL;
    if (conf->token && conf->token[0]) {
        sprintf(auth, "Authorization: Bearer %s", conf->token);
        headers = curl_slist_append(headers, auth);
    }

    if (body) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, nctl_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, reply);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, conf->timeout);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, conf->timeout);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "nebulactl/1");
    /* the token goes to the gateway alone, never to where it redirects */
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);

    res = curl_easy_perform(curl);

    if (res == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
        curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &reply->seconds);
        if (reply->body == NULL) {
            reply->body = calloc(1, 1);
        }
        rc = 0;

    } else {
        snprintf(reply->error, sizeof(reply->error), "%s",
                 curl_easy_strerror(res));
        rc = -1;
    }

    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    free(url);
    free(auth);

    return rc;
}


void
nctl_reply_free(nctl_reply_t *reply)
{
    free(reply->body);
    reply->body = NULL;
}


/*
 * NCTL_OK for a 2xx; otherwise one line on stderr and the exit code:
 * "nebulactl: 401 invalid_api_key: Incorrect admin token."
 */
int
nctl_check(nctl_conf_t *conf, nctl_reply_t *reply)
{
    yajl_val     v;
    const char  *code, *message;

    if (reply->status >= 200 && reply->status < 300) {
        return NCTL_OK;
    }

    v = yajl_tree_parse(reply->body ? reply->body : "", NULL, 0);
    code = nctl_str(v, "error/code", "");
    message = nctl_str(v, "error/message", NULL);

    if (message == NULL) {
        message = YAJL_GET_STRING(nctl_get(v, "error"));
    }

    fprintf(stderr, "nebulactl: %ld%s%s: %s\n", reply->status,
            code[0] ? " " : "", code,
            message ? message : "the gateway answered without an error "
                                "message (is NEBULA_URL a Nebula?)");

    if (reply->status == 401 || reply->status == 403) {
        if (reply->status == 401 && conf->token == NULL) {
            fprintf(stderr, "nebulactl: no admin token: set NEBULA_ADMIN_TOKEN "
                            "or --token\n");
        }
        yajl_tree_free(v);
        return NCTL_AUTH;
    }

    yajl_tree_free(v);
    return NCTL_API_ERROR;
}


/* a value for a URL's query or path, percent-encoded (malloc()ed) */
char *
nctl_escape(const char *s)
{
    char       *out, *p;
    const char *hex = "0123456789ABCDEF";

    out = malloc(strlen(s) * 3 + 1);
    if (out == NULL) {
        return NULL;
    }

    for (p = out; *s; s++) {
        unsigned char c = (unsigned char) *s;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
            || c == '~')
        {
            *p++ = (char) c;

        } else {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }

    *p = '\0';
    return out;
}
