/*
 * Nebula: the scripts that keep accounts and their keys (the admin API,
 * the holder's), run with EVALSHA as the others (ngx_nebula_scripts.c).
 *
 * Everything of an account lives under its tag, {A} (docs/redis.md):
 *
 *   nb:{A}:acct            hash: id, name, email, plan, status (active,
 *                          suspended, deleted), created, updated,
 *                          mdigest (the management secret's SHA-256),
 *                          in_limit, out_limit, rpm_limit, models
 *   nb:{A}:keys            sorted set: its keys' ids, by creation
 *   nb:{A}:k:KEYID         hash: id, digest, name, status (active,
 *                          disabled, revoked), created, updated, expires,
 *                          in_limit, out_limit, rpm_limit, models
 *   nb:{A}:ku:YYYY-MM      hash: KEYID|in, KEYID|out, ... per key
 *
 * A call of the holder's passes the digest of its management secret
 * first, and every script compares it with the account's before it reads
 * or writes anything: one round trip, whatever the call.  The admin's
 * passes "" (its token was checked by nginx).  A script that reads a key
 * of the account by its id builds the name in the account's slot.
 *
 * The replies begin with a status: -1 the management secret does not
 * match, 0 no such account (or a deleted one), 1 done; then what each
 * says.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_fanout.h"


/* the management secret's check, shared by every script below */
#define NGX_NEBULA_ACCT_AUTH                                                  \
    "local a = redis.call('HMGET', KEYS[1], 'status', 'mdigest')\n"           \
    "if not a[1] or a[1] == 'deleted' then return {0} end\n"                  \
    "if ARGV[1] ~= '' and a[2] ~= ARGV[1] then return {-1} end\n"


/*
 * ACCT_CREATE.  KEYS: account hash, its keys, the first key's record (or
 * the account hash again: none).
 * ARGV: id, name, email, plan, now, management digest, in_limit,
 *       out_limit, rpm_limit, models; the first key's id, digest, name
 *       ("" id: none).
 * Returns {1}, or {0} when the id is taken (drawn again).
 */
