/*
 * Nebula: the server-side Lua scripts, run with EVALSHA.
 *
 * The data of one API key lives under one hash tag, {ID}, so a Redis
 * Cluster keeps it in one slot and every per-request script touches one
 * slot only (docs/redis.md has the whole layout):
 *
 *   nb:{ID}:key            hash: digest, name, plan, status, created,
 *                          in_limit, out_limit, rpm_limit, models
 *   nb:{ID}:u:YYYY-MM      hash: in, out, rin, rout (reserved), req, cost,
 *                          est_req, est_in, est_out (estimated)
 *   nb:{ID}:res:YYYY-MM    sorted set of the reservations in flight:
 *                          "REQUEST:IN:OUT" scored by when they expire
 *   nb:{ID}:m:YYYY-MM      hash: MODEL|in, MODEL|out, MODEL|req, MODEL|cost,
 *                          MODEL|est_req, MODEL|est_in, MODEL|est_out
 *   nb:{ID}:d:YYYY-MM-DD   hash: in, out, req, cost, est_req, est_in, est_out
 *   nb:{ID}:exp:YYYY-MM    set of the reservations that expired unsettled
 *   nb:{ID}:r:MINUTE       the requests of one minute
 *   nb:{ID}:g              list: the key's last 1,000 generation records,
 *                          a line of words each, newest first (LPUSH,
 *                          EXPIRE, LTRIM: ngx_nebula_generation.c)
 *   nb:keys                set of every key ID (admin listing)
 *   nb:changes             sorted set: ids of keys changed lately, scored
 *                          by when (ms, Redis's clock): leases close
 *
 * Costs are integers in picodollars (10^-12 USD): tokens times the price
 * in micro-USD per 1M tokens, exact however many requests add up.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_redis.h"
#include "ngx_nebula_fanout.h"

#include <openssl/evp.h>


/*
 * ADMIT: one round trip admits a request, atomically.
 *
 * KEYS: key hash, month usage hash, minute counter, month reservations,
 *       month expired reservations (these four the account's), account
 *       hash, month per-key usage hash, the key's own minute counter
 * ARGV: digest, model, model group ("" if private), plans table,
 *       prompt estimate, requested output (0: none), output cap (-1:
 *       the request makes no output, an embedding's: none is reserved,
 *       and none need be left),
 *       seconds left in the minute, usage TTL, now, reservation TTL,
 *       reservation id, lease input and output asked (0: none), the
 *       key's id ("": a key made before accounts)
 *
 * A key made before accounts ("nb-" and 43 characters) is an account of
 * its own, its data under its own id: its record is nb:{ID}:key, and
 * while no account hash names it, its plan, limits and models are the
 * key record's (the layout of before, untouched).  A key of an account
 * ("nb-ACCOUNT-..."; its record nb:{ACCOUNT}:k:ID) takes the plan, limits
 * and private models of its account, and may narrow them: its own
 * monthly input and output caps, per-minute limit and list of models.
 * What the account has left is the account's; what the key has left, the
 * smaller of that and its own cap's.  A key of an account counts what it
 * reserves and uses in the per-key hash too, its fields "ID|in", ...,
 * and its reservations' members say whose they are ("REQUEST@ID:IN:OUT"),
 * so that any admission of the account that finds one expired gives it
 * back to its key as well as to the account.
 *
 * A lease (ngx_nebula_lease.c) is a block of tokens reserved with the
 * request, "L" and the reservation id its member: granted only when
 * neither the account nor the key has a per-minute limit, with at least
 * 64 blocks' worth left, and no smaller than this request, so a request
 * admitted from it gets what it would get here; and not to a key that
 * expires within 10 seconds (a lease lives 5: nothing admits a key past
 * its expiry).
 *
 * A reservation nobody settled (a worker that died, a reply lost to a
 * timeout after Redis applied it) expires: the next admission of the
 * account gives it back.
 *
 * The plans table comes from nginx.conf, built once: a line per plan,
 * "NAME INPUT OUTPUT RPM GROUP GROUP ..." ("*" for every group).
 *
 * Returns {0, reserved_out, in_limit, out_limit, rpm, in_left, out_left,
 *          rpm_left, plan, name[, lease_in, lease_out]}
 *      or {1} unknown key, {2, why} revoked, disabled or expired,
 *         {3, plan, in_limit, out_limit, rpm, in_left, out_left, rpm_left}
 *            model not allowed,
 *         {4, retry_after, rpm, in_limit, out_limit, in_left, out_left,
 *          scope} rate limited,
 *         {5, in_limit, out_limit, in_left, out_left, rpm, rpm_left,
 *          leased, scope} quota used up (leased: 1 when leases hold
 *            unused blocks of the account, which the workers are then
 *            asked back),
 *         {6, plan} the plan is not configured here,
 *         {7, status} the account is suspended.
 *
 * The limits are those that bind: a key's own cap when it leaves less
 * than the account's quota (scope "key"), else the account's.  A refusal
 * of a known key carries the limits too: every authenticated response has
 * its x-ratelimit-* headers, and asking again for them would cost a second
 * round trip.  A request is counted in the minute (the account's, and
 * the key's own) only when it is admitted: a refused one, for its model,
 * its minute or its quota, takes nothing of either.
 */
