/*
 * A pool's answer to /api/show made the catalog's (nebula_show.c): the
 * upstream's name put right in every string, model_info's context_length
 * the catalog's, the rest as it was; what is no answer refused.
 */

#include <stdlib.h>
#include <string.h>

#include "nebula_show.h"
#include "tap.h"


static nebula_show_t  show = {
    (const unsigned char *) "qwen3-coder:30b", 15,
    (const unsigned char *) "qwen/qwen3-coder:free", 21,
    32768
};


static unsigned char *
alloc(void *data, size_t size)
{
    (void) data;
    return malloc(size);
}


static int
rewrite(const char *in, char **out)
{
    size_t          len;
    unsigned char  *o;
    int             rc;

    rc = nebula_show_rewrite(&show, (const unsigned char *) in, strlen(in),
                             alloc, NULL, &o, &len);
    *out = NULL;

    if (rc == 0) {
        *out = malloc(len + 1);
        memcpy(*out, o, len);
        (*out)[len] = '\0';
        free(o);
    }

    return rc;
}


static void
is_rewritten(const char *in, const char *want, const char *name)
{
    char  *out;

    is_int(rewrite(in, &out), 0, "%s: rewritten", name);
    is_str(out ? out : "", want, "%s", name);
    free(out);
}


static void
is_refused(const char *in, const char *name)
{
    char  *out;

    is_int(rewrite(in, &out), -1, "%s: refused", name);
    ok(out == NULL, "%s: nothing out", name);
}


int
main(void)
{
    char    deep[400];
    size_t  i;

    is_rewritten("{\"modelfile\":\"# FROM qwen3-coder:30b\\nFROM /blobs/x\","
                 "\"model_info\":{\"general.architecture\":\"qwen3moe\","
                 "\"qwen3moe.context_length\":262144,"
                 "\"qwen3moe.embedding_length\":2048},"
                 "\"capabilities\":[\"completion\",\"tools\"]}",
                 "{\"modelfile\":\"# FROM qwen/qwen3-coder:free\\nFROM "
                 "/blobs/x\",\"model_info\":{\"general.architecture\":"
                 "\"qwen3moe\",\"qwen3moe.context_length\":32768,"
                 "\"qwen3moe.embedding_length\":2048},\"capabilities\":"
                 "[\"completion\",\"tools\"]}\n",
                 "the Modelfile's name and the context");

    is_rewritten("{\"a\":\"qwen3-coder:30bqwen3-coder:30b x qwen3-coder:30\"}",
                 "{\"a\":\"qwen/qwen3-coder:freeqwen/qwen3-coder:free x "
                 "qwen3-coder:30\"}\n",
                 "every occurrence, and no part of one");

    is_rewritten("{\"context_length\":5,\"x\":{\"y.context_length\":7},"
                 "\"model_info\":{\"n\":{\"z.context_length\":9}}}",
                 "{\"context_length\":5,\"x\":{\"y.context_length\":7},"
                 "\"model_info\":{\"n\":{\"z.context_length\":9}}}\n",
                 "a context_length elsewhere stays");

    is_rewritten("{\"model_info\":{\"a.context_length\":\"big\"},"
                 "\"n\":1.5e3,\"t\":true,\"f\":false,\"z\":null}",
                 "{\"model_info\":{\"a.context_length\":\"big\"},"
                 "\"n\":1.5e3,\"t\":true,\"f\":false,\"z\":null}\n",
                 "a context_length not a number stays; numbers as written");

    is_rewritten("{\"s\":\"caf\\u00e9 \\\"q\\\" \\\\ /\"}",
                 "{\"s\":\"caf\xc3\xa9 \\\"q\\\" \\\\ /\"}\n",
                 "escapes kept valid");

    is_refused("[1,2]", "an array");
    is_refused("\"x\"", "a string");
    is_refused("{\"a\":", "cut short");
    is_refused("{\"a\":1}{\"b\":2}", "two documents");
    is_refused("", "nothing");
    is_refused("{\"a\":\"\xff\"}", "invalid UTF-8");

    memset(deep, '[', sizeof(deep));
    deep[0] = '{';
    deep[1] = '"';
    deep[2] = 'a';
    deep[3] = '"';
    deep[4] = ':';
    for (i = 5; i < 200; i++) {
        deep[i] = '[';
    }
    deep[200] = '\0';
    is_refused(deep, "nested 196 deep");

    return done_testing();
}
