/*
 * A minimal TAP producer for the C unit tests, read by prove.
 */

#ifndef NEBULA_TAP_H
#define NEBULA_TAP_H

#include <stdio.h>
#include <string.h>

static int  tap_run, tap_failed;

#define ok(cond, ...)                                                         \
    tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#define is_int(got, want, ...)                                                \
    do {                                                                      \
        long long  g_ = (long long) (got), w_ = (long long) (want);           \
        if (!tap_ok(g_ == w_, __FILE__, __LINE__, __VA_ARGS__)) {             \
            printf("#   got: %lld\n#   expected: %lld\n", g_, w_);            \
        }                                                                     \
    } while (0)

#define is_str(got, want, ...)                                                \
    do {                                                                      \
        const char  *g_ = (got), *w_ = (want);                                \
        if (!tap_ok(g_ && w_ && strcmp(g_, w_) == 0, __FILE__, __LINE__,      \
                    __VA_ARGS__))                                             \
        {                                                                     \
            printf("#   got: '%s'\n#   expected: '%s'\n",                     \
                   g_ ? g_ : "(null)", w_ ? w_ : "(null)");                   \
        }                                                                     \
    } while (0)

#include <stdarg.h>

static int
tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list  ap;

    tap_run++;
    printf("%s %d - ", pass ? "ok" : "not ok", tap_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");

    if (!pass) {
        tap_failed++;
        printf("#   Failed test at %s line %d.\n", file, line);
    }

    return pass;
}

static int
done_testing(void)
{
    printf("1..%d\n", tap_run);
    return tap_failed ? 1 : 0;
}

#endif /* NEBULA_TAP_H */