static char  ngx_nebula_script_admit[] =
    "local k = redis.call('HMGET', KEYS[1], 'digest', 'status', 'plan',\n"
    "  'in_limit', 'out_limit', 'rpm_limit', 'models', 'name', 'expires')\n"
    "if not k[1] or k[1] ~= ARGV[1] then return {1} end\n"
    "if k[2] ~= 'active' then return {2, k[2] or ''} end\n"
    "local now = tonumber(ARGV[10])\n"
    "if tonumber(k[9]) and tonumber(k[9]) <= now then\n"
    "  return {2, 'expired'}\n"
    "end\n"
    "local kid = ARGV[15]\n"
    "local a = redis.call('HMGET', KEYS[6], 'status', 'plan', 'in_limit',\n"
    "  'out_limit', 'rpm_limit', 'models')\n"
    "local pname, lin_, lout_, lrpm, private = k[3], k[4], k[5], k[6], k[7]\n"
    "local kin, kout, krpm, kmodels\n"
    "if a[1] then\n"
    "  if a[1] ~= 'active' then return {7, a[1]} end\n"
    "  pname, lin_, lout_, lrpm, private = a[2], a[3], a[4], a[5], a[6]\n"
    "  if kid ~= '' then\n"
    "    kin, kout, krpm = tonumber(k[4]), tonumber(k[5]), tonumber(k[6])\n"
    "    if k[7] and k[7] ~= '' then kmodels = k[7] end\n"
    "  end\n"
    "elseif kid ~= '' then\n"
    "  return {1}\n"
    "end\n"
    "local plan = nil\n"
    "for line in string.gmatch(ARGV[4], '[^\\n]+') do\n"
    "  local name, rest = string.match(line, '^(%S+) (.*)$')\n"
    "  if name == pname then plan = rest break end\n"
    "end\n"
    "if not plan then return {6, pname or ''} end\n"
    "local pin, pout, prpm, groups = string.match(plan,\n"
    "  '^(%d+) (%d+) (%d+) ?(.*)$')\n"
    "local function listed(list, m)\n"
    "  for w in string.gmatch(list or '', '%S+') do\n"
    "    if w == m then return true end\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "local allowed = false\n"
    "if ARGV[3] ~= '' then\n"
    "  allowed = listed(groups, '*') or listed(groups, ARGV[3])\n"
    "end\n"
    "if not allowed then allowed = listed(private, ARGV[2]) end\n"
    "if allowed and kmodels then allowed = listed(kmodels, ARGV[2]) end\n"
    "local in_limit = tonumber(lin_) or tonumber(pin)\n"
    "local out_limit = tonumber(lout_) or tonumber(pout)\n"
    "local rpm = tonumber(lrpm) or tonumber(prpm)\n"
    "local ku = KEYS[7]\n"
    "local function both(f, n, id)\n"
    "  redis.call('HINCRBY', KEYS[2], f, n)\n"
    "  if id then redis.call('HINCRBY', ku, id .. '|' .. f, n) end\n"
    "end\n"
    "local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)\n"
    "for _, m in ipairs(old) do\n"
    "  local x, y = string.match(m, ':(%d+):(%d+)$')\n"
    "  local id = string.match(m, '@(%x+)[.:]')\n"
    "  both('rin', 0 - tonumber(x), id)\n"
    "  both('rout', 0 - tonumber(y), id)\n"
    "  if string.byte(m, 1) == 76 then\n"
    "    both('lin', 0 - tonumber(x), id)\n"
    "    both('lout', 0 - tonumber(y), id)\n"
    "  end\n"
    "  redis.call('SADD', KEYS[5], m)\n"
    "end\n"
    "if #old > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)\n"
    "  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[9]))\n"
    "end\n"
    "local u = redis.call('HMGET', KEYS[2], 'in', 'out', 'rin', 'rout',\n"
    "  'lin', 'lout')\n"
    "local in_left = in_limit - (tonumber(u[1]) or 0) - (tonumber(u[3]) or 0)\n"
    "local out_left = out_limit - (tonumber(u[2]) or 0)\n"
    "  - (tonumber(u[4]) or 0)\n"
    "local bin, bout = tonumber(u[5]) or 0, tonumber(u[6]) or 0\n"
    "local held = 0\n"
    "if bin > 0 or bout > 0 then held = 1 end\n"
    "local scope_in, scope_out, kheld = 'account', 'account', 0\n"
    "if kin or kout then\n"
    "  local q = redis.call('HMGET', ku, kid .. '|in', kid .. '|out',\n"
    "    kid .. '|rin', kid .. '|rout', kid .. '|lin', kid .. '|lout')\n"
    "  for i = 1, 6 do q[i] = tonumber(q[i]) or 0 end\n"
    "  if q[5] > 0 or q[6] > 0 then kheld = 1 end\n"
    "  if kin and kin - q[1] - q[3] < in_left then\n"
    "    in_limit, in_left, bin, scope_in = kin, kin - q[1] - q[3], q[5], 'key'\n"
    "  end\n"
    "  if kout and kout - q[2] - q[4] < out_left then\n"
    "    out_limit, out_left, bout, scope_out = kout, kout - q[2] - q[4], q[6],\n"
    "      'key'\n"
    "  end\n"
    "end\n"
    "local arpm, counts = rpm, {}\n"
    "if arpm > 0 then counts[#counts + 1] = {KEYS[3], arpm, 'account'} end\n"
    "if krpm and krpm > 0 then counts[#counts + 1] = {KEYS[8], krpm, 'key'} end\n"
    "local rpm_left, scope_rpm = nil, 'account'\n"
    "for _, c in ipairs(counts) do\n"
    "  local left = c[2] - (tonumber(redis.call('GET', c[1])) or 0)\n"
    "  if rpm_left == nil or left < rpm_left then\n"
    "    rpm, rpm_left, scope_rpm = c[2], left, c[3]\n"
    "  end\n"
    "end\n"
    "if #counts == 0 then rpm = 0 end\n"
    "if not allowed then\n"
    "  return {3, pname, in_limit, out_limit, rpm, math.max(in_left + bin, 0),\n"
    "          math.max(out_left + bout, 0), math.max(rpm_left or -1, -1)}\n"
    "end\n"
    "if rpm_left and rpm_left <= 0 then\n"
    "  return {4, tonumber(ARGV[8]), rpm, in_limit, out_limit,\n"
    "          math.max(in_left + bin, 0), math.max(out_left + bout, 0),\n"
    "          scope_rpm}\n"
    "end\n"

    "local prompt = tonumber(ARGV[5])\n"
    "local cap = tonumber(ARGV[7])\n"
    "if in_left < prompt or (out_left <= 0 and cap >= 0) then\n"
    "  local scope = scope_out\n"
    "  if in_left < prompt then scope = scope_in end\n"
    "  if scope == 'key' then held = kheld end\n"
    "  return {5, in_limit, out_limit, math.max(in_left + bin, 0),\n"
    "          math.max(out_left + bout, 0), rpm,\n"
    "          math.max(rpm_left or -1, -1), held, scope}\n"
    "end\n"
    "for _, c in ipairs(counts) do\n"
    "  if redis.call('INCR', c[1]) == 1 then redis.call('EXPIRE', c[1], 120) end\n"
    "end\n"
    "if rpm_left then rpm_left = rpm_left - 1 else rpm_left = -1 end\n"
    "local out = out_left\n"
    "local want = tonumber(ARGV[6])\n"
    "if want > 0 and want < out then out = want end\n"
    "if cap > 0 and cap < out then out = cap end\n"
    "if cap < 0 then out = 0 end\n"
    "local lin, lout = 0, 0\n"
    "local wi, wo = tonumber(ARGV[13]) or 0, tonumber(ARGV[14]) or 0\n"
    "if tonumber(k[9]) and tonumber(k[9]) - now < 10 then wi, wo = 0, 0 end\n"
    "if rpm == 0 and wi > 0 and wo > 0 then\n"
    "  lin = math.min(wi, math.floor((in_left - prompt) / 64))\n"
    "  lout = math.min(wo, math.floor((out_left - out) / 64))\n"
    "  if lin <= 0 or lout <= 0 or lin < prompt or lout < out then\n"
    "    lin, lout = 0, 0\n"
    "  end\n"
    "end\n"
    "local ttl = tonumber(ARGV[9])\n"
    "local id = nil\n"
    "if kid ~= '' then id = kid end\n"
    "if redis.call('HINCRBY', KEYS[2], 'rin', prompt + lin) == prompt + lin\n"
    "then\n"
    "  redis.call('EXPIRE', KEYS[2], ttl)\n"
    "end\n"
    "redis.call('HINCRBY', KEYS[2], 'rout', out + lout)\n"
    "if id then\n"
    "  if redis.call('HINCRBY', ku, id .. '|rin', prompt + lin)\n"
    "     == prompt + lin\n"
    "  then\n"
    "    redis.call('EXPIRE', ku, ttl)\n"
    "  end\n"
    "  redis.call('HINCRBY', ku, id .. '|rout', out + lout)\n"
    "end\n"
    "redis.call('ZADD', KEYS[4], now + tonumber(ARGV[11]),\n"
    "  string.format('%s:%d:%d', ARGV[12], prompt, out))\n"
    "redis.call('EXPIRE', KEYS[4], ttl)\n"
    "if lin > 0 then\n"
    "  both('lin', lin, id)\n"
    "  both('lout', lout, id)\n"
    "  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[11]) + 1,\n"
    "    string.format('L%s:%d:%d', ARGV[12], lin, lout))\n"
    "  return {0, out, in_limit, out_limit, rpm, in_left - prompt + bin,\n"
    "          out_left - out + bout, rpm_left, pname, k[8] or '', lin, lout}\n"
    "end\n"
    "return {0, out, in_limit, out_limit, rpm, in_left - prompt + bin,\n"
    "        out_left - out + bout, rpm_left, pname, k[8] or ''}\n";


