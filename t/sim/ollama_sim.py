#!/usr/bin/env python3
"""Ollama simulator: a standard-library-only test stand-in for Ollama >= 0.5
(OpenAI-compatible and native endpoints; Anthropic's /v1/messages and
OpenAI's /v1/responses in sim_compat.py, next to this file).

Usage:
    python3 ollama_sim.py --port N [--host 127.0.0.1] [--pidfile F] [--log F]

Prints "listening on HOST:PORT" on stdout once listening (``--port 0`` picks a
free port and prints the real one).  SIGTERM / SIGINT exit cleanly (exit 0).

See README.md next to this file for the endpoints and the x-sim-* headers.
"""

import argparse
import asyncio
import base64
import gzip
import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import struct
import sys
import time
from datetime import datetime, timezone
from email.utils import formatdate
from http import HTTPStatus

# Anthropic's /v1/messages and OpenAI's /v1/responses live next to this file
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sim_compat  # noqa: E402

# --------------------------------------------------------------------------
# Deterministic generation parameters (tests compute the same numbers).
# --------------------------------------------------------------------------

# Completion tokens cycle through this list, in order; the content is their
# concatenation.
TOKENS = ["Hello", " wörld", " 你好", " 🙂", " token", " nebula", " ünïcödé", " ok"]

# Completion tokens generated when no x-sim-tokens header is sent.
DEFAULT_COMPLETION_TOKENS = 12

# Weight of one image in the prompt-token count.
IMAGE_TOKENS = 10

IMAGE_PART_TYPES = ("image_url", "image", "input_image")


def _words(value):
    """Number of whitespace-separated words (Python str.split()) in value."""
    return len(value.split()) if isinstance(value, str) else 0


def count_prompt_tokens(body, path):
    """Prompt-token count P reported for a request.

    Formula (deterministic, tests compute the same):
      * chat (/v1/chat/completions and /api/chat):
          P = 2 + sum over messages of (words(text) + 3 + 10 * images)
        where words() counts whitespace-separated words (str.split()),
        text is the message's "content" when it is a string, or the "text"
        fields of its {"type":"text"} parts joined with a space when it is an
        array; every image part ({"type":"image_url"|"image"|"input_image"})
        adds 10, and so does every entry of a native message's "images" list.
        Non-object messages and non-string/non-array contents count as
        0 words (the +3 still applies to object messages only).
      * /api/generate and /v1/completions:
          P = words(prompt) + words(system) + 2
    """
    if path in sim_compat.PATHS:
        # /v1/messages, /v1/responses: over the chat messages Ollama makes
        return sim_compat.count_prompt_tokens(body, path)
    if not isinstance(body, dict):
        return 2
    if path in ("/api/generate", "/v1/completions"):
        return _words(body.get("prompt")) + _words(body.get("system")) + 2
    total = 2
    messages = body.get("messages")
    if not isinstance(messages, list):
        return total
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        images = 0
        text = ""
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            texts = []
            for part in content:
                if not isinstance(part, dict):
                    continue
                ptype = part.get("type")
                if ptype == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif ptype in IMAGE_PART_TYPES:
                    images += 1
            text = " ".join(texts)
        native_images = msg.get("images")
        if isinstance(native_images, list):
            images += len(native_images)
        total += _words(text) + 3 + IMAGE_TOKENS * images
    return total


# An embedding's length unless the request asks for "dimensions".
EMBED_DIMS = 8


def embed_inputs(body, path):
    """The texts an embedding request embeds (a token-id list counts as
    one input of its ids), or None when Ollama would refuse their type."""
    value = body.get("prompt") if path == "/api/embeddings" else body.get("input")
    if isinstance(value, str):
        return [value] if value else []
    if path != "/api/embeddings" and isinstance(value, list):
        if all(isinstance(x, str) for x in value):
            return [x for x in value if x]
        if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            return [value]
        if all(isinstance(x, list) for x in value):
            return value
    return None


def embed_tokens(text):
    """Prompt tokens of one input: words + 2 (a token-id list: its ids)."""
    return len(text) if isinstance(text, list) else _words(text) + 2


def embed_vector(text, dims):
    """A unit-free, deterministic vector for the input."""
    seed = hashlib.sha256(json.dumps(text).encode()).digest()
    return [round((seed[i % len(seed)] - 128) / 128.0, 6) for i in range(dims)]


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    value = int(value)
    return value if value > 0 else None


def completion_cap(body, path):
    """max_tokens / max_completion_tokens (OpenAI) or options.num_predict
    (native) when present and > 0, else None."""
    if path in sim_compat.PATHS:
        return sim_compat.completion_cap(body, path)
    if not isinstance(body, dict):
        return None
    if path in OPENAI_GEN:
        cap = _positive_int(body.get("max_tokens"))
        if cap is None:
            cap = _positive_int(body.get("max_completion_tokens"))
        return cap
    options = body.get("options")
    if isinstance(options, dict):
        return _positive_int(options.get("num_predict"))
    return None


def plan_completion(body, path, headers):
    """Returns (C, finish_reason): C = min(cap, N); "length" when the cap
    cut the generation, else "stop"."""
    if path in sim_compat.PATHS and sim_compat.is_load(body, path):
        # no chat message: Ollama only loads the model
        return 0, "load"
    n = DEFAULT_COMPLETION_TOKENS
    raw = headers.get("x-sim-tokens")
    if raw is not None:
        try:
            n = max(0, int(raw.strip()))
        except ValueError:
            log.warning("ignoring bad x-sim-tokens %r", raw)
    cap = completion_cap(body, path)
    # x-sim-ignore-cap: a pool that generates past the max_tokens (or
    # num_predict) it was sent
    if cap is not None and cap < n and not _flag(headers.get("x-sim-ignore-cap")):
        return cap, "length"
    return n, "stop"


def _flag(value):
    """A boolean test header: "1", "true" or "yes" turn it on."""
    return value is not None and value.strip().lower() in ("1", "true", "yes")


def token_at(i):
    return TOKENS[i % len(TOKENS)]


# x-sim-tool-call: the arguments' JSON is this long unless
# x-sim-tool-args-bytes says otherwise; it is never shorter than
# {"query":""}
DEFAULT_TOOL_ARGS_BYTES = 64
MIN_TOOL_ARGS_BYTES = len('{"query":""}')


def tool_call_tokens(args_bytes):
    """Completion tokens a tool call of args_bytes bytes of arguments
    counts in the reported usage: 10 for its framing and name, and one
    every 4 bytes of its arguments."""
    return 10 + args_bytes // 4


