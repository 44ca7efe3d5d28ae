/*
 * The request parser on Anthropic's Messages API (/v1/messages) and
 * OpenAI's Responses API (/v1/responses): what each takes, what it
 * counts, and what it refuses, with the param a client is told.
 */

#include "request.h"


#define MSG   NEBULA_API_MESSAGES
#define RESP  NEBULA_API_RESPONSES

/* a PNG of 2 x 3 pixels, its header only: what the parser reads */
#define PNG   "iVBORw0KGgoAAAANSUhEUgAAAAIAAAADCAYAAAAAAAAA"


static void
test_messages(void)
{
    is_int(parse(MSG, "{\"model\":\"m\",\"max_tokens\":100,\"messages\":"
                      "[{\"role\":\"user\",\"content\":\"hello there\"}]}"),
           NEBULA_REQ_OK, "a message");
    is_int(req.max_tokens, 100, "max_tokens read");
    ok(req.max_tokens_span.end > req.max_tokens_span.start,
       "and where it is");
    is_int(req.stream, 0, "no stream by default");
    is_int(req.messages, 1, "one message");
    is_int(req.text_bytes, 11, "its text");

    is_int(parse(MSG, "{\"model\":\"m\",\"max_tokens\":32000,\"stream\":true,"
                      "\"system\":[{\"type\":\"text\",\"text\":\"be brief\","
                      "\"cache_control\":{\"type\":\"ephemeral\"}}],"
                      "\"messages\":[{\"role\":\"user\",\"content\":["
                      "{\"type\":\"text\",\"text\":\"look\"},"
                      "{\"type\":\"image\",\"source\":{\"type\":\"base64\","
                      "\"media_type\":\"image/png\",\"data\":\"" PNG "\"}}]},"
                      "{\"role\":\"assistant\",\"content\":[{\"type\":"
                      "\"thinking\",\"thinking\":\"hm\",\"signature\":\"s\"},"
                      "{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\","
                      "\"input\":{\"a\":1}}]},"
                      "{\"role\":\"user\",\"content\":[{\"type\":"
                      "\"tool_result\",\"tool_use_id\":\"t1\",\"content\":["
                      "{\"type\":\"text\",\"text\":\"42\"},{\"type\":\"image\","
                      "\"source\":{\"data\":\"" PNG "\",\"type\":\"base64\"}}]}"
                      "]}],\"tools\":[{\"name\":\"f\",\"input_schema\":{}}],"
                      "\"thinking\":{\"type\":\"adaptive\"},\"metadata\":"
                      "{\"user_id\":\"u\"},\"temperature\":1}"),
           NEBULA_REQ_OK, "Claude Code's blocks: system, image, thinking, "
           "tool_use, tool_result with an image, tools");
    is_int(req.stream, 1, "a stream");
    is_int(req.messages, 3, "three messages");
    is_int(req.images, 2, "both images, the tool result's too");
    is_int(req.image_bytes, 2 * (sizeof(PNG) - 1), "their data");
    is_int(req.text_bytes, 8 + 4 + 2 + 2, "system, texts, thinking");
    ok(req.other_bytes > 0, "tools and tool input counted");

    refused_api(MSG, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                "\"content\":\"x\"}]}", NEBULA_REQ_MISSING_FIELD,
                "max_tokens", "no max_tokens");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":null,\"messages\":"
                "[{\"role\":\"user\",\"content\":\"x\"}]}",
                NEBULA_REQ_MISSING_FIELD, "max_tokens", "max_tokens null");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":0,\"messages\":"
                "[{\"role\":\"user\",\"content\":\"x\"}]}",
                NEBULA_REQ_INVALID_VALUE, "max_tokens", "max_tokens 0");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9}",
                NEBULA_REQ_MISSING_FIELD, "messages", "no messages");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":[]}",
                NEBULA_REQ_INVALID_VALUE, "messages", "no message");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":"
                "[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
                "\"source\":{\"type\":\"url\",\"url\":\"http://x/y.png\"}}]}]}",
                NEBULA_REQ_INVALID_VALUE, "messages[0].content[0].source",
                "an image URL");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":"
                "[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
                "\"source\":{\"type\":\"base64\",\"data\":\"aGVsbG8=\"}}]}]}",
                NEBULA_REQ_INVALID_VALUE, "messages[0].content[0].source",
                "base64 that is no image");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":"
                "[{\"role\":\"user\",\"content\":[{\"type\":\"image\"}]}]}",
                NEBULA_REQ_MISSING_FIELD, "messages[0].content[0].source",
                "an image without a source");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":"
                "[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":"
                "\"f\"},{\"type\":\"web_search_20250305\",\"name\":"
                "\"web_search\"}]}", NEBULA_REQ_INVALID_VALUE,
                "tools[1].type", "the server tool web_search");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":"
                "[{\"role\":\"developer\",\"content\":\"x\"}]}",
                NEBULA_REQ_INVALID_VALUE, "messages[0].role",
                "OpenAI's developer role");
    refused_api(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"system\":5,"
                "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                NEBULA_REQ_INVALID_VALUE, "system", "system a number");

    /* a document's data is no image Ollama reads: passed, counted as body */
    is_int(parse(MSG, "{\"model\":\"m\",\"max_tokens\":9,\"messages\":"
                      "[{\"role\":\"user\",\"content\":[{\"type\":"
                      "\"document\",\"source\":{\"type\":\"base64\","
                      "\"data\":\"JVBERi0=\"}}]}]}"),
           NEBULA_REQ_OK, "a document block passes");
    is_int(req.images, 0, "and is no image");
}


