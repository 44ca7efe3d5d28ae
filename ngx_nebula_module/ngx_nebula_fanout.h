/*
 * Nebula: the admin's listings on a Redis Cluster (ngx_nebula_fanout.c).
 *
 * Four scripts read every account or key, whatever its slot: KEY_LIST,
 * USAGE, ACCT_LIST and USAGE_BY.  A cluster runs a script on one master,
 * over the slots that master serves, so each of them has a node variant
 * (its name's _NODE), which reads what it is given of its own node; the
 * C side reads the index, sends each master its share, and merges the
 * replies into the single-node script's reply.
 *
 * A node variant's ARGV: how many ids it is given, N; how many of them
 * come from the script's first index (USAGE: the keys of nb:keys, the
 * accounts after them; USAGE_BY: the accounts, the keys after them); the
 * N ids, in the order of the listing; then the single-node script's ARGV,
 * as it is.  Its KEYS: one name of the first id's tag, which routes the
 * script to the master of that id (and of the others given with it).
 *
 * Its reply: an array of lists of items, the i-th list the items of the
 * i-th id; fewer lists than ids when it stopped early (ACCT_LIST: a page
 * and one more found); or, USAGE_BY by model, day or plan, one list of
 * the rows it added up; or the error "NONLOCAL <id>": the id's slot is
 * not this node's now (a resharding, a failover since the map was read).
 */

#ifndef NGX_NEBULA_FANOUT_H
#define NGX_NEBULA_FANOUT_H

#include "ngx_nebula.h"


/*
 * The first lines of a node variant, the rest of it the single-node
 * script's own parts, which read A for ARGV.  Redis 7's flags: it reads
 * keys of many slots, all of its node's, and writes none.  each() walks
 * the ids: f(id, first) is an id's list of items, nil to stop.  A key of
 * a slot served elsewhere fails its script (Redis checks each key a
 * script reads): the first of an id, a name no record has, is read
 * with pcall, so that the node says which id.
 */
#define NGX_NEBULA_FANOUT_LUA                                                 \
    "#!lua flags=no-writes,allow-cross-slot-keys\n"                           \
    "local n, nf = tonumber(ARGV[1]), tonumber(ARGV[2])\n"                    \
    "local A = {unpack(ARGV, 3 + n)}\n"                                       \
    "local function each(f)\n"                                                \
    "  local out = {}\n"                                                      \
    "  for i = 1, n do\n"                                                     \
    "    local id = ARGV[2 + i]\n"                                            \
    "    local r = redis.pcall('EXISTS', 'nb:{' .. id .. '}')\n"              \
    "    if type(r) == 'table' and r.err then\n"                              \
    "      return redis.error_reply('NONLOCAL ' .. id)\n"                     \
    "    end\n"                                                               \
    "    local l = f(id, i <= nf)\n"                                          \
    "    if not l then break end\n"                                           \
    "    out[i] = l\n"                                                        \
    "  end\n"                                                                 \
    "  return out\n"                                                          \
    "end\n"


/* whether a script reads every account: a cluster runs it in parts */
ngx_uint_t ngx_nebula_fanout_wanted(ngx_nebula_script_e script);

/*
 * Runs it on every master, its arguments as ngx_nebula_call_eval()'s;
 * the call's answer gets the merged reply.  NGX_AGAIN: under way; else
 * the answer sent (a 503: a master unavailable now).
 */
ngx_int_t ngx_nebula_fanout(ngx_nebula_call_ctx_t *call,
    ngx_nebula_script_e script, ngx_uint_t nkeys, ngx_uint_t argc,
    ngx_str_t *argv);

#endif /* NGX_NEBULA_FANOUT_H */
