/*
 * bench/slow.c: the two ends of bench/run's "many slow streams" mode.
 *
 *   slow upstream PORT TOKENS RATE
 *
 *     An Ollama-like pool that holds any number of streams: each request
 *     (POST, its body read and dropped) is answered with an OpenAI chat
 *     completion stream framed as Ollama frames one (chunked, an HTTP chunk
 *     a token), a token event every 1/RATE s, TOKENS of them (or the
 *     request's x-bench-tokens), then one chunk with the finishing event,
 *     the usage chunk and [DONE].  Keep-alive.  One process, epoll, a
 *     1 ms tick over RATE-period buckets: it costs a write a token.
 *
 *   slow client PORT STREAMS RAMP_MS TIMEOUT_S TOKENS KEYFILE BODYFILE
 *
 *     STREAMS connections opened over RAMP_MS, each sending one
 *     POST /v1/chat/completions (the body from BODYFILE, the key from
 *     KEYFILE's lines in turn, "-" for none) and reading its stream to the
 *     end.  A stream is good when it is a 200 with TOKENS token events,
 *     [DONE] and the chunked body's last chunk; one that ends before is
 *     cut.  Prints one line: "slow_client k=v ...".  Gives up TIMEOUT_S
 *     after the last connection opened.
 *
 * Only for 127.0.0.1.  Plain C, no nginx types: cc -O2 -o slow slow.c
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} buf_t;


static void
die(const char *what)
{
    perror(what);
    exit(2);
}


static void
buf_add(buf_t *b, const char *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->data = realloc(b->data, b->cap);
        if (b->data == NULL) {
            die("realloc");
        }
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;
}


static void
buf_drop(buf_t *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}


static int64_t
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static void
nofile(size_t want)
{
    struct rlimit  rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        /* up to the hard limit: raising that needs CAP_SYS_RESOURCE */
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            die("setrlimit(RLIMIT_NOFILE)");
        }
    }
}


static void
nonblock(int fd)
{
    int  one = 1;

    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        die("fcntl");
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}


/* --- the upstream ------------------------------------------------------- */

#define EVENT_HEAD  "data: {\"id\":\"chatcmpl-bench\",\"object\":" \
                    "\"chat.completion.chunk\",\"created\":1700000000," \
                    "\"model\":\"qwen3:latest\",\"system_fingerprint\":" \
                    "\"fp_ollama\",\"choices\":["

typedef struct conn_s  conn_t;

struct conn_s {
    int       fd;
    int       streaming;
    int       want_out;       /* EPOLLOUT registered */
    buf_t     in;
    buf_t     out;
    long      tokens;         /* this stream's */
    long      sent;
    int64_t   due;
    conn_t   *prev, *next;    /* in its bucket */
};


static conn_t   **buckets;
static long       period = 50;
static long       default_tokens = 400;
static int        ep;
static char       token_chunk[512];


static void
watch(conn_t *c, int out)
{
    struct epoll_event  ev;

    if (c->want_out == out) {
        return;
    }

    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}


static void
unbucket(conn_t *c)
{
    if (!c->streaming) {
        return;
    }

    if (c->prev) {
        c->prev->next = c->next;
    } else {
        buckets[c->due % period] = c->next;
    }

    if (c->next) {
        c->next->prev = c->prev;
    }

    c->prev = c->next = NULL;
    c->streaming = 0;
}


static void
conn_close(conn_t *c)
{
    unbucket(c);
    close(c->fd);
    free(c->in.data);
    free(c->out.data);
    free(c);
}


/* 0: sent or kept for EPOLLOUT; -1: the connection is gone */
static int
send_out(conn_t *c, const char *p, size_t n)
{
    ssize_t  w;

    if (c->out.len == 0) {
        while (n > 0) {
            w = write(c->fd, p, n);
            if (w < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN) {
                    break;
                }
                return -1;
            }
            p += w;
            n -= w;
        }
    }

    if (n > 0) {
        buf_add(&c->out, p, n);
        watch(c, 1);
    }

    return 0;
}


