"""The two compatibility APIs Ollama serves besides OpenAI's chat and
completions, for ollama_sim.py: Anthropic's Messages API (POST /v1/messages,
Ollama >= 0.14) and OpenAI's stateless Responses API (POST /v1/responses,
Ollama >= 0.13.3).

Ollama serves both as middleware in front of its /api/chat handler: the
request is checked and converted to a chat request (anthropic/anthropic.go
FromMessagesRequest, openai/responses.go FromResponsesRequest), the chat's
answer, chunk by chunk, is converted back (ToMessagesResponse and
StreamConverter; ToResponse and ResponsesStreamConverter) and written with
Go's encoding/json.  This module does the same on top of the simulator's
generation: ollama_sim.Sim.model_endpoint handles these paths as it handles
/v1/chat/completions (faults, x-sim-* headers, the request log), with a
Generation subclass from here that writes the frames, and these hooks:

  * count_prompt_tokens / completion_cap / is_load: token accounting;
  * validate: the middleware's checks, with its error shapes;
  * error_body: an error's body in the path's API shape;
  * record_fields: what the request log adds for these paths;
  * new_generation: the Generation that writes the answers.

Standard library only.  bind(module) is called by ollama_sim.py once it has
defined its own names (the simulator may run as __main__).
"""

import base64
import binascii
import hashlib
import json
import re
import time
from decimal import Decimal

MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"
PATHS = (MESSAGES, RESPONSES)

# ollama_sim, set by bind()
B = None
_CLASSES = {}


def bind(module):
    """Called by ollama_sim.py once its names exist."""
    global B
    B = module


# --------------------------------------------------------------------------
# Go's encoding/json, as far as the answers need it: struct fields in
# declaration order (Python dicts as built), map[string]any with sorted keys
# (GoMap, or every object with sort=True), HTML-safe strings (<, >, & and
# U+2028/U+2029 escaped), float64 as strconv 'f' or 'e' formats them, and
# json.RawMessage compacted (Raw).
# --------------------------------------------------------------------------

class GoMap(dict):
    """A Go map: marshalled with its keys sorted."""


class Raw:
    """A json.RawMessage as Go marshals it: compacted, HTML-escaped."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


_SURROGATE = re.compile("[\ud800-\udfff]")


def go_str(s):
    # Go's decoder turns a lone surrogate escape into U+FFFD
    s = _SURROGATE.sub("\ufffd", s)
    out = json.dumps(s, ensure_ascii=False)
    return (out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def go_float(x):
    """A float64 as encoding/json writes it: 'f' between 1e-6 and 1e21,
    else 'e' with e-7 (not e-07)."""
    if x == 0:
        return "-0" if str(x).startswith("-") else "0"
    r = repr(float(x))
    a = abs(x)
    if 1e-6 <= a < 1e21:
        if "e" in r or "E" in r:
            r = format(Decimal(r), "f")
        if r.endswith(".0"):
            r = r[:-2]
        return r
    mant, _, exp = r.partition("e")
    sign, digits = exp[0], exp[1:]
    if sign == "-" and len(digits) == 2 and digits[0] == "0":
        digits = digits[1:]
    return "%se%s%s" % (mant[:-2] if mant.endswith(".0") else mant, sign, digits)


def gojson(v, sort=False):
    """v as Go's json.Marshal writes it (sort: every object is a map)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, str):
        return go_str(v)
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, dict):
        keys = sorted(v) if sort or isinstance(v, GoMap) else list(v)
        return "{" + ",".join(go_str(k) + ":" + gojson(v[k], sort) for k in keys) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(gojson(x, sort) for x in v) + "]"
    raise TypeError("cannot encode %r" % type(v))


def go_any(v):
    """A value Go decoded into any (maps: sorted when marshalled again)."""
    if isinstance(v, dict):
        return GoMap((k, go_any(x)) for k, x in v.items())
    if isinstance(v, list):
        return [go_any(x) for x in v]
    return v


def compact(raw):
    """json.Compact with HTML escaping, as Marshal writes a RawMessage."""
    out = []
    in_str = esc = False
    for ch in raw:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            if ch in "<>&\u2028\u2029":
                ch = "\\u%04x" % ord(ch)
            out.append(ch)
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif ch not in " \t\r\n":
            out.append(ch)
    return "".join(out)


def blen(s):
    """Go's len(): bytes."""
    return len(s.encode("utf-8", errors="surrogatepass"))


def sse(event, data, sort=False):
    """One event as Ollama's writeSSE writes it."""
    return ("event: %s\ndata: %s\n\n" % (event, gojson(data, sort))).encode("utf-8")


# --------------------------------------------------------------------------
# The request body, read as gin's ShouldBindJSON reads it: the first JSON
# value (whatever follows is ignored), Go's messages for a syntax error.
# Raw spans: json.RawMessage fields keep the request's own bytes.
# --------------------------------------------------------------------------

class Invalid(Exception):
    """A request Ollama refuses with a 400; the message is Ollama's."""


_WS = re.compile(r"[ \t\n\r]*")


def _no_constant(name):
    # Go's JSON has no NaN or Infinity
    raise ValueError("invalid constant %s" % name)


_DEC = json.JSONDecoder(parse_constant=_no_constant)


def _quote_char(c):
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    q = json.dumps(c, ensure_ascii=False)[1:-1]
    return "'" + q + "'"


