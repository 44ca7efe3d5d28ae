/*
 * Nebula: API keys.
 *
 * A secret is "nb-", its account's tag (16 hex digits), "-" and 43
 * base64url characters from OpenSSL's CSPRNG (256 bits); a key made
 * before accounts has no tag ("nb-" and the 43 characters), and is an
 * account of its own, its tag its ID.  Redis keeps only the secret's
 * SHA-256 digest; the key's ID is the digest's first 16 hex digits, so a
 * request finds its key's and its account's data, all under the hash tag
 * {TAG} (one slot of a Redis Cluster), from the secret alone.  The tag
 * gives nothing away: the 43 characters must still match the digest.  The
 * secret is never logged and never leaves for an upstream.
 */

#include "ngx_nebula.h"
#include "nebula_siphash.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>


#define NGX_NEBULA_KEY_PREFIX      "nb-"
#define NGX_NEBULA_KEY_RANDOM      32


/* a request header by its name, any case; the first one */
ngx_table_elt_t *
ngx_nebula_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * The secret from "Authorization: Bearer nb-..." or "x-api-key: nb-...".
 * Returns NGX_OK, or NGX_DECLINED when the request carries none.
 */
ngx_int_t
ngx_nebula_key_from_request(ngx_http_request_t *r, ngx_str_t *secret)
{
    u_char           *p, *last;
    ngx_table_elt_t  *h;

    if (r->headers_in.authorization) {
        p = r->headers_in.authorization->value.data;
        last = p + r->headers_in.authorization->value.len;

        if (last - p > 7 && ngx_strncasecmp(p, (u_char *) "Bearer ", 7) == 0)
        {
            p += 7;

            while (p < last && *p == ' ') {
                p++;
            }

            while (last > p && last[-1] == ' ') {
                last--;
            }

            secret->data = p;
            secret->len = last - p;

            return secret->len ? NGX_OK : NGX_DECLINED;
        }
    }

    h = ngx_nebula_header(r, "x-api-key", 9);

    if (h && h->value.len) {
        *secret = h->value;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* whether a secret could be one of ours: saves a Redis round trip if not */
ngx_int_t
ngx_nebula_key_well_formed(ngx_str_t *secret)
{
    u_char  c;
    size_t  i;

    if (secret->len < 3 + 40 || secret->len > 128
        || ngx_strncmp(secret->data, NGX_NEBULA_KEY_PREFIX, 3) != 0)
    {
        return 0;
    }

    for (i = 3; i < secret->len; i++) {
        c = secret->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
              || (c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * SHA-256 with OpenSSL's own block function.  Through EVP (EVP_Digest(),
 * or EVP_DigestInit_ex2() with the digest fetched once) OpenSSL 3 creates
 * and frees a provider context a call: with its locks, 10,000
 * instructions of a request's 50,000.  SHA256_Init() and friends are
 * deprecated in 3.0 but present, and do the same work without them.
 */
static ngx_int_t
ngx_nebula_sha256(u_char *data, size_t size, u_char *hash, unsigned int *len)
{
    SHA256_CTX  c;

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif

    if (SHA256_Init(&c) != 1
        || SHA256_Update(&c, data, size) != 1
        || SHA256_Final(hash, &c) != 1)
    {
        return NGX_ERROR;
    }

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

    *len = SHA256_DIGEST_LENGTH;

    return NGX_OK;
}


/*
 * Lower-case hex, two digits a byte from a table: ngx_hex_dump() takes a
 * nibble at a time, and two digests are written a request.
 */
u_char *
ngx_nebula_hex(u_char *dst, const u_char *src, size_t len)
{
    static u_char  pairs[513] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

    while (len--) {
        ngx_memcpy(dst, &pairs[2 * *src++], 2);
        dst += 2;
    }

    return dst;
}


/*
 * The digests a worker worked out lately, found by a keyed hash of the
 * secret: SipHash-2-4 with its 128-bit output, under a key drawn from
 * OpenSSL's CSPRNG the first time a worker needs it.  A request of a key
 * seen before costs ~300 instructions for its digest instead of SHA-256's
 * 2,500; the secret itself is not kept, and without the worker's key no
 * one can make two secrets meet in the table.
 */

#define NGX_NEBULA_DIGESTS  256

typedef struct {
    uint64_t  tag[2];
    u_char    digest[64];       /* hex; digest[0] == 0: an empty entry */
} ngx_nebula_digest_entry_t;


static ngx_nebula_digest_entry_t  ngx_nebula_digests[NGX_NEBULA_DIGESTS];
static uint64_t                   ngx_nebula_sip_key[2];
static ngx_int_t                  ngx_nebula_sip_state;  /* 1 ready, -1 no */


/* digest: 64 hex digits; id: the first 16 of them */
ngx_int_t
ngx_nebula_key_digest(ngx_str_t *secret, u_char *digest, u_char *id)
{
    u_char                      hash[EVP_MAX_MD_SIZE];
    uint64_t                    tag[2];
    unsigned int                len;
    ngx_nebula_digest_entry_t  *e;

    e = NULL;

    if (ngx_nebula_sip_state == 0) {
        ngx_nebula_sip_state = (RAND_bytes((u_char *) ngx_nebula_sip_key,
                                           sizeof(ngx_nebula_sip_key)) == 1)
                               ? 1 : -1;
    }

    if (ngx_nebula_sip_state == 1) {
        nebula_siphash128(ngx_nebula_sip_key, secret->data, secret->len,
                              tag);

        e = &ngx_nebula_digests[tag[0] % NGX_NEBULA_DIGESTS];

        if (e->digest[0] && e->tag[0] == tag[0] && e->tag[1] == tag[1]) {
            ngx_memcpy(digest, e->digest, 64);
            goto done;
        }
    }

    if (ngx_nebula_sha256(secret->data, secret->len, hash, &len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_nebula_hex(digest, hash, len);

    if (e) {
        e->tag[0] = tag[0];
        e->tag[1] = tag[1];
        ngx_memcpy(e->digest, digest, 64);
    }

done:

    digest[64] = '\0';

    ngx_memcpy(id, digest, NGX_NEBULA_KEY_ID_LEN);
    id[NGX_NEBULA_KEY_ID_LEN] = '\0';

    return NGX_OK;
}


/*
 * The tag of the secret's account: the 16 hex digits a secret of an
 * account carries (1), or, for a key made before accounts, its id (0).
 * The length tells them apart, not a "-", which base64url may hold
 * anywhere.
 */
ngx_uint_t
ngx_nebula_key_tag(ngx_str_t *secret, u_char *id, u_char *tag)
{
    u_char      c;
    ngx_uint_t  i;

    if (secret->len == NGX_NEBULA_ACCOUNT_SECRET_LEN
        && secret->data[3 + NGX_NEBULA_KEY_ID_LEN] == '-')
    {
        for (i = 0; i < NGX_NEBULA_KEY_ID_LEN; i++) {
            c = secret->data[3 + i];

            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                break;
            }
        }

        if (i == NGX_NEBULA_KEY_ID_LEN) {
            ngx_memcpy(tag, secret->data + 3, NGX_NEBULA_KEY_ID_LEN);
            tag[NGX_NEBULA_KEY_ID_LEN] = '\0';
            return 1;
        }
    }

    ngx_memcpy(tag, id, NGX_NEBULA_KEY_ID_LEN + 1);

    return 0;
}


/*
 * The id a reservation of the key goes by: the request's, and for a key
 * of an account "@" and the key's (ADMIT, SETTLE), into res, which holds
 * NGX_NEBULA_RES_ID_LEN + 1 bytes
 */
void
ngx_nebula_res_id(u_char *res, u_char *request_id, u_char *key_id,
    u_char *tag)
{
    ngx_memcpy(res, request_id, 32);

    if (ngx_strcmp(key_id, tag) == 0) {
        res[32] = '\0';
        return;
    }

    res[32] = '@';
    ngx_memcpy(res + 33, key_id, NGX_NEBULA_KEY_ID_LEN);
    res[NGX_NEBULA_RES_ID_LEN] = '\0';
}


/*
 * A new secret into out, which holds NGX_NEBULA_ACCOUNT_SECRET_LEN bytes:
 * of the account tag names, or (tag NULL) one of its own
 * (NGX_NEBULA_KEY_SECRET_LEN bytes); returns its length
 */
size_t
ngx_nebula_key_generate(u_char *out, u_char *tag)
{
    u_char     random[NGX_NEBULA_KEY_RANDOM], *p;
    ngx_str_t  src, dst;

    if (RAND_bytes(random, sizeof(random)) != 1) {
        return 0;
    }

    p = ngx_cpymem(out, NGX_NEBULA_KEY_PREFIX, 3);

    if (tag) {
        p = ngx_cpymem(p, tag, NGX_NEBULA_KEY_ID_LEN);
        *p++ = '-';
    }

    src.data = random;
    src.len = sizeof(random);
    dst.data = p;

    ngx_encode_base64url(&dst, &src);

    return p + dst.len - out;
}


/* a new account's tag: 16 hex digits from OpenSSL's CSPRNG, and a NUL */
ngx_int_t
ngx_nebula_key_new_tag(u_char *tag)
{
    u_char  random[NGX_NEBULA_KEY_ID_LEN / 2];

    if (RAND_bytes(random, sizeof(random)) != 1) {
        return NGX_ERROR;
    }

    *ngx_nebula_hex(tag, random, sizeof(random)) = '\0';

    return NGX_OK;
}


/*
 * An account's management secret, "nbm-", its tag, "-" and 43 characters
 * (NGX_NEBULA_MANAGEMENT_SECRET_LEN), into out; 0: no randomness
 */
size_t
ngx_nebula_key_generate_management(u_char *out, u_char *tag)
{
    size_t  n;

    /* an API key's secret, its "nb-" made "nbm-" */
    n = ngx_nebula_key_generate(out + 1, tag);
    if (n == 0) {
        return 0;
    }

    ngx_memcpy(out, NGX_NEBULA_MANAGEMENT_PREFIX, 4);

    return n + 1;
}


/*
 * The account of a management secret ("nbm-TAG-..."), into tag: 1; 0:
 * the secret is none
 */
ngx_uint_t
ngx_nebula_key_management_tag(ngx_str_t *secret, u_char *tag)
{
    u_char      c;
    ngx_uint_t  i;

    if (secret->len != NGX_NEBULA_MANAGEMENT_SECRET_LEN
        || ngx_strncmp(secret->data, NGX_NEBULA_MANAGEMENT_PREFIX, 4) != 0
        || secret->data[4 + NGX_NEBULA_KEY_ID_LEN] != '-')
    {
        return 0;
    }

    for (i = 0; i < NGX_NEBULA_KEY_ID_LEN; i++) {
        c = secret->data[4 + i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }

    for (i = 5 + NGX_NEBULA_KEY_ID_LEN; i < secret->len; i++) {
        c = secret->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
              || (c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
        {
            return 0;
        }
    }

    ngx_memcpy(tag, secret->data + 4, NGX_NEBULA_KEY_ID_LEN);
    tag[NGX_NEBULA_KEY_ID_LEN] = '\0';

    return 1;
}


/* compares secrets in a time that does not depend on where they differ */
ngx_int_t
ngx_nebula_secret_equal(ngx_str_t *a, ngx_str_t *b)
{
    size_t  i;
    u_char  diff;

    if (a->len != b->len) {
        return 0;
    }

    diff = 0;

    for (i = 0; i < a->len; i++) {
        diff |= a->data[i] ^ b->data[i];
    }

    return diff == 0;
}


/*
 * What a pool must not see of the client's request, whatever
 * proxy_set_header says: its key (Authorization, x-api-key), and its
 * Accept-Encoding (a compressed answer is one the filter cannot meter).
 * The headers are renamed to one that proxy_pass always writes itself
 * (Connection), so the proxy module skips them as overridden.  The values
 * stay for $http_authorization, should an operator choose to log it, and
 * for the gzip filter, which reads r->headers_in.accept_encoding's value
 * to compress what the client gets.
 */
void
ngx_nebula_hide_headers(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if ((h[i].key.len == 13
             && ngx_strncasecmp(h[i].key.data, (u_char *) "authorization", 13)
                == 0)
            || (h[i].key.len == 9
                && ngx_strncasecmp(h[i].key.data, (u_char *) "x-api-key", 9)
                   == 0)
            || (h[i].key.len == 15
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "accept-encoding", 15)
                   == 0))
        {
            ngx_str_set(&h[i].key, "Connection");
            h[i].lowcase_key = (u_char *) "connection";
            h[i].hash = ngx_hash_key(h[i].lowcase_key, 10);
        }
    }
}