static int
flush_out(conn_t *c)
{
    ssize_t  w;

    while (c->out.len > 0) {
        w = write(c->fd, c->out.data, c->out.len);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                return 0;
            }
            return -1;
        }
        buf_drop(&c->out, w);
    }

    watch(c, 0);
    return 0;
}


/* an HTTP chunk of events, in one write */
static int
chunk(conn_t *c, const char *events, const char *after)
{
    char    out[2048];
    size_t  n = strlen(events);
    int     len;

    len = snprintf(out, sizeof(out), "%zx\r\n%s\r\n%s", n, events, after);
    if (len < 0 || (size_t) len >= sizeof(out)) {
        return -1;
    }

    return send_out(c, out, len);
}


static int start_requests(conn_t *c);


/* the stream's last chunk: the finishing event, the usage, [DONE] */
static int
finish(conn_t *c)
{
    char  last[1024];

    snprintf(last, sizeof(last),
             EVENT_HEAD "{\"index\":0,\"delta\":{\"content\":\".\"},"
             "\"finish_reason\":\"stop\"}]}\n\n"
             EVENT_HEAD "],\"usage\":{\"prompt_tokens\":14,"
             "\"completion_tokens\":%ld,\"total_tokens\":%ld}}\n\n"
             "data: [DONE]\n\n", c->tokens, c->tokens + 14);

    unbucket(c);

    if (chunk(c, last, "0\r\n\r\n") < 0) {
        return -1;
    }

    return start_requests(c);
}


/* a whole request in c->in: answered (its stream begins); -1: gone */
static int
start_requests(conn_t *c)
{
    char     *end, *h, *cl, *te, *tk;
    size_t    head, body;
    int64_t   now;
    conn_t  **b;

    static const char  resp[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n";

    if (c->streaming || c->in.len == 0) {
        return 0;
    }

    buf_add(&c->in, "", 1);       /* a NUL for the string functions */
    c->in.len--;

    end = strstr(c->in.data, "\r\n\r\n");
    if (end == NULL) {
        return c->in.len > 65536 ? -1 : 0;
    }

    head = end + 4 - c->in.data;
    *end = '\0';
    h = c->in.data;
    cl = strcasestr(h, "\r\ncontent-length:");
    te = strcasestr(h, "\r\ntransfer-encoding: chunked");
    tk = strcasestr(h, "\r\nx-bench-tokens:");
    c->tokens = tk ? strtol(tk + 17, NULL, 10) : default_tokens;
    if (c->tokens < 1) {
        c->tokens = 1;
    }

    if (te) {
        *end = '\r';
        end = memmem(c->in.data + head, c->in.len - head, "0\r\n\r\n", 5);
        if (end == NULL) {
            return 0;
        }
        body = end + 5 - (c->in.data + head);

    } else {
        body = cl ? strtoul(cl + 17, NULL, 10) : 0;
        if (c->in.len - head < body) {
            *end = '\r';
            return 0;
        }
    }

    buf_drop(&c->in, head + body);

    now = now_ms();
    c->streaming = 1;
    c->sent = 0;
    c->due = now + period;
    b = &buckets[c->due % period];
    c->prev = NULL;
    c->next = *b;
    if (*b) {
        (*b)->prev = c;
    }
    *b = c;

    return send_out(c, resp, sizeof(resp) - 1);
}


static int
upstream(int argc, char **argv)
{
    int                 lfd, n, i, one = 1;
    long                rate;
    int64_t             now, tick, t;
    conn_t             *c, *next;
    struct sockaddr_in  sa;
    struct epoll_event  ev, evs[512];

    if (argc != 5) {
        fprintf(stderr, "usage: slow upstream PORT TOKENS RATE\n");
        return 2;
    }

    default_tokens = atol(argv[3]);
    rate = atol(argv[4]);
    period = rate > 0 && rate <= 1000 ? 1000 / rate : 50;
    buckets = calloc(period, sizeof(conn_t *));

    snprintf(token_chunk, sizeof(token_chunk),
             EVENT_HEAD "{\"index\":0,\"delta\":{\"content\":\" token\"},"
             "\"finish_reason\":null}]}\n\n");

    nofile(65536);
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) {
        die("socket");
    }
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(atoi(argv[2]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
        die("bind");
    }
    if (listen(lfd, 4096) < 0) {
        die("listen");
    }
    nonblock(lfd);

    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);

    tick = now_ms();

    for ( ;; ) {
        n = epoll_wait(ep, evs, 512, 1);
        if (n < 0 && errno != EINTR) {
            die("epoll_wait");
        }

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;

            if (c == NULL) {
                for ( ;; ) {
                    int fd = accept(lfd, NULL, NULL);
                    if (fd < 0) {
                        break;
                    }
                    nonblock(fd);
                    c = calloc(1, sizeof(conn_t));
                    c->fd = fd;
                    ev.events = EPOLLIN;
                    ev.data.ptr = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }

            if (evs[i].events & EPOLLOUT) {
                if (flush_out(c) < 0) {
                    conn_close(c);
                    continue;
                }
            }

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                char     rb[16384];
                ssize_t  r = read(c->fd, rb, sizeof(rb));

                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    conn_close(c);
                    continue;
                }
                if (r > 0) {
                    buf_add(&c->in, rb, r);
                    if (start_requests(c) < 0) {
                        conn_close(c);
                    }
                }
            }
        }

        /* every millisecond since the last tick: its bucket's tokens */
        now = now_ms();
        if (now - tick > period) {
            tick = now - period;
        }

        for (t = tick + 1; t <= now; t++) {
            for (c = buckets[t % period]; c; c = next) {
                next = c->next;

                while (c->streaming && c->due <= now) {
                    if (++c->sent < c->tokens) {
                        c->due += period;
                        if (chunk(c, token_chunk, "") < 0) {
                            conn_close(c);
                            c = NULL;
                            break;
                        }
                    } else if (finish(c) < 0) {
                        conn_close(c);
                        c = NULL;
                        break;
                    }
                }
            }
        }

        tick = now;
    }

    return 0;
}