static void
test_responses(void)
{
    is_int(parse(RESP, "{\"model\":\"m\",\"input\":\"tell me\"}"),
           NEBULA_REQ_OK, "input, a string");
    is_int(req.messages, 1, "one message");
    is_int(req.text_bytes, 7, "its text");
    is_int(req.max_tokens, -1, "no limit");
    is_int(req.stream, 0, "no stream");

    is_int(parse(RESP, "{\"model\":\"m\",\"instructions\":\"be kind\","
                       "\"max_output_tokens\":50,\"stream\":true,"
                       "\"previous_response_id\":null,\"store\":false,"
                       "\"input\":[{\"role\":\"developer\",\"content\":\"d\"},"
                       "{\"type\":\"message\",\"role\":\"user\",\"content\":"
                       "[{\"type\":\"input_text\",\"text\":\"see\"},"
                       "{\"type\":\"input_image\",\"image_url\":"
                       "\"data:image/png;base64," PNG "\"}]},"
                       "{\"type\":\"function_call\",\"call_id\":\"c\","
                       "\"name\":\"f\",\"arguments\":\"{}\"},"
                       "{\"type\":\"function_call_output\",\"call_id\":\"c\","
                       "\"output\":\"42\"}],\"tools\":[{\"type\":"
                       "\"function\",\"name\":\"f\",\"parameters\":{}}]}"),
           NEBULA_REQ_OK, "items: developer, parts, an image, tool calls");
    is_int(req.max_tokens, 50, "max_output_tokens read as the limit");
    ok(req.max_tokens_span.end > req.max_tokens_span.start,
       "and where it is");
    is_int(req.stream, 1, "a stream");
    is_int(req.messages, 4, "four items");
    is_int(req.images, 1, "the image");
    is_int(req.nrole_edits, 0, "developer left to Ollama");

    refused_api(RESP, "{\"model\":\"m\"}", NEBULA_REQ_MISSING_FIELD, "input",
                "no input");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"\"}",
                NEBULA_REQ_INVALID_VALUE, "input", "input empty");
    refused_api(RESP, "{\"model\":\"m\",\"input\":[]}",
                NEBULA_REQ_INVALID_VALUE, "input", "no items");
    refused_api(RESP, "{\"model\":\"m\",\"input\":{\"a\":1}}",
                NEBULA_REQ_INVALID_VALUE, "input", "input an object");
    refused_api(RESP, "{\"model\":\"m\",\"input\":[1]}",
                NEBULA_REQ_INVALID_VALUE, "input[0]", "an item a number");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"x\","
                "\"previous_response_id\":\"resp_1\"}",
                NEBULA_REQ_INVALID_VALUE, "previous_response_id",
                "previous_response_id");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"x\",\"conversation\":"
                "{\"id\":\"conv_1\"}}", NEBULA_REQ_INVALID_VALUE,
                "conversation", "conversation");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"x\","
                "\"max_output_tokens\":-5}", NEBULA_REQ_INVALID_VALUE,
                "max_output_tokens", "max_output_tokens negative");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"x\","
                "\"max_output_tokens\":\"5\"}", NEBULA_REQ_INVALID_VALUE,
                "max_output_tokens", "max_output_tokens a string");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"x\",\"instructions\":1}",
                NEBULA_REQ_INVALID_VALUE, "instructions",
                "instructions a number");
    refused_api(RESP, "{\"model\":\"m\",\"input\":[{\"role\":\"user\","
                "\"content\":[{\"type\":\"input_image\",\"image_url\":"
                "\"https://x/y.png\"}]}]}", NEBULA_REQ_INVALID_VALUE,
                "input[0].content[0].image_url", "an image URL");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"x\",\"tools\":"
                "[{\"type\":\"web_search_preview\"}]}",
                NEBULA_REQ_INVALID_VALUE, "tools[0].type", "web search");
    refused_api(RESP, "{\"model\":\"m\",\"input\":\"x\",\"max_tokens\":5,"
                "\"max_output_tokens\":5,\"max_output_tokens\":6}",
                NEBULA_REQ_INVALID_JSON, "", "a repeated limit");
}


int
main(void)
{
    test_messages();
    test_responses();

    return done_testing();
}
