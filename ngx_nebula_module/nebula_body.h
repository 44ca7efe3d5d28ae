/*
 * Nebula: plain-C helpers over a request body's bytes, no nginx types:
 * strict UTF-8, Go's folding of JSON keys, edits of byte ranges (how the
 * gateway rewrites a body without re-encoding it), JSON string quoting,
 * JSON numbers as the request parser reads them.
 */

#ifndef NEBULA_BODY_H
#define NEBULA_BODY_H

#include <stddef.h>
#include <stdint.h>


/*
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF.  Returns 1, with the offending byte's offset in *at, for bytes
 * that are not UTF-8; 0 for bytes that are.
 */
int nebula_utf8_invalid(const unsigned char *p, size_t len, size_t *at);

/*
 * A JSON key as Go's encoding/json matches it to a field: ASCII folded to
 * lower case, U+017F to 's', U+212A to 'k'.  Writes at most size bytes to
 * out; returns how many, or size + 1 for a key longer than that.
 */
/* JSON numbers as the request parser reads them (nebula_body.c) */
int nebula_json_integer(const char *s, size_t len, int64_t *out);
double nebula_json_number_long(const char *s, size_t len);

size_t nebula_fold_key(const unsigned char *key, size_t len,
    unsigned char *out, size_t size);


/* one replacement of a body range; start == end inserts; a deletion
   has len 0 and may have data NULL */
typedef struct {
    size_t                start;
    size_t                end;
    const unsigned char  *data;
    size_t                len;
} nebula_edit_t;


/*
 * The length of the body after the edits, which must be sorted by start
 * and must not overlap.
 */
size_t nebula_edit_length(size_t len, const nebula_edit_t *edits, size_t n);

/* writes the edited body into out, which holds nebula_edit_length() bytes */
void nebula_edit_apply(const unsigned char *body, size_t len,
    const nebula_edit_t *edits, size_t n, unsigned char *out);

/*
 * Sorts edits into the order nebula_edit_apply() wants: by start, and at
 * one start an insertion before a replacement or deletion (stable
 * otherwise).  A few edits: an insertion sort.
 */
void nebula_edit_sort(nebula_edit_t *edits, size_t n);

/*
 * Writes s as a JSON string literal, quotes included, into out (which holds
 * at least 6 * len + 2 bytes); returns the bytes written.
 */
size_t nebula_json_quote(unsigned char *out, const unsigned char *s,
    size_t len);

#endif /* NEBULA_BODY_H */
