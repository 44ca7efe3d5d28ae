/*
 * Nebula: the APIs a location can serve, in one table (ngx_nebula_api.h).
 */

#include "ngx_nebula.h"


static u_char *ngx_nebula_end_chat(u_char *p, u_char *last, ngx_str_t *model,
    u_char *id, uint64_t prompt, uint64_t output, ngx_uint_t usage);
static u_char *ngx_nebula_end_completions(u_char *p, u_char *last,
    ngx_str_t *model, u_char *id, uint64_t prompt, uint64_t output,
    ngx_uint_t usage);
static u_char *ngx_nebula_end_ollama_chat(u_char *p, u_char *last,
    ngx_str_t *model, u_char *id, uint64_t prompt, uint64_t output,
    ngx_uint_t usage);
static u_char *ngx_nebula_end_ollama_generate(u_char *p, u_char *last,
    ngx_str_t *model, u_char *id, uint64_t prompt, uint64_t output,
    ngx_uint_t usage);
static u_char *ngx_nebula_end_messages(u_char *p, u_char *last,
    ngx_str_t *model, u_char *id, uint64_t prompt, uint64_t output,
    ngx_uint_t usage);
static u_char *ngx_nebula_end_responses(u_char *p, u_char *last,
    ngx_str_t *model, u_char *id, uint64_t prompt, uint64_t output,
    ngx_uint_t usage);


#define NGX_NEBULA_SSE_STOPPED                                                \
    "data: {\"error\":{\"message\":\"The model pool stopped before the "      \
    "answer was complete.\",\"type\":\"api_error\",\"param\":null,"           \
    "\"code\":\"upstream_error\"}}\n\n"

#define NGX_NEBULA_NDJSON_STOPPED                                             \
    "{\"error\":\"The model pool stopped before the answer was "              \
    "complete.\"}\n"

/* Anthropic's error event, and the Responses API's */
#define NGX_NEBULA_MESSAGES_STOPPED                                           \
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"           \
    "\"api_error\",\"message\":\"The model pool stopped before the answer "  \
    "was complete.\"}}\n\n"

#define NGX_NEBULA_RESPONSES_STOPPED                                          \
    "event: error\ndata: {\"type\":\"error\",\"code\":\"upstream_error\","    \
    "\"message\":\"The model pool stopped before the answer was "             \
    "complete.\",\"param\":null}\n\n"


