-- bench/openresty/nebula_gw.lua: Nebula's gateway as an OpenResty user
-- would write it, on Debian's nginx with its Lua module
-- (libnginx-mod-http-lua), lua-resty-core, lua-resty-lrucache, lua-cjson and
-- Debian's lua-resty-redis (lua-nginx-redis: "nginx.redis").  bench/run
-- measures it beside Nebula, on the same Redis and the same keys.
--
-- What it does, the five parts of issue 12:
--
--   key lookup   the Bearer secret (or x-api-key) -> its SHA-256 (OpenSSL's
--                SHA256() through the FFI, as lua-resty-string does; Debian
--                has no lua-resty-string), cached per worker in an LRU of
--                secrets -> digests; the key id is the digest's first 16 hex
--                digits, as in ngx_nebula_key.c
--   admission    one EVALSHA of Nebula's own ADMIT script (its text taken
--                from ngx_nebula_scripts.c by bench/run), with the KEYS and
--                ARGV ngx_nebula_admission.c sends, on a cosocket from the
--                worker's connection pool (set_keepalive); refusals as
--                Nebula words them (401, 403, 404, 429, 503, JSON)
--   rewrite      the body decoded with cjson, "model" set to the upstream's
--                name, max_tokens set to the reservation,
--                stream_options.include_usage added to a stream, encoded,
--                and proxy_pass to the model's pool
--   SSE usage    a body filter that puts the public model name in every
--                event, finds the usage chunk as the stream passes, and drops
--                it when the client did not ask for it (a JSON answer is
--                held to its end, then the same)
--   settlement   each request's usage queued in log_by_lua; an
--                ngx.timer.every flushes the queue every 5 ms in one
--                pipelined round of EVALSHA SETTLE (Nebula's script, the
--                arguments ngx_nebula_settle.c sends)
--
-- Only /v1/chat/completions: the benchmark asks nothing else.

local ffi      = require "ffi"
local cjson    = require "cjson.safe"
local lrucache = require "resty.lrucache"
local redis    = require "nginx.redis"

local ngx        = ngx
local ngx_var    = ngx.var
local ngx_header = ngx.header
local re_gsub    = ngx.re.gsub
local re_find    = ngx.re.find
local re_match   = ngx.re.match
local str_find   = string.find
local str_sub    = string.sub
local str_byte   = string.byte
local str_format = string.format
local tonumber   = tonumber
local concat     = table.concat
local unpack     = unpack

local _M = {}