# --------------------------------------------------------------------------
# Fixed model list
# --------------------------------------------------------------------------

MODELS = [
    # name, family, parameter_size, size in bytes
    ("qwen3:latest", "qwen3", "8.2B", 5225388164),
    ("gemma3:1b", "gemma3", "999.89M", 815319791),
    ("qwen3-coder:30b", "qwen3moe", "30.5B", 18556701140),
]
MODELS_MODIFIED_AT = "2025-05-01T10:00:00.000000000Z"
MODELS_CREATED = 1746093600


def model_details(family, params):
    """A model's details, as /api/tags and /api/ps list them."""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": params,
        "quantization_level": "Q4_K_M",
    }


def tags_payload():
    models = []
    for name, family, params, size in MODELS:
        models.append({
            "name": name,
            "model": name,
            "modified_at": MODELS_MODIFIED_AT,
            "size": size,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": model_details(family, params),
        })
    return {"models": models}


def show_payload(name, verbose):
    """What Ollama's /api/show answers about a model: its Modelfile names
    it, model_info gives the architecture's context_length."""
    family = name.split(":")[0].replace("-", "")
    info = {"general.architecture": family, "general.basename": name.split(":")[0],
            "general.parameter_count": 8190735360, "general.file_type": 15,
            "%s.block_count" % family: 36, "%s.context_length" % family: 40960,
            "%s.embedding_length" % family: 4096}
    if verbose:
        info["tokenizer.ggml.tokens"] = ["tok%d" % i for i in range(2000)]
    return {
        "license": "Apache License 2.0",
        "modelfile": ("# Modelfile generated by \"ollama show\"\n# To build a new Modelfile"
                      " based on this, replace FROM with:\n# FROM %s\n\nFROM /root/.ollama/"
                      "models/blobs/sha256-a3de86cd1c13\nPARAMETER temperature 0.6\n" % name),
        "parameters": "temperature 0.6\ntop_k 20",
        "template": "{{ .Prompt }}",
        "details": {"parent_model": "", "format": "gguf", "family": family,
                    "families": [family], "parameter_size": "8.2B",
                    "quantization_level": "Q4_K_M"},
        "model_info": info,
        "capabilities": ["completion", "tools"],
        "modified_at": MODELS_MODIFIED_AT,
    }


def openai_model(name):
    return {"id": name, "object": "model", "created": MODELS_CREATED,
            "owned_by": "library"}


# --------------------------------------------------------------------------
# Loaded models (/api/ps), as Ollama's scheduler keeps them
# --------------------------------------------------------------------------

# a request without keep_alive: Ollama's default (OLLAMA_KEEP_ALIVE)
DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 10**9
# a negative keep_alive: Go's math.MaxInt64 nanoseconds, some 292 years
FOREVER_NS = 2**63 - 1
# a request without options.num_ctx
DEFAULT_NUM_CTX = 4096
# a model the sim serves that MODELS does not list
UNLISTED_SIZE = 1000000000

GO_UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6,
            "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def keep_alive_ns(value):
    """How long (ns) a request's keep_alive keeps its model loaded, as
    Ollama's api.Duration reads it: a number of seconds or a Go duration
    string ("5m", "1h30m", "-1"); negative, forever; 0, unloaded at once.
    Absent, or what Ollama would refuse with a 400: the default 5 minutes
    (the sim does not refuse a request for it)."""
    if value is None or isinstance(value, bool):
        return DEFAULT_KEEP_ALIVE_NS
    if isinstance(value, (int, float)):
        return FOREVER_NS if value < 0 else int(value * 10**9)
    if not isinstance(value, str):
        return DEFAULT_KEEP_ALIVE_NS
    text = value
    sign = 1
    if text[:1] in ("-", "+"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        return DEFAULT_KEEP_ALIVE_NS
    total, pos = 0, 0
    while pos < len(text):
        m = GO_DURATION.match(text, pos)
        if m is None or m.group(1) in ("", "."):
            return DEFAULT_KEEP_ALIVE_NS
        total += int(float(m.group(1)) * GO_UNITS[m.group(2)])
        pos = m.end()
    return FOREVER_NS if sign < 0 and total > 0 else total


def ps_name(model):
    """The name /api/ps gives a model: Ollama's DisplayShortest, without
    the default registry and namespace, with the default tag."""
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if model.startswith(prefix):
            model = model[len(prefix):]
            break
    if ":" not in model.rsplit("/", 1)[-1]:
        model += ":latest"
    return model


def go_time(ns):
    """Unix time ns as Go's encoding/json writes a time.Time (RFC 3339,
    nanoseconds without their trailing zeros; UTC, as Ollama in a
    container)."""
    sec, frac = divmod(ns, 10**9)
    text = datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + ("%09d" % frac).rstrip("0")
    return text + "Z"


def ps_payload(loaded, now_ns):
    """Ollama's answer to GET /api/ps: the models loaded (name -> (expires
    ns, context length)), the longest left to live first (PsHandler sorts
    by expires_at in seconds, stably; ties here in name order)."""
    listed = {m[0]: m for m in MODELS}
    models = []
    for name in sorted(loaded):
        expires, ctx = loaded[name]
        base = name.rsplit("/", 1)[-1].split(":")[0]
        _, family, params, size = listed.get(name) or (
            name, base.replace("-", ""), "8.2B", UNLISTED_SIZE)
        models.append((expires // 10**9, {
            "name": name,
            "model": name,
            "size": size,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": model_details(family, params),
            "expires_at": go_time(expires),
            "size_vram": size,
            "context_length": ctx,
        }))
    models.sort(key=lambda m: -m[0])
    return {"models": [m[1] for m in models]}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

log = logging.getLogger("ollama_sim")

MODEL_PATHS = ("/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate")
# the generating endpoints of Ollama's OpenAI layer
OPENAI_GEN = ("/v1/chat/completions", "/v1/completions")
EMBED_PATHS = ("/v1/embeddings", "/api/embed", "/api/embeddings")
MAX_BODY = 64 * 1024 * 1024
HEAD_LIMIT = 1024 * 1024


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def rfc3339_now():
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + "%06d" % now.microsecond + "Z"


def reason_phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status %d" % status


def openai_error_type(status):
    # Same mapping as Ollama's openai middleware.
    if status == 400:
        return "invalid_request_error"
    if status == 404:
        return "not_found_error"
    return "api_error"


