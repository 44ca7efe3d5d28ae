/*
 * Nebula: the nebula_redis directive, in its three forms:
 *
 *   nebula_redis 127.0.0.1:6379 | unix:/path [user=] [password=] [db=N];
 *   nebula_redis cluster HOST:PORT ... [user=] [password=];
 *   nebula_redis sentinel=NAME HOST:PORT ... [user=] [password=] [db=N]
 *                [sentinel_password=];
 *
 * and nebula_redis_wait.  Every address is resolved now: a worker
 * connecting later never waits on a resolver.  A cluster's nodes are its
 * seeds: the module learns the others from them (CLUSTER SLOTS), and from
 * MOVED and ASK replies, which carry addresses, never names.
 */

#include "ngx_nebula.h"
#include "ngx_nebula_redis.h"


static ngx_int_t
ngx_nebula_redis_conf_addr(ngx_conf_t *cf, ngx_str_t *value,
    ngx_int_t default_port, u_char *ip, ngx_int_t *port)
{
    size_t      len;
    ngx_url_t   u;

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = *value;
    u.default_port = (in_port_t) default_port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\"%s%s", value,
                           u.err ? ": " : "", u.err ? u.err : "");
        return NGX_ERROR;
    }

    /* the first address, as text: hiredis takes no sockaddr */
    len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen, ip,
                        NGX_SOCKADDR_STRLEN, 0);
    ip[len] = '\0';
    *port = u.port;

    return NGX_OK;
}


char *
ngx_nebula_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    size_t                    len;
    ngx_str_t                *value;
    ngx_uint_t                i, first;
    ngx_nebula_redis_addr_t  *a;
    ngx_nebula_redis_conf_t  *rc;

    if (nmcf->redis) {
        return "is duplicate";
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_nebula_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;
    rc->name = value[1];
    first = 2;

    if (value[1].len == 7 && ngx_strncmp(value[1].data, "cluster", 7) == 0) {
        rc->mode = NGX_NEBULA_REDIS_CLUSTER;

    } else if (value[1].len > 9
               && ngx_strncmp(value[1].data, "sentinel=", 9) == 0)
    {
        rc->mode = NGX_NEBULA_REDIS_SENTINEL;
        rc->master.data = value[1].data + 9;
        rc->master.len = value[1].len - 9;

    } else if (value[1].len > 5
               && ngx_strncmp(value[1].data, "unix:", 5) == 0)
    {
        len = value[1].len - 5;
        rc->unix_path = ngx_pnalloc(cf->pool, len + 1);
        if (rc->unix_path == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(rc->unix_path, value[1].data + 5, len);
        rc->unix_path[len] = '\0';

    } else {
        if (ngx_nebula_redis_conf_addr(cf, &value[1], 6379, rc->ip, &rc->port)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (rc->mode != NGX_NEBULA_REDIS_SINGLE) {
        rc->seeds = ngx_array_create(cf->pool, 4,
                                     sizeof(ngx_nebula_redis_addr_t));
        if (rc->seeds == NULL) {
            return NGX_CONF_ERROR;
        }

        /* the addresses come first, the parameters after them */
        for (i = 2; i < cf->args->nelts; i++) {
            if (ngx_strlchr(value[i].data, value[i].data + value[i].len, '=')
                != NULL)
            {
                break;
            }

            a = ngx_array_push(rc->seeds);
            if (a == NULL) {
                return NGX_CONF_ERROR;
            }

            if (ngx_nebula_redis_conf_addr(cf, &value[i],
                                           rc->mode == NGX_NEBULA_REDIS_CLUSTER
                                           ? 6379 : 26379,
                                           a->ip, &a->port)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }
        }

        if (rc->seeds->nelts == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "nebula_redis %V needs the address of at "
                               "least one %s", &value[1],
                               rc->mode == NGX_NEBULA_REDIS_CLUSTER
                               ? "node of the cluster" : "sentinel");
            return NGX_CONF_ERROR;
        }

        first = i;
    }

    for (i = first; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            rc->user.data = value[i].data + 5;
            rc->user.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rc->password.data = value[i].data + 9;
            rc->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "sentinel_password=", 18) == 0
            && rc->mode == NGX_NEBULA_REDIS_SENTINEL)
        {
            rc->sentinel_password.data = value[i].data + 18;
            rc->sentinel_password.len = value[i].len - 18;
            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            if (rc->mode == NGX_NEBULA_REDIS_CLUSTER) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "nebula_redis cluster: a cluster has "
                                   "one database, db= cannot apply");
                return NGX_CONF_ERROR;
            }

            rc->db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (rc->db == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    if (rc->user.len && rc->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "nebula_redis: user= needs password=");
        return NGX_CONF_ERROR;
    }

    nmcf->redis = rc;

    return NGX_CONF_OK;

invalid:

    /* never echo the parameter: it may be the password */
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter %ui of nebula_redis", i - 1);
    return NGX_CONF_ERROR;
}


/*
 * nebula_redis_wait off | REPLICAS [TIMEOUT];
 *
 * An admission's reservation and a batch of settlements are answered only
 * once REPLICAS replicas have them (WAIT), so that a master's failover
 * loses none (docs/scaling.md).  TIMEOUT (100ms) bounds each WAIT.
 */
char *
ngx_nebula_redis_wait_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_nebula_main_conf_t  *nmcf = conf;

    ngx_str_t  *value;

    if (nmcf->redis_wait != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        if (cf->args->nelts > 2) {
            return "takes no timeout when off";
        }

        nmcf->redis_wait = 0;
        return NGX_CONF_OK;
    }

    nmcf->redis_wait = ngx_atoi(value[1].data, value[1].len);
    if (nmcf->redis_wait < 1 || nmcf->redis_wait > 16) {
        return "takes off, or a number of replicas from 1 to 16";
    }

    if (cf->args->nelts > 2) {
        nmcf->redis_wait_timeout = ngx_parse_time(&value[2], 0);
        if (nmcf->redis_wait_timeout == (ngx_msec_t) NGX_ERROR
            || nmcf->redis_wait_timeout == 0)
        {
            return "has an invalid timeout";
        }
    }

    return NGX_CONF_OK;
}
