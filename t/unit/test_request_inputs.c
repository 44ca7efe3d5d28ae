/*
 * The request parser on the embedding shapes: what "input" may be on
 * /v1/embeddings (texts, token ids, lists of ids) and /api/embed (texts),
 * the legacy /api/embeddings' "prompt", what each counts toward the
 * estimate, and the longest input the context bounds.  And the prompt of
 * /v1/completions, one string as Ollama takes it.
 */

#include "request.h"


#define EMB   NEBULA_API_EMBEDDINGS
#define OEMB  NEBULA_API_OLLAMA_EMBED
#define OEMBS NEBULA_API_OLLAMA_EMBEDDINGS


static void
test_accepted(void)
{
    is_int(parse(EMB, "{\"model\":\"m\",\"input\":\"hello world\"}"),
           NEBULA_REQ_OK, "a string");
    is_int(req.inputs, 1, "one input");
    is_int(req.longest_input, 3, "11 bytes: 3 tokens");
    is_int(req.text_bytes, 11, "its bytes counted");
    is_int(req.stream, 0, "no stream");

    is_int(parse(EMB, "{\"model\":\"m\",\"input\":[\"a\",\"bbbbbbbbbbbb\","
                      "\"cc\"],\"encoding_format\":\"base64\","
                      "\"dimensions\":256}"),
           NEBULA_REQ_OK, "strings, base64, dimensions");
    is_int(req.inputs, 3, "three inputs");
    is_int(req.longest_input, 3, "the longest: 12 bytes");
    is_int(req.text_bytes, 15, "all their bytes");

    is_int(parse(EMB, "{\"model\":\"m\",\"input\":[1,2,3,4,5]}"),
           NEBULA_REQ_OK, "token ids");
    is_int(req.inputs, 1, "one input of ids");
    is_int(req.context_ids, 5, "a token each");
    is_int(req.longest_input, 5, "five long");

    is_int(parse(EMB, "{\"model\":\"m\",\"input\":[[1,2],[3,4,5,6],[7]]}"),
           NEBULA_REQ_OK, "lists of ids");
    is_int(req.inputs, 3, "three inputs");
    is_int(req.context_ids, 7, "every id");
    is_int(req.longest_input, 4, "the longest list");

    is_int(parse(OEMB, "{\"model\":\"m\",\"input\":[\"x\",\"y\"],"
                       "\"truncate\":false,\"keep_alive\":\"1h\","
                       "\"options\":{\"num_ctx\":99999,\"num_gpu\":9}}"),
           NEBULA_REQ_OK, "/api/embed: strings, truncate, options");
    is_int(req.inputs, 2, "two inputs");
    is_int(req.ndrops, 2, "keep_alive and num_gpu dropped");
    is_int(req.num_ctx, 99999, "num_ctx read, to be capped");

    is_int(parse(OEMBS, "{\"model\":\"m\",\"prompt\":\"four words are here\"}"),
           NEBULA_REQ_OK, "/api/embeddings: a prompt");
    is_int(req.text_bytes, 19, "its bytes");

    /* the same input costs the estimate more than its text: 4 an input */
    is_int(parse(EMB, "{\"model\":\"m\",\"input\":[\"" 
                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}"),
           NEBULA_REQ_OK, "40 bytes");
    ok(req.prompt_tokens >= 10 + 4, "estimate %llu: the text and one input",
       (unsigned long long) req.prompt_tokens);

    /* stream is no field of theirs: passed as it is, never a stream */
    is_int(parse(EMB, "{\"model\":\"m\",\"input\":\"x\",\"stream\":true}"),
           NEBULA_REQ_OK, "stream passes");
    is_int(req.stream, 0, "and is not read");
}


