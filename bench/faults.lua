-- bench/faults.lua: the steady load of bench/faults (and t/42), for wrk.
--
--   wrk -t1 -c8 -d20s -s bench/faults.lua http://127.0.0.1:PORT \
--       -- KEY TOKENS PROMPT STOP_FILE STREAM_SLOW_MS PACE_MS
--
-- Requests turn in a round: an OpenAI chat completion (JSON), the same
-- streamed (SSE, without stream_options: the gateway asks the pool for
-- the usage chunk and strips it), and Ollama's native /api/chat (NDJSON).
-- Each asks the simulator for TOKENS tokens (x-sim-tokens) of a prompt it
-- counts as PROMPT tokens, so every response served whole carries exactly
-- that usage, and is checked for it.
--
-- A connection waits PACE_MS between requests (wrk's delay()), so the
-- load stays bounded when every answer is an instant 503 or 502; streams
-- go at one token every STREAM_SLOW_MS (x-sim-fault: slow).
--
-- Once STOP_FILE exists, only GET /v1/models is sent (public, never metered):
-- the metered requests still in flight then end before wrk stops, so
-- what wrk counts as served is all that was served.
--
-- done() prints one line a count: "faults KIND STATUS N", where KIND is
-- json, sse, ndjson, idle (the /v1/models tail) or error (a JSON error
-- body, any path), STATUS the HTTP status, with "-bad" when a 200 did
-- not carry the usage or the tokens it should have; "faults sent N" and
-- "faults sent-idle N", the requests written (a metered one that got no
-- response was sent on a connection that closed under it); and
-- "faults socket connect|read|write|timeout N" (wrk counts an idle
-- keepalive connection the server closed as a read error too).

local key, tokens, prompt, slow, pace
local stop_file
local stopped = false
local reqs = {}
local idle
local n = 0
counts = {}

function init(args)
   key = args[1]
   tokens = tonumber(args[2])
   prompt = tonumber(args[3])
   stop_file = args[4]
   slow = args[5] or "0"
   pace = tonumber(args[6] or "0")

   local msg = '"messages":[{"role":"user","content":'
      .. '"Count the tokens of this faulty afternoon please"}]'
   local h = {
      ["Authorization"] = "Bearer " .. key,
      ["Content-Type"] = "application/json",
      ["x-sim-tokens"] = tostring(tokens),
      ["x-sim-split"] = "none",
   }
   local hs = {}
   for k, v in pairs(h) do hs[k] = v end
   if slow ~= "0" then hs["x-sim-fault"] = "slow:" .. slow end

   reqs[1] = wrk.format("POST", "/v1/chat/completions", h,
      '{"model":"qwen3:latest",' .. msg .. '}')
   reqs[2] = wrk.format("POST", "/v1/chat/completions", hs,
      '{"model":"qwen3:latest","stream":true,' .. msg .. '}')
   reqs[3] = wrk.format("POST", "/api/chat", hs,
      '{"model":"qwen3:latest",' .. msg .. '}')
   idle = wrk.format("GET", "/v1/models", {})
end

local function count(k)
   counts[k] = (counts[k] or 0) + 1
end

function delay()
   return pace
end

function request()
   if not stopped then
      local f = io.open(stop_file, "r")
      if f then
         f:close()
         stopped = true
      end
   end
   if stopped then
      count("sent-idle")
      return idle
   end
   n = n + 1
   count("sent")
   return reqs[(n - 1) % 3 + 1]
end

local function plain(s)
   return (s:gsub("[%-%.%+%[%]%(%)%$%^%%%?%*]", "%%%0"))
end

function response(status, headers, body)
   local kind
   if body:find('"object":"list"', 1, true) then
      kind = "idle"
   elseif body:find('"chat.completion.chunk"', 1, true) then
      kind = "sse"
   elseif body:find('"object":"chat.completion"', 1, true) then
      kind = "json"
   elseif body:find('"done":', 1, true) then
      kind = "ndjson"
   else
      kind = "error"
   end

   local ok = true
   if status == 200 then
      if kind == "json" then
         ok = body:find('"usage":{"prompt_tokens":' .. prompt
                        .. ',"completion_tokens":' .. tokens .. ',', 1, true) ~= nil
      elseif kind == "sse" then
         -- every token, no usage chunk (not asked for), and the end
         local _, t = body:gsub(plain('"finish_reason":null'), "")
         ok = t == tokens and not body:find('"usage"', 1, true)
              and body:sub(-14) == "data: [DONE]\n\n"
      elseif kind == "ndjson" then
         local _, t = body:gsub(plain('"done":false'), "")
         ok = t == tokens
              and body:find('"prompt_eval_count":' .. prompt .. ',', 1, true) ~= nil
              and body:find('"eval_count":' .. tokens .. ',', 1, true) ~= nil
      end
   end

   count(kind .. " " .. status .. (ok and "" or "-bad"))
end

threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   local total = {}
   for _, t in ipairs(threads) do
      local c = t:get("counts")
      for k, v in pairs(c) do
         total[k] = (total[k] or 0) + v
      end
   end
   for k, v in pairs(total) do
      io.write("faults " .. k .. " " .. v .. "\n")
   end
   for _, e in ipairs({"connect", "read", "write", "timeout"}) do
      io.write("faults socket " .. e .. " " .. summary.errors[e] .. "\n")
   end
   io.write("faults requests " .. summary.requests .. "\n")
end