static ngx_nebula_api_t  ngx_nebula_apis[] = {

    [NGX_NEBULA_API_NONE] = { ngx_null_string, NULL, 0, 0, 0, 0, 0, 0, 0, 0,
                              0, NULL, ngx_null_string },

    /* POST /v1/chat/completions */
    [NGX_NEBULA_API_CHAT] = {
        ngx_string("chat"), NULL,
        NEBULA_API_CHAT, NGX_NEBULA_LIMIT_MAX_TOKENS, NGX_NEBULA_USAGE_OPENAI,
        NEBULA_FORMAT_SSE, NGX_NEBULA_ERRORS_OPENAI, 1, 0, 0, 0,
        ngx_nebula_end_chat, ngx_string(NGX_NEBULA_SSE_STOPPED) },

    /* POST /v1/completions: OpenAI's legacy completions, chat's rules */
    [NGX_NEBULA_API_COMPLETIONS] = {
        ngx_string("completions"), NULL,
        NEBULA_API_COMPLETIONS, NGX_NEBULA_LIMIT_MAX_TOKENS,
        NGX_NEBULA_USAGE_OPENAI, NEBULA_FORMAT_SSE, NGX_NEBULA_ERRORS_OPENAI,
        1, 0, 0, 0, ngx_nebula_end_completions,
        ngx_string(NGX_NEBULA_SSE_STOPPED) },

    /* POST /api/chat */
    [NGX_NEBULA_API_OLLAMA_CHAT] = {
        ngx_string("ollama_chat"), NULL,
        NEBULA_API_OLLAMA_CHAT, NGX_NEBULA_LIMIT_NUM_PREDICT,
        NGX_NEBULA_USAGE_OLLAMA, NEBULA_FORMAT_NDJSON,
        NGX_NEBULA_ERRORS_OLLAMA, 0, 1, 0, 0,
        ngx_nebula_end_ollama_chat, ngx_string(NGX_NEBULA_NDJSON_STOPPED) },

    /* POST /api/generate */
    [NGX_NEBULA_API_OLLAMA_GENERATE] = {
        ngx_string("ollama_generate"), NULL,
        NEBULA_API_OLLAMA_GENERATE, NGX_NEBULA_LIMIT_NUM_PREDICT,
        NGX_NEBULA_USAGE_OLLAMA, NEBULA_FORMAT_NDJSON,
        NGX_NEBULA_ERRORS_OLLAMA, 0, 1, 0, 0,
        ngx_nebula_end_ollama_generate,
        ngx_string(NGX_NEBULA_NDJSON_STOPPED) },

    /*
     * POST /v1/embeddings, /api/embed, /api/embeddings: one JSON answer,
     * no output; the legacy native one reports no usage
     */
    [NGX_NEBULA_API_EMBEDDINGS] = {
        ngx_string("embeddings"), NULL,
        NEBULA_API_EMBEDDINGS, NGX_NEBULA_LIMIT_NONE,
        NGX_NEBULA_USAGE_OPENAI, NEBULA_FORMAT_JSON,
        NGX_NEBULA_ERRORS_OPENAI, 0, 0, 1, 0, NULL, ngx_null_string },

    [NGX_NEBULA_API_OLLAMA_EMBED] = {
        ngx_string("ollama_embed"), NULL,
        NEBULA_API_OLLAMA_EMBED, NGX_NEBULA_LIMIT_NONE,
        NGX_NEBULA_USAGE_OLLAMA, NEBULA_FORMAT_JSON,
        NGX_NEBULA_ERRORS_OLLAMA, 0, 1, 1, 0, NULL, ngx_null_string },

    [NGX_NEBULA_API_OLLAMA_EMBEDDINGS] = {
        ngx_string("ollama_embeddings"), NULL,
        NEBULA_API_OLLAMA_EMBEDDINGS, NGX_NEBULA_LIMIT_NONE,
        NGX_NEBULA_USAGE_NONE, NEBULA_FORMAT_JSON,
        NGX_NEBULA_ERRORS_OLLAMA, 0, 1, 1, 0, NULL, ngx_null_string },

    /* POST /api/show: the pool's answer about a model, the catalog's */
    [NGX_NEBULA_API_OLLAMA_SHOW] = {
        ngx_string("ollama_show"), NULL,
        NEBULA_API_OLLAMA_SHOW, NGX_NEBULA_LIMIT_NONE,
        NGX_NEBULA_USAGE_NONE, NEBULA_FORMAT_JSON,
        NGX_NEBULA_ERRORS_OLLAMA, 0, 0, 0, 1, NULL, ngx_null_string },

    /*
     * POST /v1/messages: Anthropic's Messages API, its errors, its events;
     * max_tokens is required, and clamped as chat's
     */
    [NGX_NEBULA_API_MESSAGES] = {
        ngx_string("messages"), NULL,
        NEBULA_API_MESSAGES, NGX_NEBULA_LIMIT_MAX_TOKENS,
        NGX_NEBULA_USAGE_OPENAI, NEBULA_FORMAT_SSE,
        NGX_NEBULA_ERRORS_ANTHROPIC, 0, 0, 0, 0,
        ngx_nebula_end_messages, ngx_string(NGX_NEBULA_MESSAGES_STOPPED) },

    /* POST /v1/responses: stateless, max_output_tokens its limit */
    [NGX_NEBULA_API_RESPONSES] = {
        ngx_string("responses"), NULL,
        NEBULA_API_RESPONSES, NGX_NEBULA_LIMIT_MAX_OUTPUT_TOKENS,
        NGX_NEBULA_USAGE_OPENAI, NEBULA_FORMAT_SSE,
        NGX_NEBULA_ERRORS_OPENAI, 0, 0, 0, 0,
        ngx_nebula_end_responses, ngx_string(NGX_NEBULA_RESPONSES_STOPPED) },

    /*
     * GET /api/ps: answered in the precontent phase from what each pool
     * says (ngx_nebula_ps.c); proxy_pass carries the subrequests
     */
    [NGX_NEBULA_API_OLLAMA_PS] = {
        ngx_string("ollama_ps"), NULL,
        NEBULA_API_OLLAMA_SHOW, NGX_NEBULA_LIMIT_NONE,
        NGX_NEBULA_USAGE_NONE, NEBULA_FORMAT_JSON,
        NGX_NEBULA_ERRORS_OLLAMA, 0, 0, 0, 1, NULL, ngx_null_string },

    /* answered from the catalog, Redis, or for nginx's own errors */
    [NGX_NEBULA_API_MODELS] = {
        ngx_string("models"), ngx_nebula_listing_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_OLLAMA_TAGS] = {
        ngx_string("ollama_tags"), ngx_nebula_listing_handler,
        0, 0, 0, 0, NGX_NEBULA_ERRORS_OLLAMA, 0, 0, 0, 0, NULL,
        ngx_null_string },
    [NGX_NEBULA_API_ERROR] = {
        ngx_string("error"), ngx_nebula_error_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_KEY] = {
        ngx_string("key"), ngx_nebula_holder_key_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_ADMIN] = {
        ngx_string("admin"), ngx_nebula_admin_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_OLLAMA_VERSION] = {
        ngx_string("ollama_version"), ngx_nebula_ollama_version_handler,
        0, 0, 0, 0, NGX_NEBULA_ERRORS_OLLAMA, 0, 0, 0, 0, NULL,
        ngx_null_string },
    [NGX_NEBULA_API_OLLAMA_FORBIDDEN] = {
        ngx_string("ollama_forbidden"), ngx_nebula_ollama_forbidden_handler,
        0, 0, 0, 0, NGX_NEBULA_ERRORS_OLLAMA, 0, 0, 0, 0, NULL,
        ngx_null_string },
    [NGX_NEBULA_API_GENERATION] = {
        ngx_string("generation"), ngx_nebula_generation_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_ACCOUNT] = {
        ngx_string("account"), ngx_nebula_account_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_SIGNUP] = {
        ngx_string("signup"), ngx_nebula_signup_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_PLANS] = {
        ngx_string("plans"), ngx_nebula_plans_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_METRICS] = {
        ngx_string("metrics"), ngx_nebula_metrics_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string },
    [NGX_NEBULA_API_HEALTH] = {
        ngx_string("health"), ngx_nebula_health_probe_handler,
        0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, ngx_null_string }
};


