#!/usr/bin/perl
# Keys made before accounts keep working (issue 14, item 7), each as an
# account of its own, with the same usage and limits: tested on a Redis
# that the code of before accounts (54affec) filled.  t/data/legacy-v1.jsonl
# is that Redis, key by key with its time to live, and t/data/legacy-v1.json
# what that code answered about each key (t/data/make-legacy-fixture made
# both; never again with newer code).  Everything runs on the test clock, at
# the time the fixture was made, whenever the test runs.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Nebula::Test;

my $dir = "$FindBin::Bin/data";
my $fx = do { local $/; open my $f, '<', "$dir/legacy-v1.json" or die $!; JSON::PP->new->decode(<$f>) };
my $T = $fx->{time};
my %k = map { $_->{name} => $_ } @{ $fx->{keys} };

my $t = Nebula::Test->new(
    lease => 1,
    patch => sub { $_[0] =~ s/(nebula_redis_failure\s+closed;)/$1\n    nebula_test_clock     on;/r },
    patch_catalog => sub {
        $_[0] . "\nnebula_model  acme-ft:7b  pool=ollama_local upstream_model=acme-ft:7b-q4"
              . " context=8192 input_price=1.00 output_price=2.00 private;\n";
    },
);
my $redis = $t->redis;

sub downgrade {
    for my $x (ref $_[0] eq 'HASH' ? values %{ $_[0] } : ref $_[0] eq 'ARRAY' ? @{ $_[0] } : ()) {
        if (ref $x) { downgrade($x) } else { utf8::downgrade($x) }
    }
}

# --- the old Redis, as it was
my $n = 0;
open my $f, '<', "$dir/legacy-v1.jsonl" or die $!;
while (my $line = <$f>) {
    # the file's bytes, as they were in Redis: a string JSON::PP upgraded
    # would go to redis-cli in Perl's own encoding of it
    my $e = JSON::PP->new->decode($line);
    downgrade($e);
    my ($key, $v) = @{$e}{qw(key value)};
    $redis->cli('DEL', $key) unless $e->{type} eq 'set';
    if ($e->{type} eq 'hash') {
        $redis->cli('HSET', $key, %$v);
    } elsif ($e->{type} eq 'zset') {
        $redis->cli('ZADD', $key, map { ($_->[1], $_->[0]) } @$v);
    } elsif ($e->{type} eq 'set') {
        $redis->cli('SADD', $key, @$v);
    } elsif ($e->{type} eq 'list') {
        $redis->cli('RPUSH', $key, @$v);
    } else {
        $redis->cli('SET', $key, $v);
    }
    $redis->cli('PEXPIRE', $key, $e->{pttl}) if $e->{pttl} > 0;
    $n++;
}
is $n, 31, 'the old Redis loaded: 31 keys';

sub at { my ($when, $secret) = @_;
         return (headers => { 'X-Nebula-Test-Time' => $when,
                              ($secret ? (Authorization => "Bearer $secret") : ()) }) }
