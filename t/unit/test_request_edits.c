/*
 * Unit tests of the edits the gateway makes to a request's body: the
 * members it drops (nebula_request.c records them, nebula_body.c applies
 * them) and the order edits are applied in.
 */

#include <stdio.h>
#include <stdlib.h>

#include <yajl/yajl_tree.h>

#include "nebula_body.h"
#include "request.h"


/* a body after the drops, the way the lead deletes them */
static char *
dropped(const char *body, const nebula_edit_t *extra, size_t nextra)
{
    size_t          i, n;
    char           *out;
    nebula_edit_t   e[NEBULA_DROP_MAX + 4];

    for (i = 0; i < req.ndrops; i++) {
        e[i].start = req.drops[i].start;
        e[i].end = req.drops[i].end;
        e[i].data = NULL;
        e[i].len = 0;
    }

    for (n = 0; n < nextra; n++) {
        e[i + n] = extra[n];
    }

    n = i + n;
    nebula_edit_sort(e, n);

    for (i = 1; i < n; i++) {
        if (e[i].start < e[i - 1].end) {
            return NULL;    /* overlapping */
        }
    }

    out = malloc(nebula_edit_length(strlen(body), e, n) + 1);
    nebula_edit_apply((const unsigned char *) body, strlen(body), e, n,
                      (unsigned char *) out);
    out[nebula_edit_length(strlen(body), e, n)] = '\0';

    return out;
}


static int
tree_equal(yajl_val a, yajl_val b)
{
    size_t  i;

    if (a == NULL || b == NULL || a->type != b->type) {
        return 0;
    }

    switch (a->type) {
    case yajl_t_string:
        return strcmp(a->u.string, b->u.string) == 0;
    case yajl_t_number:
        return strcmp(a->u.number.r, b->u.number.r) == 0;
    case yajl_t_object:
        if (a->u.object.len != b->u.object.len) {
            return 0;
        }
        for (i = 0; i < a->u.object.len; i++) {
            if (strcmp(a->u.object.keys[i], b->u.object.keys[i]) != 0
                || !tree_equal(a->u.object.values[i], b->u.object.values[i]))
            {
                return 0;
            }
        }
        return 1;
    case yajl_t_array:
        if (a->u.array.len != b->u.array.len) {
            return 0;
        }
        for (i = 0; i < a->u.array.len; i++) {
            if (!tree_equal(a->u.array.values[i], b->u.array.values[i])) {
                return 0;
            }
        }
        return 1;
    default:
        return 1;
    }
}


static int
json_same(const char *got, const char *want)
{
    int       same;
    char      err[128];
    yajl_val  a, b;

    a = yajl_tree_parse(got, err, sizeof(err));
    b = yajl_tree_parse(want, err, sizeof(err));
    same = (a != NULL && b != NULL && tree_equal(a, b));
    yajl_tree_free(a);
    yajl_tree_free(b);

    return same;
}


/*
 * Every combination of kept and dropped members of options, in three
 * spacings, with keep_alive and _debug_render_only at the top: what is
 * left after the drops is the JSON of the kept members, in order.
 */
