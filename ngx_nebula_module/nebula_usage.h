/*
 * Nebula: where the cost goes in an answer's usage.
 *
 * OpenRouter adds "cost" to an answer's usage when the request says
 * "usage": {"include": true}; the gateway does so too, into the one
 * document that carries the usage: a JSON answer held whole, or the usage
 * chunk of an SSE stream, held whole (ngx_nebula_relay.c).  This finds the
 * top-level "usage" object's closing brace there, the place a member is
 * added at, walking the JSON without a parser's cost: the document is
 * whole, and only its top level is read (nested values are skipped by
 * counting brackets, never recursed into).
 *
 * Plain C with no nginx types, so unit tests and fuzzers drive it
 * directly.
 */

#ifndef NEBULA_USAGE_H
#define NEBULA_USAGE_H

#include <stddef.h>


/*
 * p, len: one JSON document, or (sse) an SSE event, whose "data:" lines
 * are tried in turn.  Returns 0 with *off the offset, from p, of the
 * closing brace of the first top-level "usage" whose value is an object,
 * and *empty 1 when that object has no member; -1 when there is none (or
 * the document is not well formed as far as it was read).
 */
int nebula_usage_close(const unsigned char *p, size_t len, int sse,
    size_t *off, int *empty);

#endif /* NEBULA_USAGE_H */
