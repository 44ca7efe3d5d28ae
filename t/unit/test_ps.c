/*
 * A pool's answer to /api/ps made the catalog's (nebula_ps.c): the entries
 * that run a catalog model, once per public name, named so and with the
 * catalog's context, every other field as it was; the others left out;
 * what is no answer refused.
 */

#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "nebula_ps.h"
#include "tap.h"


#define U(s)  (const unsigned char *) s, sizeof(s) - 1

static nebula_ps_model_t  catalog[] = {
    { U("qwen3"), U("acme/qwen"), 32768 },
    { U("qwen3"), U("acme/qwen-long"), 131072 },
    { U("llama3.2:3b"), U("llama"), 8192 },
    { U("reg.io:5000/lib/phi"), U("phi"), 4096 },
    { U("odd"), U("say \"hi\""), 1 }
};

static int  fail_alloc;


static unsigned char *
alloc(void *data, size_t size)
{
    (void) data;
    return fail_alloc ? NULL : malloc(size);
}


static int
filter(size_t n, const char *in, char **out, size_t *count)
{
    int             rc;
    size_t          len;
    unsigned char  *o;

    *count = 99;
    rc = nebula_ps_filter(catalog, n, (const unsigned char *) in, strlen(in),
                          alloc, NULL, &o, &len, count);
    *out = malloc(len + 1);
    memcpy(*out, o ? (char *) o : "", len);
    (*out)[len] = '\0';
    free(o);

    return rc;
}


static void
is_filtered(const char *in, const char *want, size_t want_count,
    const char *name)
{
    char    *out;
    size_t   count;

    is_int(filter(5, in, &out, &count), 0, "%s: filtered", name);
    is_str(out, want, "%s", name);
    is_int(count, want_count, "%s: count", name);
    free(out);
}


static void
is_refused(const char *in, const char *name)
{
    char    *out;
    size_t   count;

    is_int(filter(5, in, &out, &count), -1, "%s: refused", name);
    is_str(out, "", "%s: nothing out", name);
    is_int(count, 0, "%s: none counted", name);
    free(out);
}


/* {"models":[ ... ]} around what came out, as the gateway sends it */
static yajl_val
wrapped(const char *out)
{
    char      err[128], *doc;
    size_t    len;
    yajl_val  v;

    len = strlen(out);
    doc = malloc(len + 16);
    memcpy(doc, "{\"models\":[", 11);
    memcpy(doc + 11, out, len);
    memcpy(doc + 11 + len, "]}", 3);

    v = yajl_tree_parse(doc, err, sizeof(err));
    free(doc);

    return v;
}


/* the string at v's path a (then b), or "" */
static const char *
str(yajl_val v, const char *a, const char *b)
{
    const char  *path[] = { a, b, NULL };

    v = yajl_tree_get(v, path, yajl_t_string);

    return v ? YAJL_GET_STRING(v) : "";
}


static void
nested(char *buf, const char *head, unsigned arrays, const char *tail)
{
    char  *p;

    p = buf + strlen(strcpy(buf, head));
    memset(p, '[', arrays);
    memset(p + arrays, ']', arrays);
    strcpy(p + 2 * arrays, tail);
}