/* --- the client --------------------------------------------------------- */

enum { C_IDLE, C_CONNECTING, C_READING, C_DONE };

typedef struct {
    int       fd;
    int       state;
    int       status;
    int       done_seen;
    int       ended;          /* the chunked body's last chunk */
    int       cut;
    long      tokens;
    size_t    wrote;
    char      tail[16];       /* the stream's last bytes */
    size_t    tail_len;
    int64_t   t_start, t_first, t_end;
    buf_t     head;           /* the status line and headers */
} stream_t;


static int
cmp64(const void *a, const void *b)
{
    int64_t  x = *(const int64_t *) a, y = *(const int64_t *) b;

    return x < y ? -1 : x > y;
}


static char *
slurp(const char *path, size_t *len)
{
    FILE   *f = fopen(path, "rb");
    char   *p;
    long    n;

    if (f == NULL) {
        die(path);
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc(n + 1);
    if (fread(p, 1, n, f) != (size_t) n) {
        die(path);
    }
    p[n] = '\0';
    fclose(f);
    *len = n;
    return p;
}


/* the stream's bytes: token events counted, [DONE] and the end found */
static void
scan(stream_t *s, const char *p, size_t n)
{
    char    joined[16 + 16384];
    size_t  jl, i;

    /* a pattern cut between two reads is found in the tail joined */
    memcpy(joined, s->tail, s->tail_len);
    memcpy(joined + s->tail_len, p, n);
    jl = s->tail_len + n;

    for (i = 0; i + 6 <= jl; i++) {
        if (joined[i] == '"' && i + 7 <= jl
            && memcmp(joined + i, "\"delta\"", 7) == 0 && i + 7 > s->tail_len)
        {
            s->tokens++;
        }
        if (joined[i] == '[' && i + 6 <= jl
            && memcmp(joined + i, "[DONE]", 6) == 0 && i + 6 > s->tail_len)
        {
            s->done_seen = 1;
        }
    }

    if (s->done_seen && jl >= 7
        && memcmp(joined + jl - 7, "\r\n0\r\n\r\n", 7) == 0)
    {
        s->ended = 1;
    }

    s->tail_len = jl < 15 ? jl : 15;
    memcpy(s->tail, joined + jl - s->tail_len, s->tail_len);
}


static int
client(int argc, char **argv)
{
    int                  port, nstreams, opened, active, n, i, k;
    long                 want_tokens;
    int64_t              ramp, timeout, start, now, last_open, *dur, *ttfb;
    size_t               body_len, keys_len, nkeys, nd, nf;
    char                *body, *keys, **key, *line, *save;
    stream_t            *st, *s;
    struct sockaddr_in   sa;
    struct epoll_event   ev, evs[512];
    long                 ok = 0, non200 = 0, cut = 0, short_ = 0,
                         connect_failed = 0, timed_out = 0;

    if (argc != 9) {
        fprintf(stderr, "usage: slow client PORT STREAMS RAMP_MS TIMEOUT_S "
                "TOKENS KEYFILE BODYFILE\n");
        return 2;
    }

    port = atoi(argv[2]);
    nstreams = atoi(argv[3]);
    ramp = atol(argv[4]);
    timeout = atol(argv[5]) * 1000;
    want_tokens = atol(argv[6]);

    nkeys = 0;
    key = NULL;
    if (strcmp(argv[7], "-") != 0) {
        keys = slurp(argv[7], &keys_len);
        key = calloc(keys_len / 8 + 2, sizeof(char *));
        for (line = strtok_r(keys, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save))
        {
            key[nkeys++] = line;
        }
    }
    body = slurp(argv[8], &body_len);

    nofile(nstreams + 256);
    signal(SIGPIPE, SIG_IGN);

    st = calloc(nstreams, sizeof(stream_t));
    dur = calloc(nstreams, sizeof(int64_t));
    ttfb = calloc(nstreams, sizeof(int64_t));
    ep = epoll_create1(0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    start = now_ms();
    last_open = start;
    opened = 0;
    active = 0;

    for ( ;; ) {
        now = now_ms();

        /* open what the ramp says is due */
        while (opened < nstreams
               && (nstreams == 1 || now - start
                   >= ramp * opened / (nstreams - 1 ? nstreams - 1 : 1)))
        {
            s = &st[opened];
            s->fd = socket(AF_INET, SOCK_STREAM, 0);
            if (s->fd < 0) {
                die("socket");
            }
            nonblock(s->fd);
            s->t_start = now;
            if (connect(s->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0
                && errno != EINPROGRESS)
            {
                close(s->fd);
                s->state = C_DONE;
                connect_failed++;
            } else {
                s->state = C_CONNECTING;
                ev.events = EPOLLOUT | EPOLLIN;
                ev.data.u32 = opened;
                epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
                active++;
            }
            opened++;
            last_open = now;
        }

        if (opened == nstreams && active == 0) {
            break;
        }

        if (opened == nstreams && now - last_open > timeout) {
            timed_out = active;
            break;
        }

        n = epoll_wait(ep, evs, 512, 5);
        if (n < 0 && errno != EINTR) {
            die("epoll_wait");
        }

        for (i = 0; i < n; i++) {
            k = evs[i].data.u32;
            s = &st[k];

            if (s->state == C_CONNECTING
                && (evs[i].events & (EPOLLERR | EPOLLHUP)))
            {
                connect_failed++;
                s->cut = -1;
                goto closed;
            }

            if (s->state == C_CONNECTING && (evs[i].events & EPOLLOUT)) {
                char     req[4096];
                int      rl;
                ssize_t  w;

                rl = snprintf(req, sizeof(req),
                              "POST /v1/chat/completions HTTP/1.1\r\n"
                              "Host: bench\r\nContent-Type: application/json\r\n"
                              "x-bench-tokens: %ld\r\n%s%s%s"
                              "Content-Length: %zu\r\n\r\n", want_tokens,
                              nkeys ? "Authorization: Bearer " : "",
                              nkeys ? key[k % nkeys] : "",
                              nkeys ? "\r\n" : "", body_len);

                /* small enough for a fresh socket's buffer: all at once */
                w = write(s->fd, req, rl);
                if (w == rl) {
                    w = write(s->fd, body, body_len);
                }
                if (w < 0 || (w != rl && (size_t) w != body_len)) {
                    s->cut = 1;
                    goto closed;
                }

                s->state = C_READING;
                ev.events = EPOLLIN;
                ev.data.u32 = k;
                epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                continue;
            }

            if (s->state != C_READING) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                    connect_failed++;
                    s->cut = -1;
                    goto closed;
                }
                continue;
            }

            for ( ;; ) {
                char     rb[16384];
                ssize_t  r = read(s->fd, rb, sizeof(rb));

                if (r < 0 && errno == EAGAIN) {
                    break;
                }

                if (r <= 0) {
                    if (r < 0 && errno == EINTR) {
                        continue;
                    }
                    s->cut = 1;
                    goto closed;
                }

                if (s->t_first == 0) {
                    s->t_first = now_ms();
                }

                if (s->status == 0) {
                    char  *e;

                    buf_add(&s->head, rb, r);
                    buf_add(&s->head, "", 1);
                    s->head.len--;
                    e = strstr(s->head.data, "\r\n\r\n");
                    if (e == NULL) {
                        continue;
                    }
                    s->status = atoi(s->head.data + 9);
                    if (s->status != 200) {
                        goto closed;
                    }
                    e += 4;
                    scan(s, e, s->head.data + s->head.len - e);

                } else {
                    scan(s, rb, r);
                }

                if (s->ended) {
                    goto closed;
                }
            }

            continue;

        closed:
            s->t_end = now_ms();
            s->state = C_DONE;
            epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
            close(s->fd);
            active--;
        }
    }

    nd = 0;
    nf = 0;
    for (i = 0; i < nstreams; i++) {
        s = &st[i];
        if (s->cut < 0) {
            continue;                 /* counted as connect_failed */
        }
        if (s->state != C_DONE) {
            cut++;                    /* still open at the time limit */
            continue;
        }
        if (s->status == 0 && s->cut) {
            cut++;
        } else if (s->status != 200) {
            if (s->status) {
                non200++;
            }
        } else if (!s->ended) {
            cut++;
        } else if (s->tokens != want_tokens) {
            short_++;
        } else {
            ok++;
            dur[nd++] = s->t_end - s->t_start;
            ttfb[nf++] = s->t_first - s->t_start;
        }
    }

    qsort(dur, nd, sizeof(int64_t), cmp64);
    qsort(ttfb, nf, sizeof(int64_t), cmp64);

    printf("slow_client streams=%d ok=%ld non200=%ld cut=%ld short=%ld "
           "connect_failed=%ld timed_out=%ld dur_p50_ms=%lld dur_max_ms=%lld "
           "ttfb_p50_ms=%lld ttfb_max_ms=%lld elapsed_ms=%lld\n",
           nstreams, ok, non200, cut, short_, connect_failed, timed_out,
           (long long) (nd ? dur[nd / 2] : 0),
           (long long) (nd ? dur[nd - 1] : 0),
           (long long) (nf ? ttfb[nf / 2] : 0),
           (long long) (nf ? ttfb[nf - 1] : 0),
           (long long) (now_ms() - start));

    return 0;
}


int
main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "upstream") == 0) {
        return upstream(argc, argv);
    }

    if (argc >= 2 && strcmp(argv[1], "client") == 0) {
        return client(argc, argv);
    }

    fprintf(stderr, "usage: slow upstream PORT TOKENS RATE\n"
            "       slow client PORT STREAMS RAMP_MS TIMEOUT_S TOKENS "
            "KEYFILE BODYFILE\n");
    return 2;
}