/*
 * SETTLE: the reservation is replaced by the real usage, once; many
 * settlements in one call, as a worker batches them (ngx_nebula_settle.c).
 *
 * KEYS: six a settlement: month usage hash, month model hash, day hash,
 *       month reservations, month expired reservations (the account's),
 *       month per-key usage hash
 * ARGV: a settlement's count of arguments, then its arguments, and so on
 *       for each settlement, in the order of KEYS; the arguments: reserved in, reserved out, in, out, cost, model, usage TTL,
 *       the reservation's member, requests counted (0: only give it
 *       back), estimated (1: the input is our estimate, 2: the output is
 *       the tokens streamed, 3: both; 0: all reported), and for a lease's
 *       many requests the estimated requests, input and output themselves
 *       (then the flags are not read); a lease that goes on after this
 *       (a partial settlement, once a second): the member its block goes
 *       on as ("L...:IN:OUT", what is left of it) and that member's score
 *
 * The reservation itself makes it once: it is in flight (given back now),
 * or it expired (given back already; its usage is still to add), or it is
 * gone, and this is a repeat that settles nothing.  No key a request.  A
 * lease's block ("L" members) is counted in lin and lout too: what the
 * blocks hold unused is not spent, and a client is told so (ADMIT,
 * KEY_GET).  A block that goes on is reserved as what is left of it,
 * again if it had expired (an outage longer than the timeout).
 *
 * An estimated request is counted apart too (est_req, and its estimated
 * tokens in est_in, est_out): billing can tell what the pool reported
 * from what the gateway had to count itself.  Fully reported requests
 * write no est_* field.  A hash's expiry is set when its first request is
 * counted in it, not with each one.
 *
 * Returns a 1 (settled) or 0 (a repeat) a settlement.  Each is whole
 * before the next begins; a batch cut short by an error (which only a bug
 * can raise once the first write is taken) is sent again one settlement
 * a call, and what it had settled is a repeat then: one bad settlement
 * costs only itself.  The keys of one batch may lie in
 * several hash slots: a cluster's batches are made a slot each.
 */