ngx_nebula_api_t *
ngx_nebula_api(ngx_uint_t id)
{
    return &ngx_nebula_apis[id < NGX_NEBULA_API_N ? id : NGX_NEBULA_API_NONE];
}


ngx_int_t
ngx_nebula_api_id(ngx_str_t *name)
{
    ngx_uint_t  i;

    for (i = 1; i < NGX_NEBULA_API_N; i++) {
        if (ngx_nebula_apis[i].name.len == name->len
            && ngx_strncmp(ngx_nebula_apis[i].name.data, name->data,
                           name->len)
               == 0)
        {
            return (ngx_int_t) i;
        }
    }

    return NGX_ERROR;
}


const char *
ngx_nebula_api_names(void)
{
    return "chat, completions, messages, responses, ollama_chat, "
           "ollama_generate, embeddings, ollama_embed, ollama_show, "
           "ollama_ps, ollama_embeddings, models, ollama_tags, "
           "ollama_version, ollama_forbidden, generation, key, plans, "
           "account, signup, admin, metrics, health or error";
}


/*
 * OpenAI's last chunk, finish_reason "length" (choice: the choice it
 * carries); the usage chunk when the client asked; [DONE].  The id is the
 * request's (the pool's own chunk id is not kept); Ollama's fingerprint,
 * as its chunks carry.
 */
static u_char *
ngx_nebula_end_openai(u_char *p, u_char *last, const char *object,
    const char *choice, ngx_str_t *model, u_char *id, uint64_t prompt,
    uint64_t output, ngx_uint_t usage)
{
    const char  *prefix;

    prefix = (object[0] == 'c') ? "chatcmpl" : "cmpl";

    p = ngx_slprintf(p, last,
                     "data: {\"id\":\"%s-%s\",\"object\":\"%s\","
                     "\"created\":%T,\"model\":%V,\"system_fingerprint\":"
                     "\"fp_ollama\",\"choices\":[%s]}\n\n",
                     prefix, id, object, ngx_time(), model, choice);

    if (usage) {
        p = ngx_slprintf(p, last,
                         "data: {\"id\":\"%s-%s\",\"object\":\"%s\","
                         "\"created\":%T,\"model\":%V,"
                         "\"system_fingerprint\":\"fp_ollama\",\"choices\":"
                         "[],\"usage\":{\"prompt_tokens\":%uL,"
                         "\"completion_tokens\":%uL,\"total_tokens\":%uL}}"
                         "\n\n",
                         prefix, id, object, ngx_time(), model, prompt,
                         output, prompt + output);
    }

    return ngx_slprintf(p, last, "data: [DONE]\n\n");
}