static void
test_drop_combinations(void)
{
    int             mask, k, i, style, top, fails, cases, kept, rc;
    char            got_body[2048], want[2048], *out, *p, *q, num[32];
    yajl_val        tree, v;
    nebula_edit_t   e;

    static const char  *keep[] = {
        "\"temperature\":0.5", "\"seed\":7", "\"num_predict\":5",
        "\"stop\":[\"a\",\"b\"]", "\"top_k\":{\"x\":[1,{}]}", "\"num_ctx\":4096"
    };
    static const char  *drop[] = {
        "\"num_gpu\":99", "\"use_mmap\":false",
        "\"numa\":{\"a\":{\"b\":[1,2,{}]}}",
        "\"low_vram\":null", "\"Temperature\":1", "\"main_gpu\":\"x\""
    };
    static const char  *sp[3][3] = {
        /* after '{', around ':' (unused: members are fixed), after ',' */
        { "", "", "" },
        { " ", " ", " " },
        { "\n    ", "", "\n    " }
    };
    static const char  *tops[4] = { "", "keep_alive", "_debug_render_only",
                                    "KEEP_ALIVE" };
    const char *msgs = "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]";
    const char *format = "\"format\":{\"properties\":{\"keep_alive\":{}}}";

    fails = 0;
    cases = 0;

    for (k = 1; k <= 6; k++) {
        for (mask = 0; mask < (1 << k); mask++) {
            for (style = 0; style < 3; style++) {
                for (top = 0; top < 4; top++) {

                    /* the body, and the body we want after the drops */
                    for (i = 0; i < 2; i++) {
                        p = i ? want : got_body;
                        q = p;

                        p += sprintf(p, "{%s", sp[style][0]);
                        if (top == 1 && i == 0) {
                            p += sprintf(p, "\"%s\":\"5m\",%s", tops[top],
                                         sp[style][2]);
                        }
                        p += sprintf(p, "\"model\":\"m\",%s%s,%s", sp[style][2],
                                     msgs, sp[style][2]);
                        if (top == 2 && i == 0) {
                            p += sprintf(p, "\"%s\":true,%s", tops[top],
                                         sp[style][2]);
                        }
                        p += sprintf(p, "%s,%s\"options\":%s{%s", format,
                                     sp[style][2], sp[style][1],
                                     sp[style][0]);

                        kept = 0;

                        for (int m = 0; m < k; m++) {
                            if ((mask >> m & 1) && i == 1) {
                                continue;
                            }

                            p += sprintf(p, "%s%s%s", kept ? "," : "",
                                         kept ? sp[style][2] : "",
                                         (mask >> m & 1) ? drop[m] : keep[m]);
                            kept++;
                        }

                        p += sprintf(p, "%s}", sp[style][1]);

                        if (top == 3 && i == 0) {
                            p += sprintf(p, ",%s\"%s\":-1", sp[style][2],
                                         tops[top]);
                        }

                        sprintf(p, "%s}", sp[style][1]);
                        (void) q;
                    }

                    cases++;
                    rc = parse(NEBULA_API_OLLAMA_CHAT, got_body);

                    kept = k - __builtin_popcount(mask);
                    out = (rc == NEBULA_REQ_OK) ? dropped(got_body, NULL, 0)
                                                : NULL;

                    if (out == NULL || !json_same(out, want)
                        || (int) req.options_kept != kept
                        || (int) req.ndrops
                           != __builtin_popcount(mask) + (top != 0))
                    {
                        if (fails++ == 0) {
                            printf("# body: %s\n# got:  %s\n# want: %s\n"
                                   "# kept %zu, drops %zu\n", got_body,
                                   out ? out : "(refused or overlapping)",
                                   want, req.options_kept, req.ndrops);
                        }

                        free(out);
                        continue;
                    }

                    free(out);

                    /* and the lead's num_predict, inserted or replaced */
                    if (req.num_predict_span.end > req.num_predict_span.start)
                    {
                        e.start = req.num_predict_span.start;
                        e.end = req.num_predict_span.end;
                        e.data = (const unsigned char *) "9";
                        e.len = 1;

                    } else {
                        e.start = req.options_span.start + 1;
                        e.end = e.start;
                        e.len = sprintf(num, "\"num_predict\":9%s",
                                        req.options_kept ? "," : "");
                        e.data = (const unsigned char *) num;
                    }

                    out = dropped(got_body, &e, 1);
                    tree = out ? yajl_tree_parse(out, NULL, 0) : NULL;

                    {
                        const char  *path[] = { "options", "num_predict",
                                                NULL };

                        v = tree ? yajl_tree_get(tree, path, yajl_t_number)
                                 : NULL;
                    }

                    if (v == NULL || strcmp(YAJL_GET_NUMBER(v), "9") != 0) {
                        if (fails++ == 0) {
                            printf("# body: %s\n# with num_predict: %s\n",
                                   got_body, out ? out : "(overlapping)");
                        }
                    }

                    yajl_tree_free(tree);
                    free(out);
                }
            }
        }
    }

    is_int(fails, 0, "%d bodies: drops leave valid JSON, the kept members "
           "and num_predict where the lead puts it", cases);
}


