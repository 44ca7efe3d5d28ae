/*
 * Nebula: a pool's answer to Ollama's POST /api/show, made the catalog's.
 *
 * Plain C with no nginx types, so unit tests and fuzzers drive it
 * directly.  The answer is copied through yajl's parser into its
 * generator, with two edits: every string that names the upstream's model
 * names the public one instead (the Modelfile's "# FROM qwen3-coder:30b"),
 * and model_info's "<architecture>.context_length" is the catalog's
 * context, the context the gateway sells, not the one the weights take.
 * Nothing is held but yajl's own stacks: a document of any depth is
 * refused, never recursed into.
 */

#ifndef NEBULA_SHOW_H
#define NEBULA_SHOW_H

#include <stddef.h>
#include <stdint.h>


typedef struct {
    const unsigned char  *upstream;      /* the model's name on the pool */
    size_t                upstream_len;
    const unsigned char  *name;          /* its public name */
    size_t                name_len;
    uint64_t              context;       /* the catalog's */
} nebula_show_t;


/* where the result goes: memory the caller owns (nginx: the request pool) */
typedef unsigned char *(*nebula_show_alloc_pt)(void *data, size_t size);


/*
 * Rewrites the JSON document in (len bytes): the result in *out (*out_len
 * bytes, from alloc(data, ...), so it is written once, where the caller
 * keeps it).  Returns 0, or -1 when the document is not one JSON object,
 * nests too deep, or memory runs out.
 */
int nebula_show_rewrite(const nebula_show_t *show, const unsigned char *in,
    size_t len, nebula_show_alloc_pt alloc, void *data, unsigned char **out,
    size_t *out_len);

#endif /* NEBULA_SHOW_H */