-- nb:{ID}:u:MONTH and friends live this long (NGX_NEBULA_USAGE_TTL)
local USAGE_TTL = 34560000
-- a reservation nobody settled expires (nebula_reservation_timeout's default)
local RESERVATION_TTL = 900
local FLUSH_EVERY = 0.005
local FLUSH_MAX = 1000
local POOL_SIZE = 64
local POOL_IDLE_MS = 60000

local conf              -- gateway.json, read once by init()
local admit_sha, settle_sha
local digests           -- secret -> digest (hex), per worker
local queue, queued = {}, 0
local flushing = false

ffi.cdef [[
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
]]
local C = ffi.C
local md = ffi.new("unsigned char[32]")
local HEX32 = string.rep("%02x", 32)

local function sha256_hex(s)
    C.SHA256(s, #s, md)
    return str_format(HEX32, md[0], md[1], md[2], md[3], md[4], md[5], md[6],
        md[7], md[8], md[9], md[10], md[11], md[12], md[13], md[14], md[15],
        md[16], md[17], md[18], md[19], md[20], md[21], md[22], md[23],
        md[24], md[25], md[26], md[27], md[28], md[29], md[30], md[31])
end


local function hex(s)
    return (string.gsub(s, ".", function(c)
        return str_format("%02x", str_byte(c))
    end))
end


local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end


-- init_by_lua: the configuration bench/run writes (Redis, the catalog, the
-- plans table, the scripts' texts)
function _M.init(path)
    conf = assert(cjson.decode(read_file(path)))
    conf.admit = read_file(conf.admit_file)
    conf.settle = read_file(conf.settle_file)
    -- EVALSHA names a script by the SHA-1 of its text
    admit_sha = hex(ngx.sha1_bin(conf.admit))
    settle_sha = hex(ngx.sha1_bin(conf.settle))
    for name, m in pairs(conf.models) do
        m.name = name
        -- the public name as it goes into an answer (a replacement string)
        m.model_field = '"model":' .. cjson.encode(name):gsub("%$", "$$")
        m.pool_url = "http://" .. m.pool
    end
end


local function connect()
    local red = redis:new()
    red:set_timeout(1000)
    local ok, err = red:connect(conf.redis_host, conf.redis_port)
    if not ok then
        return nil, err
    end
    return red
end


-- the scripts loaded once a worker starts (EVALSHA loads them again on
-- NOSCRIPT), and the settlement queue's flush
local function load_scripts(premature)
    if premature then
        return
    end
    local red, err = connect()
    if not red then
        ngx.log(ngx.ERR, "nebula_gw: redis: ", err)
        return
    end
    local a = red:script("LOAD", conf.admit)
    local s = red:script("LOAD", conf.settle)
    if a ~= admit_sha or s ~= settle_sha then
        ngx.log(ngx.ERR, "nebula_gw: SCRIPT LOAD answered ", tostring(a), " ",
                tostring(s))
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)
end


local function requeue(batch, from)
    for i = from, #batch do
        queued = queued + 1
        queue[queued] = batch[i]
    end
end


-- one pipelined round of EVALSHA SETTLE for what the requests queued
local function flush(premature)
    if flushing or queued == 0 then
        return
    end
    flushing = true
    local batch = queue
    local n = queued
    queue, queued = {}, 0
    if n > FLUSH_MAX then
        requeue(batch, FLUSH_MAX + 1)
        n = FLUSH_MAX
    end

    local red, err = connect()
    if not red then
        ngx.log(ngx.ERR, "nebula_gw: settlement: redis: ", err)
        requeue(batch, 1)
        flushing = false
        return
    end

    red:init_pipeline(n)
    for i = 1, n do
        red:evalsha(settle_sha, 6, unpack(batch[i]))
    end
    local res, perr = red:commit_pipeline()
    if not res then
        ngx.log(ngx.ERR, "nebula_gw: settlement: redis: ", perr)
        red:close()
        requeue(batch, 1)
        flushing = false
        return
    end

    local again
    for i = 1, n do
        local r = res[i]
        if type(r) == "table" and r[1] == false then
            if str_find(r[2], "NOSCRIPT", 1, true) then
                again = again or {}
                again[#again + 1] = batch[i]
            else
                ngx.log(ngx.ERR, "nebula_gw: redis refused a settlement: ",
                        r[2])
            end
        end
    end
    if again then
        red:script("LOAD", conf.settle)
        requeue(again, 1)
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)
    flushing = false

    if premature and queued > 0 then
        flush(premature)
    end
end


function _M.init_worker()
    digests = assert(lrucache.new(4096))
    ngx.timer.at(0, load_scripts)
    ngx.timer.every(FLUSH_EVERY, flush)
end


-- an OpenAI-style refusal
local function refuse(status, typ, code, message, param)
    ngx.status = status
    ngx_header["Content-Type"] = "application/json"
    ngx.print('{"error":{"message":', cjson.encode(message), ',"type":"',
              typ, '","param":', param and ('"' .. param .. '"') or "null",
              ',"code":"', code, '"}}')
    return ngx.exit(ngx.HTTP_OK)
end


-- "6d3h12m" to the start of next month (UTC), as Nebula writes it
local reset_at, reset_str = -1, nil
local function month_reset(now)
    if now ~= reset_at then
        local t = os.date("!*t", now)
        local y, m = t.year, t.month + 1
        if m > 12 then
            y, m = y + 1, 1
        end
        -- days from 1970-01-01 to the first of month m of year y
        local a = math.floor((14 - m) / 12)
        local yy = y + 4800 - a
        local mm = m + 12 * a - 3
        local jdn = 1 + math.floor((153 * mm + 2) / 5) + 365 * yy
                    + math.floor(yy / 4) - math.floor(yy / 100)
                    + math.floor(yy / 400) - 32045
        local left = (jdn - 2440588) * 86400 - now
        local d = math.floor(left / 86400)
        local h = math.floor(left % 86400 / 3600)
        local mi = math.floor(left % 3600 / 60)
        local se = left % 60
        reset_str = (d > 0 and (d .. "d") or "") .. ((d > 0 or h > 0)
                    and (h .. "h") or "") .. ((left >= 60) and (mi .. "m") or "")
                    .. se .. "s"
        reset_at = now
    end
    return reset_str
end


-- the month and the day (UTC), written once a second
local date_at, date_month, date_day = -1, nil, nil
local function dates(now)
    if now ~= date_at then
        date_month = os.date("!%Y-%m", now)
        date_day = os.date("!%Y-%m-%d", now)
        date_at = now
    end
    return date_month, date_day
end


-- the contract's x-ratelimit-* headers, from what ADMIT answered
local function ratelimit_headers(rpm, rpm_left, in_limit, in_left, out_limit,
                                 out_left, reset)
    if rpm > 0 then
        ngx_header["x-ratelimit-limit-requests"] = rpm
        ngx_header["x-ratelimit-remaining-requests"] = rpm_left
    end
    ngx_header["x-ratelimit-limit-input-tokens"] = in_limit
    ngx_header["x-ratelimit-remaining-input-tokens"] = in_left
    ngx_header["x-ratelimit-limit-output-tokens"] = out_limit
    ngx_header["x-ratelimit-remaining-output-tokens"] = out_left
    ngx_header["x-ratelimit-reset-tokens"] = reset
end


-- the prompt's tokens, estimated as Nebula does (nebula_estimate.c): a
-- token per 4 bytes of text, 4 a message and 3, no fewer than the body's
-- bytes over 4
local function estimate(req, body_len)
    local text = 0
    local msgs = req.messages
    for i = 1, #msgs do
        local c = msgs[i].content
        if type(c) == "string" then
            text = text + #c
        elseif type(c) == "table" then
            for j = 1, #c do
                local p = c[j]
                if type(p) == "table" and type(p.text) == "string" then
                    text = text + #p.text
                end
            end
        end
    end
    local counted = math.floor((text + 3) / 4) + 4 * #msgs + 3
    local floor = math.floor((body_len + 3) / 4)
    return counted > floor and counted or floor
end


-- access_by_lua: the key, the body, one admission, the rewrite
function _M.access()
    local secret
    local auth = ngx_var.http_authorization
    if auth then
        secret = auth:match("^[Bb]earer%s+(%S+)%s*$")
    else
        secret = ngx_var.http_x_api_key
    end
    if not secret or secret == "" then
        return refuse(401, "invalid_request_error", "invalid_api_key",
                      "You didn't provide an API key. Send it as "
                      .. "\"Authorization: Bearer nb-...\".")
    end

    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        local file = ngx.req.get_body_file()
        body = file and read_file(file) or ""
    end

    local req = cjson.decode(body)
    if type(req) ~= "table" then
        return refuse(400, "invalid_request_error", "invalid_json",
                      "The request body is not valid JSON.")
    end
    if type(req.model) ~= "string" then
        return refuse(400, "invalid_request_error", "missing_field",
                      "Missing required field 'model'.", "model")
    end
    if type(req.messages) ~= "table" or #req.messages == 0 then
        return refuse(400, "invalid_request_error", "missing_field",
                      "Missing required field 'messages'.", "messages")
    end
    local model = conf.models[req.model]
    if not model then
        return refuse(404, "invalid_request_error", "model_not_found",
                      "The model '" .. req.model .. "' does not exist. See "
                      .. "GET /v1/models for the models served here.", "model")
    end
    local digest = digests:get(secret)
    if not digest then
        digest = sha256_hex(secret)
        digests:set(secret, digest)
    end
    local id = str_sub(digest, 1, 16)

    local now = ngx.time()
    local month, day = dates(now)
    local prompt = estimate(req, #body)
    local want = tonumber(req.max_tokens) or tonumber(req.max_completion_tokens)
                 or 0
    local cap = model.context - prompt
    if cap > model.max_output then
        cap = model.max_output
    end
    if cap < 1 then
        cap = 1
    end
    local request_id = ngx_var.request_id
    local p = "nb:{" .. id .. "}:"

    local red, err = connect()
    if not red then
        ngx.log(ngx.ERR, "nebula_gw: redis: ", err)
        return refuse(503, "api_error", "quota_store_unavailable",
                      "The quota store is unavailable; please retry shortly.")
    end
    local keys_argv = {
        8, p .. "key", p .. "u:" .. month, p .. "r:" .. math.floor(now / 60),
        p .. "res:" .. month, p .. "exp:" .. month, p .. "acct",
        p .. "ku:" .. month, p .. "kr::" .. math.floor(now / 60),
        digest, model.name, model.group, conf.plans_table, prompt, want, cap,
        60 - now % 60, USAGE_TTL, now, RESERVATION_TTL, request_id, 0, 0, ""
    }
    local a
    a, err = red:evalsha(admit_sha, unpack(keys_argv))
    if not a and err and str_find(err, "NOSCRIPT", 1, true) then
        red:script("LOAD", conf.admit)
        a, err = red:evalsha(admit_sha, unpack(keys_argv))
    end
    if not a then
        red:close()
        ngx.log(ngx.ERR, "nebula_gw: admission: ", err)
        return refuse(503, "api_error", "quota_store_unavailable",
                      "The quota store is unavailable; please retry shortly.")
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)

    local status = a[1]
    local now_reset = month_reset(now)
    if status == 3 then
        ratelimit_headers(a[5], a[8], a[3], a[6], a[4], a[7], now_reset)
    elseif status == 4 then
        ratelimit_headers(a[3], 0, a[4], a[6], a[5], a[7], now_reset)
    elseif status == 5 then
        ratelimit_headers(a[6], a[7], a[2], a[4], a[3], a[5], now_reset)
    end
    if status == 1 or status == 2 then
        return refuse(401, "invalid_request_error", "invalid_api_key",
                      status == 2 and "This API key has been revoked."
                      or "Incorrect API key provided.")
    elseif status == 3 then
        return refuse(403, "permission_error", "model_not_allowed",
                      "Your plan (" .. a[2] .. ") does not include the model '"
                      .. model.name .. "'.", "model")
    elseif status == 4 then
        ngx_header["Retry-After"] = a[2]
        return refuse(429, "rate_limit_error", "rate_limit_exceeded",
                      "Rate limit reached: " .. a[3] .. " requests per minute. "
                      .. "Retry in " .. a[2] .. " s.")
    elseif status == 5 then
        return refuse(429, "insufficient_quota", "insufficient_quota",
                      "You exceeded your monthly token quota; it resets at "
                      .. "the start of next month (UTC).")
    elseif status ~= 0 then
        return refuse(403, "permission_error", "model_not_allowed",
                      "Your key's plan is not served here.", "model")
    end

    local reserved = a[2]
    local ctx = ngx.ctx
    ctx.admitted = true
    ctx.prefix = p
    ctx.month = month
    ctx.day = day
    ctx.now = now
    ctx.request_id = request_id
    ctx.model = model
    ctx.rin = prompt
    ctx.rout = reserved
    ctx.limits = a

    -- the body the pool gets
    req.model = model.upstream_model
    req.max_tokens = reserved
    if req.max_completion_tokens then
        req.max_completion_tokens = reserved
    end
    if req.stream == true then
        local so = req.stream_options
        if type(so) ~= "table" then
            so = {}
            req.stream_options = so
        end
        ctx.client_usage = so.include_usage == true
        so.include_usage = true
    else
        ctx.client_usage = true
    end
    ngx.req.set_body_data(cjson.encode(req))
    ngx_var.gw_pool_url = model.pool_url
end


-- header_filter_by_lua: the x-ratelimit-* headers; the body will change
function _M.header_filter()
    local ctx = ngx.ctx
    if not ctx.admitted then
        return
    end
    local a = ctx.limits
    ngx_header.content_length = nil
    ratelimit_headers(a[5], a[8], a[3], a[6], a[4], a[7], month_reset(ctx.now))
    local ct = ngx_header.content_type
    ctx.sse = ct and str_find(ct, "text/event-stream", 1, true) == 1
    ctx.filtering = ngx.status == 200
end


local USAGE_EVENT = [[data: [^\n]*"usage":\{[^\n]*\n\n]]

-- the usage in an event or an answer
local function take_usage(ctx, s)
    local m = re_match(s, [["prompt_tokens":(\d+)]], "jo")
    if m then
        ctx.in_tokens = tonumber(m[1])
    end
    m = re_match(s, [["completion_tokens":(\d+)]], "jo")
    if m then
        ctx.out_tokens = tonumber(m[1])
    end
end


-- whole events: the public model name in each, the usage chunk found (and
-- dropped when the client did not ask for it)
local function events(ctx, s)
    local model = ctx.model
    local out, n = re_gsub(s, [["model":"[^"]*"]], model.model_field, "jo")
    ctx.chunks = (ctx.chunks or 0) + (n or 0)
    if str_find(out, '"usage":', 1, true) then
        local from, to = re_find(out, USAGE_EVENT, "jo")
        if from then
            take_usage(ctx, str_sub(out, from, to))
            ctx.chunks = ctx.chunks - 1
            if not ctx.client_usage then
                out = str_sub(out, 1, from - 1) .. str_sub(out, to + 1)
            end
        end
    end
    return out
end


-- body_filter_by_lua: a stream's events as they pass, a JSON answer whole
function _M.body_filter()
    local ctx = ngx.ctx
    if not ctx.filtering then
        return
    end
    local chunk, eof = ngx.arg[1], ngx.arg[2]

    if not ctx.sse then
        local parts = ctx.parts
        if not parts then
            parts = {}
            ctx.parts = parts
        end
        parts[#parts + 1] = chunk
        if not eof then
            ngx.arg[1] = nil
            return
        end
        local s = concat(parts)
        local out, n = re_gsub(s, [["model":"[^"]*"]], ctx.model.model_field,
                               "jo")
        ctx.chunks = n
        local from, to = re_find(out, [["usage":\{[^}]*\}]], "jo")
        if from then
            take_usage(ctx, str_sub(out, from, to))
        end
        ngx.arg[1] = out
        return
    end

    local data = chunk
    if ctx.carry then
        data = ctx.carry .. chunk
        ctx.carry = nil
    end
    local len = #data
    if len == 0 then
        return
    end

    -- the events that are whole; the rest waits for the next buffer
    local cut = len
    if not (str_byte(data, len) == 10 and str_byte(data, len - 1) == 10) then
        cut = 0
        local from = 1
        while true do
            local s = str_find(data, "\n\n", from, true)
            if not s then
                break
            end
            cut = s + 1
            from = s + 2
        end
        if not eof then
            ctx.carry = str_sub(data, cut + 1)
        end
    end

    local out = cut > 0 and events(ctx, str_sub(data, 1, cut)) or ""
    if eof and cut < len then
        out = out .. str_sub(data, cut + 1)
    end
    ngx.arg[1] = out
end


-- log_by_lua: the request's usage queued for the next flush
function _M.log()
    local ctx = ngx.ctx
    if not ctx.admitted then
        return
    end
    local model = ctx.model
    local i, o = ctx.in_tokens, ctx.out_tokens
    local est = 0
    if not o then
        -- no usage reported: what was streamed, a chunk a token
        o = ctx.chunks or 0
        if o > 0 then
            est = 2
        end
    end
    if not i then
        if o > 0 or ctx.out_tokens then
            i = ctx.rin
            est = est + 1
        else
            i = 0
        end
    end
    if o > ctx.rout then
        o = ctx.rout
    end
    local cost = i * model.input_price + o * model.output_price
    local p, month = ctx.prefix, ctx.month
    queued = queued + 1
    queue[queued] = {
        p .. "u:" .. month, p .. "m:" .. month,
        p .. "d:" .. ctx.day,
        p .. "res:" .. month, p .. "exp:" .. month, p .. "ku:" .. month,
        10,     -- SETTLE takes settlements in batches: this one's count
        ctx.rin, ctx.rout, i, o, cost, model.name, USAGE_TTL,
        ctx.request_id .. ":" .. ctx.rin .. ":" .. ctx.rout, 1, est
    }
end


return _M
