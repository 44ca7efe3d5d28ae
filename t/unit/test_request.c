/*
 * Unit tests of the request parser and validator (nebula_request.c).
 */

#include <stdlib.h>

#include <yajl/yajl_tree.h>

#include "request.h"


/* real 1 x 1 images */
#define PNG_1X1   "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4" \
                  "nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
#define GIF_1X1   "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="


static void
refused(const char *body, nebula_req_error_e err, const char *param,
    const char *name)
{
    nebula_req_error_e  rc;

    rc = parse(NEBULA_API_CHAT, body);
    is_int(rc, err, "%s: refused with %s", name,
           nebula_req_error_code(err));

    if (param) {
        is_str(req.param, param, "%s: param", name);
    }

    ok(req.message[0] != '\0', "%s: a message is given", name);
}


static char *
rewrite(const char *body, const char *upstream)
{
    unsigned char   q[512];
    nebula_edit_t   edit;
    size_t          n;
    char           *out;

    edit.start = req.model_span.start;
    edit.end = req.model_span.end;
    edit.data = q;
    edit.len = nebula_json_quote(q, (const unsigned char *) upstream,
                                 strlen(upstream));

    n = nebula_edit_length(strlen(body), &edit, 1);
    out = malloc(n + 1);
    nebula_edit_apply((const unsigned char *) body, strlen(body), &edit, 1,
                      (unsigned char *) out);
    out[n] = '\0';

    return out;
}


static void
test_valid(void)
{
    const char  *body;
    char        *out;

    body = "{\"model\":\"qwen3:latest\",\"messages\":[{\"role\":\"user\","
           "\"content\":\"Hello\"}]}";

    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK, "seed example");
    is_str(req.model, "qwen3:latest", "model");
    is_int(req.stream, 0, "stream defaults to false on /v1");
    is_int(req.max_tokens, -1, "no max_tokens");
    is_int(req.messages, 1, "one message");
    is_int(req.text_bytes, 5, "text counted");
    /*
     * counted: (5 + 3) / 4 + 4 * 1 + 3 = 9; the floor, a token for each
     * 4 bytes of the body's 71, is larger
     */
    is_int(strlen(body), 71, "a body of 71 bytes");
    is_int(req.prompt_tokens, (71 + 3) / 4, "prompt estimate: the floor");

    out = rewrite(body, "qwen3:8b");
    is_str(out, "{\"model\":\"qwen3:8b\",\"messages\":[{\"role\":\"user\","
                "\"content\":\"Hello\"}]}", "model rewritten, rest intact");
    free(out);

    /* spacing, escapes and field order are the client's business */
    body = " {\n \"messages\" : [ {\"content\":\"hi\", \"role\":\"system\"} ],"
           "\n \"model\"\t:  \"qw\\u0065n3\" , \"temperature\": 0,"
           " \"max_tokens\": 100, \"stream\": true,"
           " \"stream_options\": {\"include_usage\": false}, \"seed\": 7 }\n";

    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK, "spaced body");
    is_str(req.model, "qwen3", "escaped model name decoded");
    is_int(req.max_tokens, 100, "max_tokens");
    is_int(req.stream, 1, "stream");
    is_int(req.include_usage, 0, "include_usage");
    ok(req.has_temperature && req.temperature == 0.0, "temperature 0");

    out = rewrite(body, "up\"stream");
    is_str(out, " {\n \"messages\" : [ {\"content\":\"hi\", \"role\":\"system\"}"
                " ],\n \"model\"\t:  \"up\\\"stream\" , \"temperature\": 0,"
                " \"max_tokens\": 100, \"stream\": true,"
                " \"stream_options\": {\"include_usage\": false},"
                " \"seed\": 7 }\n", "escaped span replaced, quoted name");
    free(out);

    is_int(body[req.max_tokens_span.start], '1', "max_tokens span start");
    is_int(req.max_tokens_span.end - req.max_tokens_span.start, 3,
           "max_tokens span length");
    is_int(body[req.stream_options_span.start], '{', "stream_options start");
    is_int(body[req.stream_options_span.end - 1], '}', "stream_options end");

    /* content parts, tools, an assistant turn calling a tool */
    body = "{\"model\":\"m\",\"messages\":["
           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"abcd\"},"
           "{\"type\":\"image_url\",\"image_url\":{\"url\":"
           "\"data:image/png;base64," PNG_1X1 "\"}}]},"
           "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[]},"
           "{\"role\":\"assistant\",\"tool_calls\":[]},"
           "{\"role\":\"tool\",\"content\":\"ok\",\"tool_call_id\":\"x\"}],"
           "\"tools\":[{\"type\":\"function\"}],\"temperature\":2}";

    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK, "parts and tools");
    is_int(req.images, 1, "one image");
    is_int(req.messages, 4, "four messages");
    is_int(req.text_bytes, 6, "text of parts and tool answer");
    ok(req.other_bytes > 0, "tools counted");
}


