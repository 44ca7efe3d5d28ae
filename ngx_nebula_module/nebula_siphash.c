/*
 * Nebula: SipHash-2-4 with its 128-bit output (see nebula_siphash.h).
 */

#include "nebula_siphash.h"


#define NEBULA_ROTL(x, b)  (((x) << (b)) | ((x) >> (64 - (b))))

#define NEBULA_SIPROUND                                                   \
    v0 += v1; v1 = NEBULA_ROTL(v1, 13); v1 ^= v0;                         \
    v0 = NEBULA_ROTL(v0, 32);                                             \
    v2 += v3; v3 = NEBULA_ROTL(v3, 16); v3 ^= v2;                         \
    v0 += v3; v3 = NEBULA_ROTL(v3, 21); v3 ^= v0;                         \
    v2 += v1; v1 = NEBULA_ROTL(v1, 17); v1 ^= v2;                         \
    v2 = NEBULA_ROTL(v2, 32)


/* SipHash-2-4, 128-bit output (Aumasson and Bernstein's reference) */
void
nebula_siphash128(const uint64_t key[2], const unsigned char *in, size_t len,
    uint64_t out[2])
{
    size_t    i, left;
    uint64_t  v0, v1, v2, v3, m, b;

    v0 = key[0] ^ 0x736f6d6570736575ULL;
    v1 = key[1] ^ 0x646f72616e646f6dULL ^ 0xee;
    v2 = key[0] ^ 0x6c7967656e657261ULL;
    v3 = key[1] ^ 0x7465646279746573ULL;

    for (i = 0; i + 8 <= len; i += 8) {
        m = (uint64_t) in[i] | (uint64_t) in[i + 1] << 8
            | (uint64_t) in[i + 2] << 16 | (uint64_t) in[i + 3] << 24
            | (uint64_t) in[i + 4] << 32 | (uint64_t) in[i + 5] << 40
            | (uint64_t) in[i + 6] << 48 | (uint64_t) in[i + 7] << 56;

        v3 ^= m;
        NEBULA_SIPROUND;
        NEBULA_SIPROUND;
        v0 ^= m;
    }

    b = (uint64_t) len << 56;

    for (left = 0; i + left < len; left++) {
        b |= (uint64_t) in[i + left] << (8 * left);
    }

    v3 ^= b;
    NEBULA_SIPROUND;
    NEBULA_SIPROUND;
    v0 ^= b;

    v2 ^= 0xee;
    NEBULA_SIPROUND;
    NEBULA_SIPROUND;
    NEBULA_SIPROUND;
    NEBULA_SIPROUND;
    out[0] = v0 ^ v1 ^ v2 ^ v3;

    v1 ^= 0xdd;
    NEBULA_SIPROUND;
    NEBULA_SIPROUND;
    NEBULA_SIPROUND;
    NEBULA_SIPROUND;
    out[1] = v0 ^ v1 ^ v2 ^ v3;
}