int
main(void)
{
    char           *out, deep[256], want[2048];
    size_t          i, count;
    yajl_val        v, list, e;
    const char     *context_path[] = { "context_length", NULL };
    const char     *models_path[] = { "models", NULL };

    static const char  ollama[] =
        "{\"models\":[{\"name\":\"qwen3:latest\",\"model\":\"qwen3:latest\","
        "\"size\":6654289920,\"digest\":\"a3de86cd\",\"details\":"
        "{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"qwen3\","
        "\"families\":[\"qwen3\"],\"parameter_size\":\"8.2B\","
        "\"quantization_level\":\"Q4_K_M\"},\"expires_at\":"
        "\"2026-12-04T14:35:52.181126523Z\",\"size_vram\":6654289920,"
        "\"context_length\":4096},"
        "{\"name\":\"secret:70b\",\"model\":\"secret:70b\",\"size\":1,"
        "\"context_length\":4096},"
        "{\"name\":\"llama3.2:3b\",\"model\":\"llama3.2:3b\",\"size\":2,"
        "\"details\":{\"family\":\"llama\"},\"size_vram\":0}]}";

    static const char  qwen_rest[] =
        "\"size\":6654289920,\"digest\":\"a3de86cd\",\"details\":"
        "{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"qwen3\","
        "\"families\":[\"qwen3\"],\"parameter_size\":\"8.2B\","
        "\"quantization_level\":\"Q4_K_M\"},\"expires_at\":"
        "\"2026-12-04T14:35:52.181126523Z\",\"size_vram\":6654289920,";

    /* Ollama's answer: an alias each, the untagged name as :latest, the
     * model outside the catalog gone, a context added where there was none */
    strcpy(want, "{\"name\":\"acme/qwen\",\"model\":\"acme/qwen\",");
    strcat(want, qwen_rest);
    strcat(want, "\"context_length\":32768},"
                 "{\"name\":\"acme/qwen-long\",\"model\":\"acme/qwen-long\",");
    strcat(want, qwen_rest);
    strcat(want, "\"context_length\":131072},"
                 "{\"name\":\"llama\",\"model\":\"llama\",\"size\":2,"
                 "\"details\":{\"family\":\"llama\"},\"size_vram\":0,"
                 "\"context_length\":8192}");
    is_filtered(ollama, want, 3, "Ollama's answer");

    is_int(filter(5, ollama, &out, &count), 0, "parsed back: filtered");
    v = wrapped(out);
    ok(v != NULL, "parsed back: valid JSON in {\"models\":[...]}");
    list = yajl_tree_get(v, models_path, yajl_t_array);
    ok(list && list->u.array.len == 3, "parsed back: three entries");

    for (i = 0; list && i < list->u.array.len; i++) {
        e = list->u.array.values[i];
        ok(*str(e, "name", NULL)
           && strcmp(str(e, "name", NULL), str(e, "model", NULL)) == 0,
           "parsed back: entry %zu: name is model", i);
        ok(YAJL_IS_INTEGER(yajl_tree_get(e, context_path, yajl_t_number)),
           "parsed back: entry %zu: a context", i);
    }

    ok(list && list->u.array.len == 3
       && strcmp(str(list->u.array.values[2], "details", "family"), "llama")
          == 0,
       "parsed back: details kept");
    ok(strstr(out, "secret") == NULL, "nothing of a model outside leaks");
    yajl_tree_free(v);
    free(out);

    is_int(filter(1, ollama, &out, &count), 0, "one model seen: filtered");
    is_int(count, 1, "one model seen: only its entry");
    free(out);

    is_filtered("{\"models\":[{\"name\":\"qwen3\"}]}",
                "{\"name\":\"acme/qwen\",\"context_length\":32768},"
                "{\"name\":\"acme/qwen-long\",\"context_length\":131072}",
                2, "no model: its name is read; no field but those added");

    is_filtered("{\"models\":[{\"size\":1,\"context_length\":7,\"x\":[1,"
                "{\"model\":\"q\"}],\"model\":\"llama3.2:3b\",\"name\":\"z\","
                "\"y\":2}]}",
                "{\"size\":1,\"context_length\":8192,\"x\":[1,"
                "{\"model\":\"q\"}],\"model\":\"llama\",\"name\":\"llama\","
                "\"y\":2}",
                1, "name and model last, read there; fields in their order");

    is_filtered("{\"models\":[{\"name\":\"llama3.2:3b\",\"model\":\"other\"},"
                "{\"name\":\"other\",\"model\":\"llama3.2:3b\"},"
                "{\"model\":null,\"name\":\"llama3.2:3b\"}]}",
                "{\"name\":\"llama\",\"model\":\"llama\","
                "\"context_length\":8192},"
                "{\"model\":\"llama\",\"name\":\"llama\","
                "\"context_length\":8192}",
                2, "the model, not the name, unless it is no string");

    is_filtered("{\"models\":[{\"model\":\"llama3.2:3b:latest\"},"
                "{\"model\":\"llama3.2\"},{\"model\":\"qwen3:8b\"},"
                "{\"model\":\"qwen3:latestx\"},{\"model\":\"QWEN3\"},"
                "{\"model\":\"reg.io:5000/lib/phi:latest\"}]}",
                "{\"model\":\"phi\",\"context_length\":4096}",
                1, ":latest only for a name with no tag, a port no tag");

    is_filtered("{\"models\":[{\"model\":\"odd\",\"context_length\":\"x\","
                "\"s\":\"caf\\u00e9 \\\"q\\\" \\\\ \\/\",\"n\":1.5e3,"
                "\"m\":-0,\"b\":[true,false,null,{}],\"o\":{\"a\":{\"b\":[]}},"
                "\"details\":{\"context_length\":5}}]}",
                "{\"model\":\"say \\\"hi\\\"\",\"context_length\":1,"
                "\"s\":\"caf\xc3\xa9 \\\"q\\\" \\\\ /\",\"n\":1.5e3,"
                "\"m\":-0,\"b\":[true,false,null,{}],\"o\":{\"a\":{\"b\":[]}},"
                "\"details\":{\"context_length\":5}}",
                1, "values as written, escapes kept valid, the name escaped");

    is_filtered("{\"models\":[{\"model\":\"qwen3\",\"model\":\"secret\","
                "\"name\":{\"a\":[1]},\"name\":2,\"context_length\":1,"
                "\"context_length\":2}]}",
                "{\"model\":\"acme/qwen\",\"name\":\"acme/qwen\","
                "\"context_length\":32768},"
                "{\"model\":\"acme/qwen-long\",\"name\":\"acme/qwen-long\","
                "\"context_length\":131072}",
                2, "a repeated key's first, a name no string replaced");

    is_filtered("{\"x\":[{\"model\":\"qwen3\"}],\"models\":[],"
                "\"y\":{\"z\":1}}",
                "", 0, "other keys ignored; no models");
    is_filtered("{\"models\":[{\"model\":\"secret\"},{},{\"size\":1}]}",
                "", 0, "nothing the caller may see");

    is_int(filter(0, ollama, &out, &count), 0, "no catalog model: filtered");
    is_int(count, 0, "no catalog model: none");
    free(out);

    is_refused("{\"models\":null}", "models null");
    is_refused("{\"models\":{}}", "models an object");
    is_refused("{\"models\":[1]}", "an entry a number");
    is_refused("{\"models\":[[]]}", "an entry an array");
    is_refused("{\"models\":[{\"model\":\"qwen3\"},\"x\"]}",
               "an entry a string after one that matches");
    is_refused("{}", "no models");
    is_refused("[]", "an array");
    is_refused("\"x\"", "a string");
    is_refused("", "nothing");
    is_refused("{\"models\":[{\"model\":\"qwen3\"}", "cut short");
    is_refused("{\"models\":[]}{}", "two documents");
    is_refused("{\"models\":[{\"model\":\"qwen3\",\"a\":\"\xff\"}]}",
               "invalid UTF-8");

    nested(deep, "{\"models\":[{\"model\":\"qwen3\",\"d\":", 61, "}]}");
    is_int(filter(5, deep, &out, &count), 0, "64 deep: filtered");
    is_int(count, 2, "64 deep: written");
    free(out);

    nested(deep, "{\"models\":[{\"model\":\"qwen3\",\"d\":", 62, "}]}");
    is_refused(deep, "65 deep");
    nested(deep, "{\"models\":[],\"x\":{\"y\":", 63, "}}");
    is_refused(deep, "65 deep in a key ignored");

    fail_alloc = 1;
    is_refused(ollama, "no memory");
    fail_alloc = 0;

    return done_testing();
}
