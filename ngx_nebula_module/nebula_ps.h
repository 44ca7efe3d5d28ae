/*
 * Nebula: a pool's answer to Ollama's GET /api/ps, made the catalog's.
 *
 * Plain C with no nginx types, so unit tests and fuzzers drive it
 * directly.  The gateway answers /api/ps for a whole fleet: each pool's
 * list of running models is filtered to the catalog's models that the
 * caller may see, each entry named with its public name and given the
 * catalog's context, and the caller joins the pools' lists.  An entry is
 * written only once its end is read ("name" and "model" may come last);
 * nothing else is held but yajl's own stacks: a document of any depth is
 * refused, never recursed into.
 */

#ifndef NEBULA_PS_H
#define NEBULA_PS_H

#include <stddef.h>
#include <stdint.h>


typedef struct {
    const unsigned char  *upstream;      /* the model's name on the pool */
    size_t                upstream_len;
    const unsigned char  *name;          /* its public name */
    size_t                name_len;
    uint64_t              context;       /* the catalog's context */
} nebula_ps_model_t;


/* where the result goes: memory the caller owns (nginx: the request pool) */
typedef unsigned char *(*nebula_ps_alloc_pt)(void *data, size_t size);


/*
 * in/len: a pool's answer to GET /api/ps ({"models":[{...},...]}).
 * models/n: the catalog's models on that pool that the caller may see.
 * Writes to *out (*out_len bytes, memory from alloc(data, size), written
 * once) the entries of "models" that run one of models[]: for each
 * running entry, one copy per catalog model that names it (several public
 * names may share one upstream model), with "name" and "model" set to the
 * public name and "context_length" set to the catalog's context; every
 * other field copied as it is (size, digest, details{...}, expires_at,
 * size_vram, unknown future fields too). Entries are objects separated by
 * commas, with no brackets around them, so the caller joins several
 * pools' outputs into {"models":[...]}. *count gets the number written
 * (0 with *out_len 0 is fine; *out is then NULL and alloc is not called).
 * An entry naming no catalog model is left out, so nothing about models
 * outside the catalog leaks.
 * An entry runs upstream model U when its "model" (or, if it has no
 * "model" string, its "name") is U, or U has no tag (no ':' after its
 * last '/') and it is U + ":latest", Ollama's default tag.  Of a key an
 * entry repeats, the first is kept.
 * Returns 0, or -1 when the document is not an object whose "models" is an
 * array of objects, nests deeper than 64, or memory runs out.
 */
int nebula_ps_filter(const nebula_ps_model_t *models, size_t n,
    const unsigned char *in, size_t len, nebula_ps_alloc_pt alloc,
    void *data, unsigned char **out, size_t *out_len, size_t *count);

#endif /* NEBULA_PS_H */