static void
test_refusals(void)
{
    char    *deep, *p;
    size_t   n;

    refused("", NEBULA_REQ_INVALID_JSON, "", "empty body");
    refused("   \n", NEBULA_REQ_INVALID_JSON, "", "blank body");
    refused("null", NEBULA_REQ_INVALID_JSON, "", "null");
    refused("[]", NEBULA_REQ_INVALID_JSON, "", "array");
    refused("\"x\"", NEBULA_REQ_INVALID_JSON, "", "string");
    refused("{\"model\":\"m\",\"messages\":[", NEBULA_REQ_INVALID_JSON, "",
            "truncated");
    refused("{\"model\":5,\"messages\":[", NEBULA_REQ_INVALID_JSON, "",
            "syntax error wins over a bad value");
    refused("{\"model\":\"m\"} {}", NEBULA_REQ_INVALID_JSON, "",
            "trailing garbage");
    refused("{\"model\":\"\xff\xfe\",\"messages\":[]}", NEBULA_REQ_INVALID_JSON,
            "", "invalid UTF-8");

    /* shapes yajl lets through, which RFC 3629 does not */
    refused("{\"model\":\"m\",\"user\":\"\xc0\xaf\"}", NEBULA_REQ_INVALID_JSON,
            "", "overlong UTF-8");
    refused("{\"model\":\"m\",\"user\":\"\xe0\x80\xaf\"}",
            NEBULA_REQ_INVALID_JSON, "", "overlong 3-byte UTF-8");
    refused("{\"model\":\"m\",\"user\":\"\xed\xa0\x80\"}",
            NEBULA_REQ_INVALID_JSON, "", "UTF-8 surrogate");
    refused("{\"model\":\"m\",\"user\":\"\xf4\x90\x80\x80\"}",
            NEBULA_REQ_INVALID_JSON, "", "UTF-8 past U+10FFFF");
    refused("{\"model\":\"m\",\"messages\":[]} \xe2\x82", NEBULA_REQ_INVALID_JSON,
            "", "UTF-8 cut short at the end");
    refused("{\"model\":\"m\",\"model\":\"n\",\"messages\":[{\"role\":\"user\","
            "\"content\":\"x\"}]}", NEBULA_REQ_INVALID_JSON, "",
            "duplicate model key");

    n = 100000;
    deep = malloc(2 * n + 64);
    p = deep + sprintf(deep, "{\"model\":\"m\",\"x\":");
    memset(p, '[', n);
    memset(p + n, ']', n);
    strcpy(p + 2 * n, "}");
    refused(deep, NEBULA_REQ_INVALID_JSON, "", "nesting 100,000 deep");
    free(deep);

    refused("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            NEBULA_REQ_MISSING_FIELD, "model", "no model");
    refused("{\"model\":\"m\"}", NEBULA_REQ_MISSING_FIELD, "messages",
            "no messages");
    refused("{\"model\":[\"m\"],\"messages\":[{\"role\":\"user\","
            "\"content\":\"x\"}]}", NEBULA_REQ_INVALID_VALUE, "model",
            "model as an array");
    refused("{\"model\":null,\"messages\":[]}", NEBULA_REQ_INVALID_VALUE,
            "model", "model null");
    refused("{\"model\":\"\",\"messages\":[]}", NEBULA_REQ_INVALID_VALUE,
            "model", "model empty");
    refused("{\"model\":\"a\\u0000b\",\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "model", "NUL in the model name");
    refused("{\"model\":\"m\",\"messages\":[]}", NEBULA_REQ_INVALID_VALUE,
            "messages", "empty messages");
    refused("{\"model\":\"m\",\"messages\":{}}", NEBULA_REQ_INVALID_VALUE,
            "messages", "messages as an object");
    refused("{\"model\":\"m\",\"messages\":\"hi\"}", NEBULA_REQ_INVALID_VALUE,
            "messages", "messages as a string");
    refused("{\"model\":\"m\",\"messages\":[\"hi\"]}", NEBULA_REQ_INVALID_VALUE,
            "messages[0]", "message as a string");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
            "{\"role\":\"robot\",\"content\":\"x\"}]}", NEBULA_REQ_INVALID_VALUE,
            "messages[1].role", "unknown role");
    refused("{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}",
            NEBULA_REQ_MISSING_FIELD, "messages[0].role", "no role");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}",
            NEBULA_REQ_MISSING_FIELD, "messages[0].content", "no content");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}",
            NEBULA_REQ_INVALID_VALUE, "messages[0].content", "content number");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"type\":\"audio\"}]}]}", NEBULA_REQ_INVALID_VALUE,
            "messages[0].content[0].type", "unknown part type");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[{\"text\":\"x\"}]}]}", NEBULA_REQ_MISSING_FIELD,
            "messages[0].content[0].type", "part without type");
    refused("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
            "[\"x\"]}]}", NEBULA_REQ_INVALID_VALUE,
            "messages[0].content[0]", "part as a string");

    refused("{\"model\":\"m\",\"temperature\":2.5,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "temperature", "temperature 2.5");
    refused("{\"model\":\"m\",\"temperature\":-0.1,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "temperature", "temperature -0.1");
    refused("{\"model\":\"m\",\"temperature\":1e400,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "temperature", "temperature 1e400");
    refused("{\"model\":\"m\",\"temperature\":\"0.7\",\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "temperature", "temperature string");
    refused("{\"model\":\"m\",\"max_tokens\":0,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "max_tokens", "max_tokens 0");
    refused("{\"model\":\"m\",\"max_tokens\":-5,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "max_tokens", "max_tokens -5");
    refused("{\"model\":\"m\",\"max_tokens\":1.5,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "max_tokens", "max_tokens 1.5");
    refused("{\"model\":\"m\",\"max_tokens\":1e3,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "max_tokens", "max_tokens 1e3");
    refused("{\"model\":\"m\",\"max_tokens\":\"10\",\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "max_tokens", "max_tokens string");
    refused("{\"model\":\"m\",\"max_tokens\":99999999999999999999,"
            "\"messages\":[]}", NEBULA_REQ_INVALID_VALUE, "max_tokens",
            "max_tokens too large");
    refused("{\"model\":\"m\",\"stream\":\"yes\",\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "stream", "stream string");
    refused("{\"model\":\"m\",\"stream\":1,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "stream", "stream number");
    refused("{\"model\":\"m\",\"stream_options\":{\"include_usage\":1},"
            "\"messages\":[]}", NEBULA_REQ_INVALID_VALUE,
            "stream_options.include_usage", "include_usage number");
    refused("{\"model\":\"m\",\"stream_options\":true,\"messages\":[]}",
            NEBULA_REQ_INVALID_VALUE, "stream_options", "stream_options bool");

    /* OpenRouter's usage accounting: "include" read where it is an object */
    is_int(parse(NEBULA_API_CHAT, "{\"model\":\"m\",\"usage\":{\"include\":"
                 "true},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
           NEBULA_REQ_OK, "usage.include true");
    is_int(req.usage_cost, 1, "usage.include read");
    is_int(parse(NEBULA_API_COMPLETIONS, "{\"model\":\"m\",\"usage\":"
                 "{\"include\":false,\"x\":[1]},\"prompt\":\"x\"}"),
           NEBULA_REQ_OK, "usage.include false, completions");
    is_int(req.usage_cost, 0, "usage.include false read");
    is_int(parse(NEBULA_API_CHAT, "{\"model\":\"m\",\"usage\":true,"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
           NEBULA_REQ_OK, "usage not an object: passed, not read");
    is_int(req.usage_cost, 0, "usage true: no cost");
    is_int(parse(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"usage\":"
                 "{\"include\":true},\"messages\":[{\"role\":\"user\","
                 "\"content\":\"x\"}]}"),
           NEBULA_REQ_OK, "native chat: usage is no field of its");
    is_int(req.usage_cost, 0, "native chat: no cost");
    refused("{\"model\":\"m\",\"usage\":{\"include\":\"yes\"},"
            "\"messages\":[]}", NEBULA_REQ_INVALID_VALUE, "usage.include",
            "usage.include string");
}


static void
test_strict_utf8_and_long_numbers(void)
{
    nebula_req_error_e  rc;

    rc = parse(NEBULA_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
               "\"content\":\"\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x99\x82 "
               "\xef\xbf\xbd \xf4\x8f\xbf\xbf\"}]}");
    is_int(rc, NEBULA_REQ_OK, "UTF-8 of 2, 3 and 4 bytes, up to U+10FFFF");

    rc = parse(NEBULA_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
               "\"content\":\"x\"}],\"temperature\":0.5"
               "00000000000000000000000000000000000000000000000000000000000000000"
               "0000000000000000}");
    is_int(rc, NEBULA_REQ_OK, "a temperature written long, but in range");
    ok(req.temperature == 0.5, "is 0.5");

    rc = parse(NEBULA_API_CHAT,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
               "\"content\":\"x\"}],\"temperature\":2"
               "00000000000000000000000000000000000000000000000000000000000000000"
               "0000000000000000}");
    is_int(rc, NEBULA_REQ_INVALID_VALUE, "a long temperature out of range");
}


static void
test_nulls(void)
{
    is_int(parse(NEBULA_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"x\"}],\"temperature\":null,"
                 "\"max_tokens\":null,\"stream\":null}"), NEBULA_REQ_OK,
           "optional fields may be null");
    is_int(req.max_tokens, -1, "null max_tokens is absent");
    is_int(req.has_temperature, 0, "null temperature is absent");
}


/* keys Go's encoding/json would take for ours, in another spelling */
static void
test_case(void)
{
    const char  *bad[] = {
        "{\"model\":\"m\",\"MODEL\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"Max_Tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"\xc5\xbftream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"stream_options\":{\"include_usage\":true,\"Include_Usage\":false}}",
        NULL
    };
    int  i;

    for (i = 0; bad[i]; i++) {
        is_int(parse(NEBULA_API_CHAT, bad[i]), NEBULA_REQ_INVALID_JSON,
               "a field in another case is refused (%d)", i);
    }

    is_int(parse(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"x\"}],\"Options\":{\"num_predict\":9}}"),
           NEBULA_REQ_INVALID_JSON, "native: Options refused");
    is_int(parse(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"x\"}],\"options\":{\"NUM_PREDICT\":9}}"),
           NEBULA_REQ_INVALID_JSON, "native: NUM_PREDICT refused");
    is_int(parse(NEBULA_API_CHAT, "{\"model\":\"m\",\"Seed\":1,\"messages\":[{"
                 "\"role\":\"user\",\"content\":\"x\"}]}"),
           NEBULA_REQ_OK, "a field not ours keeps its spelling");
}


/* nulls the gateway must replace rather than add a second key beside */
static void
test_null_spans(void)
{
    const char  *body;

    body = "{\"model\":\"m\",\"max_tokens\":null,\"messages\":[{\"role\":"
           "\"user\",\"content\":\"x\"}],\"stream_options\":{\"include_usage\":null}}";
    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK, "nulls accepted");
    is_int(req.max_tokens, -1, "max_tokens null is absent");
    is_int(req.max_tokens_span.end - req.max_tokens_span.start, 4,
           "but its span is known");
    is_int(body[req.include_usage_span.start], 'n', "include_usage null span");

    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
           "\"options\":null}";
    is_int(parse(NEBULA_API_OLLAMA_CHAT, body), NEBULA_REQ_OK, "options null");
    ok(req.options_null && body[req.options_span.start] == 'n', "options null span");

    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
           "\"options\":{\"num_predict\":null}}";
    is_int(parse(NEBULA_API_OLLAMA_CHAT, body), NEBULA_REQ_OK, "num_predict null");
    is_int(body[req.num_predict_span.start], 'n', "num_predict null span");
}


/*
 * OpenAI's "developer" (newer clients' "system") and the legacy "function"
 * role: accepted on /v1, renamed for Ollama, which knows neither; its own
 * API refuses them as it refuses any role it does not know.
 */
static void
test_roles(void)
{
    size_t          i;
    char            big[64 * 48 + 128], *p;
    const char     *body;
    unsigned char   out[512];
    nebula_edit_t   edits[4];

    body = "{\"model\":\"m\",\"messages\":["
           "{\"role\":\"developer\",\"content\":\"be brief\"},"
           "{\"role\":\"user\",\"content\":\"hi\"},"
           "{\"role\":\"assistant\",\"content\":null,"
           "\"function_call\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
           "{\"role\" : \"function\",\"name\":\"f\",\"content\":\"42\"}]}";

    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK,
           "developer and function roles on /v1");
    is_int((long) req.nrole_edits, 2, "two roles renamed");

    for (i = 0; i < req.nrole_edits && i < 4; i++) {
        edits[i].start = req.role_edits[i].span.start;
        edits[i].end = req.role_edits[i].span.end;
        edits[i].data = (const unsigned char *) req.role_edits[i].to;
        edits[i].len = strlen(req.role_edits[i].to);
    }

    nebula_edit_apply((const unsigned char *) body, strlen(body), edits,
                      req.nrole_edits, out);
    out[nebula_edit_length(strlen(body), edits, req.nrole_edits)] = '\0';
    is_str((char *) out,
           "{\"model\":\"m\",\"messages\":["
           "{\"role\":\"system\",\"content\":\"be brief\"},"
           "{\"role\":\"user\",\"content\":\"hi\"},"
           "{\"role\":\"assistant\",\"content\":null,"
           "\"function_call\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
           "{\"role\" : \"tool\",\"name\":\"f\",\"content\":\"42\"}]}",
           "sent to Ollama as system and tool");

    is_int(parse(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":"
                 "[{\"role\":\"developer\",\"content\":\"x\"}]}"),
           NEBULA_REQ_INVALID_VALUE, "/api/chat: no developer role");
    is_str(req.param, "messages[0].role", "/api/chat: its param");
    is_int(parse(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":"
                 "[{\"role\":\"function\",\"content\":\"x\"}]}"),
           NEBULA_REQ_INVALID_VALUE, "/api/chat: no function role");

    /* a developer message still needs its content */
    is_int(parse(NEBULA_API_CHAT, "{\"model\":\"m\",\"messages\":"
                 "[{\"role\":\"developer\"}]}"),
           NEBULA_REQ_MISSING_FIELD, "developer without content");

    /* more renamed roles than the gateway takes: refused, said why */
    p = big + sprintf(big, "{\"model\":\"m\",\"messages\":[");
    for (i = 0; i < NEBULA_ROLE_EDIT_MAX + 1; i++) {
        p += sprintf(p, "%s{\"role\":\"developer\",\"content\":\"x\"}",
                     i ? "," : "");
    }
    strcpy(p, "]}");
    is_int(parse(NEBULA_API_CHAT, big), NEBULA_REQ_INVALID_VALUE,
           "65 developer messages refused");
    is_str(req.param, "messages", "65 developer messages: param");

    /* and 64 taken */
    p = big + sprintf(big, "{\"model\":\"m\",\"messages\":[");
    for (i = 0; i < NEBULA_ROLE_EDIT_MAX; i++) {
        p += sprintf(p, "%s{\"role\":\"developer\",\"content\":\"x\"}",
                     i ? "," : "");
    }
    strcpy(p, "]}");
    is_int(parse(NEBULA_API_CHAT, big), NEBULA_REQ_OK, "64 developer messages");
    is_int((long) req.nrole_edits, 64, "64 renamed");
}


static void
test_native(void)
{
    const char  *body;

    body = "{\"model\":\"gemma3:1b\",\"messages\":[{\"role\":\"user\","
           "\"content\":\"hello there\",\"images\":[\"" GIF_1X1 "\"]}],"
           "\"options\":{\"num_predict\":64,\"temperature\":9}}";

    is_int(parse(NEBULA_API_OLLAMA_CHAT, body), NEBULA_REQ_OK, "/api/chat");
    is_int(req.stream, 1, "native streams by default");
    is_int(req.num_predict, 64, "num_predict");
    is_int(req.images, 1, "native image");
    is_int(body[req.num_predict_span.start], '6', "num_predict span");
    is_int(body[req.options_span.start], '{', "options span");

    is_int(parse(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":"
                 "[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}"),
           NEBULA_REQ_INVALID_VALUE, "native content must be a string");

    is_int(parse(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":"
                 "[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"options\":{\"num_predict\":-1}}"),
           NEBULA_REQ_OK, "num_predict -1 is Ollama's no limit");

    body = "{\"model\":\"m\",\"prompt\":\"one two three\",\"system\":\"s\","
           "\"stream\":false}";
    is_int(parse(NEBULA_API_OLLAMA_GENERATE, body), NEBULA_REQ_OK,
           "/api/generate");
    is_int(req.stream, 0, "stream false");
    is_int(req.text_bytes, 14, "prompt and system counted");

    is_int(parse(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":7}"),
           NEBULA_REQ_INVALID_VALUE, "prompt must be a string");
    is_str(req.param, "prompt", "prompt param");
}


static void
test_quote(void)
{
    unsigned char  out[64];
    size_t         n;

    n = nebula_json_quote(out, (const unsigned char *) "a\"b\\c\n\x01", 7);
    out[n] = '\0';
    is_str((char *) out, "\"a\\\"b\\\\c\\n\\u0001\"", "json quoting");
}


/*
 * yajl's memory comes from the parse's own arena until it is full, then
 * from malloc: a body whose escaped strings outgrow it parses the same.
 */
static void
test_arena(void)
{
    size_t   i, n, k;
    char    *body, *p;

    static const size_t  sizes[] = { 100, 2000, 5000, 9000, 40000 };

    for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        n = sizes[k];
        body = malloc(n * 2 + 128);

        strcpy(body, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                     "\"content\":\"");

        /* n characters of text, every other one written as an escape */
        p = body + strlen(body);

        for (i = 0; i < n; i++) {
            if (i % 2) {
                *p++ = '\\';
                *p++ = 'n';

            } else {
                *p++ = 'x';
            }
        }

        strcpy(p, "\"}],\"stream\":true}");

        is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK,
               "a text of %zu characters, half of them escaped", n);
        is_int((int) req.text_bytes, (int) n, "its %zu characters counted",
               n);
        is_int(req.stream, 1, "and the key after it read");

        free(body);
    }
}


/* item 11: a part's param names its own message */
static void
test_part_param(void)
{
    refused("{\"model\":\"m\",\"messages\":["
            "{\"role\":\"user\",\"content\":\"a\"},"
            "{\"role\":\"assistant\",\"content\":\"b\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
            "\"text\":\"c\"},{\"type\":\"audio\"}]}]}",
            NEBULA_REQ_INVALID_VALUE,
            "messages[2].content[1].type", "a bad part type in message 2");
    refused("{\"model\":\"m\",\"messages\":["
            "{\"role\":\"user\",\"content\":\"a\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
            "\"text\":\"c\"},{\"text\":\"x\"}]}]}", NEBULA_REQ_MISSING_FIELD,
            "messages[1].content[1].type", "a part without type in message 1");
    refused("{\"model\":\"m\",\"messages\":["
            "{\"role\":\"user\",\"content\":\"a\"},"
            "{\"role\":\"user\",\"content\":\"b\"},"
            "{\"role\":\"user\",\"content\":\"c\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
            "\"text\":5}]}]}",
            NEBULA_REQ_INVALID_VALUE, "messages[3].content[0].text",
            "a bad part text in message 3");
    refused("{\"model\":\"m\",\"messages\":["
            "{\"role\":\"user\",\"content\":\"a\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
            "\"text\":\"c\"},7]}]}", NEBULA_REQ_INVALID_VALUE,
            "messages[1].content[1]", "a part that is no object");
}


/* item 13: a lone surrogate escape in the model name */
static void
test_model_utf8(void)
{
    refused("{\"model\":\"\\udc00x\",\"messages\":[{\"role\":\"user\","
            "\"content\":\"x\"}]}", NEBULA_REQ_INVALID_VALUE, "model",
            "a lone low surrogate in the model");
    ok(strstr(req.message, "\xed\xb0\x80") == NULL,
       "the bytes are not echoed");
    ok(strstr(req.message, "UTF-8") != NULL, "the message says why");

    /* yajl makes '?' of a lone high surrogate: valid, an unknown model */
    is_int(parse(NEBULA_API_CHAT, "{\"model\":\"\\ud800x\",\"messages\":"
                 "[{\"role\":\"user\",\"content\":\"x\"}]}"), NEBULA_REQ_OK,
           "a lone high surrogate decodes to '?'");

    is_int(parse(NEBULA_API_CHAT, "{\"model\":\"\\ud83d\\ude42\",\"messages\":"
                 "[{\"role\":\"user\",\"content\":\"x\"}]}"), NEBULA_REQ_OK,
           "a surrogate pair is fine");
    is_str(req.model, "\xf0\x9f\x99\x82", "and decodes to U+1F642");
}


static void
test_images(void)
{
    const char  *pre, *post;
    char         body[1024];

    pre = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
          "\"content\":\"a\"},{\"role\":\"user\",\"content\":"
          "[{\"type\":\"text\",\"text\":\"x\"},";
    post = "]}]}";

#define PART(part)  (snprintf(body, sizeof(body), "%s%s%s", pre, part, post), \
                     body)

    refused(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":"
                 "\"http://example.com/cat.png\"}}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "an image URL");
    ok(strstr(req.message, "data URL") != NULL,
       "the message says what to send");
    refused(PART("{\"type\":\"image_url\",\"image_url\":"
                 "\"https://example.com/cat.png\"}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "an image URL, short form");
    refused(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":"
                 "\"data:image/gif;base64," GIF_1X1 "\"}}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "a data URL Ollama's OpenAI layer refuses (image/gif)");
    is_int(parse(NEBULA_API_CHAT, PART("{\"type\":\"image_url\",\"image_url\":"
                 "{\"url\":\"data:;base64," GIF_1X1 "\"}}")), NEBULA_REQ_OK,
           "a GIF in a data URL without a type");
    is_int(req.image_tokens, 256, "its tokens");
    refused(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":"
                 "\"data:image/png;base64,AA\"}}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "base64 that cannot be decoded");
    ok(strstr(req.message, "base64") != NULL, "the message says base64");
    refused(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":"
                 "\"data:image/png;base64,SGVsbG8gd29ybGQ=\"}}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "data that is no image");
    refused(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":"
                 "\"data:image/png;base64,iVBORw0KGgo=\"}}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "a PNG cut after its signature");
    refused(PART("{\"type\":\"image_url\"}"), NEBULA_REQ_MISSING_FIELD,
            "messages[1].content[1].image_url", "an image part without one");
    refused(PART("{\"type\":\"image_url\",\"image_url\":{\"detail\":\"low\"}}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "an image_url without url");
    refused(PART("{\"type\":\"image_url\",\"image_url\":[]}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "an image_url array");
    refused(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":5}}"),
            NEBULA_REQ_INVALID_VALUE, "messages[1].content[1].image_url",
            "a url number");

    /* the type after the image, and a text part's image_url ignored */
    is_int(parse(NEBULA_API_CHAT, PART("{\"image_url\":{\"url\":\"data:image/"
                 "png;base64," PNG_1X1 "\"},\"type\":\"image_url\"}")),
           NEBULA_REQ_OK, "type after image_url");
    is_int(req.images, 1, "an image");
    is_int(parse(NEBULA_API_CHAT, PART("{\"type\":\"text\",\"text\":\"y\","
                 "\"image_url\":\"http://example.com/x.png\"}")),
           NEBULA_REQ_OK, "a text part's image_url: Ollama ignores it");
    is_int(req.images, 0, "no image");

#undef PART

    /* native */
    refused_api(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":["
                "{\"role\":\"user\",\"content\":\"a\"},"
                "{\"role\":\"user\",\"content\":\"b\",\"images\":[\"" PNG_1X1
                "\",\"" GIF_1X1 "\",\"data:image/png;base64," PNG_1X1 "\"]}]}",
                NEBULA_REQ_INVALID_VALUE, "messages[1].images[2]",
                "native: a data URL where bare base64 goes");
    refused_api(NEBULA_API_OLLAMA_CHAT, "{\"model\":\"m\",\"messages\":["
                "{\"role\":\"user\",\"content\":\"b\",\"images\":[\"AAA\"]}]}",
                NEBULA_REQ_INVALID_VALUE, "messages[0].images[0]",
                "native: bad base64");
    refused_api(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":\"p\","
                "\"images\":[\"" PNG_1X1 "\",\"SGVsbG8gd29ybGQ=\"]}",
                NEBULA_REQ_INVALID_VALUE, "images[1]",
                "generate: data that is no image");
    is_int(parse(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":"
                 "\"p\",\"images\":[\"" PNG_1X1 "\",\"" GIF_1X1 "\"]}"),
           NEBULA_REQ_OK, "generate: two images");
    is_int(req.images, 2, "counted");
    is_int(req.image_tokens, 512, "256 each");
}


static void
test_n(void)
{
    const char  *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    char         body[256];

    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"n\":3,"
             "\"best_of\":null}", msgs);
    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK,
           "n 3: the lead decides");
    is_int(req.n, 3, "n recorded");
    is_int(body[req.n_span.start], '3', "n span");
    is_int(req.n_span.end - req.n_span.start, 1, "n span length");
    is_int(req.best_of, -1, "best_of null is absent");
    is_int(body[req.best_of_span.start], 'n', "but its span is known");

    snprintf(body, sizeof(body), "{\"model\":\"m\",%s}", msgs);
    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK, "no n");
    ok(req.n == -1 && req.best_of == -1, "n and best_of absent");

    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"n\":0}", msgs);
    refused(body, NEBULA_REQ_INVALID_VALUE, "n", "n 0");
    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"n\":1.5}", msgs);
    refused(body, NEBULA_REQ_INVALID_VALUE, "n", "n 1.5");
    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"n\":\"2\"}", msgs);
    refused(body, NEBULA_REQ_INVALID_VALUE, "n", "n a string");
    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"best_of\":-1}", msgs);
    refused(body, NEBULA_REQ_INVALID_VALUE, "best_of", "best_of -1");
    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"n\":1,\"n\":5}", msgs);
    refused(body, NEBULA_REQ_INVALID_JSON, "", "n twice");
    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"N\":5}", msgs);
    refused(body, NEBULA_REQ_INVALID_JSON, "", "N");

    /* not ours natively: Ollama has no n */
    snprintf(body, sizeof(body), "{\"model\":\"m\",%s,\"n\":0}", msgs);
    is_int(parse(NEBULA_API_OLLAMA_CHAT, body), NEBULA_REQ_OK,
           "native: n passes as any unknown field");
}


static void
test_num_ctx(void)
{
    const char  *body;

    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
           "\"x\"}],\"options\":{\"num_ctx\":131072,\"num_predict\":5}}";
    is_int(parse(NEBULA_API_OLLAMA_CHAT, body), NEBULA_REQ_OK, "num_ctx");
    is_int(req.num_ctx, 131072, "recorded");
    is_int(req.num_ctx_span.end - req.num_ctx_span.start, 6, "its span");
    is_int(body[req.num_ctx_span.start], '1', "its span's start");
    is_int(req.ndrops, 0, "kept");
    is_int(req.options_kept, 2, "two options kept");

    body = "{\"model\":\"m\",\"prompt\":\"p\",\"options\":{\"num_ctx\":null}}";
    is_int(parse(NEBULA_API_OLLAMA_GENERATE, body), NEBULA_REQ_OK,
           "num_ctx null");
    is_int(req.num_ctx, -1, "null is absent");
    is_int(body[req.num_ctx_span.start], 'n', "but its span is known");

    body = "{\"model\":\"m\",\"prompt\":\"p\"}";
    is_int(parse(NEBULA_API_OLLAMA_GENERATE, body), NEBULA_REQ_OK,
           "no num_ctx");
    ok(req.num_ctx == -1 && req.num_ctx_span.end == 0, "absent");

    refused_api(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":\"p\","
                "\"options\":{\"num_ctx\":0}}", NEBULA_REQ_INVALID_VALUE,
                "options.num_ctx", "num_ctx 0");
    refused_api(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":\"p\","
                "\"options\":{\"num_ctx\":-1}}", NEBULA_REQ_INVALID_VALUE,
                "options.num_ctx", "num_ctx -1");
    refused_api(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":\"p\","
                "\"options\":{\"num_ctx\":4096.5}}", NEBULA_REQ_INVALID_VALUE,
                "options.num_ctx", "num_ctx 4096.5");
    refused_api(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":\"p\","
                "\"options\":{\"num_ctx\":\"8192\"}}", NEBULA_REQ_INVALID_VALUE,
                "options.num_ctx", "num_ctx a string");
    refused_api(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":\"p\","
                "\"options\":{\"num_ctx\":2048,\"num_ctx\":999999}}",
                NEBULA_REQ_INVALID_JSON, "", "num_ctx twice");
    refused_api(NEBULA_API_OLLAMA_GENERATE, "{\"model\":\"m\",\"prompt\":\"p\","
                "\"options\":{\"num_ctx\":2048,\"NUM_CTX\":999999}}",
                NEBULA_REQ_INVALID_JSON, "", "num_ctx in another case");
}


static void
test_generate_prompt(void)
{
    static const char  *bodies[] = {
        "{\"model\":\"m\"}",
        "{\"model\":\"m\",\"prompt\":null}",
        "{\"model\":\"m\",\"prompt\":\"\"}",
        "{\"model\":\"m\",\"prompt\":\"\",\"images\":[\"" PNG_1X1 "\"]}",
        "{\"model\":\"m\",\"keep_alive\":0}",
        "{\"model\":\"m\",\"system\":\"s\",\"template\":\"t\"}",
        NULL
    };
    int  i;

    for (i = 0; bodies[i]; i++) {
        refused_api(NEBULA_API_OLLAMA_GENERATE, bodies[i],
                    NEBULA_REQ_MISSING_FIELD, "prompt",
                    "generate without a prompt");
        ok(strstr(req.message, "load") != NULL, "the message says why");
    }

    is_int(parse(NEBULA_API_OLLAMA_GENERATE,
                 "{\"model\":\"m\",\"prompt\":\" \"}"), NEBULA_REQ_OK,
           "a prompt of one space is a prompt");
}


int
main(void)
{
    test_valid();
    test_refusals();
    test_strict_utf8_and_long_numbers();
    test_nulls();
    test_case();
    test_null_spans();
    test_native();
    test_roles();
    test_quote();
    test_arena();
    test_part_param();
    test_model_utf8();
    test_images();
    test_n();
    test_num_ctx();
    test_generate_prompt();

    return done_testing();
}