sub admin_get { $t->request('GET', $_[0], at($_[1] // $T, $t->admin_token)) }
sub chat {
    my ($key, $when, %o) = @_;
    return $t->post('/v1/chat/completions', { model => $o{model} // 'qwen3:latest', max_tokens => 20,
                                               messages => [{ role => 'user', content => 'after the upgrade' }] },
                    at($when, $key->{secret}));
}

# --- each key as the old code showed it
for my $name (qw(alice bob carol erin)) {
    my $r = $t->get('/v1/key', at($T, $k{$name}{secret}));
    is $r->{status}, 200, "$name: GET /v1/key";
    is_deeply $r->{json}, $k{$name}{v1_key}{json}, "$name: the same usage, limits and remaining as before";
    is_deeply admin_get("/admin/keys/$k{$name}{id}")->{json}, $k{$name}{admin},
        "$name: the same record for the operator";
}
is_deeply admin_get("/admin/keys/$k{dave}{id}")->{json}, $k{dave}{admin}, 'dave (revoked): the same record';
my $r = chat($k{dave}, $T + 5);
Nebula::Test::is_error($r, 401, 'invalid_request_error', 'invalid_api_key', 'dave: still revoked');
like Nebula::Test::error_message($r), qr/revoked/, 'and said so';
is $k{bob}{v1_key}{json}{data}{limits}{output_tokens}, 8000, 'bob\'s own limits (a check of the fixture)';
like $k{bob}{admin}{name}, qr/the builder/, 'bob\'s name, quotes and all';

# --- they work, and count as they did
$r = chat($k{alice}, $T + 10);
is $r->{status}, 200, 'alice: served';
is $r->{headers}{'x-ratelimit-limit-requests'}, 20, 'on the free plan, its 20 requests a minute';
my $want = $k{alice}{v1_key}{json}{data}{usage};
my $u;
for (1 .. 200 * $Nebula::Test::TIME_SCALE) {
    $u = $t->get('/v1/key', at($T + 10, $k{alice}{secret}))->{json}{data}{usage};
    last if $u->{requests} == $want->{requests} + 1;
    select undef, undef, undef, 0.05;
}
is $u->{requests}, $want->{requests} + 1, 'alice: one request more';
is $u->{input_tokens}, $want->{input_tokens} + $r->{json}{usage}{prompt_tokens}, 'her input: as the pool reported';
is $u->{output_tokens}, $want->{output_tokens} + $r->{json}{usage}{completion_tokens}, 'her output too';

$r = chat($k{bob}, $T + 11);
is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 8000, 'bob: his own output limit still';
is $r->{headers}{'x-ratelimit-limit-requests'}, 30, 'and his per-minute limit';
is chat($k{carol}, $T + 12, model => 'acme-ft:7b')->{status}, 200, 'carol: still reaches her private model';
is chat($k{alice}, $T + 12, model => 'acme-ft:7b')->{status}, 404, 'nobody else does';

# erin's request in flight when the dump was made never settles (its
# worker is gone with that Redis): its reservation, and her lease's
# block, are given back when they expire, and are not counted
my $was = $k{erin}{admin}{usage};
ok $was->{reserved_output_tokens} > 0 && $was->{leased_output_tokens} > 0,
    'erin had a request in flight and a lease block';
my $late = $T + 1000;    # past nebula_reservation_timeout (15m)
$r = chat($k{erin}, $late);
is $r->{status}, 200, 'erin, after the reservation timeout: served';
for (1 .. 300 * $Nebula::Test::TIME_SCALE) {
    $u = admin_get("/admin/keys/$k{erin}{id}", $late)->{json}{usage};
    last if $u->{requests} == $was->{requests} + 1 && !$u->{reserved_output_tokens} && !$u->{leased_output_tokens};
    select undef, undef, undef, 0.05;
}
is_deeply [@{$u}{qw(reserved_input_tokens reserved_output_tokens leased_input_tokens leased_output_tokens)}],
    [0, 0, 0, 0], 'erin: the old reservation and block given back';
is $u->{requests}, $was->{requests} + 1, 'her requests: the old ones and this one';
is $u->{output_tokens}, $was->{output_tokens} + $r->{json}{usage}{completion_tokens}, 'her output: exact';
is $redis->cli('SCARD', "nb:{$k{erin}{id}}:exp:" . substr($was->{period}, 0, 7)), 2,
    'both noted as expired, should their settlement ever come';

# a generation record of before (no key in its line) is not found, not an error
my ($old) = map { JSON::PP->new->decode($_) } grep { /\Q$k{alice}{id}\E\}:g"/ } do {
    open my $g, '<', "$dir/legacy-v1.jsonl" or die $!; <$g> };
my ($gid) = $old->{value}[0] =~ /^\d+ ([0-9a-f]{32}) /;
Nebula::Test::is_error($t->get("/v1/generation?id=$gid", at($T + 20, $k{alice}{secret})), 404,
                       'invalid_request_error', 'generation_not_found', 'an old generation record: 404', 'id');

# the operator: listed as before, and each an account of its own in reports
my %listed = map { $_->{id} => 1 } @{ admin_get('/admin/keys')->{json}{data} };
ok !grep({ !$listed{$_->{id}} } values %k), 'every old key listed';
my $rows = admin_get("/admin/usage?group_by=account&period=" . substr($was->{period}, 0, 7))->{json}{data};
my ($row) = grep { $_->{account} eq $k{bob}{id} } @$rows;
is_deeply [@{$row}{qw(name plan requests)}], [$k{bob}{admin}{name}, 'developer', $k{bob}{admin}{usage}{requests} + 1],
    'bob is an account of his own in the usage report';

$t->done;
