#!/usr/bin/perl
# "nebula health" (location = /health in the example): the load
# balancer's probe.  200 while this worker can admit a request (Redis
# answers a PING, or nebula_redis_failure open serves without it; and a
# pool has a server the balancer may pick), 503 while it cannot; no key,
# Cache-Control: no-store, no address in the body.  Each case checks the
# answer against what a request gets at the same moment.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Nebula::Test;

my $S = $Nebula::Test::TIME_SCALE;
my $down_re = qr/nebula: redis at "[^"]+" unavailable/;
my $chat = '/v1/chat/completions';
my $local = { model => 'qwen3:latest', max_tokens => 5, messages => [{ role => 'user', content => 'hi' }] };
my $cloud = { %$local, model => 'deepseek-v3.1:671b-cloud' };

sub health {
    my ($t, %o) = @_;
    return $t->request($o{method} // 'GET', '/health', nokey => 1, %o);
}

sub eventually {
    my ($try) = @_;
    my $deadline = time + 10 * $S;
    while (time < $deadline) {
        return 1 if $try->();
        sleep 0.05;
    }
    return 0;
}

# the whole shape: these keys and no others
sub shape_ok {
    my ($j, $name) = @_;
    my $ok = ref $j eq 'HASH'
             && join(',', sort keys %$j) eq 'pools,redis,status'
             && ref $j->{redis} eq 'HASH'
             && join(',', sort keys %{ $j->{redis} }) eq 'round_trip_ms,state'
             && ref $j->{pools} eq 'ARRAY'
             && !grep { ref $_ ne 'HASH' || join(',', sort keys %$_) ne 'down,name,up' } @{ $j->{pools} };
    ok $ok, $name or diag explain $j;
}

# ------------------------------------------------ closed mode, one worker
# (one worker: the Redis connection a probe reports is the one requests use)
{
    my $t = Nebula::Test->new(workers => 1);
    $t->allow_error($down_re);

    my $r = health($t);
    is $r->{status}, 200, 'GET /health, no key: 200';
    like $r->{headers}{'content-type'} // '', qr{^application/json}, 'JSON';
    is $r->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store';
    shape_ok $r->{json}, 'the shape: status, redis {state, round_trip_ms}, pools [{name, up, down}]';
    is $r->{json}{status}, 'ok', 'status ok';
    is $r->{json}{redis}{state}, 'up', 'Redis up';
    like $r->{json}{redis}{round_trip_ms}, qr/^\d+$/, 'the PING\'s round trip in milliseconds';
    is_deeply $r->{json}{pools}, [{ name => 'ollama_local', up => 1, down => 0 },
                                  { name => 'ollama_cloud', up => 1, down => 0 }],
        'each pool: its servers the balancer may pick and may not';

    my $body = $r->{body};
    for my $port ($t->redis->port, $t->sim('local')->port, $t->sim('cloud')->port) {
        unlike $body, qr/\Q$port\E/, "no port of a backend ($port) in the body";
    }
    unlike $body, qr/127\.0\.0\.1|address|localhost/, 'no address in the body';
    unlike $body, qr/\Q@{[ $t->admin_token ]}\E|nb-|sim-cloud-key/, 'no secret in the body';

    my $h = health($t, method => 'HEAD');
    is $h->{status}, 200, 'HEAD: 200';
    is $h->{body}, '', 'HEAD: no body';
    is $h->{headers}{'cache-control'}, 'no-store', 'HEAD: Cache-Control: no-store';

    Nebula::Test::is_error(health($t, method => 'POST', body => {}), 405,
                           'invalid_request_error', 'method_not_allowed', 'POST: 405');
    Nebula::Test::is_error(health($t, method => 'DELETE'), 405,
                           'invalid_request_error', 'method_not_allowed', 'DELETE: 405');
    is health($t, headers => { Authorization => 'Bearer nb-not-a-key' })->{status}, 200,
        'a bad key changes nothing: the probe reads none';

    # Redis stopped: closed mode refuses requests, and the probe says so
    is $t->post($chat, $local)->{status}, 200, 'a request is served';
    $t->redis->stop;
    ok eventually(sub { health($t)->{status} == 503 }), 'Redis stopped: 503';
    my $t0 = time;
    $r = health($t);
    my $took = time - $t0;
    is $r->{status}, 503, 'still 503';
    ok $took < 0.5 * $S, sprintf('answered at once, not waited for (%.3f s)', $took);
    shape_ok $r->{json}, 'the same shape';
    is $r->{json}{status}, 'unavailable', 'status unavailable';
    isnt $r->{json}{redis}{state}, 'up', "Redis not up: $r->{json}{redis}{state}";
    ok !defined $r->{json}{redis}{round_trip_ms}, 'no round trip';
    is $r->{headers}{'cache-control'}, 'no-store', 'the 503 is not cached either';
    is_deeply [map { $_->{up} } @{ $r->{json}{pools} }], [1, 1], 'the pools are fine';
    Nebula::Test::is_error($t->post($chat, $local), 503, 'api_error', 'quota_store_unavailable',
                           'and a request is refused as the probe said');
    is health($t, method => 'HEAD')->{status}, 503, 'HEAD: 503 too';

    $t->redis->launch;
    ok eventually(sub { health($t)->{status} == 200 }), 'Redis back: 200 again';
    $r = health($t);
    is_deeply [$r->{json}{status}, $r->{json}{redis}{state}], ['ok', 'up'], 'ok, Redis up';
    # (a Redis started afresh: the keys went with the old one)
    my $k = $t->new_key(plan => 'enterprise');
    is $t->post($chat, $local, headers => { Authorization => "Bearer $k->{key}" })->{status}, 200,
        'and a request is served';

    # frozen: the connection stands, the PING is never answered; the
    # command timeout (nebula_redis_timeout 1s) ends the wait
    $t->redis->freeze;
    $t0 = time;
    $r = health($t, timeout => 10);
    $took = time - $t0;
    is $r->{status}, 503, 'Redis frozen: 503';
    ok $took >= 0.5 && $took < 2.5 * $S, sprintf('within the Redis timeout, no hang (%.2f s)', $took);
    is $r->{json}{status}, 'unavailable', 'status unavailable';
    $t0 = time;
    $r = health($t, timeout => 10);
    $took = time - $t0;
    is $r->{status}, 503, 'the next probe: 503';
    ok $took < 1.5 * $S, sprintf('and no longer than the first (%.2f s)', $took);
    $t->redis->thaw;
    ok eventually(sub { health($t)->{status} == 200 }), 'thawed: 200 again';

    unlike $t->error_log, qr/\[(alert|crit)\]/, 'no [alert] or [crit] in error.log';
    $t->finish;
}

# ---------------------------------------------- open mode: served unmetered
{
    my $t = Nebula::Test->new(workers => 1, patch => sub {
        $_[0] =~ s/nebula_redis_failure\s+closed;/nebula_redis_failure  open;/r });
    $t->allow_error($down_re);

    is health($t)->{json}{status}, 'ok', 'open mode, Redis up: ok';
    $t->redis->stop;
    ok eventually(sub { (health($t)->{json}{redis}{state} // 'up') ne 'up' }), 'Redis stopped';
    my $r = health($t);
    is $r->{status}, 200, 'open mode, Redis down: 200';
    is $r->{json}{status}, 'degraded', 'status degraded: requests are served unmetered';
    ok !defined $r->{json}{redis}{round_trip_ms}, 'no round trip';
    is $t->post($chat, $local)->{status}, 200, 'and a request is served, as the probe said';

    $t->redis->launch;
    ok eventually(sub { (health($t)->{json}{status} // '') eq 'ok' }), 'Redis back: ok';

    unlike $t->error_log, qr/\[(alert|crit)\]/, 'no [alert] or [crit] in error.log';
    $t->finish;
}

# ------------------------------------------- the pools' servers fail, all
# Two servers a pool (the second where nothing listens), max_fails=1: a
# server that fails is out for fail_timeout (10 s), as nginx's balancer
# has it; one pool out leaves a 200, both out is 503
{
    my $t = Nebula::Test->new(workers => 1, patch => sub {
        my $c = $_[0];
        $c =~ s/(upstream ollama_local \{\n\s*server [^\n]*?)max_fails=0;/$1max_fails=1;\n        server 127.0.0.1:1 max_fails=1;/
            or die "no ollama_local server";
        $c =~ s/(upstream ollama_cloud \{\n\s*server [^\n]*\n)/$1        server 127.0.0.1:1;\n/ or die "no ollama_cloud server";
        $c;
    });
    $t->allow_error(qr/connect\(\) failed \(111: Connection refused\) while connecting to upstream/,
                    qr/no live upstreams while connecting to upstream/);

    my $r = health($t);
    is $r->{status}, 200, 'two servers a pool: 200';
    is_deeply $r->{json}{pools}, [{ name => 'ollama_local', up => 2, down => 0 },
                                  { name => 'ollama_cloud', up => 2, down => 0 }],
        'every server may be picked before any request';

    $t->sim('cloud')->stop;
    is $t->post($chat, $cloud)->{status}, 502, 'the cloud pool\'s servers both fail: 502';
    $r = health($t);
    is $r->{status}, 200, 'one pool out: still 200 (the other serves)';
    is $r->{json}{status}, 'degraded', 'status degraded';
    is_deeply $r->{json}{pools}[1], { name => 'ollama_cloud', up => 0, down => 2 },
        'the cloud pool: both servers out for fail_timeout';

    $t->sim('local')->stop;
    is $t->post($chat, $local)->{status}, 502, 'the local pool\'s servers both fail: 502';
    $r = health($t);
    is $r->{status}, 503, 'no pool has a server to pick: 503';
    is $r->{json}{status}, 'unavailable', 'status unavailable';
    is $r->{json}{redis}{state}, 'up', 'though Redis is up';
    is_deeply [map { [$_->{up}, $_->{down}] } @{ $r->{json}{pools} }], [[0, 2], [0, 2]],
        'every server out';
    is health($t, method => 'HEAD')->{status}, 503, 'HEAD: 503';

    unlike $t->error_log, qr/\[(alert|crit)\]/, 'no [alert] or [crit] in error.log';
    $t->finish;
}

# ------------------------------------------------------------- no Redis
# keys not checked, nothing metered: Redis does not count
{
    my $t = Nebula::Test->new(no_nginx => 1);
    $t->start_nginx(workers => 1, patch => sub {
        $_[0] =~ s/^\s*nebula_redis\s+\S+;\n//mr });
    my $r = health($t);
    is $r->{status}, 200, 'no nebula_redis: 200';
    is_deeply $r->{json}{redis}, { state => 'none', round_trip_ms => undef }, 'Redis: none';
    is $r->{json}{status}, 'ok', 'status ok';
    is $t->post($chat, $local, nokey => 1)->{status}, 200, 'and a request without a key is served';
    $t->finish;
}

done_testing();