def error_body(path, status, message):
    if path in sim_compat.PATHS:
        return sim_compat.error_body(path, status, message)
    if path.startswith("/v1/"):
        return dumps({"error": {"message": message, "type": openai_error_type(status),
                                "param": None, "code": None}})
    return dumps({"error": message})


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "header_list",
                 "headers", "body", "keep_alive", "connection")


class Faults:
    def __init__(self):
        self.error500 = False
        self.stall = False
        self.stall_after = None
        self.drop = None
        self.drop_rst = False
        self.slow_ms = None
        self.raw = None

    @property
    def any(self):
        return bool(self.error500 or self.stall or self.stall_after is not None
                    or self.drop is not None or self.slow_ms is not None)


def parse_faults(value):
    """x-sim-fault: a comma-separated list of 500 | stall | stall-after:K |
    drop:K | drop-rst:K | slow:MS (e.g. "slow:50,drop:3")."""
    f = Faults()
    if not value:
        return f
    f.raw = value.strip()
    for item in value.split(","):
        item = item.strip().lower()
        if not item:
            continue
        name, _, arg = item.partition(":")
        try:
            if name == "500":
                f.error500 = True
            elif name == "stall":
                f.stall = True
            elif name == "stall-after":
                f.stall_after = max(0, int(arg))
            elif name == "drop":
                f.drop = max(0, int(arg))
            elif name == "drop-rst":
                f.drop = max(0, int(arg))
                f.drop_rst = True
            elif name == "slow":
                f.slow_ms = max(0.0, float(arg))
            else:
                log.warning("ignoring unknown fault %r", item)
        except ValueError:
            log.warning("ignoring bad fault %r", item)
    return f


# --------------------------------------------------------------------------
# HTTP/1.1 plumbing
# --------------------------------------------------------------------------

async def read_request(reader, writer):
    """Reads one request; returns None on a clean EOF between requests."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial.strip():
                return None
            raise BadRequest(400, "incomplete request head")
        except asyncio.LimitOverrunError:
            raise BadRequest(431, "request head too large")
        lines = head.decode("latin-1").split("\r\n")
        while lines and lines[0] == "":
            lines.pop(0)
        if lines:
            break
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line %r" % lines[0][:200])
    req = Request()
    req.method, req.target, req.version = parts
    if not req.method.isalpha():
        raise BadRequest(400, "malformed method")
    path, _, query = req.target.partition("?")
    if path.startswith("http://") or path.startswith("https://"):
        # absolute-form target
        rest = path.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    req.path, req.query = path, query
    req.header_list = []
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and req.header_list:
            # obsolete line folding
            name, value = req.header_list[-1]
            value = value + " " + line.strip()
            req.header_list[-1] = (name, value)
            headers[name] = value
            continue
        name, sep, value = line.partition(":")
        name = name.strip().lower()
        if not sep or not name or " " in name:
            raise BadRequest(400, "malformed header line %r" % line[:200])
        value = value.strip()
        req.header_list.append((name, value))
        if name in headers:
            headers[name] = headers[name] + ", " + value
        else:
            headers[name] = value
    req.headers = headers

    conn = [t.strip().lower() for t in headers.get("connection", "").split(",")]
    if req.version == "HTTP/1.0":
        req.keep_alive = "keep-alive" in conn
    else:
        req.keep_alive = "close" not in conn

    te = headers.get("transfer-encoding", "").lower()
    chunked = "chunked" in [t.strip() for t in te.split(",")] if te else False
    length = None
    if not chunked and "content-length" in headers:
        raw = headers["content-length"].split(",")[0].strip()
        if not raw.isdigit():
            raise BadRequest(400, "bad content-length")
        length = int(raw)
        if length > MAX_BODY:
            raise BadRequest(413, "request body too large")
    elif te and not chunked:
        raise BadRequest(501, "unsupported transfer-encoding %r" % te)

    if (chunked or length) and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()

    if chunked:
        req.body = await read_chunked(reader)
    elif length:
        req.body = await reader.readexactly(length)
    else:
        req.body = b""
    return req


async def read_chunked(reader):
    body = bytearray()
    try:
        while True:
            line = await reader.readuntil(b"\n")
            size_s = line.split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise BadRequest(400, "bad chunk size %r" % size_s[:40])
            if size < 0:
                raise BadRequest(400, "bad chunk size")
            if size == 0:
                break
            if len(body) + size > MAX_BODY:
                raise BadRequest(413, "request body too large")
            body += await reader.readexactly(size)
            crlf = await reader.readuntil(b"\n")
            if crlf.strip():
                raise BadRequest(400, "missing CRLF after chunk data")
        while True:  # trailers
            line = await reader.readuntil(b"\n")
            if not line.strip():
                break
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "chunk line too long")
    return bytes(body)


def response_head(status, headers, keep_alive, version="HTTP/1.1"):
    lines = ["HTTP/1.1 %d %s" % (status, reason_phrase(status)),
             "Date: " + formatdate(usegmt=True),
             "Server: ollama-sim"]
    for name, value in headers:
        lines.append("%s: %s" % (name, value))
    if not keep_alive:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_full(writer, req, status, body, content_type="application/json",
                    extra=()):
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    headers.extend(extra)
    data = response_head(status, headers, req.keep_alive, req.version)
    if req.method != "HEAD":
        data += body
    writer.write(data)
    await writer.drain()


class ChunkedEmitter:
    """Writes a streamed body as HTTP chunks.

    With splitting on, the byte stream is cut at random positions into pieces
    of 1..40 bytes (pieces may span frame boundaries and cut UTF-8
    characters); each piece is its own HTTP chunk followed by drain().
    flush() sends what is buffered (used before any pause so that everything
    generated so far reaches the client).  With splitting off, every fed frame
    is one HTTP chunk."""

    def __init__(self, writer, rng, split, piece_delay, record=None):
        self.writer = writer
        self.rng = rng
        self.split = split
        self.piece_delay = piece_delay
        self.buf = bytearray()
        self.next = rng.randint(1, 40)
        # what was sent, whole, for tests that compare it with what a
        # client behind the gateway received
        self.record = record
        if record is not None:
            # bytes, joined only when reported: += on a growing str is
            # quadratic
            self.sent = []
            record["sent"] = self.sent

    async def _send(self, piece):
        self.writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
        await self.writer.drain()
        if self.piece_delay:
            await asyncio.sleep(self.piece_delay)
        else:
            await asyncio.sleep(0)

    async def feed(self, data):
        if self.record is not None:
            self.sent.append(data)
        if not self.split:
            await self._send(data)
            return
        self.buf += data
        while len(self.buf) >= self.next:
            piece = bytes(self.buf[:self.next])
            del self.buf[:self.next]
            self.next = self.rng.randint(1, 40)
            await self._send(piece)

    async def flush(self):
        if self.buf:
            piece = bytes(self.buf)
            self.buf.clear()
            self.next = self.rng.randint(1, 40)
            await self._send(piece)

    async def finish(self):
        await self.flush()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


async def wait_for_eof(reader):
    """Stall: keep the connection open, discarding input, until the client
    closes it."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
    except (ConnectionError, OSError):
        return


