#!/usr/bin/perl
# Outages of Redis as error.log tells them: one "unavailable" line and one
# "is back" line an outage, however many workers reconnect how often (a
# frozen Redis accepts connections and answers nothing); workers started
# while the outage flag is set (reload) still clear it; and open mode:
# served unmetered while Redis is away, metered again once it is back.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use Nebula::Test;

my $chat = '/v1/chat/completions';
my $hello = { model => 'gemma3:1b', messages => [{ role => 'user', content => 'hi' }] };

sub count {
    my ($t, $re) = @_;
    return scalar(() = $t->error_log =~ /$re/g);
}
my $down = qr/nebula: redis at "[^"]+" unavailable/;
my $back = qr/nebula: redis at "[^"]+" is back/;

sub eventually {
    my ($try) = @_;
    my $deadline = time + 10 * $Nebula::Test::TIME_SCALE;
    while (time < $deadline) {
        return 1 if $try->();
        sleep 0.05;
    }
    return 0;
}

# (under valgrind, NEBULA_TIME_SCALE: a worker's loop that runs longer than
# the timeout times out the commands it queued before they were written)
my $timeout = 300 * $Nebula::Test::TIME_SCALE;

sub usage {
    my ($t, $k) = @_;
    $t->wait_settled($k->{key});
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

# ------------------------------------------------ frozen for four seconds
{
    my $t = Nebula::Test->new(
        patch => sub { $_[0] =~ s/nebula_redis_timeout\s+1s;/nebula_redis_timeout  ${timeout}ms;/r });
    $t->allow_error($down);
    my $k = $t->new_key(plan => 'developer');
    my $auth = { Authorization => "Bearer $k->{key}" };
    is $t->post($chat, $hello, headers => $auth)->{status}, 200, 'served with Redis up';
    my $u0 = usage($t, $k);

    # every reconnection of every worker reaches a Redis that accepts and
    # never answers: each is an attempt of the same outage
    $t->redis->freeze;
    my $end = time + 4 * $Nebula::Test::TIME_SCALE;
    my %st;
    while (time < $end) {
        $st{ $t->post($chat, $hello, headers => $auth, timeout => 5)->{status} }++;
        sleep 0.1;
    }
    ok $st{503} && !$st{200}, 'frozen: refused (closed mode), ' . join(' ', %st);
    $t->redis->thaw;

    ok eventually(sub { $t->post($chat, $hello, headers => $auth)->{status} == 200 }),
        'thawed: served again';
    # the other worker may still wait out its backoff: ask until both do
    ok eventually(sub {
        my $u = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
        # (admissions Redis read from dropped connections when thawed
        # stay reserved until they expire: not checked here)
        $u && $u->{requests} > $u0->{requests};
    }), 'and metered again';
    sleep 0.5;      # every worker has had its good reply
    is count($t, $down), 1, 'one "unavailable" line for the whole outage';
    is count($t, $back), 1, 'one "is back" line';
    $t->finish;
}

# ------------------- workers that start while the outage flag is still set
{
    my $t = Nebula::Test->new(
        patch => sub { $_[0] =~ s/nebula_redis_timeout\s+1s;/nebula_redis_timeout  ${timeout}ms;/r });
    $t->allow_error($down);
    my $master = $t->{nginx};
    my @old = grep { /^\d+$/ } map { s/\s//gr } `ps -o pid= --ppid $master`;
    ok @old >= 1, scalar(@old) . ' workers';

    $t->redis->stop;
    is $t->post($chat, $hello)->{status}, 503, 'Redis stopped: 503';
    is count($t, $down), 1, 'the outage is logged';

    # the old workers never see Redis back; new ones start with it up
    kill 'STOP', @old;
    $t->redis->launch;
    $t->reload;
    my $k;
    ok eventually(sub {
        my $r = $t->admin('POST', '/admin/keys', { plan => 'developer' });
        $k = $r->{json} if $r->{status} == 201;
        $k && $t->post($chat, $hello, headers => { Authorization => "Bearer $k->{key}" })
                ->{status} == 200;
    }), 'the new workers are served by Redis';
    ok eventually(sub { count($t, $back) == 1 }), 'and a new worker says it is back';
    kill 'CONT', @old;

    ok eventually(sub { !grep { kill 0, $_ } @old }), 'the old workers are gone';
    sleep 0.3;
    $t->redis->stop;
    is $t->post($chat, $hello, headers => { Authorization => "Bearer $k->{key}" })->{status},
        503, 'a second outage';
    ok eventually(sub { count($t, $down) == 2 }), 'is logged too';
    $t->redis->launch;
    ok eventually(sub { count($t, $back) == 2 }), 'and its end';
    $t->finish;
}

# -------------------------------------------------------------- open mode
{
    my $t = Nebula::Test->new(
        patch => sub { $_[0] =~ s/nebula_redis_failure\s+closed;/nebula_redis_failure  open;/r });
    $t->allow_error($down);
    my $k = $t->new_key(plan => 'free', name => 'open-mode');
    my $auth = { Authorization => "Bearer $k->{key}" };
    # the Redis restarted below is empty: keep the key to put it back
    my %rec = split /\n/, $t->redis->cli('HGETALL', "nb:{$k->{id}}:key");
    ok $rec{digest}, 'the key\'s record';

    my $r = $t->post($chat, $hello, headers => $auth);
    is $r->{status}, 200, 'Redis up: served';
    ok exists $r->{headers}{'x-ratelimit-limit-input-tokens'}, 'metered';
    my $u0 = usage($t, $k);
    is $u0->{requests}, 1, 'one request recorded';

    $t->redis->stop;
    for (1 .. 3) {
        $r = $t->post($chat, $hello, headers => $auth);
        is $r->{status}, 200, "Redis stopped, open mode: served ($_)";
        ok !exists $r->{headers}{'x-ratelimit-limit-input-tokens'}, 'unmetered';
    }
    is count($t, $down), 1, 'error.log says so once';

    $t->redis->launch;
    $t->redis->cli('HSET', "nb:{$k->{id}}:key", %rec);
    $t->redis->cli('SADD', 'nb:keys', $k->{id});
    ok eventually(sub {
        $t->post($chat, $hello, headers => $auth)->{headers}{'x-ratelimit-limit-input-tokens'}
    }), 'Redis back: the gateway reconnects by itself and meters again';
    ok eventually(sub { count($t, $back) == 1 }), 'and says it is back';
    my $u1 = usage($t, $k);
    ok $u1->{requests} >= 1, "requests recorded again ($u1->{requests})";
    $r = $t->post($chat, $hello, headers => $auth);
    is $r->{status}, 200, 'served';
    my $u2 = usage($t, $k);
    is $u2->{requests}, $u1->{requests} + 1, 'usage grows again';
    is $u2->{output_tokens} - $u1->{output_tokens}, $r->{json}{usage}{completion_tokens},
        'by exactly what was reported';
    $t->finish;
}

done_testing;
