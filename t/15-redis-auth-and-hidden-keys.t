#!/usr/bin/perl
# Redis behind a password, an ACL user, a unix socket; and the client's key
# kept from the upstream by the module itself, even when nginx.conf forgets
# to overwrite the header.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use Nebula::Test;

my $chat = '/v1/chat/completions';
my $hello = { model => 'gemma3:1b', messages => [{ role => 'user', content => 'hi' }] };

# requirepass: AUTH with the default user
{
    my $t = Nebula::Test->new(
        redis_args => ['--requirepass', 'redis-secret-1'],
        patch => sub { $_[0] =~ s/(nebula_redis\s+\S+);/$1 password=redis-secret-1;/r });
    $t->redis->{password} = 'redis-secret-1';
    my $r = $t->post($chat, $hello);
    is $r->{status}, 200, 'requirepass: served';
    ok $t->wait_settled($t->key), 'requirepass: settled';
    unlike $t->redis->cli('ACL', 'LOG'), qr/auth/i, 'no failed AUTH';
    $t->finish;
}

# an ACL user that may only touch Nebula's keys and run its scripts
{
    my $t = Nebula::Test->new(
        no_nginx => 1,
        redis_args => ['--requirepass', 'admin-pw'],
    );
    $t->redis->{password} = 'admin-pw';
    is $t->redis->cli('ACL', 'SETUSER', 'nebula', 'on', '>edge-pw', '~nb:*', '+@all'), 'OK',
        'an ACL user';
    $t->start_nginx(patch => sub { $_[0] =~ s/(nebula_redis\s+\S+);/$1 user=nebula password=edge-pw;/r });
    $t->{key} = $t->new_key(plan => 'enterprise')->{key};
    my $r = $t->post($chat, $hello);
    is $r->{status}, 200, 'ACL user: served';
    ok $t->wait_settled($t->key), 'ACL user: settled';
    $t->finish;
}

# a wrong password: refused, said in error.log, 503 to clients
{
    my $t = Nebula::Test->new(
        no_nginx => 1,
        redis_args => ['--requirepass', 'right-pw'],
    );
    $t->allow_error(qr/nebula: redis at "[^"]+" unavailable: AUTH refused/);
    $t->start_nginx(patch => sub { $_[0] =~ s/(nebula_redis\s+\S+);/$1 password=wrong-pw;/r });
    my $r = $t->post($chat, $hello, headers => { Authorization => 'Bearer nb-' . ('a' x 43) });
    Nebula::Test::is_error($r, 503, 'api_error', 'quota_store_unavailable',
                           'wrong password: 503 quota_store_unavailable');
    like $t->error_log, qr/unavailable: AUTH refused: WRONGPASS/, 'error.log names the AUTH failure';
    is scalar(() = $t->error_log =~ /\[error\]/g), 1, 'once';
    # every worker connects again and again, and each time AUTH is
    # refused after the connect: still the same outage
    sleep 3;
    is $t->post($chat, $hello, headers => { Authorization => 'Bearer nb-' . ('a' x 43) })->{status},
        503, 'still 503 a while later';
    is scalar(() = $t->error_log =~ /unavailable/g), 1, 'still one "unavailable" line after 3 s';
    is scalar(() = $t->error_log =~ /is back/g), 0, 'and never "is back"';
    $t->finish;
}

# a unix socket
{
    my $t = Nebula::Test->new(no_nginx => 1);
    my $sock = $t->dir . '/redis/redis.sock';
    $t->redis->stop;
    $t->redis->{args} = ['--unixsocket', $sock, '--unixsocketperm', '777'];
    $t->redis->launch;
    $t->start_nginx(patch => sub { $_[0] =~ s/nebula_redis\s+\S+;/nebula_redis unix:$sock;/r });
    $t->{key} = $t->new_key(plan => 'enterprise')->{key};
    is $t->post($chat, $hello)->{status}, 200, 'unix socket: served';
    ok $t->wait_settled($t->key), 'unix socket: settled';
    $t->finish;
}

# the client's key stays here even if nginx.conf would pass it
{
    my $t = Nebula::Test->new(patch_proxy => sub {
        $_[0] =~ s/^proxy_set_header\s+(Authorization|X-Api-Key)\b.*\n//mgr });
    my $r = $t->post($chat, $hello, headers => { 'x-api-key' => $t->key, 'X-Other' => 'kept' });
    is $r->{status}, 200, 'served';
    my $got = $t->sim('local')->last;
    ok !exists $got->{headers}{authorization}, 'no Authorization upstream';
    ok !exists $got->{headers}{'x-api-key'}, 'no x-api-key upstream';
    is $got->{headers}{'x-other'}, 'kept', 'other headers pass';
    unlike join(' ', %{ $got->{headers} }), qr/\Q${\ $t->key }\E/, 'the key is nowhere upstream';
    $t->finish;
}

done_testing;
