/*
 * Nebula: the clock quotas run on: now (or a test's time), the calendar
 * month in UTC that quotas and usage are kept by, its day, and the time
 * left to its end as OpenAI writes durations.
 */

#include "ngx_nebula.h"


/*
 * Now, or the time a test says it is: with nebula_test_clock on, the
 * X-Nebula-Test-Time header (Unix seconds) moves the clock, so a test can
 * step into the next month.
 */
time_t
ngx_nebula_now(ngx_http_request_t *r)
{
    ngx_int_t                n;
    ngx_table_elt_t         *h;
    ngx_nebula_main_conf_t  *nmcf;

    nmcf = ngx_http_get_module_main_conf(r, ngx_http_nebula_module);

    if (!nmcf->test_clock) {
        return ngx_time();
    }

    h = ngx_nebula_header(r, "x-nebula-test-time",
                          sizeof("x-nebula-test-time") - 1);

    if (h) {
        n = ngx_atoi(h->value.data, h->value.len);

        /* up to 9999-12-31: months and days keep their width */
        if (n != NGX_ERROR && n <= 253402300799LL) {
            return (time_t) n;
        }
    }

    return ngx_time();
}



/*
 * The month a request falls in, its name and its end, worked out once a
 * month a worker (ngx_gmtime() and timegm() a request were a tenth of the
 * module's own instructions); any other time (the test clock, a late
 * settlement) is worked out and becomes the one kept.
 */
static time_t  ngx_nebula_month_start;
static time_t  ngx_nebula_month_end;
static u_char  ngx_nebula_month_name[8];


static void
ngx_nebula_month_cache(time_t now)
{
    ngx_tm_t   tm;
    struct tm  t;

    if (now >= ngx_nebula_month_start && now < ngx_nebula_month_end) {
        return;
    }

    ngx_gmtime(now, &tm);

    (void) ngx_sprintf(ngx_nebula_month_name, "%4d-%02d", tm.ngx_tm_year,
                       tm.ngx_tm_mon);

    ngx_memzero(&t, sizeof(struct tm));
    t.tm_year = tm.ngx_tm_year - 1900;
    t.tm_mon = tm.ngx_tm_mon - 1;
    t.tm_mday = 1;
    ngx_nebula_month_start = timegm(&t);

    t.tm_year += (tm.ngx_tm_mon == 12);
    t.tm_mon = tm.ngx_tm_mon % 12;
    ngx_nebula_month_end = timegm(&t);
}

u_char *
ngx_nebula_month(u_char *p, time_t now)
{
    ngx_nebula_month_cache(now);

    return ngx_cpymem(p, ngx_nebula_month_name, 7);
}


u_char *
ngx_nebula_day(u_char *p, time_t now)
{
    ngx_tm_t  tm;

    ngx_gmtime(now, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02d", tm.ngx_tm_year, tm.ngx_tm_mon,
                       tm.ngx_tm_mday);
}


/* seconds from now to the first second of the next month, UTC */
time_t
ngx_nebula_month_left(time_t now)
{
    ngx_nebula_month_cache(now);

    return ngx_nebula_month_end - now;
}


/* "6d3h12m5s", as OpenAI writes its reset durations */
u_char *
ngx_nebula_duration(u_char *p, time_t s)
{
    time_t  d, h, m;

    d = s / 86400;
    h = s % 86400 / 3600;
    m = s % 3600 / 60;
    s = s % 60;

    if (d) {
        return ngx_sprintf(p, "%Td%Th%Tm%Ts", d, h, m, s);
    }

    if (h) {
        return ngx_sprintf(p, "%Th%Tm%Ts", h, m, s);
    }

    if (m) {
        return ngx_sprintf(p, "%Tm%Ts", m, s);
    }

    return ngx_sprintf(p, "%Ts", s);
}