def drop_connection(writer, rst):
    if rst:
        sock = writer.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()
    else:
        writer.close()


# --------------------------------------------------------------------------
# Application
# --------------------------------------------------------------------------

class Sim:
    def __init__(self):
        self.records = []
        self.seq = 0          # record ids
        self.completion_seq = 0   # chatcmpl-<n>
        self.loaded = {}      # /api/ps: name -> (expires ns, context length)

    # ---- recording -------------------------------------------------------

    def new_record(self, req):
        self.seq += 1
        body = None
        if req.body:
            try:
                body = json.loads(req.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                body = None
        rec = {
            "id": self.seq,
            "time": time.time(),
            "method": req.method,
            "path": req.path,
            "model": None,
            "max_tokens": None,
            "num_predict": None,
            "stream": None,
            "include_usage": None,
            "authorization": "authorization" in req.headers,
            "headers": dict(req.headers),
            "body": body,
            "raw_body": req.body.decode("utf-8", errors="replace"),
            "prompt_tokens": None,
            "completion_tokens": None,
            "token_times": None,
            "status": None,
            "outcome": None,
            "connection": getattr(req, "connection", None),
        }
        if isinstance(body, dict):
            model = body.get("model")
            rec["model"] = model
            if req.path in OPENAI_GEN:
                mt = body.get("max_tokens")
                if mt is None:
                    mt = body.get("max_completion_tokens")
                rec["max_tokens"] = mt
                so = body.get("stream_options")
                if isinstance(so, dict):
                    rec["include_usage"] = so.get("include_usage")
            opts = body.get("options")
            if isinstance(opts, dict):
                rec["num_predict"] = opts.get("num_predict")
            rec["stream"] = body.get("stream")
            if req.path in sim_compat.PATHS:
                sim_compat.record_fields(rec, body, req.path)
        self.records.append(rec)
        return rec

    # ---- loaded models ---------------------------------------------------

    def load(self, model, keep_alive=None, num_ctx=None):
        """A request the sim serves loads its model, until its keep_alive
        runs out: a later one sets both anew, as Ollama's runner is reused
        (or reloaded for another context)."""
        name = ps_name(model)
        keep = keep_alive_ns(keep_alive)
        if keep == 0:
            self.loaded.pop(name, None)
            return
        ctx = num_ctx if isinstance(num_ctx, int) and not isinstance(num_ctx, bool) \
            and num_ctx > 0 else DEFAULT_NUM_CTX
        self.loaded[name] = (time.time_ns() + keep, ctx)

    def load_for(self, body):
        opts = body.get("options")
        self.load(body["model"], body.get("keep_alive"),
                  opts.get("num_ctx") if isinstance(opts, dict) else None)

    def ps(self):
        now = time.time_ns()
        self.loaded = {k: v for k, v in self.loaded.items() if v[0] > now}
        return ps_payload(self.loaded, now)

    # ---- dispatch --------------------------------------------------------

    async def dispatch(self, req, reader, writer):
        """Handles one request; returns True to keep the connection open."""
        path, method = req.path, req.method
        if path.startswith("/_sim/"):
            return await self.control(req, writer)

        rec = self.new_record(req)
        t0 = time.monotonic()
        try:
            keep = await self.route(req, rec, reader, writer)
        finally:
            log.info("%s %s -> %s %s (%.1f ms)", method, req.target, rec["status"],
                     rec["outcome"], (time.monotonic() - t0) * 1000)
        return keep

    async def respond(self, req, rec, writer, status, body, content_type="application/json",
                      outcome=None, extra=()):
        rec["status"] = status
        if outcome is not None or rec["outcome"] is None:
            rec["outcome"] = outcome or ("ok" if status < 400 else "error:%d" % status)
        await send_full(writer, req, status, body, content_type, extra)
        return req.keep_alive

    async def route(self, req, rec, reader, writer):
        path, method = req.path, req.method
        routes = {
            "/": ("GET", "HEAD"),
            "/api/version": ("GET", "HEAD"),
            "/api/tags": ("GET", "HEAD"),
            "/api/ps": ("GET", "HEAD"),
            "/v1/models": ("GET", "HEAD"),
            "/v1/chat/completions": ("POST",),
            "/v1/completions": ("POST",),
            "/api/chat": ("POST",),
            "/api/generate": ("POST",),
            "/v1/embeddings": ("POST",),
            "/api/embed": ("POST",),
            "/api/embeddings": ("POST",),
            "/api/show": ("POST",),
            "/v1/messages": ("POST",),
            "/v1/responses": ("POST",),
        }
        allowed = routes.get(path)
        if allowed is None and path.startswith("/v1/models/"):
            allowed = ("GET", "HEAD")
        if allowed is None:
            return await self.respond(req, rec, writer, 404, dumps({"error": "not found"}))
        if method not in allowed:
            return await self.respond(req, rec, writer, 405,
                                      dumps({"error": "method not allowed"}),
                                      extra=[("Allow", ", ".join(allowed))])

        # x-sim-delay-ms and x-sim-status apply to every non-/_sim endpoint.
        delay = req.headers.get("x-sim-delay-ms")
        if delay:
            try:
                await asyncio.sleep(max(0.0, float(delay)) / 1000.0)
            except ValueError:
                log.warning("ignoring bad x-sim-delay-ms %r", delay)
        status_h = req.headers.get("x-sim-status")
        if status_h:
            try:
                status = int(status_h.strip())
                if not 100 <= status <= 999:
                    raise ValueError
            except ValueError:
                log.warning("ignoring bad x-sim-status %r", status_h)
            else:
                return await self.respond(req, rec, writer, status,
                                          error_body(path, status, "simulated status %d" % status),
                                          outcome="status:%d" % status)

        if path == "/":
            return await self.respond(req, rec, writer, 200, b"Ollama is running",
                                      "text/plain; charset=utf-8")
        if path == "/api/version":
            return await self.respond(req, rec, writer, 200, dumps({"version": "0.5.7"}))
        if path == "/api/tags":
            return await self.respond(req, rec, writer, 200, dumps(tags_payload()))
        if path == "/api/ps":
            return await self.ps_endpoint(req, rec, reader, writer)
        if path == "/v1/models":
            return await self.respond(req, rec, writer, 200, dumps(
                {"object": "list", "data": [openai_model(m[0]) for m in MODELS]}))
        if path.startswith("/v1/models/"):
            name = path[len("/v1/models/"):]
            if name in [m[0] for m in MODELS]:
                return await self.respond(req, rec, writer, 200, dumps(openai_model(name)))
            return await self.respond(req, rec, writer, 404,
                                      error_body(path, 404, 'model "%s" not found' % name))
        if path in EMBED_PATHS:
            return await self.embed_endpoint(req, rec, reader, writer)
        if path == "/api/show":
            try:
                body = json.loads(req.body.decode("utf-8"))
                name = body.get("model") or body.get("name")
            except (ValueError, UnicodeDecodeError, AttributeError):
                name = None
            if not isinstance(name, str) or not name:
                return await self.respond(req, rec, writer, 400,
                                          error_body(path, 400, "model is required"))
            rec["model"] = name
            full = dumps(show_payload(name, body.get("verbose") is True))
            if req.headers.get("x-sim-split", "").strip().lower() == "none":
                return await self.respond(req, rec, writer, 200, full)
            rec["status"] = 200
            rec["outcome"] = "ok"
            # in two writes, cut inside the Modelfile's name
            cut = full.find(b"FROM ") + 7
            writer.write(response_head(200, [("Content-Type", "application/json; charset=utf-8"),
                                             ("Content-Length", str(len(full)))],
                                       req.keep_alive, req.version) + full[:cut])
            await writer.drain()
            await asyncio.sleep(0.005)
            if req.headers.get("x-sim-fault", "").strip() == "drop":
                # the pool dies midway through its answer
                rec["outcome"] = "dropped"
                drop_connection(writer, False)
                return False
            writer.write(full[cut:])
            await writer.drain()
            return req.keep_alive
        return await self.model_endpoint(req, rec, reader, writer)

    async def control(self, req, writer):
        path, method = req.path, req.method
        if path == "/_sim/health" and method in ("GET", "HEAD"):
            await send_full(writer, req, 200, b"ok", "text/plain; charset=utf-8")
        elif path == "/_sim/requests" and method in ("GET", "HEAD"):
            out = []
            for rec in self.records:
                if isinstance(rec.get("sent"), list):
                    rec = dict(rec)
                    rec["sent"] = b"".join(rec["sent"]).decode("utf-8", errors="replace")
                out.append(rec)
            await send_full(writer, req, 200, dumps(out))
        elif path == "/_sim/reset" and method == "POST":
            self.records = []
            await send_full(writer, req, 200, dumps({"ok": True}))
        elif path == "/_sim/ps" and method in ("GET", "HEAD"):
            await send_full(writer, req, 200, dumps(self.ps()))
        elif path == "/_sim/ps" and method == "DELETE":
            self.loaded = {}
            await send_full(writer, req, 200, dumps({"ok": True}))
        elif path == "/_sim/ps" and method == "POST":
            # the loaded set replaced: {"models":[{"model", "keep_alive",
            # "num_ctx"}, ...]}, each as a request with those would leave it
            try:
                models = json.loads(req.body.decode("utf-8"))["models"]
                if not all(isinstance(m, dict) and isinstance(m.get("model"), str)
                           and m["model"] for m in models):
                    raise ValueError
            except (ValueError, UnicodeDecodeError, KeyError, TypeError):
                await send_full(writer, req, 400, dumps(
                    {"error": 'expected {"models":[{"model":NAME,...},...]}'}))
                return req.keep_alive
            self.loaded = {}
            for m in models:
                self.load(m["model"], m.get("keep_alive"), m.get("num_ctx"))
            await send_full(writer, req, 200, dumps(self.ps()))
        elif path in ("/_sim/health", "/_sim/requests", "/_sim/reset", "/_sim/ps"):
            await send_full(writer, req, 405, dumps({"error": "method not allowed"}))
        else:
            await send_full(writer, req, 404, dumps({"error": "not found"}))
        return req.keep_alive

    async def ps_endpoint(self, req, rec, reader, writer):
        """GET /api/ps: the models loaded now.  x-sim-fault: 500, stall
        (stall-after:K too), drop:K and drop-rst:K (closed unanswered),
        slow:MS (before the answer)."""
        faults = parse_faults(req.headers.get("x-sim-fault"))
        fault_outcome = "fault:" + faults.raw if faults.any else None
        if faults.error500:
            return await self.respond(req, rec, writer, 500,
                                      error_body(req.path, 500, "simulated failure"),
                                      outcome=fault_outcome)
        if faults.stall or faults.stall_after is not None:
            rec["outcome"] = fault_outcome
            await wait_for_eof(reader)
            return False
        if faults.drop is not None:
            rec["outcome"] = fault_outcome
            drop_connection(writer, faults.drop_rst)
            return False
        if faults.slow_ms:
            await asyncio.sleep(faults.slow_ms / 1000.0)
        return await self.respond(req, rec, writer, 200, dumps(self.ps()),
                                  outcome=fault_outcome or "ok")

    # ---- embeddings --------------------------------------------------------

    async def embed_endpoint(self, req, rec, reader, writer):
        """/v1/embeddings, /api/embed and the legacy /api/embeddings, as
        Ollama answers them: one JSON object (Content-Length), its usage
        where Ollama gives one (embed_tokens() says how much), sent in two
        writes split inside a number unless x-sim-split: none."""
        path = req.path
        faults = parse_faults(req.headers.get("x-sim-fault"))
        if faults.error500:
            return await self.respond(req, rec, writer, 500,
                                      error_body(path, 500, "simulated failure"),
                                      outcome="fault:" + faults.raw)
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            return await self.respond(req, rec, writer, 400,
                                      error_body(path, 400, "invalid JSON: %s" % e))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) \
                or not body.get("model"):
            return await self.respond(req, rec, writer, 400,
                                      error_body(path, 400, "model is required"))
        inputs = embed_inputs(body, path)
        if inputs is None:
            return await self.respond(req, rec, writer, 400,
                                      error_body(path, 400, "invalid input type"))
        self.load_for(body)
        model = req.headers.get("x-sim-answer-model") or body["model"]
        dims = _positive_int(body.get("dimensions")) or EMBED_DIMS
        vectors = [embed_vector(x, dims) for x in inputs]
        P = sum(embed_tokens(x) for x in inputs)
        ru = req.headers.get("x-sim-report-usage")
        if ru:
            try:
                P = int(ru.split(",", 1)[0])
            except ValueError:
                log.warning("ignoring bad x-sim-report-usage %r", ru)
        rec["prompt_tokens"] = P
        rec["completion_tokens"] = 0
        if path == "/v1/embeddings":
            b64 = body.get("encoding_format") == "base64"
            data = [{"object": "embedding", "index": i,
                     "embedding": base64.b64encode(struct.pack("<%df" % len(v), *v)).decode()
                     if b64 else v}
                    for i, v in enumerate(vectors)]
            out = {"object": "list", "data": data, "model": model,
                   "usage": {"prompt_tokens": P, "total_tokens": P}}
        elif path == "/api/embed":
            out = {"model": model, "embeddings": vectors, "total_duration": 14143917,
                   "load_duration": 1019500, "prompt_eval_count": P}
        else:
            # the legacy endpoint reports no usage at all
            out = {"embedding": vectors[0]}
        full = dumps(out)
        rec["status"] = 200
        rec["outcome"] = "ok"
        head = response_head(200, [("Content-Type", "application/json; charset=utf-8"),
                                   ("Content-Length", str(len(full)))],
                             req.keep_alive, req.version)
        if req.headers.get("x-sim-split", "").strip().lower() == "none":
            writer.write(head + full)
            await writer.drain()
            return req.keep_alive
        # inside the first vector's second number, so a read ends mid-token
        cut = full.find(b",", full.find(b"[")) + 3
        writer.write(head + full[:cut])
        await writer.drain()
        await asyncio.sleep(0.005)
        writer.write(full[cut:])
        await writer.drain()
        return req.keep_alive

    # ---- model endpoints -------------------------------------------------

    async def model_endpoint(self, req, rec, reader, writer):
        path = req.path
        # /v1/messages and /v1/responses stream SSE, when asked, as OpenAI's
        openai = path in OPENAI_GEN or path in sim_compat.PATHS
        faults = parse_faults(req.headers.get("x-sim-fault"))
        fault_outcome = "fault:" + faults.raw if faults.any else None

        if faults.error500:
            return await self.respond(req, rec, writer, 500,
                                      error_body(path, 500, "simulated failure"),
                                      outcome=fault_outcome)
        if faults.stall:
            rec["outcome"] = fault_outcome
            await wait_for_eof(reader)
            return False

        # ---- validation
        body = None
        err = None
        if path in sim_compat.PATHS:
            # Ollama's middleware: its checks, its error shapes
            body, refusal = sim_compat.validate(req.body, path)
            if refusal is not None:
                return await self.respond(req, rec, writer, *refusal)
        elif not req.body.strip():
            err = "missing request body" if not openai else "invalid JSON: empty body"
        else:
            try:
                body = json.loads(req.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                err = "invalid JSON: %s" % e
        if err is None and not isinstance(body, dict):
            err = "invalid request: body must be a JSON object"
        if err is None and (not isinstance(body.get("model"), str) or not body.get("model")):
            err = "model is required"
        if err is None and path == "/api/generate" and body.get("prompt") is not None \
                and not isinstance(body.get("prompt"), str):
            err = "invalid request: prompt must be a string"
        if err is None and path == "/v1/completions" and not isinstance(body.get("prompt"), str):
            # Ollama's OpenAI layer takes one prompt, a string
            err = "invalid request: prompt must be a string"
        if err is not None:
            return await self.respond(req, rec, writer, 400, error_body(path, 400, err))

        # served from here on (a fault after this point too): the model is
        # loaded, as Ollama's scheduler has loaded it before it generates
        self.load_for(body)
        model = body["model"]
        P = count_prompt_tokens(body, path)
        C, finish = plan_completion(body, path, req.headers)
        rec["prompt_tokens"] = P
        rec["completion_tokens"] = 0
        if openai:
            stream = body.get("stream") is True
            so = body.get("stream_options")
            include_usage = isinstance(so, dict) and so.get("include_usage") is True
        else:
            stream = body.get("stream") is not False
            include_usage = False

        seed = req.headers.get("x-sim-seed")
        rng = random.Random(seed) if seed is not None else random.Random()
        split = req.headers.get("x-sim-split", "").strip().lower() != "none"
        piece_delay = 0.0
        pd = req.headers.get("x-sim-piece-delay-ms")
        if pd:
            try:
                piece_delay = max(0.0, float(pd)) / 1000.0
            except ValueError:
                pass

        # an upstream that names the model otherwise than it was asked
        # (an alias resolved, a tag added): x-sim-answer-model
        answer_model = req.headers.get("x-sim-answer-model") or model
        if path in sim_compat.PATHS:
            gen = sim_compat.new_generation(self, req, path, answer_model, P, C, finish, body, rec)
        else:
            gen = Generation(self, path, answer_model, P, C, finish, include_usage)
        # an Ollama older than 0.5.2 never sends usage in a stream
        gen.no_usage = _flag(req.headers.get("x-sim-no-usage"))
        # a cached prompt: prompt_eval_count left out (native), 0 (/v1)
        gen.no_prompt_count = _flag(req.headers.get("x-sim-no-prompt-count"))
        preamble = _flag(req.headers.get("x-sim-preamble"))
        ru = req.headers.get("x-sim-report-usage")
        if ru:
            try:
                gen.report = tuple(int(x) for x in ru.split(",", 1))
            except ValueError:
                log.warning("ignoring bad x-sim-report-usage %r", ru)
        lt = req.headers.get("x-sim-long-token")
        if lt:
            try:
                gen.long_token = max(0, int(lt.strip()))
            except ValueError:
                log.warning("ignoring bad x-sim-long-token %r", lt)
        # x-sim-tool-call: NAME: after its text the model calls a tool, the
        # call whole in one chunk, as Ollama sends one (chat only)
        tool = (req.headers.get("x-sim-tool-call") or "").strip()
        if tool and path != "/api/generate":
            args_bytes = DEFAULT_TOOL_ARGS_BYTES
            ab = req.headers.get("x-sim-tool-args-bytes")
            if ab:
                try:
                    args_bytes = int(ab.strip())
                except ValueError:
                    log.warning("ignoring bad x-sim-tool-args-bytes %r", ab)
            gen.set_tool_call(tool, max(MIN_TOOL_ARGS_BYTES, args_bytes),
                              completion_cap(body, path))

        if not stream:
            if faults.stall_after is not None:
                rec["outcome"] = fault_outcome
                await wait_for_eof(reader)
                return False
            if faults.drop is not None:
                rec["outcome"] = fault_outcome
                rec["completion_tokens"] = None
                drop_connection(writer, faults.drop_rst)
                return False
            if faults.slow_ms:
                await asyncio.sleep(faults.slow_ms / 1000.0)
            rec["completion_tokens"] = gen.completion_tokens()
            # x-sim-body-delay-ms: the body's second half that much later,
            # so the gateway reads the answer in two
            bd = req.headers.get("x-sim-body-delay-ms")
            if bd:
                body = gen.full_body()
                rec["status"] = 200
                rec["outcome"] = fault_outcome or "ok"
                half = len(body) // 2
                writer.write(response_head(200, [("Content-Type", "application/json"),
                                                 ("Content-Length", str(len(body)))],
                                           req.keep_alive, req.version) + body[:half])
                await writer.drain()
                if bd == "cut":
                    # the second half never comes: the pool dies midway
                    rec["outcome"] = "dropped"
                    drop_connection(writer, False)
                    return False
                await asyncio.sleep(max(0.0, float(bd)) / 1000.0)
                writer.write(body[half:])
                await writer.drain()
                return req.keep_alive
            # a body the gateway cannot read: compressed (x-sim-content-
            # encoding: gzip), or of another type (x-sim-content-type)
            full = gen.full_body()
            ctype_h = req.headers.get("x-sim-content-type") or "application/json"
            extra = ()
            if (req.headers.get("x-sim-content-encoding") or "").strip().lower() == "gzip":
                full = gzip.compress(full)
                extra = (("Content-Encoding", "gzip"),)
            return await self.respond(req, rec, writer, 200, full, content_type=ctype_h,
                                      outcome=fault_outcome or "ok", extra=extra)

        # ---- streaming
        ctype = req.headers.get("x-sim-content-type") or (
            "text/event-stream" if openai else "application/x-ndjson")
        extra = [("Content-Type", ctype), ("Transfer-Encoding", "chunked")]
        if openai:
            extra.append(("Cache-Control", "no-cache"))
        rec["status"] = 200
        rec["outcome"] = fault_outcome or "streaming"
        try:
            writer.write(response_head(200, extra, req.keep_alive, req.version))
            await writer.drain()
            em = ChunkedEmitter(writer, rng, split, piece_delay, rec)
            # when each token's frame was handed to the emitter (time.time())
            rec["token_times"] = []
            if preamble:
                for frame in gen.preamble_frames():
                    await em.feed(frame)
            # a tool call comes after the text, as one more token's frame
            for i in range(C + (1 if gen.tool else 0)):
                if faults.stall_after is not None and i >= faults.stall_after:
                    await em.flush()
                    await wait_for_eof(reader)
                    return False
                if faults.drop is not None and i >= faults.drop:
                    await em.flush()
                    drop_connection(writer, faults.drop_rst)
                    return False
                if faults.slow_ms:
                    await em.flush()
                    await asyncio.sleep(faults.slow_ms / 1000.0)
                if i < C:
                    await em.feed(gen.token_frame(i))
                    rec["completion_tokens"] = i + 1
                else:
                    await em.feed(gen.tool_call_frame())
                    rec["completion_tokens"] = gen.completion_tokens()
                rec["token_times"].append(time.time())
            # K >= C: everything but the final frame has been sent.
            if faults.stall_after is not None:
                await em.flush()
                await wait_for_eof(reader)
                return False
            if faults.drop is not None:
                await em.flush()
                drop_connection(writer, faults.drop_rst)
                return False
            for frame in gen.final_frames():
                await em.feed(frame)
            await em.finish()
        except (ConnectionError, OSError):
            if not fault_outcome:
                rec["outcome"] = "client-disconnect"
            return False
        if not fault_outcome:
            rec["outcome"] = "ok"
        return req.keep_alive


class Generation:
    def __init__(self, sim, path, model, P, C, finish, include_usage):
        self.path = path
        self.model = model
        self.P = P
        self.C = C
        self.finish = finish
        self.include_usage = include_usage
        self.no_usage = False
        self.no_prompt_count = False
        self.long_token = 0
        self.report = None
        self.tool = None          # (name, arguments) of the tool call
        self.tool_tokens = 0
        self.capped = None        # tokens counted when a cap cut the call
        self.created = int(time.time())
        self.t0 = time.monotonic_ns()
        # /v1/completions: OpenAI's legacy completions, "text" in its choices
        self.legacy = path == "/v1/completions"
        if path in OPENAI_GEN:
            sim.completion_seq += 1
            self.id = ("cmpl-%d" if self.legacy else "chatcmpl-%d") % sim.completion_seq

    def token(self, i):
        # x-sim-long-token: the first token that long (an event larger
        # than the gateway holds whole)
        if i == 0 and self.long_token:
            return "x" * self.long_token
        return token_at(i)

    def content(self):
        return "".join(self.token(i) for i in range(self.C))

    def set_tool_call(self, name, args_bytes, cap):
        """x-sim-tool-call: the model ends its answer with a call of tool
        name whose arguments' JSON is args_bytes long.  A cap that cut the
        text, or that the call's tokens would pass, cuts the call off: no
        call, finish "length", the cap's tokens counted."""
        if self.finish != "stop":
            return
        tokens = tool_call_tokens(args_bytes)
        if cap is not None and self.C + tokens > cap:
            self.finish = "length"
            self.capped = cap
            return
        pad = args_bytes - MIN_TOOL_ARGS_BYTES
        self.tool = (name, {"query": "x" * pad})
        self.tool_tokens = tokens
        # Ollama's ids are "call_" and 8 random characters; here they
        # follow from the answer, so a seed gives the same bytes
        self.tool_id = "call_" + hashlib.sha256(
            ("%s:%s:%s" % (getattr(self, "id", ""), self.model, name)).encode()
        ).hexdigest()[:8]

    def completion_tokens(self):
        """Tokens the usage reports: the text's, and the tool call's."""
        if self.capped is not None:
            return self.capped
        return self.C + self.tool_tokens

    def tool_calls(self):
        """The call as the answer carries it: OpenAI's shape (arguments as
        a JSON string, the finish reason "tool_calls") under /v1, Ollama's
        own (arguments as an object) natively."""
        name, args = self.tool
        if self.path == "/v1/chat/completions":
            return [{"id": self.tool_id, "index": 0, "type": "function",
                     "function": {"name": name,
                                  "arguments": dumps(args).decode("utf-8")}}]
        return [{"id": self.tool_id,
                 "function": {"index": 0, "name": name, "arguments": args}}]

    def openai_finish(self):
        return "tool_calls" if self.tool else self.finish

    def reported(self):
        # x-sim-report-usage: P,C: a hostile or broken pool reports these
        if self.report:
            return self.report
        return (self.P, self.completion_tokens())

    def usage(self):
        P, c = self.reported()
        p = 0 if self.no_prompt_count else P
        return {"prompt_tokens": p, "completion_tokens": c,
                "total_tokens": p + c}

    def native_final(self, content):
        load = 1_000_000
        prompt_eval = self.P * 100_000
        eval_d = self.C * 1_000_000
        elapsed = time.monotonic_ns() - self.t0
        obj = {"model": self.model, "created_at": rfc3339_now()}
        if self.path == "/api/chat":
            obj["message"] = {"role": "assistant", "content": content}
        else:
            obj["response"] = content
        obj.update({
            "done": True,
            "done_reason": self.finish,
            "total_duration": max(elapsed, load + prompt_eval + eval_d),
            "load_duration": load,
            "prompt_eval_count": self.reported()[0],
            "prompt_eval_duration": prompt_eval,
            "eval_count": self.reported()[1],
            "eval_duration": eval_d,
        })
        if self.no_prompt_count:
            del obj["prompt_eval_count"]
            del obj["prompt_eval_duration"]
        return obj

    def _chunk(self, choices, usage=None):
        obj = {"id": self.id,
               "object": "text_completion" if self.legacy else "chat.completion.chunk",
               "created": self.created,
               "model": self.model, "system_fingerprint": "fp_ollama", "choices": choices}
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + dumps(obj) + b"\n\n"

    def _choice(self, text, finish):
        """A /v1/completions choice"""
        return {"text": text, "index": 0, "finish_reason": finish}

    def full_body(self):
        if self.legacy:
            return dumps({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "system_fingerprint": "fp_ollama",
                "choices": [self._choice(self.content(), self.finish)],
                "usage": self.usage(),
            })
        if self.path == "/v1/chat/completions":
            message = {"role": "assistant", "content": self.content()}
            if self.tool:
                message["tool_calls"] = self.tool_calls()
            return dumps({
                "id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": message,
                             "finish_reason": self.openai_finish()}],
                "usage": self.usage(),
            })
        obj = self.native_final(self.content())
        if self.tool:
            obj["message"]["tool_calls"] = self.tool_calls()
        return dumps(obj)

    def preamble_frames(self):
        """What some servers send before the first token: an SSE comment
        (a keep-alive, as OpenRouter's ": OPENROUTER PROCESSING") and a
        chunk with the role and no text (as OpenAI's first chunk); on the
        native API, a line with empty content."""
        if self.legacy:
            return [b": keep-alive\n\n", self._chunk([self._choice("", None)])]
        if self.path == "/v1/chat/completions":
            return [b": keep-alive\n\n",
                    self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": None}])]
        obj = {"model": self.model, "created_at": rfc3339_now()}
        if self.path == "/api/chat":
            obj["message"] = {"role": "assistant", "content": ""}
        else:
            obj["response"] = ""
        obj["done"] = False
        return [dumps(obj) + b"\n"]

    def token_frame(self, i):
        tok = self.token(i)
        if self.legacy:
            return self._chunk([self._choice(tok, None)])
        if self.path == "/v1/chat/completions":
            return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": tok},
                                 "finish_reason": None}])
        obj = {"model": self.model, "created_at": rfc3339_now()}
        if self.path == "/api/chat":
            obj["message"] = {"role": "assistant", "content": tok}
        else:
            obj["response"] = tok
        obj["done"] = False
        return dumps(obj) + b"\n"

    def tool_call_frame(self):
        """The tool call whole, in one chunk with empty content, as Ollama
        streams one."""
        if self.path == "/v1/chat/completions":
            return self._chunk([{"index": 0,
                                 "delta": {"role": "assistant", "content": "",
                                           "tool_calls": self.tool_calls()},
                                 "finish_reason": None}])
        obj = {"model": self.model, "created_at": rfc3339_now(),
               "message": {"role": "assistant", "content": "",
                           "tool_calls": self.tool_calls()},
               "done": False}
        return dumps(obj) + b"\n"

    def final_frames(self):
        if self.path in OPENAI_GEN:
            frames = [self._chunk([self._choice("", self.finish)] if self.legacy else
                                  [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": self.openai_finish()}])]
            if self.include_usage and not self.no_usage:
                frames.append(self._chunk([], self.usage()))
            frames.append(b"data: [DONE]\n\n")
            return frames
        return [dumps(self.native_final("")) + b"\n"]


sim_compat.bind(sys.modules[__name__])


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

class Server:
    def __init__(self):
        self.sim = Sim()
        self.tasks = set()

    async def handle_conn(self, reader, writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    req = await read_request(reader, writer)
                except BadRequest as e:
                    log.warning("bad request from %s: %s", peer, e.message)
                    try:
                        body = dumps({"error": e.message})
                        head = response_head(e.status, [("Content-Type", "application/json"),
                                                        ("Content-Length", str(len(body)))],
                                             False)
                        writer.write(head + body)
                        await writer.drain()
                    except Exception:
                        pass
                    break
                if req is None:
                    break
                # which TCP connection brought it: tests check keepalive
                req.connection = "%s:%s" % (peer[0], peer[1]) if peer else None
                if not await self.sim.dispatch(req, reader, writer):
                    break
        except asyncio.CancelledError:
            pass
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            log.info("connection %s ended: %r", peer, e)
        except Exception:
            log.exception("error on connection %s", peer)
        finally:
            self.tasks.discard(task)
            try:
                writer.close()
            except Exception:
                pass


async def amain(args):
    srv = Server()
    server = await asyncio.start_server(srv.handle_conn, args.host, args.port,
                                        limit=HEAD_LIMIT, backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    host = args.host
    print("listening on %s:%d" % (host, port), flush=True)
    log.info("listening on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        server.close()
        for t in list(srv.tasks):
            t.cancel()
        if srv.tasks:
            await asyncio.wait(list(srv.tasks), timeout=2)
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(description="Ollama simulator for tests")
    ap.add_argument("--port", type=int, required=True, help="TCP port (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--pidfile")
    ap.add_argument("--log", help="log file (default: warnings to stderr)")
    args = ap.parse_args(argv)
    if args.log:
        handler = logging.FileHandler(args.log)
        level = logging.INFO
    else:
        handler = logging.StreamHandler(sys.stderr)
        level = logging.WARNING
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    try:
        asyncio.run(amain(args))
    except OSError as e:
        print("ollama_sim: %s" % e, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
