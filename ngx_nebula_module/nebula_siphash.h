/*
 * Nebula: SipHash-2-4 with its 128-bit output, after Aumasson and
 * Bernstein's reference: a keyed hash no one without the key can make
 * two inputs meet in.  Plain C, no nginx types.
 */

#ifndef NEBULA_SIPHASH_H
#define NEBULA_SIPHASH_H

#include <stddef.h>
#include <stdint.h>


void nebula_siphash128(const uint64_t key[2], const unsigned char *in,
    size_t len, uint64_t out[2]);

#endif /* NEBULA_SIPHASH_H */