static void
test_drops(void)
{
    const char  *body;
    char        *out;
    char         big[4096], *p;
    int          i;

    static const char  *pass[] = { "num_thread", "num_batch", NULL };
    nebula_request_policy_t  policy = { pass };

    /* /v1: _debug_render_only in any case goes; keep_alive is not Ollama's */
    body = "{\"model\":\"m\",\"_DEBUG_render_only\":true,\"messages\":"
           "[{\"role\":\"user\",\"content\":\"x\"}],\"keep_alive\":0}";
    is_int(parse(NEBULA_API_CHAT, body), NEBULA_REQ_OK, "/v1 with both");
    is_int(req.ndrops, 1, "one drop");
    out = dropped(body, NULL, 0);
    is_str(out, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                "\"x\"}],\"keep_alive\":0}", "/v1: _debug_render_only gone");
    free(out);

    /* native keep_alive in the spellings Go reads, twice */
    body = "{\"model\":\"m\",\"prompt\":\"p\",\"keep_alive\":-1,"
           "\"\xe2\x84\xaa" "eep_alive\":\"24h\",\"Keep_Alive\":0}";
    is_int(parse(NEBULA_API_OLLAMA_GENERATE, body), NEBULA_REQ_OK,
           "keep_alive three times, in three spellings");
    is_int(req.ndrops, 3, "three drops");
    out = dropped(body, NULL, 0);
    is_str(out, "{\"model\":\"m\",\"prompt\":\"p\"}", "all gone");
    free(out);

    /* all options go: options_kept 0 */
    body = "{\"model\":\"m\",\"prompt\":\"p\",\"options\":{ \"num_gpu\": 1 ,"
           " \"use_mlock\" : true , \"vocab_only\":false } }";
    is_int(parse(NEBULA_API_OLLAMA_GENERATE, body), NEBULA_REQ_OK,
           "only fleet options");
    is_int(req.options_kept, 0, "none kept");
    out = dropped(body, NULL, 0);
    is_str(out, "{\"model\":\"m\",\"prompt\":\"p\",\"options\":{ } }",
           "an empty object left");
    free(out);

    /* the operator's policy lets names through */
    body = "{\"model\":\"m\",\"prompt\":\"p\",\"options\":{\"num_thread\":4,"
           "\"num_gpu\":1,\"num_batch\":8,\"Num_Thread\":9}}";
    is_int(nebula_request_parse_policy(&req, NEBULA_API_OLLAMA_GENERATE,
                                       (const unsigned char *) body,
                                       strlen(body), &policy),
           NEBULA_REQ_OK, "a policy passing num_thread and num_batch");
    is_int(req.options_kept, 2, "two kept");
    out = dropped(body, NULL, 0);
    is_str(out, "{\"model\":\"m\",\"prompt\":\"p\",\"options\":"
                "{\"num_thread\":4,\"num_batch\":8}}",
           "num_gpu and Num_Thread dropped");
    free(out);

    is_int(parse(NEBULA_API_OLLAMA_GENERATE, body), NEBULA_REQ_OK,
           "without the policy");
    is_int(req.options_kept, 0, "nothing kept");

    /* an options member named like ours elsewhere, or nested: untouched */
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
           "\"content\":\"x\",\"keep_alive\":0}],\"tools\":"
           "[{\"options\":{\"num_gpu\":1}}]}";
    is_int(parse(NEBULA_API_OLLAMA_CHAT, body), NEBULA_REQ_OK,
           "keep_alive in a message, options in a tool");
    is_int(req.ndrops, 0, "nothing dropped");

    /* 32 drops pass, 33 are refused */
    for (i = 32; i <= 33; i++) {
        p = big + sprintf(big, "{\"model\":\"m\",\"prompt\":\"p\","
                          "\"options\":{");

        for (int k = 0; k < i; k++) {
            p += sprintf(p, "%s\"x%d\":%d", k ? "," : "", k, k);
        }

        sprintf(p, "}}");

        if (i == 32) {
            is_int(parse(NEBULA_API_OLLAMA_GENERATE, big), NEBULA_REQ_OK,
                   "32 drops");
            out = dropped(big, NULL, 0);
            is_str(out, "{\"model\":\"m\",\"prompt\":\"p\",\"options\":{}}",
                   "all gone");
            free(out);

        } else {
            refused_api(NEBULA_API_OLLAMA_GENERATE, big,
                        NEBULA_REQ_INVALID_VALUE, "options", "33 drops");
        }
    }

    /* the estimate is not changed by what is dropped: it is the body's */
    body = "{\"model\":\"m\",\"prompt\":\"p\",\"keep_alive\":0}";
    is_int(parse(NEBULA_API_OLLAMA_GENERATE, body), NEBULA_REQ_OK,
           "estimate with a drop");
    is_int(req.prompt_tokens, (strlen(body) + 3) / 4, "the floor");
}


static void
test_edit_sort(void)
{
    nebula_edit_t  e[4];

    e[0].start = 5; e[0].end = 9;
    e[1].start = 5; e[1].end = 5;
    e[2].start = 1; e[2].end = 2;
    e[3].start = 5; e[3].end = 5;
    e[0].len = 0; e[1].len = 1; e[2].len = 2; e[3].len = 3;

    nebula_edit_sort(e, 4);
    ok(e[0].len == 2 && e[1].len == 1 && e[2].len == 3 && e[3].len == 0,
       "by start, insertions first at one start, stable");
}


int
main(void)
{
    test_drops();
    test_drop_combinations();
    test_edit_sort();

    return done_testing();
}
