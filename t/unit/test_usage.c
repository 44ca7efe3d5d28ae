/*
 * Where the cost goes in an answer's usage (nebula_usage.c): the closing
 * brace of the top-level "usage" object of a JSON answer, or of an SSE
 * event's data; nothing found where there is no such object, nested
 * "usage" keys, strings that look like one, or broken documents.
 */

#include <string.h>

#include "nebula_usage.h"
#include "tap.h"


/* the offset found, -1 for none; *empty as told */
static long
place(const char *doc, int sse, int *empty)
{
    size_t  off;

    *empty = -1;

    if (nebula_usage_close((const unsigned char *) doc, strlen(doc), sse,
                           &off, empty)
        != 0)
    {
        return -1;
    }

    return (long) off;
}


/* the brace found is the one just before the marker '|' in want */
static void
is_place(const char *doc, int sse, int want_empty, const char *name)
{
    int          empty;
    long         got;
    const char  *bar;
    char         buf[1024];

    bar = strchr(doc, '|');
    snprintf(buf, sizeof(buf), "%.*s%s", (int) (bar - doc), doc, bar + 1);

    got = place(buf, sse, &empty);
    is_int(got, (long) (bar - doc) - 1, "%s: the usage's closing brace", name);
    is_int(empty, want_empty, "%s: empty or not", name);
}


static void
is_none(const char *doc, int sse, const char *name)
{
    int  empty;

    is_int(place(doc, sse, &empty), -1, "%s: no place", name);
}


int
main(void)
{
    is_place("{\"id\":\"x\",\"choices\":[{\"message\":{\"usage\":{\"a\":1}}}],"
             "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}|}",
             0, 0, "chat answer, usage last");
    is_place("{\"usage\":{\"prompt_tokens\":3,\"x\":{\"y\":[1,{\"z\":\"}\"}]}}|,"
             "\"model\":\"m\"}", 0, 0, "usage first, nested inside");
    is_place(" \n{ \"usage\" : { }| }", 0, 1, "spaces, an empty usage");
    is_place("{\"a\":\"\\\"usage\\\":{}\",\"b\":[\"usage\",{\"usage\":{}}],"
             "\"usage\":{\"n\":1}|}", 0, 0, "usage in strings and nested: not it");
    is_place("{\"a\":true,\"b\":null,\"c\":-1.5e3,\"usage\":{\"n\":1}|}", 0, 0,
             "scalars stepped over");

    is_none("{\"usage\":null}", 0, "usage null");
    is_none("{\"usage\":[1]}", 0, "usage an array");
    is_none("{\"x\":{\"usage\":{}}}", 0, "usage nested only");
    is_none("{\"usage\":{\"n\":1", 0, "cut inside usage");
    is_none("{\"a\":\"unterminated", 0, "cut inside a string");
    is_none("[{\"usage\":{}}]", 0, "an array");
    is_none("", 0, "empty");
    is_none("{}", 0, "empty object");
    is_none("{\"a\" 1,\"usage\":{}}", 0, "no colon");
    is_none("{\"a\":1 \"usage\":{}}", 0, "no comma");
    is_none("{\"usage\":{]}", 0, "a bracket that does not match");
    is_none("{\"usage\":{\"a\":[}}}", 0, "one inside that does not match");

    /* SSE: the data lines of one event */
    is_place("data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1}|}"
             "\n\n", 1, 0, "the usage chunk");
    is_place("data: {\"choices\":[{\"finish_reason\":\"length\"}]}\n\n"
             "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}|}\n\n"
             "data: [DONE]\n\n", 1, 0, "the cut ending's events");
    is_place(": keep-alive\r\nid: 1\r\ndata:{\"usage\":{}|}\r\n\r\n", 1, 1,
             "CRLF, a comment, no space after data:");
    is_none("data: {\"choices\":[],\"usage\":null}\n\n", 1, "SSE usage null");
    is_none("data: [DONE]\n\n", 1, "[DONE]");
    is_none("event: x\n\n", 1, "no data");
    is_none("data", 1, "a cut field name");

    return done_testing();
}