def decode_body(raw):
    """(text, value): the first JSON value of the body; Invalid with Go's
    message when there is none."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("invalid character in string literal")
    i = _WS.match(text, 0).end()
    if i >= len(text):
        raise Invalid("EOF")
    try:
        value, _ = _DEC.raw_decode(text, i)
    except json.JSONDecodeError as e:
        if e.pos >= len(text):
            raise Invalid("unexpected EOF")
        where = {"Expecting ':' delimiter": "after object key",
                 "Expecting ',' delimiter": "after object key:value pair",
                 "Expecting property name enclosed in double quotes":
                     "looking for beginning of object key string",
                 "Invalid control character at": "in string literal"}
        return_msg = where.get(e.msg, "looking for beginning of value")
        raise Invalid("invalid character %s %s" % (_quote_char(text[e.pos]), return_msg))
    except ValueError:
        raise Invalid("invalid character %s looking for beginning of value"
                      % _quote_char(text[i]))
    return text, value


def _members(text, i):
    """(key, start, end) of each member of the object at text[i]."""
    i = _WS.match(text, i + 1).end()
    if text[i] == "}":
        return
    while True:
        key, i = json.decoder.scanstring(text, i + 1)
        i = _WS.match(text, i).end() + 1          # ':'
        i = _WS.match(text, i).end()
        _, end = _DEC.raw_decode(text, i)
        yield key, i, end
        i = _WS.match(text, end).end()
        if text[i] != ",":
            return
        i = _WS.match(text, i + 1).end()


def _elements(text, i):
    """(start, end) of each element of the array at text[i]."""
    i = _WS.match(text, i + 1).end()
    if text[i] == "]":
        return
    while True:
        _, end = _DEC.raw_decode(text, i)
        yield i, end
        i = _WS.match(text, end).end()
        if text[i] != ",":
            return
        i = _WS.match(text, i + 1).end()


def _member(text, i, key):
    """The span of the member key of the object at text[i] (the last one,
    as Go's decoder keeps), or None."""
    if i is None or text[i] != "{":
        return None
    found = None
    for k, s, e in _members(text, i):
        if k == key:
            found = (s, e)
    return found


def raw_spans(text, *path):
    """The raw text of body.path (keys and, for arrays, "*": every
    element), as json.RawMessage keeps it; None where absent."""
    starts = [_WS.match(text, 0).end()]
    for key in path:
        nxt = []
        for s in starts:
            if s is None:
                nxt.append(None)
            elif key == "*":
                if text[s] == "[":
                    nxt.extend(a for a, _ in _elements(text, s))
            else:
                span = _member(text, s, key)
                nxt.append(span[0] if span else None)
        starts = nxt
    out = []
    for s in starts:
        if s is None:
            out.append(None)
        else:
            _, end = _DEC.raw_decode(text, s)
            out.append(text[s:end])
    return out


# --------------------------------------------------------------------------
# Go's type checks while decoding into the request structs: the first value
# of the wrong JSON type gives "json: cannot unmarshal KIND into Go struct
# field STRUCT.PATH of type TYPE", as Go words it.  A null is always
# accepted (Go leaves the field alone).
# --------------------------------------------------------------------------

def _kind(v, want=None):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        if want == "int" and isinstance(v, float):
            return "number " + repr(v)
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_error(v, want, struct, path):
    return Invalid("json: cannot unmarshal %s into Go struct field %s.%s of type %s"
                   % (_kind(v, want), struct, ".".join(path), want))


def _scalar_ok(v, want):
    if want == "string":
        return isinstance(v, str)
    if want == "bool":
        return isinstance(v, bool)
    if want == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if want == "float64":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return True


def check(v, spec, struct, path=()):
    """Raises Invalid for the first value of the wrong type.  spec: a Go
    scalar type name, "any", ("[]", TYPE, spec), ("map", TYPE) or
    ("struct", TYPE, NAME, {field: spec})."""
    if v is None or spec == "any":
        return
    if isinstance(spec, str):
        if not _scalar_ok(v, spec):
            raise _type_error(v, spec, struct, path)
        return
    if spec[0] == "[]":
        if not isinstance(v, list):
            raise _type_error(v, spec[1], struct, path)
        for x in v:
            check(x, spec[2], struct, path)
        return
    if spec[0] == "map":
        if not isinstance(v, dict):
            raise _type_error(v, spec[1], struct, path)
        return
    _, tname, name, fields = spec
    if not isinstance(v, dict):
        raise _type_error(v, tname, struct, path)
    for key, x in v.items():
        if key in fields:
            check(x, fields[key], name, path + (key,))


# --------------------------------------------------------------------------
# Anthropic's Messages API
# --------------------------------------------------------------------------

_S, _I, _F, _B = "string", "int", "float64", "bool"
_CITATION = ("struct", "anthropic.Citation", "Citation",
             {"type": _S, "url": _S, "title": _S, "encrypted_index": _S, "cited_text": _S})
_SOURCE = ("struct", "anthropic.ImageSource", "ImageSource",
           {"type": _S, "media_type": _S, "data": _S, "url": _S})
_BLOCK = ("struct", "anthropic.ContentBlock", "ContentBlock", {
    "type": _S, "text": _S, "citations": ("[]", "[]anthropic.Citation", _CITATION),
    "source": _SOURCE, "id": _S, "name": _S,
    "input": ("map", "map[string]interface {}"), "tool_use_id": _S, "content": "any",
    "is_error": _B, "thinking": _S, "signature": _S})
_TOOL = ("struct", "anthropic.Tool", "Tool",
         {"type": _S, "name": _S, "description": _S, "input_schema": "any", "max_uses": _I})
_MESSAGES_REQUEST = ("struct", "anthropic.MessagesRequest", "MessagesRequest", {
    "model": _S, "max_tokens": _I, "messages": ("[]", "[]anthropic.MessageParam", "any"),
    "system": "any", "stream": _B, "temperature": _F, "top_p": _F, "top_k": _I,
    "stop_sequences": ("[]", "[]string", _S), "tools": ("[]", "[]anthropic.Tool", _TOOL),
    "tool_choice": ("struct", "anthropic.ToolChoice", "ToolChoice",
                    {"type": _S, "name": _S, "disable_parallel_tool_use": _B}),
    "thinking": ("struct", "anthropic.ThinkingConfig", "ThinkingConfig",
                 {"type": _S, "budget_tokens": _I}),
    "metadata": ("struct", "anthropic.Metadata", "Metadata", {"user_id": _S}),
    "output_config": ("struct", "anthropic.OutputConfig", "OutputConfig", {"effort": _S}),
})


def _message_blocks(msg):
    """A MessageParam's content as MessageParam.UnmarshalJSON leaves it:
    a string is one text block, null an empty one."""
    if msg is None:
        msg = {}
    if not isinstance(msg, dict):
        raise Invalid("json: cannot unmarshal %s into Go struct field MessagesRequest.messages"
                      " of type anthropic.MessageParam" % _kind(msg))
    role = msg.get("role")
    if role is not None and not isinstance(role, str):
        raise _type_error(role, "string", "MessagesRequest", ("messages", "role"))
    if "content" not in msg:
        raise Invalid("unexpected end of JSON input")
    content = msg["content"]
    if content is None:
        return [{"type": "text", "text": ""}]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise Invalid("json: cannot unmarshal %s into Go value of type []anthropic.ContentBlock"
                      % _kind(content))
    for block in content:
        # errors inside take the outer context: MessagesRequest.messages.*
        try:
            check(block, _BLOCK, "ContentBlock")
        except Invalid as e:
            raise Invalid(str(e).replace("Go struct field ContentBlock.",
                                         "Go struct field MessagesRequest.messages."))
    return [b if isinstance(b, dict) else {} for b in content]


def _b64_image(data):
    """Go's base64.StdEncoding.DecodeString: Invalid unless it decodes."""
    s = (data or "").replace("\r", "").replace("\n", "")
    try:
        base64.b64decode(s, validate=True)
        return
    except (binascii.Error, ValueError):
        pass
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    bad = next((i for i, c in enumerate(s) if c not in alphabet), len(s) - len(s) % 4)
    raise Invalid("invalid base64 image data: illegal base64 data at input byte %d" % bad)


def _resolve_image(source):
    stype = source.get("type") if isinstance(source.get("type"), str) else ""
    if stype != "base64":
        raise Invalid("invalid image source type: %s. Only base64 images are supported." % stype)
    _b64_image(source.get("data") if isinstance(source.get("data"), str) else "")


def _tool_result_content(content):
    """(text, images) of a tool_result's content."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    text, images = "", 0
    for cb in content:
        if not isinstance(cb, dict):
            continue
        if cb.get("type") == "text":
            if isinstance(cb.get("text"), str):
                text += cb["text"]
        elif cb.get("type") == "image":
            if not isinstance(cb.get("source"), dict):
                raise Invalid("invalid tool_result image source")
            _resolve_image(cb["source"])
            images += 1
    return text, images


def _web_search_result_text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = ""
        for item in content:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "web_search_result":
                title = item.get("title") if isinstance(item.get("title"), str) else ""
                url = item.get("url") if isinstance(item.get("url"), str) else ""
                out += "- %s: %s\n" % (title, url)
            elif item.get("type") == "web_search_tool_result_error":
                code = item.get("error_code") if isinstance(item.get("error_code"), str) else ""
                return "web_search_tool_result_error" + (": " + code if code else "")
        return out
    if isinstance(content, dict):
        if content.get("type") == "web_search_tool_result_error":
            code = content.get("error_code") if isinstance(content.get("error_code"), str) else ""
            return "web_search_tool_result_error" + (": " + code if code else "")
        return gojson(go_any(content))
    return gojson(go_any(content))


def _msg(role, content="", images=0, tool_calls=0, thinking=""):
    return {"role": role, "content": content, "images": images,
            "tool_calls": tool_calls, "thinking": thinking}


def _convert_anthropic_message(msg):
    """convertMessage: one MessageParam as Ollama's chat messages."""
    blocks = _message_blocks(msg)
    role = (msg.get("role") or "").lower()
    text, images, calls, thinking, results = "", 0, 0, "", []
    for block in blocks:
        btype = block.get("type")
        if btype == "text":
            if isinstance(block.get("text"), str):
                text += block["text"]
        elif btype == "image":
            if not isinstance(block.get("source"), dict):
                raise Invalid("invalid image source")
            _resolve_image(block["source"])
            images += 1
        elif btype == "tool_use":
            if not block.get("id"):
                raise Invalid("tool_use block missing required 'id' field")
            if not block.get("name"):
                raise Invalid("tool_use block missing required 'name' field")
            calls += 1
        elif btype == "tool_result":
            rtext, rimages = _tool_result_content(block.get("content"))
            results.append(_msg("tool", rtext, rimages))
        elif btype == "thinking":
            if isinstance(block.get("thinking"), str):
                thinking = block["thinking"]
        elif btype == "server_tool_use":
            calls += 1
        elif btype == "web_search_tool_result":
            results.append(_msg("tool", _web_search_result_text(block.get("content"))))
    out = []
    if role == "user" and results:
        out.extend(results)
    if text or images or calls or thinking:
        out.append(_msg(role, text, images, calls, thinking))
    if role != "user" or not results:
        out.extend(results)
    return out


def _check_tool_schema(schema, what):
    """The tool's schema as api.ToolFunctionParameters decodes it."""
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise Invalid("%sjson: cannot unmarshal %s into Go value of type "
                      "api.ToolFunctionParameters" % (what, _kind(schema)))
    for key, want in (("type", "string"), ("required", "[]string")):
        v = schema.get(key)
        if v is None:
            continue
        strings = isinstance(v, list) and all(isinstance(x, str) for x in v)
        if want == "string" and not isinstance(v, str) or want == "[]string" and not strings:
            raise Invalid("%sjson: cannot unmarshal %s into Go struct field "
                          "ToolFunctionParameters.%s of type %s"
                          % (what, _kind(v if want == "string" or not isinstance(v, list) else
                                         next(x for x in v if not isinstance(x, str))),
                             key, "string"))
    props = schema.get("properties")
    if props is not None and not isinstance(props, dict):
        raise Invalid("%sjson: cannot unmarshal %s into Go value of type "
                      "orderedmap.OrderedMap[string,github.com/ollama/ollama/api.ToolProperty]"
                      % (what, _kind(props)))


def anthropic_messages(body):
    """FromMessagesRequest: the chat messages Ollama makes of the request
    (Invalid with its message when it refuses it)."""
    out = []
    system = body.get("system")
    if isinstance(system, str):
        if system:
            out.append(_msg("system", system))
    elif isinstance(system, list):
        text = "".join(b["text"] for b in system
                       if isinstance(b, dict) and b.get("type") == "text"
                       and isinstance(b.get("text"), str))
        if text:
            out.append(_msg("system", text))
    for msg in body.get("messages") or []:
        out.extend(_convert_anthropic_message(msg or {}))
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or str(tool.get("type") or "").startswith("web_search"):
            continue
        _check_tool_schema(tool.get("input_schema"),
                           'invalid input_schema for tool "%s": ' % (tool.get("name") or ""))
    return out


def validate_messages(body):
    """AnthropicMessagesMiddleware's checks, in its order."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise Invalid("json: cannot unmarshal %s into Go value of type anthropic.MessagesRequest"
                      % _kind(body))
    check(body, _MESSAGES_REQUEST, "MessagesRequest")
    for msg in body.get("messages") or []:
        _message_blocks(msg)
    if not body.get("model"):
        raise Invalid("model is required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] <= 0:
        raise Invalid("max_tokens is required and must be positive")
    if not body.get("messages"):
        raise Invalid("messages is required")
    return anthropic_messages(body)


def _go_block(b):
    """A ContentBlock as json.Marshal writes it (for the estimate)."""
    out = {"type": b.get("type") or ""}
    if isinstance(b.get("text"), str):
        out["text"] = b["text"]
    if isinstance(b.get("citations"), list) and b["citations"]:
        cits = []
        for c in b["citations"]:
            c = c if isinstance(c, dict) else {}
            cit = {"type": c.get("type") or "", "url": c.get("url") or "",
                   "title": c.get("title") or ""}
            for k in ("encrypted_index", "cited_text"):
                if c.get(k):
                    cit[k] = c[k]
            cits.append(cit)
        out["citations"] = cits
    if isinstance(b.get("source"), dict):
        src = {"type": b["source"].get("type") or ""}
        for k in ("media_type", "data", "url"):
            if b["source"].get(k):
                src[k] = b["source"][k]
        out["source"] = src
    for k in ("id", "name"):
        if b.get(k):
            out[k] = b[k]
    if isinstance(b.get("input"), dict):
        out["input"] = go_any(b["input"])
    if b.get("tool_use_id"):
        out["tool_use_id"] = b["tool_use_id"]
    if b.get("content") is not None:
        out["content"] = go_any(b["content"])
    if b.get("is_error") is True:
        out["is_error"] = True
    if isinstance(b.get("thinking"), str):
        out["thinking"] = b["thinking"]
    if b.get("signature"):
        out["signature"] = b["signature"]
    return out


def _count_block(b):
    n = 0
    if isinstance(b.get("text"), str):
        n += blen(b["text"])
    if isinstance(b.get("thinking"), str):
        n += blen(b["thinking"])
    if b.get("type") in ("tool_use", "tool_result"):
        n += blen(gojson(_go_block(b)))
    return n


def estimate_input_tokens(body, text):
    """anthropic.EstimateInputTokens, which Ollama reports in message_start
    (a stream's first chunk has no prompt_eval_count yet): the bytes of the
    system prompt, of each message's role and text, thinking and JSON of its
    tool_use/tool_result blocks, and of each tool's name, description and
    input_schema (as sent), divided by 4 (at least 1)."""
    total = 0
    system = body.get("system")
    if isinstance(system, str):
        total += blen(system)
    elif isinstance(system, list):
        for item in system:
            try:
                check(item, _BLOCK, "ContentBlock")
            except Invalid:
                continue
            if isinstance(item, dict):
                total += _count_block(item)
    elif system is not None:
        total += blen(gojson(go_any(system)))
    messages = body.get("messages") or []
    for msg in messages:
        total += blen(msg.get("role") or "")
        for block in _message_blocks(msg):
            total += _count_block(block)
    tools = body.get("tools") or []
    schemas = raw_spans(text, "tools", "*", "input_schema") if tools else []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        total += blen(tool.get("name") or "") + blen(tool.get("description") or "")
        if i < len(schemas) and schemas[i] is not None:
            total += blen(schemas[i])
    tokens = total // 4
    if tokens == 0 and (messages or system is not None):
        tokens = 1
    return tokens


def anthropic_error(status, message, request_id):
    """anthropic.NewError"""
    etype = {400: "invalid_request_error", 401: "authentication_error",
             403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
             503: "overloaded_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": etype, "message": message},
            "request_id": request_id}


# --------------------------------------------------------------------------
# OpenAI's Responses API
# --------------------------------------------------------------------------

_RTOOL = ("struct", "openai.ResponsesTool", "ResponsesTool", {
    "type": _S, "name": _S, "description": _S, "strict": _B,
    "parameters": ("map", "map[string]interface {}")})
_RTOOL[3]["tools"] = ("[]", "[]openai.ResponsesTool", _RTOOL)
_RESPONSES_REQUEST = ("struct", "openai.ResponsesRequest", "ResponsesRequest", {
    "model": _S, "background": _B, "conversation": "any",
    "include": ("[]", "[]string", _S), "instructions": _S, "max_output_tokens": _I,
    "reasoning": ("struct", "openai.ResponsesReasoning", "ResponsesReasoning",
                  {"effort": _S, "generate_summary": _S, "summary": _S}),
    "temperature": _F,
    "text": ("struct", "openai.ResponsesText", "ResponsesText", {
        "format": ("struct", "openai.ResponsesTextFormat", "ResponsesTextFormat",
                   {"type": _S, "name": _S, "schema": "any", "strict": _B})}),
    "top_p": _F, "truncation": _S, "tools": ("[]", "[]openai.ResponsesTool", _RTOOL),
    "stream": _B,
})
_ANON_TYPE_ROLE = 'struct { Type string "json:\\"type\\""; Role string "json:\\"role\\"" }'
_CONTENT_STRUCTS = {
    "input_text": ("ResponsesTextContent", {"type": _S, "text": _S}),
    "output_text": ("ResponsesOutputTextContent", {"type": _S, "text": _S}),
    "input_image": ("ResponsesImageContent",
                    {"type": _S, "detail": _S, "file_id": _S, "image_url": _S}),
    "input_file": ("ResponsesFileContent", {"type": _S, "file_data": _S, "file_id": _S,
                                            "file_url": _S, "filename": _S}),
}


def _check_fields(v, name, fields):
    for key, x in v.items():
        if key in fields:
            check(x, fields[key], name, (key,))


def _content_items(value, what):
    """unmarshalResponsesContent over a content (or output) array."""
    if not isinstance(value, list):
        raise Invalid("%s must be a string or array: json: cannot unmarshal %s into Go value"
                      " of type []json.RawMessage" % (what, _kind(value)))
    for i, item in enumerate(value):
        try:
            if item is None:
                item = value[i] = {}
            if not isinstance(item, dict):
                raise Invalid("json: cannot unmarshal %s into Go value of type struct "
                              '{ Type string "json:\\"type\\"" }' % _kind(item))
            t = item.get("type")
            if t is not None and not isinstance(t, str):
                raise Invalid("json: cannot unmarshal %s into Go struct field .type of type string"
                              % _kind(t))
            if t not in _CONTENT_STRUCTS:
                raise Invalid("unknown content type: %s" % (t or ""))
            name, fields = _CONTENT_STRUCTS[t]
            _check_fields(item, name, fields)
        except Invalid as e:
            raise Invalid("%s[%d]: %s" % (what, i, e))
    return value


def _input_item(item):
    """unmarshalResponsesInputItem: the item's type, checked."""
    if item is None:
        item = {}
    if not isinstance(item, dict):
        raise Invalid("json: cannot unmarshal %s into Go value of type %s"
                      % (_kind(item), _ANON_TYPE_ROLE))
    for key in ("type", "role"):
        v = item.get(key)
        if v is not None and not isinstance(v, str):
            raise Invalid("json: cannot unmarshal %s into Go struct field .%s of type string"
                          % (_kind(v), key))
    itype = item.get("type") or ""
    if not itype and item.get("role"):
        itype = "message"
    if itype == "message":
        content = item.get("content")
        if content is not None and not isinstance(content, str):
            _content_items(content, "content")
    elif itype == "function_call":
        _check_fields(item, "ResponsesFunctionCall",
                      {"id": _S, "type": _S, "call_id": _S, "name": _S, "arguments": _S})
    elif itype == "function_call_output":
        for key in ("type", "call_id"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise Invalid("json: cannot unmarshal %s into Go struct field .%s of type string"
                              % (_kind(item[key]), key))
        out = item.get("output")
        if out is not None and not isinstance(out, str):
            _content_items(out, "output")
    elif itype == "reasoning":
        _check_fields(item, "ResponsesReasoningInput", {
            "id": _S, "type": _S, "encrypted_content": _S,
            "summary": ("[]", "[]openai.ResponsesReasoningSummary",
                        ("struct", "openai.ResponsesReasoningSummary",
                         "ResponsesReasoningSummary", {"type": _S, "text": _S}))})
    elif itype == "web_search_call":
        _check_fields(item, "ResponsesWebSearchCall", {
            "id": _S, "type": _S, "status": _S,
            "action": ("struct", "openai.ResponsesWebSearchAction", "ResponsesWebSearchAction",
                       {"type": _S, "query": _S})})
    elif not itype:
        raise Invalid("input item missing required 'type' field")
    else:
        raise Invalid('unknown input item type: "%s"' % itype)
    return itype


def _decode_image_url(url):
    if url.startswith("http://") or url.startswith("https://"):
        raise Invalid("image URLs are not currently supported, "
                      "please use base64 encoded data instead")
    for prefix in ["data:;base64,"] + ["data:image/%s;base64," % t
                                       for t in ("jpeg", "jpg", "png", "webp")]:
        if url.startswith(prefix):
            data = url[len(prefix):]
            break
    else:
        raise Invalid("invalid image input")
    try:
        _b64_image(data)
    except Invalid:
        raise Invalid("invalid image input")


def _responses_content(content):
    """convertResponsesContent: (text, images) of content items."""
    if isinstance(content, str):
        return content, 0
    text, images = "", 0
    for c in content or []:
        t = c.get("type")
        if t in ("input_text", "output_text"):
            text += c.get("text") or ""
        elif t == "input_image":
            if not c.get("image_url"):
                continue
            _decode_image_url(c["image_url"])
            images += 1
        elif t == "input_file":
            raise Invalid("file inputs are not currently supported")
    return text, images


_EFFORTS = ("", "none", "minimal", "low", "medium", "high", "max", "xhigh", "ultra")


def responses_messages(body):
    """FromResponsesRequest: the chat messages Ollama makes of the request."""
    out = []
    if body.get("instructions"):
        out.append(_msg("system", body["instructions"]))
    inp = body.get("input")
    if isinstance(inp, str):
        if inp:
            out.append(_msg("user", inp))
        items = []
    else:
        items = inp or []
    pending = ""
    for i, item in enumerate(items):
        itype = item.get("type") or ("message" if item.get("role") else "")
        if itype == "reasoning":
            pending = item.get("encrypted_content") or ""
        elif itype == "message":
            text, images = _responses_content(item.get("content"))
            m = _msg(item.get("role") or "", text, images)
            if m["role"] == "assistant" and pending:
                m["thinking"], pending = pending, ""
            out_call = None
            if i + 1 < len(items):
                nxt = items[i + 1]
                if (nxt.get("type") or "") == "function_call_output":
                    out_call = nxt.get("call_id") or ""
            if m["role"] == "assistant" and out_call and out:
                last = out[-1]
                if last["role"] == "assistant" and out_call in last.get("call_ids", ()):
                    if last["content"] and m["content"]:
                        last["content"] += "\n"
                    last["content"] += m["content"]
                    last["images"] += m["images"]
                    if m["thinking"]:
                        last["thinking"] = m["thinking"]
                    continue
            out.append(m)
        elif itype == "function_call":
            args = item.get("arguments") or ""
            if args:
                try:
                    parsed = json.loads(args)
                except ValueError:
                    raise Invalid("failed to parse function call arguments: invalid character "
                                  "looking for beginning of value")
                if parsed is not None and not isinstance(parsed, dict):
                    raise Invalid("failed to parse function call arguments: json: cannot "
                                  "unmarshal %s into Go value of type map[string]interface {}"
                                  % _kind(parsed))
            call_id = item.get("call_id") or ""
            if out and out[-1]["role"] == "assistant":
                last = out[-1]
                last["tool_calls"] += 1
                last.setdefault("call_ids", []).append(call_id)
                if pending:
                    last["thinking"], pending = pending, ""
            else:
                m = _msg("assistant", tool_calls=1)
                m["call_ids"] = [call_id]
                if pending:
                    m["thinking"], pending = pending, ""
                out.append(m)
        elif itype == "function_call_output":
            text, images = _responses_content(item.get("output"))
            out.append(_msg("tool", text, images))
    if pending:
        out.append(_msg("assistant", thinking=pending))
    effort = (body.get("reasoning") or {}).get("effort") or ""
    if effort not in _EFFORTS:
        raise Invalid('invalid reasoning value: "%s" (must be "minimal", "low", "medium", '
                      '"high", "xhigh", "ultra", "max", or "none")' % effort)
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            _check_responses_tool(tool)
    return out


def _check_responses_tool(tool):
    if tool.get("type") == "web_search":
        return
    if tool.get("type") == "namespace":
        for member in tool.get("tools") or []:
            if isinstance(member, dict):
                _check_responses_tool(member)
        return
    _check_tool_schema(tool.get("parameters"), "failed to unmarshal tool parameters: ")


def validate_responses(body):
    """ResponsesMiddleware's checks, then the chat handler's on the model."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise Invalid("json: cannot unmarshal %s into Go value of type openai.ResponsesRequest"
                      % _kind(body))
    for key, value in body.items():
        if key == "input":
            if value is None or isinstance(value, str):
                continue
            if not isinstance(value, list):
                raise Invalid("input must be a string or array: json: cannot unmarshal %s into"
                              " Go value of type []json.RawMessage" % _kind(value))
            for i, item in enumerate(value):
                try:
                    _input_item(item)
                except Invalid as e:
                    raise Invalid("input[%d]: %s" % (i, e))
        elif key in _RESPONSES_REQUEST[3]:
            check(value, _RESPONSES_REQUEST[3][key], "ResponsesRequest", (key,))
    return responses_messages(body)


# --------------------------------------------------------------------------
# Hooks called by ollama_sim.py
# --------------------------------------------------------------------------

def _chat_messages(body, path):
    try:
        return (anthropic_messages if path == MESSAGES else responses_messages)(body)
    except (Invalid, AttributeError, TypeError):
        return []


def count_prompt_tokens(body, path):
    """P for /v1/messages and /v1/responses: the chat formula over the chat
    messages Ollama converts the request to,
      P = 2 + sum over messages of (words(content) + 3 + 10 * images)
    or 0 when there is none (Ollama then only loads the model)."""
    if not isinstance(body, dict):
        return 2
    messages = _chat_messages(body, path)
    if not messages:
        return 0
    return 2 + sum(B._words(m["content"]) + 3 + B.IMAGE_TOKENS * m["images"]
                   for m in messages)


def completion_cap(body, path):
    """max_tokens (Messages) or max_output_tokens (Responses), if > 0."""
    if not isinstance(body, dict):
        return None
    return B._positive_int(body.get("max_tokens" if path == MESSAGES else "max_output_tokens"))


def is_load(body, path):
    """No chat message: Ollama's chat handler loads the model and answers
    done_reason "load", no tokens, no counts."""
    return isinstance(body, dict) and not _chat_messages(body, path)


def _request_id(seed):
    return "req_" + hashlib.sha256(("req:%s" % seed).encode()).hexdigest()[:24]


_error_seq = [0]


def error_body(path, status, message):
    """An error as Ollama's writer for the path writes one (an error from
    the chat handler, or x-sim-status): json.Encoder, so a newline ends it."""
    if path == MESSAGES:
        _error_seq[0] += 1
        out = anthropic_error(status, message, _request_id(_error_seq[0]))
        return (gojson(out) + "\n").encode()
    return (gojson({"error": {"message": message, "type": B.openai_error_type(status),
                              "param": None, "code": None}}) + "\n").encode()


def validate(raw, path):
    """(body, None) if Ollama takes the request (body: its first JSON
    value, as gin reads it), else (None, (status, body, content type)) of
    its refusal: the middleware's own (gin's c.JSON: no newline, a charset)
    or, for /v1/responses without a model, the chat handler's through the
    writer."""
    try:
        text, body = decode_body(raw)
        if path == MESSAGES:
            validate_messages(body)
        else:
            validate_responses(body)
    except Invalid as e:
        _error_seq[0] += 1
        if path == MESSAGES:
            out = anthropic_error(400, str(e), _request_id(_error_seq[0]))
        else:
            out = {"error": {"message": str(e), "type": "invalid_request_error",
                             "param": None, "code": None}}
        return None, (400, gojson(out).encode(), "application/json; charset=utf-8")
    if path == RESPONSES and not (isinstance(body, dict) and isinstance(body.get("model"), str)
                                  and body.get("model")):
        return None, (400, error_body(path, 400, "model is required"), "application/json")
    return body, None


def record_fields(rec, body, path):
    """The request log: max_tokens holds max_tokens or max_output_tokens
    as sent; previous_response_id (Responses) is recorded, never used."""
    if path == MESSAGES:
        rec["max_tokens"] = body.get("max_tokens")
    else:
        rec["max_tokens"] = body.get("max_output_tokens")
        rec["previous_response_id"] = body.get("previous_response_id")


def new_generation(sim, req, path, model, P, C, finish, body, rec):
    """The Generation that writes a /v1/messages or /v1/responses answer."""
    cls = _CLASSES.get(path)
    if cls is None:
        mixin = MessagesGeneration if path == MESSAGES else ResponsesGeneration
        cls = _CLASSES[path] = type(mixin.__name__, (mixin, B.Generation), {})
    gen = cls(sim, path, model, P, C, finish, False)
    gen.setup(sim, req, body, rec)
    return gen


# --------------------------------------------------------------------------
# The answers.  Each stream frame is what Ollama's converter makes of one
# chunk of the chat's answer: the preamble an empty chunk, a token one chunk
# with its text, the tool call one chunk with the call, the final frames the
# done chunk (its counts: the usage reported).
# --------------------------------------------------------------------------

class _Compat:
    def prompt_count(self):
        """The done chunk's prompt_eval_count."""
        return 0 if self.no_prompt_count else self.reported()[0]

    def eval_count(self):
        return self.reported()[1]

    def preamble_frames(self):
        return [self.process("", False, False)]

    def token_frame(self, i):
        return self.process(self.token(i), False, False)

    def tool_call_frame(self):
        return self.process("", True, False)

    def final_frames(self):
        return [self.process("", False, True)]


class MessagesGeneration(_Compat):
    """Anthropic's Messages: ToMessagesResponse and StreamConverter."""

    def setup(self, sim, req, body, rec):
        sim.completion_seq += 1
        seed = ("msg:%d" % sim.completion_seq).encode()
        self.id = "msg_" + hashlib.sha256(seed).hexdigest()[:24]
        text = req.body.decode("utf-8", errors="replace")
        self.estimate = estimate_input_tokens(body, text)
        rec["input_estimate"] = self.estimate
        self.first = True
        self.index = 0
        self.text_started = False
        self.tool_sent = False

    def stop_reason(self, tool):
        """mapStopReason"""
        if tool:
            return "tool_use"
        return {"stop": "end_turn", "length": "max_tokens"}.get(self.finish, "stop_sequence")

    def full_body(self):
        content = []
        text = self.content()
        if text:
            content.append({"type": "text", "text": text})
        if self.tool:
            name, args = self.tool
            content.append({"type": "tool_use", "id": self.tool_id, "name": name, "input": args})
        return (gojson({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            # Go's nil slice: null, not [], when there is nothing to say
            "content": content or None,
            "stop_reason": self.stop_reason(self.tool),
            "usage": {"input_tokens": self.prompt_count(), "output_tokens": self.eval_count()},
        }) + "\n").encode("utf-8")

    def _stop(self):
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def process(self, content, tool, done):
        out = []
        if self.first:
            self.first = False
            # a chunk before the last has no prompt_eval_count: Ollama
            # reports its estimate
            tokens = self.prompt_count() if done else 0
            if tokens == 0 and self.estimate > 0:
                tokens = self.estimate
            out.append(sse("message_start", {"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "usage": {"input_tokens": tokens, "output_tokens": 0}}}))
            if not content and not tool and not done:
                # x-sim-preamble: as Anthropic's API, a ping after message_start
                out.append(sse("ping", {"type": "ping"}))
        if content:
            if not self.text_started:
                self.text_started = True
                out.append(sse("content_block_start", {
                    "type": "content_block_start", "index": self.index,
                    "content_block": {"type": "text", "text": ""}}))
            out.append(sse("content_block_delta", {
                "type": "content_block_delta", "index": self.index,
                "delta": {"type": "text_delta", "text": content}}))
        if tool:
            if self.text_started:
                out.append(self._stop())
                self.index += 1
                self.text_started = False
            name, args = self.tool
            out.append(sse("content_block_start", {
                "type": "content_block_start", "index": self.index,
                "content_block": {"type": "tool_use", "id": self.tool_id, "name": name,
                                  "input": {}}}))
            out.append(sse("content_block_delta", {
                "type": "content_block_delta", "index": self.index,
                "delta": {"type": "input_json_delta", "partial_json": gojson(args)}}))
            out.append(self._stop())
            self.tool_sent = True
            self.index += 1
        if done:
            if self.text_started:
                out.append(self._stop())
            usage = {"input_tokens": self.prompt_count(), "output_tokens": self.eval_count()}
            out.append(sse("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason(self.tool_sent)}, "usage": usage}))
            out.append(sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)


class ResponsesGeneration(_Compat):
    """OpenAI's Responses: ToResponse and ResponsesStreamConverter."""

    def setup(self, sim, req, body, rec):
        sim.completion_seq += 1
        n = sim.completion_seq
        self.id = "resp_%d" % n
        self.item_id = "msg_%d" % n
        self.request = body
        self.raw_text = req.body.decode("utf-8", errors="replace")
        self.first = True
        self.seq = 0
        self.output_index = 0
        self.content_started = False
        self.tool_sent = False
        self.text = ""
        self.completed = []

    # ---- what the answer echoes of the request

    def _req(self, key, default=None):
        v = self.request.get(key)
        return default if v is None else v

    def _text_format(self, stream):
        fmt = (self.request.get("text") or {}).get("format")
        if fmt is None:
            return {"type": "text"}
        out = {"type": fmt.get("type") or ""}
        if fmt.get("name"):
            out["name"] = fmt["name"]
        if "schema" in fmt:
            raw = raw_spans(self.raw_text, "text", "format", "schema")[0]
            out["schema"] = Raw(compact(raw))
        if fmt.get("strict") is not None:
            out["strict"] = fmt["strict"]
        return out

    def _reasoning(self, stream):
        r = self.request.get("reasoning") or {}
        effort, summary = r.get("effort") or "", r.get("summary") or ""
        if not effort and not summary:
            return None
        if stream:
            return {"effort": effort or None, "summary": summary or None}
        out = {}
        if effort:
            out["effort"] = effort
        if summary:
            out["summary"] = summary
        return out

    def _tool(self, t, stream):
        t = t if isinstance(t, dict) else {}     # null: Go's zero ResponsesTool
        if stream:
            return {"type": t.get("type") or "", "name": t.get("name") or "",
                    "description": t.get("description"), "strict": t.get("strict"),
                    "parameters": go_any(t.get("parameters"))}
        out = {"type": t.get("type") or "", "name": t.get("name") or "",
               "description": t.get("description"), "strict": t.get("strict"),
               "parameters": go_any(t.get("parameters"))}
        if t.get("tools"):
            out["tools"] = [self._tool(x, False) for x in t["tools"]]
        return out

    def _usage(self):
        p, c = self.prompt_count(), self.eval_count()
        return {"input_tokens": p, "output_tokens": c, "total_tokens": p + c,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0}}

    def _response(self, status, output, usage, completed_at, stream):
        """The response object: ResponsesResponse (declaration order) or,
        in a stream, buildResponseObject's map."""
        return {
            "id": self.id, "object": "response", "created_at": int(time.time()),
            "completed_at": completed_at, "status": status, "incomplete_details": None,
            "model": self.model, "previous_response_id": None,
            "instructions": self._req("instructions") or None,
            "output": output, "error": None,
            "tools": [self._tool(t, stream) for t in self._req("tools", [])],
            "tool_choice": "auto", "truncation": self._req("truncation", "disabled"),
            "parallel_tool_calls": True, "text": {"format": self._text_format(stream)},
            "top_p": float(self._req("top_p", 1.0)), "presence_penalty": 0,
            "frequency_penalty": 0, "top_logprobs": 0,
            "temperature": float(self._req("temperature", 1.0)),
            "reasoning": self._reasoning(stream), "usage": usage,
            "max_output_tokens": self.request.get("max_output_tokens"), "max_tool_calls": None,
            "store": False, "background": self._req("background", False),
            "service_tier": "default", "metadata": GoMap(), "safety_identifier": None,
            "prompt_cache_key": None,
        }

    def _part(self, text):
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _message_item(self, status, text):
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant",
                "content": [self._part(text)] if status == "completed" else []}

    def _call_args(self):
        return gojson(self.tool[1])

    def full_body(self):
        if self.tool:
            output = [{"id": "fc_%s_0" % self.id, "type": "function_call", "status": "completed",
                       "call_id": self.tool_id, "name": self.tool[0],
                       "arguments": self._call_args()}]
        else:
            output = [self._message_item("completed", self.content())]
        now = int(time.time())
        return (gojson(self._response("completed", output, self._usage(), now, False))
                + "\n").encode("utf-8")

    # ---- the stream

    def _event(self, etype, data):
        data["type"] = etype
        data["sequence_number"] = self.seq
        self.seq += 1
        return sse(etype, data, sort=True)

    def process(self, content, tool, done):
        out = []
        if self.first:
            self.first = False
            for etype in ("response.created", "response.in_progress"):
                out.append(self._event(etype, {"response": self._response(
                    "in_progress", [], None, None, True)}))
        if tool:
            fc_id = "fc_%s_0" % self.id[len("resp_"):]
            item = {"id": fc_id, "type": "function_call", "status": "completed",
                    "call_id": self.tool_id, "name": self.tool[0], "arguments": self._call_args()}
            self.completed.append(item)
            added = dict(item, status="in_progress", arguments="")
            out.append(self._event("response.output_item.added",
                                   {"output_index": self.output_index, "item": added}))
            out.append(self._event("response.function_call_arguments.delta", {
                "item_id": fc_id, "output_index": self.output_index,
                "delta": item["arguments"]}))
            out.append(self._event("response.function_call_arguments.done", {
                "item_id": fc_id, "output_index": self.output_index,
                "arguments": item["arguments"]}))
            out.append(self._event("response.output_item.done",
                                   {"output_index": self.output_index, "item": item}))
            self.output_index += 1
            self.tool_sent = True
        elif content and not self.tool_sent:
            if not self.content_started:
                self.content_started = True
                out.append(self._event("response.output_item.added", {
                    "output_index": self.output_index,
                    "item": self._message_item("in_progress", "")}))
                out.append(self._event("response.content_part.added", {
                    "item_id": self.item_id, "output_index": self.output_index,
                    "content_index": 0, "part": self._part("")}))
            self.text += content
            out.append(self._event("response.output_text.delta", {
                "item_id": self.item_id, "output_index": self.output_index,
                "content_index": 0, "delta": content, "logprobs": []}))
        if done:
            if not self.tool_sent and self.content_started:
                out.append(self._event("response.output_text.done", {
                    "item_id": self.item_id, "output_index": self.output_index,
                    "content_index": 0, "text": self.text, "logprobs": []}))
                out.append(self._event("response.content_part.done", {
                    "item_id": self.item_id, "output_index": self.output_index,
                    "content_index": 0, "part": self._part(self.text)}))
                out.append(self._event("response.output_item.done", {
                    "output_index": self.output_index,
                    "item": self._message_item("completed", self.text)}))
            output = list(self.completed)
            if self.content_started:
                # after a tool call the text's item is never closed, but
                # the final output still lists it (as Ollama's does)
                output.append(self._message_item("completed", self.text))
            out.append(self._event("response.completed", {"response": self._response(
                "completed", output, self._usage(), int(time.time()), True)}))
        return b"".join(out)