char  ngx_nebula_script_acct_create[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end\n"
    "redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2],\n"
    "  'plan', ARGV[4], 'status', 'active', 'created', ARGV[5],\n"
    "  'updated', ARGV[5], 'mdigest', ARGV[6])\n"
    "local f = {'email', 'in_limit', 'out_limit', 'rpm_limit', 'models'}\n"
    "local v = {ARGV[3], ARGV[7], ARGV[8], ARGV[9], ARGV[10]}\n"
    "for i = 1, 5 do\n"
    "  if v[i] ~= '' then redis.call('HSET', KEYS[1], f[i], v[i]) end\n"
    "end\n"
    "if ARGV[11] ~= '' then\n"
    "  redis.call('HSET', KEYS[3], 'id', ARGV[11], 'digest', ARGV[12],\n"
    "    'name', ARGV[13], 'status', 'active', 'created', ARGV[5],\n"
    "    'updated', ARGV[5])\n"
    "  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[11])\n"
    "end\n"
    "return {1}\n";


/*
 * ACCT_GET.  KEYS: account hash, its keys, month usage, month per model,
 * month per key, this minute's count, then the month's days' hashes.
 * ARGV: management digest or "".
 * Returns {1, account fields, usage, per model, per key, minute count,
 *          {key record, ...}, {day usage, ...}}.
 */
char  ngx_nebula_script_acct_get[] =
    NGX_NEBULA_ACCT_AUTH
    "local p = string.match(KEYS[1], '^(.*):acct$')\n"
    "local keys = {}\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do\n"
    "  keys[#keys + 1] = redis.call('HGETALL', p .. ':k:' .. id)\n"
    "end\n"
    "local days = {}\n"
    "for i = 7, #KEYS do\n"
    "  days[#days + 1] = redis.call('HGETALL', KEYS[i])\n"
    "end\n"
    "return {1, redis.call('HGETALL', KEYS[1]),\n"
    "  redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),\n"
    "  redis.call('HGETALL', KEYS[5]),\n"
    "  tonumber(redis.call('GET', KEYS[6]) or '0'), keys, days}\n";


/*
 * ACCT_EDIT.  KEYS: account hash, its keys.
 * ARGV: "" (the admin's), now, then field, value, ... ("" deletes a
 *       field); status "deleted" revokes every key of the account too.
 * Returns {1, account fields}.
 */
char  ngx_nebula_script_acct_edit[] =
    NGX_NEBULA_ACCT_AUTH
    "local p = string.match(KEYS[1], '^(.*):acct$')\n"
    "for i = 3, #ARGV, 2 do\n"
    "  if ARGV[i + 1] == '' then\n"
    "    redis.call('HDEL', KEYS[1], ARGV[i])\n"
    "  else\n"
    "    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])\n"
    "  end\n"
    "  if ARGV[i] == 'status' and ARGV[i + 1] == 'deleted' then\n"
    "    for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do\n"
    "      if redis.call('EXISTS', p .. ':k:' .. id) == 1 then\n"
    "        redis.call('HSET', p .. ':k:' .. id, 'status', 'revoked',\n"
    "          'updated', ARGV[2])\n"
    "      end\n"
    "    end\n"
    "    if redis.call('EXISTS', p .. ':key') == 1 then\n"
    "      redis.call('HSET', p .. ':key', 'status', 'revoked')\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'updated', ARGV[2])\n"
    "return {1, redis.call('HGETALL', KEYS[1])}\n";


/*
 * KEY_ADD: a key of an account.  KEYS: account hash, its keys, the key's
 * record.
 * ARGV: management digest or "", the most keys an account may hold, id,
 *       digest, name, now, expires, in_limit, out_limit, rpm_limit,
 *       models ("": none, the account's).
 * Returns {1, key record}, or {2, status} the account is not active (a
 * holder's write), {3} it holds the most keys already, {4} the id is
 * taken (drawn again).
 */
char  ngx_nebula_script_key_add[] =
    NGX_NEBULA_ACCT_AUTH
    "if ARGV[1] ~= '' and a[1] ~= 'active' then return {2, a[1]} end\n"
    "if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then\n"
    "  return {3}\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[3]) == 1 then return {4} end\n"
    "redis.call('HSET', KEYS[3], 'id', ARGV[3], 'digest', ARGV[4],\n"
    "  'name', ARGV[5], 'status', 'active', 'created', ARGV[6],\n"
    "  'updated', ARGV[6])\n"
    "local f = {'expires', 'in_limit', 'out_limit', 'rpm_limit', 'models'}\n"
    "for i = 1, 5 do\n"
    "  if ARGV[6 + i] ~= '' then\n"
    "    redis.call('HSET', KEYS[3], f[i], ARGV[6 + i])\n"
    "  end\n"
    "end\n"
    "redis.call('ZADD', KEYS[2], ARGV[6], ARGV[3])\n"
    "return {1, redis.call('HGETALL', KEYS[3])}\n";


/*
 * KEY_LIST_OF: an account's keys.  KEYS: account hash, its keys, month
 * per key.
 * ARGV: management digest or "", offset, count, 1 to list revoked keys
 *       too.
 * Returns {1, the account's key count, {key record, ...}, per key}.
 */
char  ngx_nebula_script_key_list_of[] =
    NGX_NEBULA_ACCT_AUTH
    "local p = string.match(KEYS[1], '^(.*):acct$')\n"
    "local out, skip, n = {}, tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do\n"
    "  local k = redis.call('HGETALL', p .. ':k:' .. id)\n"
    "  local st = redis.call('HGET', p .. ':k:' .. id, 'status')\n"
    "  if #k > 0 and (ARGV[4] == '1' or st ~= 'revoked') then\n"
    "    if skip > 0 then skip = skip - 1\n"
    "    elseif #out < n then out[#out + 1] = k end\n"
    "  end\n"
    "end\n"
    "return {1, redis.call('ZCARD', KEYS[2]), out,\n"
    "  redis.call('HGETALL', KEYS[3])}\n";


/*
 * KEY_OF: one key of an account.  KEYS: account hash, the key's record,
 * month per key.  ARGV: management digest or "".
 * Returns {1, key record, per key}, or {2} no such key.
 */
char  ngx_nebula_script_key_of[] =
    NGX_NEBULA_ACCT_AUTH
    "local k = redis.call('HGETALL', KEYS[2])\n"
    "if #k == 0 then return {2} end\n"
    "return {1, k, redis.call('HGETALL', KEYS[3])}\n";


/*
 * KEY_EDIT: changes a key of an account.  KEYS: account hash, the key's
 * record, month per key.
 * ARGV: management digest or "", now, then field, value, ... ("" deletes
 *       a field).
 * Returns {1, key record, per key}, {2} no such key (a revoked key is
 * not changed again: {2} too), {3, status} the account is not active
 * (a holder's write).
 */
char  ngx_nebula_script_key_edit[] =
    NGX_NEBULA_ACCT_AUTH
    "if ARGV[1] ~= '' and a[1] ~= 'active' then return {3, a[1]} end\n"
    "local st = redis.call('HGET', KEYS[2], 'status')\n"
    "if not st or st == 'revoked' then return {2} end\n"
    "for i = 3, #ARGV, 2 do\n"
    "  if ARGV[i + 1] == '' then\n"
    "    redis.call('HDEL', KEYS[2], ARGV[i])\n"
    "  else\n"
    "    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', KEYS[2], 'updated', ARGV[2])\n"
    "return {1, redis.call('HGETALL', KEYS[2]),\n"
    "  redis.call('HGETALL', KEYS[3])}\n";


/*
 * KEY_GET_OF: what GET /v1/key shows a key of an account.  KEYS: the
 * key's record, account hash, month usage, month per model, month per
 * key, this minute's count, the key's own minute count.
 * Returns {key fields, account fields, usage, per model, per key, minute
 * count, the key's minute count}, or {} no such key.
 */
char  ngx_nebula_script_key_get_of[] =
    "local k = redis.call('HGETALL', KEYS[1])\n"
    "if #k == 0 then return {} end\n"
    "return {k, redis.call('HGETALL', KEYS[2]),\n"
    "  redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),\n"
    "  redis.call('HGETALL', KEYS[5]),\n"
    "  tonumber(redis.call('GET', KEYS[6]) or '0'),\n"
    "  tonumber(redis.call('GET', KEYS[7]) or '0')}\n";


/*
 * ACCT_LIST: the admin's listing.  KEYS: nb:accounts.
 * ARGV: month, the last id of the page before ("": the first page), the
 *       most to return, plan, status, a part of the name ("": any; a
 *       deleted account is listed only when asked by its status).
 * Returns {1 if more follow, {{account fields, month usage}, ...}}.  It
 * reads accounts of every slot: a Redis Cluster runs ACCT_LIST_NODE on
 * each master instead (ngx_nebula_fanout.h), over the accounts after the
 * page before that it serves, and it stops once it has found one more
 * than a page: the page's are among what the masters send.
 */
#define NGX_NEBULA_ACCT_LIST_ONE                                              \
    "local want = string.lower(A[6])\n"                                       \
    "local function listed(id)\n"                                             \
    "  local a = redis.call('HGETALL', 'nb:{' .. id .. '}:acct')\n"           \
    "  local h = {}\n"                                                        \
    "  for i = 1, #a, 2 do h[a[i]] = a[i + 1] end\n"                          \
    "  if #a > 0 and (A[4] == '' or h.plan == A[4])\n"                        \
    "     and ((A[5] == '' and h.status ~= 'deleted')\n"                      \
    "          or h.status == A[5])\n"                                        \
    "     and (want == '' or string.find(string.lower(h.name or ''),\n"       \
    "                                    want, 1, true))\n"                   \
    "  then\n"                                                                \
    "    return a\n"                                                          \
    "  end\n"                                                                 \
    "  return nil\n"                                                          \
    "end\n"                                                                   \
    "local function usage(id)\n"                                              \
    "  return redis.call('HGETALL', 'nb:{' .. id .. '}:u:' .. A[1])\n"        \
    "end\n"

char  ngx_nebula_script_acct_list[] =
    "local A = ARGV\n"
    NGX_NEBULA_ACCT_LIST_ONE
    "local out, started, more = {}, A[2] == '', 0\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  if not started then\n"
    "    started = (id == A[2])\n"
    "  else\n"
    "    local a = listed(id)\n"
    "    if a then\n"
    "      if #out >= tonumber(A[3]) then more = 1 break end\n"
    "      out[#out + 1] = {a, usage(id)}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {more, out}\n";

char  ngx_nebula_script_acct_list_node[] =
    NGX_NEBULA_FANOUT_LUA
    NGX_NEBULA_ACCT_LIST_ONE
    "local found, most = 0, tonumber(A[3])\n"
    "return each(function(id)\n"
    "  if found > most then return nil end\n"
    "  local a = listed(id)\n"
    "  if not a then return {} end\n"
    "  found = found + 1\n"
    "  return {{a, usage(id)}}\n"
    "end)\n";


/*
 * ACTIVITY: an account's last requests.  KEYS: account hash, its list of
 * generation records (ngx_nebula_generation.c).
 * ARGV: management digest or "", the most to return, a key's id ("":
 *       any), a model ("": any), the oldest time a record may have.
 * Returns {1, {record line, ...} newest first, {key id, its name, ...}}:
 * the list is in the order the workers pushed their batches (a tenth of
 * a second apart), so what it gives is sorted by time again.
 * The list keeps 1,000 and the workers' pushes between trims: what lies
 * past 4,096 is older than what is looked at.
 */
char  ngx_nebula_script_activity[] =
    NGX_NEBULA_ACCT_AUTH
    "local p = string.match(KEYS[1], '^(.*):acct$')\n"
    "local tag = string.match(p, '{(%x+)}')\n"
    "local want, oldest = tonumber(ARGV[2]), tonumber(ARGV[5])\n"
    "local m = ' ' .. ARGV[4]\n"
    "local out, names, seen = {}, {}, {}\n"
    "for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, 4095)) do\n"
    "  local t, key = string.match(v, '^(%d+) %x+ (%x+) ')\n"
    "  if t and tonumber(t) >= oldest\n"
    "     and (ARGV[3] == '' or key == ARGV[3])\n"
    "     and (ARGV[4] == '' or string.sub(v, -#m) == m)\n"
    "  then\n"
    "    out[#out + 1] = {tonumber(t), #out, v}\n"
    "    if not seen[key] then\n"
    "      seen[key] = true\n"
    "      local rec = p .. ':k:' .. key\n"
    "      if key == tag then rec = p .. ':key' end\n"
    "      names[#names + 1] = key\n"
    "      names[#names + 1] = redis.call('HGET', rec, 'name') or ''\n"
    "    end\n"
    "    if #out >= want then break end\n"
    "  end\n"
    "end\n"
    "table.sort(out, function(x, y)\n"
    "  return x[1] > y[1] or (x[1] == y[1] and x[2] < y[2]) end)\n"
    "for i, e in ipairs(out) do out[i] = e[3] end\n"
    "return {1, out, names}\n";


/*
 * USAGE_BY: the admin's usage report of a month.  KEYS: nb:accounts,
 * nb:keys (keys made before accounts: each an account of its own).
 * ARGV: month, grouped by (account, key, model, day or plan), an
 *       account's id ("": every account), then the month's days.
 * Returns {{labels, in, out, req, cost, est_req, est_in, est_out, cost'},
 * ...}: a cost is picodollars, past what a Lua number (a double) holds
 * exactly once it passes $9,007, so it is added in two parts: cost the
 * billions of picodollars (the milli-dollars), cost' the rest.
 * labels {account, name, plan}, {account, key, name}, {model}, {day} or
 * {plan}; accounts and keys in the order they were made, the others
 * sorted.  It reads accounts of every slot: a Redis Cluster runs
 * USAGE_BY_NODE on each master instead (ngx_nebula_fanout.h), which
 * answers by account and key a list of rows an id, by the others the
 * rows of its share added up, and the gateway adds those up again.
 */
#define NGX_NEBULA_USAGE_BY_ONE                                               \
    "local month, by, only = A[1], A[2], A[3]\n"                              \
    "local days = {unpack(A, 4)}\n"                                           \
    "local f = {'in', 'out', 'req', 'cost', 'est_req', 'est_in',\n"           \
    "  'est_out'}\n"                                                          \
    "local rows, order = {}, {}\n"                                            \
    "local function split(v)\n"                                               \
    "  v = v or '0'\n"                                                        \
    "  local n = #v\n"                                                        \
    "  if n <= 9 then return 0, tonumber(v) or 0 end\n"                       \
    "  return tonumber(string.sub(v, 1, n - 9)) or 0,\n"                      \
    "         tonumber(string.sub(v, n - 8)) or 0\n"                          \
    "end\n"                                                                   \
    "local function hash(k)\n"                                                \
    "  local a, h = redis.call('HGETALL', k), {}\n"                           \
    "  for i = 1, #a, 2 do h[a[i]] = a[i + 1] end\n"                          \
    "  return h\n"                                                            \
    "end\n"                                                                   \
    "local function add(key, labels, h, pre)\n"                               \
    "  local r = rows[key]\n"                                                 \
    "  if not r then\n"                                                       \
    "    r = {labels, 0, 0, 0, 0, 0, 0, 0, 0}\n"                              \
    "    rows[key] = r\n"                                                     \
    "    order[#order + 1] = key\n"                                           \
    "  end\n"                                                                 \
    "  for i = 1, 7 do\n"                                                     \
    "    if i ~= 4 then\n"                                                    \
    "      r[i + 1] = r[i + 1] + (tonumber(h[pre .. f[i]]) or 0)\n"           \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "  local hi, lo = split(h[pre .. 'cost'])\n"                              \
    "  r[5], r[9] = r[5] + hi, r[9] + lo\n"                                   \
    "end\n"                                                                   \
    "local function one(id, legacy)\n"                                        \
    "  local p = 'nb:{' .. id .. '}:'\n"                                      \
    "  if (only ~= '' and only ~= id)\n"                                      \
    "     or (legacy and redis.call('EXISTS', p .. 'acct') == 1) then\n"      \
    "    return\n"                                                            \
    "  end\n"                                                                 \
    "  local rec = legacy and hash(p .. 'key') or hash(p .. 'acct')\n"        \
    "  local name, plan = rec.name or '', rec.plan or ''\n"                   \
    "  if by == 'account' then\n"                                             \
    "    add(id, {id, name, plan}, hash(p .. 'u:' .. month), '')\n"           \
    "  elseif by == 'plan' then\n"                                            \
    "    add(plan, {plan}, hash(p .. 'u:' .. month), '')\n"                   \
    "  elseif by == 'key' and legacy then\n"                                  \
    "    add(id, {id, id, name}, hash(p .. 'u:' .. month), '')\n"             \
    "  elseif by == 'key' then\n"                                             \
    "    local ku = hash(p .. 'ku:' .. month)\n"                              \
    "    for _, k in ipairs(redis.call('ZRANGE', p .. 'keys', 0, -1)) do\n"   \
    "      local kn = redis.call('HGET', p .. 'k:' .. k, 'name')\n"           \
    "      add(k, {id, k, kn or ''}, ku, k .. '|')\n"                         \
    "    end\n"                                                               \
    "  elseif by == 'model' then\n"                                           \
    "    local m = hash(p .. 'm:' .. month)\n"                                \
    "    for k, _ in pairs(m) do\n"                                           \
    "      local model = string.match(k, '^(.*)|in$')\n"                      \
    "      if model then add(model, {model}, m, model .. '|') end\n"          \
    "    end\n"                                                               \
    "  elseif by == 'day' then\n"                                             \
    "    for _, d in ipairs(days) do\n"                                       \
    "      add(d, {d}, hash(p .. 'd:' .. d), '')\n"                           \
    "    end\n"                                                               \
    "  end\n"                                                                 \
    "end\n"                                                                   \
    "local function collect()\n"                                              \
    "  local out = {}\n"                                                      \
    "  for _, k in ipairs(order) do out[#out + 1] = rows[k] end\n"            \
    "  return out\n"                                                          \
    "end\n"

char  ngx_nebula_script_usage_by[] =
    "local A = ARGV\n"
    NGX_NEBULA_USAGE_BY_ONE
    "local all = {}\n"
    "for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  all[#all + 1] = {id, false}\n"
    "end\n"
    "for _, id in ipairs(redis.call('SORT', KEYS[2], 'ALPHA')) do\n"
    "  all[#all + 1] = {id, true}\n"
    "end\n"
    "for _, e in ipairs(all) do one(e[1], e[2]) end\n"
    "if by == 'model' or by == 'plan' or by == 'day' then\n"
    "  table.sort(order)\n"
    "end\n"
    "return collect()\n";

/* rows an id by account and key, in the ids' order; else added up here */
char  ngx_nebula_script_usage_by_node[] =
    NGX_NEBULA_FANOUT_LUA
    NGX_NEBULA_USAGE_BY_ONE
    "local apart = (by == 'account' or by == 'key')\n"
    "local r = each(function(id, first)\n"
    "  if apart then rows, order = {}, {} end\n"
    "  one(id, not first)\n"
    "  if apart then return collect() end\n"
    "  return {}\n"
    "end)\n"
    "if r.err or apart then return r end\n"
    "return {collect()}\n";