static char  ngx_nebula_script_settle[] =
    "local function settle(K, A)\n"
    "  local kid = string.match(A[8], '@(%x+)[.:]')\n"
    "  local function both(f, n)\n"
    "    redis.call('HINCRBY', K[1], f, n)\n"
    "    if kid then redis.call('HINCRBY', K[6], kid .. '|' .. f, n) end\n"
    "  end\n"
    "  local rin, rout = tonumber(A[1]), tonumber(A[2])\n"
    "  local i, o, c = tonumber(A[3]), tonumber(A[4]), tonumber(A[5])\n"
    "  local ttl = tonumber(A[7])\n"
    "  local block = string.byte(A[8], 1) == 76\n"
    "  local kin, kout = 0, 0\n"
    "  if A[14] then\n"
    "    kin, kout = string.match(A[14], ':(%d+):(%d+)$')\n"
    "    kin, kout = tonumber(kin), tonumber(kout)\n"
    "  end\n"
    "  local live = redis.call('ZREM', K[4], A[8]) == 1\n"
    "  if not live and redis.call('SREM', K[5], A[8]) == 0 then\n"
    "    return 0\n"
    "  end\n"
    "  local gin, gout = rin, rout\n"
    "  if not live then gin, gout = 0 - kin, 0 - kout end\n"
    "  if A[14] then\n"
    "    if live then gin, gout = rin - kin, rout - kout end\n"
    "    redis.call('ZADD', K[4], tonumber(A[15]), A[14])\n"
    "    redis.call('EXPIRE', K[4], ttl)\n"
    "  end\n"
    "  if gin ~= 0 or gout ~= 0 then\n"
    "    both('rin', 0 - gin)\n"
    "    both('rout', 0 - gout)\n"
    "    if block then\n"
    "      both('lin', 0 - gin)\n"
    "      both('lout', 0 - gout)\n"
    "    end\n"
    "  end\n"
    "  local n = tonumber(A[9])\n"
    "  if n == 0 then return 1 end\n"
    "  local m = A[6]\n"
    "  local function add(h, p)\n"
    "    redis.call('HINCRBY', h, p .. 'in', i)\n"
    "    redis.call('HINCRBY', h, p .. 'out', o)\n"
    "    redis.call('HINCRBY', h, p .. 'cost', c)\n"
    "    if redis.call('HINCRBY', h, p .. 'req', n) == n then\n"
    "      redis.call('EXPIRE', h, ttl)\n"
    "    end\n"
    "  end\n"
    "  add(K[1], '')\n"
    "  if kid then add(K[6], kid .. '|') end\n"
    "  add(K[2], m .. '|')\n"
    "  add(K[3], '')\n"
    "  local e = tonumber(A[10]) or 0\n"
    "  local er, ei, eo = 1, 0, 0\n"
    "  if e % 2 == 1 then ei = i end\n"
    "  if e >= 2 then eo = o end\n"
    "  if A[11] and A[11] ~= '' then\n"
    "    er, ei, eo = tonumber(A[11]), tonumber(A[12]),\n"
    "      tonumber(A[13])\n"
    "    e = er\n"
    "  end\n"
    "  if e > 0 then\n"
    "    local hs = {{K[1], ''}, {K[2], m .. '|'}, {K[3], ''}}\n"
    "    if kid then hs[4] = {K[6], kid .. '|'} end\n"
    "    for _, h in ipairs(hs) do\n"
    "      redis.call('HINCRBY', h[1], h[2] .. 'est_req', er)\n"
    "      redis.call('HINCRBY', h[1], h[2] .. 'est_in', ei)\n"
    "      redis.call('HINCRBY', h[1], h[2] .. 'est_out', eo)\n"
    "    end\n"
    "  end\n"
    "  return 1\n"
    "end\n"
    "local r, a = {}, 1\n"
    "for k = 0, #KEYS / 6 - 1 do\n"
    "  local n = tonumber(ARGV[a])\n"
    "  r[k + 1] = settle({unpack(KEYS, k * 6 + 1, k * 6 + 6)},\n"
    "                    {unpack(ARGV, a + 1, a + n)})\n"
    "  a = a + n + 1\n"
    "end\n"
    "return r\n";


