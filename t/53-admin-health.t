#!/usr/bin/perl
# GET /admin/health (issue 15: what the operator's dashboard shows of the
# service): Redis, this worker's connection and a PING's round trip; each
# pool's servers as nginx's balancer sees them (its passive check: a
# server that failed carries its failures until a request to it succeeds).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

# one worker, so that the view the answer gives is the one the requests
# made; the cloud pool gets a second server, a port nothing listens on
my $t = Nebula::Test->new(workers => 1, patch => sub {
    $_[0] =~ s/(upstream ollama_cloud \{\n\s*server [^\n]*\n)/$1        server 127.0.0.1:1;\n/r;
});

Nebula::Test::is_error($t->get('/admin/health', nokey => 1), 401, 'invalid_request_error', 'invalid_api_key',
                       'no admin token: 401');
Nebula::Test::is_error($t->get('/admin/health'), 401, 'invalid_request_error', 'invalid_api_key',
                       'an API key is no admin token: 401');
Nebula::Test::is_error($t->admin('POST', '/admin/health', {}), 405, 'invalid_request_error', 'method_not_allowed',
                       'POST: 405');

my $h = $t->admin('GET', '/admin/health');
is $h->{status}, 200, 'GET /admin/health: 200';
my $d = $h->{json};
is $d->{object}, 'health', 'object health';
is $d->{redis}{state}, 'up', 'Redis up';
like $d->{redis}{round_trip_ms}, qr/^\d+$/, 'its round trip in milliseconds';
is $d->{redis}{address}, '127.0.0.1:' . $t->redis->port, 'its address as nebula_redis names it';
is $d->{redis}{failure_mode}, 'closed', 'the failure mode: closed';
is_deeply [map { $_->{name} } @{ $d->{pools} }], ['ollama_local', 'ollama_cloud'], 'the two pools';
my ($local, $cloud) = @{ $d->{pools} };
is_deeply [map { [$_->{address}, $_->{state}] } @{ $local->{servers} }],
    [['127.0.0.1:' . $t->sim('local')->port, 'up']], 'the local pool: its server, up';
is $cloud->{scheme}, 'http', 'the scheme';
is_deeply [map { $_->{state} } @{ $cloud->{servers} }], ['up', 'up'], 'the cloud pool: two servers, up before any request';
is $d->{status}, 'ok', 'status ok';

# requests to the cloud pool: round robin meets the dead server, and
# proxy_next_upstream carries each request to the live one
for (1 .. 2) {
    my $r = $t->post('/v1/chat/completions', { model => 'deepseek-v3.1:671b-cloud', max_tokens => 5,
                                               messages => [{ role => 'user', content => 'hi' }] });
    is $r->{status}, 200, 'a cloud request is served by the live server';
}
$t->allow_error(qr/connect\(\) failed \(111: Connection refused\) while connecting to upstream/);
$d = $t->admin('GET', '/admin/health')->{json};
my ($dead) = grep { $_->{address} eq '127.0.0.1:1' } @{ $d->{pools}[1]{servers} };
is $dead->{state}, 'unavailable', 'the dead server (max_fails=1, nginx\'s default): unavailable for fail_timeout';
ok $dead->{fails} >= 1, 'with its failures counted';
like $dead->{last_failure}, qr/^\d{10}$/, 'and when the last was';
is $d->{pools}[1]{servers_up}, 1, 'one of two servers up';
is $d->{status}, 'degraded', 'status degraded';

# connected, but Redis refuses the PING (an ACL takes the command away
# from the connection's user): "error", not "up"
is $t->redis->cli('ACL', 'SETUSER', 'default', '-ping'), 'OK', 'PING taken away from the default user';
$h = $t->admin('GET', '/admin/health');
is_deeply [$h->{json}{redis}{state}, $h->{json}{redis}{round_trip_ms}, $h->{json}{status}],
    ['error', undef, 'unavailable'], 'Redis answers the PING with an error: state error, status unavailable';
is $t->redis->cli('ACL', 'SETUSER', 'default', '+ping'), 'OK', 'and given back';
is $t->admin('GET', '/admin/health')->{json}{redis}{state}, 'up', 'up again';

# Redis gone: said at once, not waited for
$t->allow_error(qr/nebula: redis at "[^"]+" unavailable/);
$t->redis->stop;
$t->post('/v1/chat/completions', { model => 'qwen3:latest', messages => [{ role => 'user', content => 'hi' }] });
$h = $t->admin('GET', '/admin/health');
is $h->{status}, 200, 'Redis down: still 200 (the body says)';
isnt $h->{json}{redis}{state}, 'up', 'Redis not up: ' . ($h->{json}{redis}{state} // 'none');
ok !defined $h->{json}{redis}{round_trip_ms}, 'no round trip';
is $h->{json}{status}, 'unavailable', 'status unavailable';

$t->done;
