/*
 * Nebula: where the cost goes in an answer's usage (see nebula_usage.h).
 */

#include <stdint.h>
#include <string.h>

#include "nebula_usage.h"


static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}


/* past a string whose opening quote is at *i; -1 if it does not end */
static int
skip_string(const unsigned char *p, size_t len, size_t *i)
{
    size_t  k;

    for (k = *i + 1; k < len; k++) {
        if (p[k] == '\\') {
            k++;

        } else if (p[k] == '"') {
            *i = k + 1;
            return 0;
        }
    }

    return -1;
}


/*
 * Past the value at *i: a string, a container (its brackets matched, up
 * to 64 deep, strings in it skipped), or a scalar up to what ends it.
 * The closing bracket of a container is at *i - 1 after.
 */
static int
skip_value(const unsigned char *p, size_t len, size_t *i)
{
    size_t    k, depth;
    uint64_t  objects;        /* bit d: the container at depth d+1 is {} */

    k = *i;

    if (k >= len) {
        return -1;
    }

    if (p[k] == '"') {
        return skip_string(p, len, i);
    }

    if (p[k] == '{' || p[k] == '[') {
        depth = 0;
        objects = 0;

        while (k < len) {
            switch (p[k]) {
            case '"':
                if (skip_string(p, len, &k) != 0) {
                    return -1;
                }
                continue;

            case '{':
            case '[':
                if (depth == 64) {
                    return -1;
                }

                objects = (objects & ~((uint64_t) 1 << depth))
                          | ((uint64_t) (p[k] == '{') << depth);
                depth++;
                break;

            case '}':
            case ']':
                if (depth == 0
                    || ((objects >> (depth - 1)) & 1) != (p[k] == '}'))
                {
                    return -1;
                }

                if (--depth == 0) {
                    *i = k + 1;
                    return 0;
                }
                break;
            }

            k++;
        }

        return -1;
    }

    while (k < len && p[k] != ',' && p[k] != '}' && p[k] != ']'
           && !is_space(p[k]))
    {
        k++;
    }

    if (k == *i) {
        return -1;
    }

    *i = k;
    return 0;
}


static size_t
skip_spaces(const unsigned char *p, size_t len, size_t i)
{
    while (i < len && is_space(p[i])) {
        i++;
    }

    return i;
}


/* one JSON object from p[0]: its top-level "usage" object's closing brace */
static int
usage_in_object(const unsigned char *p, size_t len, size_t *off, int *empty)
{
    size_t  i, key, key_len, v;

    i = skip_spaces(p, len, 0);

    if (i >= len || p[i] != '{') {
        return -1;
    }

    i = skip_spaces(p, len, i + 1);

    if (i < len && p[i] == '}') {
        return -1;
    }

    for ( ;; ) {
        if (i >= len || p[i] != '"') {
            return -1;
        }

        key = i + 1;

        if (skip_string(p, len, &i) != 0) {
            return -1;
        }

        key_len = i - 1 - key;

        i = skip_spaces(p, len, i);

        if (i >= len || p[i] != ':') {
            return -1;
        }

        v = skip_spaces(p, len, i + 1);
        i = v;

        if (skip_value(p, len, &i) != 0) {
            return -1;
        }

        if (key_len == 5 && memcmp(p + key, "usage", 5) == 0
            && p[v] == '{')
        {
            *off = i - 1;
            *empty = (skip_spaces(p, len, v + 1) == i - 1);
            return 0;
        }

        i = skip_spaces(p, len, i);

        if (i >= len || p[i] != ',') {
            return -1;
        }

        i = skip_spaces(p, len, i + 1);
    }
}


int
nebula_usage_close(const unsigned char *p, size_t len, int sse, size_t *off,
    int *empty)
{
    size_t                line, end, data;
    const unsigned char  *nl;

    if (!sse) {
        return usage_in_object(p, len, off, empty);
    }

    for (line = 0; line < len; line = end + 1) {
        nl = memchr(p + line, '\n', len - line);
        end = nl ? (size_t) (nl - p) : len;

        if (end - line < 5 || memcmp(p + line, "data:", 5) != 0) {
            continue;
        }

        data = line + 5;

        if (data < end && p[data] == ' ') {
            data++;
        }

        if (usage_in_object(p + data, end - data, off, empty) == 0) {
            *off += data;
            return 0;
        }
    }

    return -1;
}