static u_char *
ngx_nebula_end_chat(u_char *p, u_char *last, ngx_str_t *model, u_char *id,
    uint64_t prompt, uint64_t output, ngx_uint_t usage)
{
    return ngx_nebula_end_openai(p, last, "chat.completion.chunk",
                                 "{\"index\":0,\"delta\":{\"role\":"
                                 "\"assistant\",\"content\":\"\"},"
                                 "\"finish_reason\":\"length\"}",
                                 model, id, prompt, output, usage);
}


/* /v1/completions' chunks: choices[].text */
static u_char *
ngx_nebula_end_completions(u_char *p, u_char *last, ngx_str_t *model,
    u_char *id, uint64_t prompt, uint64_t output, ngx_uint_t usage)
{
    return ngx_nebula_end_openai(p, last, "text_completion",
                                 "{\"text\":\"\",\"index\":0,"
                                 "\"finish_reason\":\"length\"}",
                                 model, id, prompt, output, usage);
}


/* Ollama's last line: done, done_reason "length", its counts */
static u_char *
ngx_nebula_end_ollama(u_char *p, u_char *last, ngx_str_t *model,
    const char *text, uint64_t prompt, uint64_t output)
{
    return ngx_slprintf(p, last,
                        "{\"model\":%V,\"created_at\":\"%V\",%s"
                        "\"done\":true,\"done_reason\":\"length\","
                        "\"prompt_eval_count\":%uL,\"eval_count\":%uL}\n",
                        model, &ngx_cached_http_log_iso8601, text, prompt,
                        output);
}


static u_char *
ngx_nebula_end_ollama_chat(u_char *p, u_char *last, ngx_str_t *model,
    u_char *id, uint64_t prompt, uint64_t output, ngx_uint_t usage)
{
    return ngx_nebula_end_ollama(p, last, model,
                                 "\"message\":{\"role\":\"assistant\","
                                 "\"content\":\"\"},",
                                 prompt, output);
}


static u_char *
ngx_nebula_end_ollama_generate(u_char *p, u_char *last, ngx_str_t *model,
    u_char *id, uint64_t prompt, uint64_t output, ngx_uint_t usage)
{
    return ngx_nebula_end_ollama(p, last, model, "\"response\":\"\",",
                                 prompt, output);
}


/*
 * Anthropic's last events, as Ollama ends a stream: message_delta, its
 * stop reason "max_tokens" and the usage, then message_stop.  (The open
 * content block is not closed: its index is not known here, and the SDKs
 * take the message's end as every block's.)
 */
static u_char *
ngx_nebula_end_messages(u_char *p, u_char *last, ngx_str_t *model,
    u_char *id, uint64_t prompt, uint64_t output, ngx_uint_t usage)
{
    return ngx_slprintf(p, last,
                        "event: message_delta\ndata: {\"type\":"
                        "\"message_delta\",\"delta\":{\"stop_reason\":"
                        "\"max_tokens\",\"stop_sequence\":null},\"usage\":"
                        "{\"input_tokens\":%uL,\"output_tokens\":%uL}}\n\n"
                        "event: message_stop\ndata: {\"type\":"
                        "\"message_stop\"}\n\n",
                        prompt, output);
}


/*
 * The Responses API's last event, as Ollama ends a stream:
 * response.completed, its status "incomplete" for the reservation's
 * limit, as OpenAI's max_output_tokens makes it, and the usage.  The
 * output streamed before is not repeated: it was not kept.
 */
static u_char *
ngx_nebula_end_responses(u_char *p, u_char *last, ngx_str_t *model,
    u_char *id, uint64_t prompt, uint64_t output, ngx_uint_t usage)
{
    return ngx_slprintf(p, last,
                        "event: response.completed\ndata: {\"response\":{"
                        "\"id\":\"resp_%s\",\"object\":\"response\","
                        "\"created_at\":%T,\"status\":\"incomplete\","
                        "\"incomplete_details\":{\"reason\":"
                        "\"max_output_tokens\"},\"model\":%V,\"output\":[],"
                        "\"usage\":{\"input_tokens\":%uL,"
                        "\"input_tokens_details\":{\"cached_tokens\":0},"
                        "\"output_tokens\":%uL,\"output_tokens_details\":"
                        "{\"reasoning_tokens\":0},\"total_tokens\":%uL}},"
                        "\"type\":\"response.completed\"}\n\n",
                        id, ngx_time(), model, prompt, output,
                        prompt + output);
}