static void
test_refused(void)
{
    refused_api(EMB, "{\"model\":\"m\"}", NEBULA_REQ_MISSING_FIELD, "input",
                "no input");
    refused_api(EMB, "{\"model\":\"m\",\"input\":null}",
                NEBULA_REQ_INVALID_VALUE, "input", "input null");
    refused_api(EMB, "{\"model\":\"m\",\"input\":\"\"}",
                NEBULA_REQ_INVALID_VALUE, "input", "an empty string");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[]}",
                NEBULA_REQ_INVALID_VALUE, "input", "an empty array");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[\"a\",\"\"]}",
                NEBULA_REQ_INVALID_VALUE, "input", "an empty string in it");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[\"a\",1]}",
                NEBULA_REQ_INVALID_VALUE, "input", "texts and ids mixed");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[[1],2]}",
                NEBULA_REQ_INVALID_VALUE, "input", "lists and ids mixed");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[[1,\"a\"]]}",
                NEBULA_REQ_INVALID_VALUE, "input", "a text in a list");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[[]]}",
                NEBULA_REQ_INVALID_VALUE, "input", "an empty list");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[[[1]]]}",
                NEBULA_REQ_INVALID_VALUE, "input", "lists in lists");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[-1]}",
                NEBULA_REQ_INVALID_VALUE, "input", "a negative id");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[1.5]}",
                NEBULA_REQ_INVALID_VALUE, "input", "a fraction");
    refused_api(EMB, "{\"model\":\"m\",\"input\":{\"a\":1}}",
                NEBULA_REQ_INVALID_VALUE, "input", "an object");
    refused_api(EMB, "{\"model\":\"m\",\"input\":[true]}",
                NEBULA_REQ_INVALID_VALUE, "input", "a boolean in it");
    refused_api(EMB, "{\"model\":\"m\",\"input\":7}",
                NEBULA_REQ_INVALID_VALUE, "input", "a number");
    refused_api(EMB, "{\"model\":\"m\",\"input\":\"a\",\"input\":\"b\"}",
                NEBULA_REQ_INVALID_JSON, "", "input twice");
    refused_api(OEMB, "{\"model\":\"m\",\"input\":[1,2]}",
                NEBULA_REQ_INVALID_VALUE, "input",
                "/api/embed: no token ids");
    refused_api(OEMB, "{\"model\":\"m\"}", NEBULA_REQ_MISSING_FIELD, "input",
                "/api/embed: no input");
    refused_api(OEMBS, "{\"model\":\"m\",\"prompt\":\"\"}",
                NEBULA_REQ_MISSING_FIELD, "prompt",
                "/api/embeddings: an empty prompt");
    refused_api(OEMBS, "{\"model\":\"m\",\"input\":\"x\"}",
                NEBULA_REQ_MISSING_FIELD, "prompt",
                "/api/embeddings: input is not its field");
    refused_api(EMB, "{\"input\":\"x\"}", NEBULA_REQ_MISSING_FIELD, "model",
                "no model");

    /* chat does not read "input": a chat body without messages */
    refused_api(NEBULA_API_CHAT, "{\"model\":\"m\",\"input\":\"x\"}",
                NEBULA_REQ_MISSING_FIELD, "messages", "chat: no messages");
}


static void
test_completions(void)
{
    nebula_api_e  api = NEBULA_API_COMPLETIONS;

    is_int(parse(api, "{\"model\":\"m\",\"prompt\":\"Once upon a time\","
                      "\"suffix\":\"the end\",\"max_tokens\":7,\"n\":1,"
                      "\"stream\":true,\"stream_options\":{\"include_usage\":"
                      "true},\"temperature\":0.5,\"echo\":false}"),
           NEBULA_REQ_OK, "completions: the usual fields");
    is_int(req.text_bytes, 16 + 7, "the prompt and the suffix read");
    is_int(req.max_tokens, 7, "max_tokens");
    is_int(req.stream, 1, "a stream");
    is_int(req.include_usage, 1, "usage asked");
    is_int(req.messages, 0, "no messages");

    is_int(parse(api, "{\"model\":\"m\",\"prompt\":\"x\"}"), NEBULA_REQ_OK,
           "completions: model and prompt");
    is_int(req.stream, 0, "one answer by default, as OpenAI's");

    refused_api(api, "{\"model\":\"m\"}", NEBULA_REQ_MISSING_FIELD, "prompt",
                "completions: no prompt");
    refused_api(api, "{\"model\":\"m\",\"prompt\":\"\"}",
                NEBULA_REQ_MISSING_FIELD, "prompt", "completions: empty");
    refused_api(api, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}",
                NEBULA_REQ_INVALID_VALUE, "prompt",
                "completions: an array (Ollama takes one string)");
    refused_api(api, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":0}",
                NEBULA_REQ_INVALID_VALUE, "max_tokens",
                "completions: max_tokens 0");
    refused_api(api, "{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":3}",
                NEBULA_REQ_INVALID_VALUE, "temperature",
                "completions: temperature 3");
    refused_api(api, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                     "\"content\":\"x\"}]}",
                NEBULA_REQ_MISSING_FIELD, "prompt",
                "completions: messages are not its field");
}


int
main(void)
{
    test_accepted();
    test_refused();
    test_completions();

    return done_testing();
}
