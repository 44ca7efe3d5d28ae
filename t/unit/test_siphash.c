/*
 * Unit tests of SipHash-2-4, 128-bit output (nebula_siphash.c): the
 * reference implementation's test vectors (key 00..0f, messages 00..n-1).
 */

#include <string.h>

#include "nebula_siphash.h"
#include "tap.h"


/* vectors_sip128[0] and [1], from the reference's vectors.h */
static const struct {
    size_t         len;
    unsigned char  out[16];
} vectors[] = {
    { 0, { 0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6,
           0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02, 0x93 } },
    { 1, { 0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44,
           0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc, 0x45 } },
};


int
main(void)
{
    size_t         i, k;
    uint64_t       key[2], out[2];
    unsigned char  kb[16], msg[64], got[16];

    for (i = 0; i < 16; i++) {
        kb[i] = (unsigned char) i;
    }

    for (i = 0; i < sizeof(msg); i++) {
        msg[i] = (unsigned char) i;
    }

    /* the key as two little-endian words */
    key[0] = 0;
    key[1] = 0;

    for (i = 0; i < 8; i++) {
        key[0] |= (uint64_t) kb[i] << (8 * i);
        key[1] |= (uint64_t) kb[8 + i] << (8 * i);
    }

    for (k = 0; k < sizeof(vectors) / sizeof(vectors[0]); k++) {
        nebula_siphash128(key, msg, vectors[k].len, out);

        for (i = 0; i < 8; i++) {
            got[i] = (unsigned char) (out[0] >> (8 * i));
            got[8 + i] = (unsigned char) (out[1] >> (8 * i));
        }

        ok(memcmp(got, vectors[k].out, 16) == 0,
           "the reference's vector for %zu bytes", vectors[k].len);
    }

    /* every length to 64 differs from its neighbours, and from the key */
    for (k = 1; k < sizeof(msg); k++) {
        uint64_t  a[2], b[2];

        nebula_siphash128(key, msg, k - 1, a);
        nebula_siphash128(key, msg, k, b);

        if (a[0] == b[0] && a[1] == b[1]) {
            break;
        }
    }

    ok(k == sizeof(msg), "messages of 0 to 63 bytes hash apart");

    return done_testing();
}