/*
 * KEY_CREATE. KEYS: key hash.
 * ARGV: id, digest, name, plan, created, in_limit, out_limit, rpm_limit,
 *       models (empty strings for "the plan's")
 *
 * It touches the key's own slot only: nb:keys is in another, so the
 * admin API adds the ID to it with a plain SADD sent right after.
 */
static char  ngx_nebula_script_key_create[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'digest', ARGV[2],\n"
    "  'name', ARGV[3], 'plan', ARGV[4], 'status', 'active',\n"
    "  'created', ARGV[5])\n"
    "local f = {'in_limit', 'out_limit', 'rpm_limit', 'models'}\n"
    "for i = 1, 4 do\n"
    "  if ARGV[5 + i] ~= '' then\n"
    "    redis.call('HSET', KEYS[1], f[i], ARGV[5 + i])\n"
    "  end\n"
    "end\n"
    "return 1\n";


/*
 * KEY_GET. KEYS: key hash, month usage hash, month model hash, minute
 * counter.  Returns {key fields, usage fields, model fields} (HGETALL's
 * lists) and the requests of the minute.
 */
static char  ngx_nebula_script_key_get[] =
    "local k = redis.call('HGETALL', KEYS[1])\n"
    "if #k == 0 then return {} end\n"
    "return {k, redis.call('HGETALL', KEYS[2]),\n"
    "        redis.call('HGETALL', KEYS[3]),\n"
    "        tonumber(redis.call('GET', KEYS[4]) or '0')}\n";


/*
 * KEY_LIST. KEYS: key set. ARGV: month.
 * Returns, per key, {key fields, usage fields}.  It reads keys of every
 * slot: a Redis Cluster runs KEY_LIST_NODE on each master instead, over
 * the keys of its slots (ngx_nebula_fanout.h), and the gateway puts their
 * replies together.
 */
#define NGX_NEBULA_KEY_LIST_ONE                                               \
    "local function one(id)\n"                                                \
    "  local k = redis.call('HGETALL', 'nb:{' .. id .. '}:key')\n"            \
    "  if #k == 0 then return nil end\n"                                      \
    "  return {k, redis.call('HGETALL', 'nb:{' .. id .. '}:u:' .. A[1])}\n"   \
    "end\n"

static char  ngx_nebula_script_key_list[] =
    "local A = ARGV\n"
    NGX_NEBULA_KEY_LIST_ONE
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  out[#out + 1] = one(id)\n"
    "end\n"
    "return out\n";

static char  ngx_nebula_script_key_list_node[] =
    NGX_NEBULA_FANOUT_LUA
    NGX_NEBULA_KEY_LIST_ONE
    "return each(function(id) return {one(id)} end)\n";


/*
 * KEY_UPDATE. KEYS: key hash. ARGV: field, value, ... ("" deletes).
 * Returns 0 when there is no such key.
 */
static char  ngx_nebula_script_key_update[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
    "for i = 1, #ARGV, 2 do\n"
    "  if ARGV[i + 1] == '' then\n"
    "    redis.call('HDEL', KEYS[1], ARGV[i])\n"
    "  else\n"
    "    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])\n"
    "  end\n"
    "end\n"
    "return 1\n";


/*
 * USAGE. KEYS: key set, account set. ARGV: month.
 * Returns, per key, {id, usage fields, model fields}: a key of an
 * account has its own usage (its fields of the per-key hash), and the
 * account's usage per model goes with its first key, so that the models'
 * and the keys' totals are the same.  A Redis Cluster runs USAGE_NODE on
 * each master instead, as KEY_LIST_NODE.
 */
#define NGX_NEBULA_USAGE_ONE                                                  \
    "local function key(id)\n"                                                \
    "  local p = 'nb:{' .. id .. '}:'\n"                                      \
    "  return {id, redis.call('HGETALL', p .. 'u:' .. A[1]),\n"               \
    "    redis.call('HGETALL', p .. 'm:' .. A[1])}\n"                         \
    "end\n"                                                                   \
    "local function account(a)\n"                                             \
    "  local p = 'nb:{' .. a .. '}:'\n"                                       \
    "  local ku = redis.call('HGETALL', p .. 'ku:' .. A[1])\n"                \
    "  local per, rows = {}, {}\n"                                            \
    "  for i = 1, #ku, 2 do\n"                                                \
    "    local k, f = string.match(ku[i], '^(%x+)|(.*)$')\n"                  \
    "    if k then\n"                                                         \
    "      per[k] = per[k] or {}\n"                                           \
    "      table.insert(per[k], f)\n"                                         \
    "      table.insert(per[k], ku[i + 1])\n"                                 \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "  local m = redis.call('HGETALL', p .. 'm:' .. A[1])\n"                  \
    "  for _, k in ipairs(redis.call('ZRANGE', p .. 'keys', 0, -1)) do\n"     \
    "    rows[#rows + 1] = {k, per[k] or {}, m}\n"                            \
    "    m = {}\n"                                                            \
    "  end\n"                                                                 \
    "  return rows\n"                                                         \
    "end\n"

static char  ngx_nebula_script_usage[] =
    "local A = ARGV\n"
    NGX_NEBULA_USAGE_ONE
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  out[#out + 1] = key(id)\n"
    "end\n"
    "for _, a in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do\n"
    "  for _, row in ipairs(account(a)) do out[#out + 1] = row end\n"
    "end\n"
    "return out\n";

static char  ngx_nebula_script_usage_node[] =
    NGX_NEBULA_FANOUT_LUA
    NGX_NEBULA_USAGE_ONE
    "return each(function(id, first)\n"
    "  if first then return {key(id)} end\n"
    "  return account(id)\n"
    "end)\n";


/*
 * CHANGED. KEYS: nb:changes.  ARGV: a key's id.
 *
 * A key's record changed (revoked, its plan, limits or models): its id
 * goes into the feed every worker reads every quarter of a second
 * (ngx_nebula_lease.c), to close the leases it holds of the key, scored
 * by Redis's own clock (one clock for every edge) in milliseconds.  What
 * is older than a minute goes.
 */
static char  ngx_nebula_script_changed[] =
    "local t = redis.call('TIME')\n"
    "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], ms, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - 60000)\n"
    "return ms\n";


/*
 * GEN_GET.  KEYS: a key's list of generation records.
 * ARGV: the request's id between spaces, as a record's line has it after
 * its time; the oldest time a record may have.
 *
 * Returns the record's line (ngx_nebula_generation.c), or nil.  The list
 * keeps 1,000 and the workers' pushes between trims: what lies past 4,096
 * is older than what is looked at, and never read whole.
 */
static char  ngx_nebula_script_gen_get[] =
    "local oldest = tonumber(ARGV[2])\n"
    "for _, v in ipairs(redis.call('LRANGE', KEYS[1], 0, 4095)) do\n"
    "    local a = string.find(v, ARGV[1], 1, true)\n"
    "    if a then\n"
    "        if (tonumber(string.sub(v, 1, a - 1)) or 0) < oldest then\n"
    "            return false\n"
    "        end\n"
    "        return v\n"
    "    end\n"
    "end\n"
    "return false\n";


/* ngx_nebula_scripts_accounts.c */
extern char  ngx_nebula_script_acct_create[];
extern char  ngx_nebula_script_acct_get[];
extern char  ngx_nebula_script_acct_edit[];
extern char  ngx_nebula_script_key_add[];
extern char  ngx_nebula_script_key_list_of[];
extern char  ngx_nebula_script_key_of[];
extern char  ngx_nebula_script_key_edit[];
extern char  ngx_nebula_script_key_get_of[];
extern char  ngx_nebula_script_acct_list[];
extern char  ngx_nebula_script_activity[];
extern char  ngx_nebula_script_usage_by[];
extern char  ngx_nebula_script_acct_list_node[];
extern char  ngx_nebula_script_usage_by_node[];


static ngx_nebula_script_t  ngx_nebula_scripts[NGX_NEBULA_SCRIPT_N] = {
    { ngx_string(ngx_nebula_script_admit), "" },
    { ngx_string(ngx_nebula_script_settle), "" },
    { ngx_string(ngx_nebula_script_key_create), "" },
    { ngx_string(ngx_nebula_script_key_get), "" },
    { ngx_string(ngx_nebula_script_key_list), "" },
    { ngx_string(ngx_nebula_script_key_update), "" },
    { ngx_string(ngx_nebula_script_usage), "" },
    { ngx_string(ngx_nebula_script_changed), "" },
    { ngx_string(ngx_nebula_script_gen_get), "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" },
    { ngx_null_string, "" }
};


/*
 * From ACCT_CREATE on, in the enum's order, their lengths taken once:
 * the scripts of another file (known there, not here), then the node
 * variants
 */
static char  *ngx_nebula_scripts_elsewhere[] = {
    ngx_nebula_script_acct_create,
    ngx_nebula_script_acct_get,
    ngx_nebula_script_acct_edit,
    ngx_nebula_script_key_add,
    ngx_nebula_script_key_list_of,
    ngx_nebula_script_key_of,
    ngx_nebula_script_key_edit,
    ngx_nebula_script_key_get_of,
    ngx_nebula_script_acct_list,
    ngx_nebula_script_activity,
    ngx_nebula_script_usage_by,
    ngx_nebula_script_key_list_node,
    ngx_nebula_script_usage_node,
    ngx_nebula_script_acct_list_node,
    ngx_nebula_script_usage_by_node
};


/* EVALSHA names a script by the SHA-1 of its text: computed once */
ngx_int_t
ngx_nebula_scripts_init(ngx_conf_t *cf)
{
    u_char                hash[EVP_MAX_MD_SIZE];
    unsigned int          len;
    ngx_uint_t            i;
    ngx_nebula_script_t  *s;

    for (i = NGX_NEBULA_SCRIPT_ACCT_CREATE; i < NGX_NEBULA_SCRIPT_N; i++) {
        s = &ngx_nebula_scripts[i];
        s->source.data = (u_char *) ngx_nebula_scripts_elsewhere[
                                          i - NGX_NEBULA_SCRIPT_ACCT_CREATE];
        s->source.len = ngx_strlen(s->source.data);
    }

    for (i = 0; i < NGX_NEBULA_SCRIPT_N; i++) {
        s = &ngx_nebula_scripts[i];

        if (EVP_Digest(s->source.data, s->source.len, hash, &len,
                       EVP_sha1(), NULL)
            != 1)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "nebula: SHA-1 of a script failed");
            return NGX_ERROR;
        }

        ngx_hex_dump(s->sha1, hash, len);
        s->sha1[40] = '\0';
    }

    return NGX_OK;
}


ngx_nebula_script_t *
ngx_nebula_script(ngx_nebula_script_e script)
{
    return &ngx_nebula_scripts[script];
}
