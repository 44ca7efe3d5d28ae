#!/usr/bin/perl
# Redis misbehaving: stopped (closed mode answers 503 JSON at once; open
# mode serves unmetered), back (the gateway reconnects by itself and meters
# again), frozen (accepts, never answers: the command timeout answers),
# scripts flushed (NOSCRIPT: loaded again), a client that leaves while its
# admission waits (nothing freed is touched, nothing stays reserved).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);
use Nebula::Test;

my $chat = '/v1/chat/completions';
my $hello = { model => 'gemma3:1b', messages => [{ role => 'user', content => 'hi' }] };

sub outage_lines {
    my ($t) = @_;
    return scalar(() = $t->error_log =~ /nebula: redis at "[^"]+" unavailable/g);
}

sub eventually {
    my ($what, $try) = @_;
    my $deadline = time + 10 * $Nebula::Test::TIME_SCALE;
    while (time < $deadline) {
        return 1 if $try->();
        sleep 0.05;
    }
    return 0;
}

# ---------------------------------------------------------------- closed
{
    # (under valgrind, NEBULA_TIME_SCALE: a worker's loop that runs longer
    # than the timeout times out the commands it queued before they were
    # written)
    my $S = $Nebula::Test::TIME_SCALE;
    my $t = Nebula::Test->new(
        patch => sub { $_[0] =~ s/nebula_redis_timeout\s+1s;/nebula_redis_timeout  ${\ (500 * $S)}ms;\n    nebula_reservation_timeout 2s;/r });
    $t->allow_error(qr/nebula: redis at "[^"]+" unavailable/);
    my $k = $t->new_key(plan => 'developer');
    my $auth = { Authorization => "Bearer $k->{key}" };

    is $t->post($chat, $hello, headers => $auth)->{status}, 200, 'served with Redis up';

    $t->redis->stop;
    my ($slowest, @st) = (0);
    for (1 .. 12) {
        my $t0 = time;
        my $r = $t->post($chat, $hello, headers => $auth);
        $slowest = time - $t0 if time - $t0 > $slowest;
        push @st, $r;
    }
    my $first = $st[0];
    Nebula::Test::is_error($first, 503, 'api_error', 'quota_store_unavailable',
                           'Redis down, closed mode: 503 quota_store_unavailable');
    is scalar(grep { $_->{status} == 503 } @st), 12, 'every request while it is down';
    ok $slowest < 1, sprintf('each answered at once (slowest %.3f s)', $slowest);
    is scalar @{ [ grep { $_->{path} eq $chat } @{ $t->sim('local')->requests } ] }, 1,
        'nothing unmetered went upstream';
    is outage_lines($t), 1, 'error.log says so once, not once per request';

    $t->redis->restart;
    # a fresh Redis holds nothing (no persistence in this test): a new key
    my $k2;
    ok eventually('back', sub {
        my $r = $t->admin('POST', '/admin/keys', { plan => 'developer' });
        $k2 = $r->{json} if $r->{status} == 201;
        $k2 && $t->post($chat, $hello, headers => { Authorization => "Bearer $k2->{key}" })
                 ->{status} == 200;
    }), 'Redis back: the gateway reconnects by itself';
    # each worker reconnects on its own backoff: both, before what follows
    ok eventually('every worker back', sub {
        !grep { $t->get('/v1/key', headers => { Authorization => "Bearer $k2->{key}" })->{status} != 200 }
            1 .. 8;
    }), 'every worker reconnected';
    like $t->error_log, qr/nebula: redis at "[^"]+" is back/, 'and says so';
    ok $t->wait_settled($k2->{key}), 'settled';
    my $u0 = $t->admin('GET', "/admin/keys/$k2->{id}")->{json}{usage};

    my $r = $t->post($chat, $hello, headers => { Authorization => "Bearer $k2->{key}" });
    is $r->{status}, 200, 'served after the outage';
    ok $t->wait_settled($k2->{key}), 'settled';
    my $u = $t->admin('GET', "/admin/keys/$k2->{id}")->{json}{usage};
    is $u->{requests}, $u0->{requests} + 1, 'and metered again';
    is $u->{output_tokens} - $u0->{output_tokens}, $r->{json}{usage}{completion_tokens}, 'exactly';

    # NOSCRIPT: the scripts are loaded again
    $t->redis->cli('SCRIPT', 'FLUSH');
    $r = $t->post($chat, $hello, headers => { Authorization => "Bearer $k2->{key}" });
    is $r->{status}, 200, 'after SCRIPT FLUSH the request still passes';
    ok $t->wait_settled($k2->{key}), 'and its settlement too';
    is $t->admin('GET', "/admin/keys/$k2->{id}")->{json}{usage}{requests}, $u0->{requests} + 2,
        'both metered';

    # a client that leaves while a slow Redis decides: the late reply
    # touches nothing freed and gives the reservation back at once
    system("redis-cli -p " . $t->redis->port . " DEBUG SLEEP 0.4 >/dev/null 2>&1 &");
    ok eventually('asleep', sub {
        # a PING that goes unanswered for 50 ms: Redis sleeps
        my $p = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->redis->port) or return 0;
        print $p "PING\r\n";
        my $sel = IO::Select->new($p);
        return !$sel->can_read(0.05);
    }), 'Redis is busy';
    {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die $!;
        my $body = Nebula::Test::json_encode($hello);
        print $s "POST $chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $k2->{key}\r\n"
               . "Content-Length: " . length($body) . "\r\n\r\n$body";
        sleep 0.1;
        close $s;
    }
    sleep 0.5;
    my $res = $t->admin('GET', "/admin/keys/$k2->{id}")->{json}{usage};
    is $res->{reserved_output_tokens}, 0, 'a late admission of a client gone is given back';
    is $res->{requests}, $u0->{requests} + 2, 'and not counted as a request';

    # frozen: connections are accepted, nothing is answered
    $t->redis->freeze;
    my $t0 = time;
    $r = $t->post($chat, $hello, headers => { Authorization => "Bearer $k2->{key}" }, timeout => 10);
    my $took = time - $t0;
    Nebula::Test::is_error($r, 503, 'api_error', 'quota_store_unavailable',
                           'Redis frozen: the command timeout answers');
    ok $took >= 0.4 * $S && $took < 3 * $S, sprintf('after the timeout (%.2f s)', $took);

    # a client that leaves while its admission waits
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die $!;
    my $body = Nebula::Test::json_encode($hello);
    print $s "POST $chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $k2->{key}\r\n"
           . "Content-Length: " . length($body) . "\r\n\r\n$body";
    sleep 0.1;
    close $s;
    sleep 0.1;
    $t->redis->thaw;
    ok eventually('back', sub { $t->post($chat, $hello, headers => { Authorization => "Bearer $k2->{key}" })
                                  ->{status} == 200 }), 'thawed: served again';
    # if Redis took the admission after its client left, nobody settles
    # it: it expires (2 s here) and the key's next admission gives it back
    sleep 2.2;
    is $t->post($chat, $hello, headers => { Authorization => "Bearer $k2->{key}" })->{status}, 200,
        'a later request';
    ok $t->wait_settled($k2->{key}), 'nothing stays reserved after the client left';
    ok $t->redis->cli('ZCARD', "nb:{$k2->{id}}:res:" . POSIX::strftime('%Y-%m', gmtime)) == 0,
        'no reservation left in the ledger';

    $t->finish;
}

# ------------------------------------------------------------------ open
{
    my $t = Nebula::Test->new(
        patch => sub { $_[0] =~ s/nebula_redis_failure\s+closed;/nebula_redis_failure  open;/r });
    $t->allow_error(qr/nebula: redis at "[^"]+" unavailable/);
    my $k = $t->new_key(plan => 'free');
    my $auth = { Authorization => "Bearer $k->{key}" };

    $t->redis->stop;
    my $r = $t->post($chat, $hello, headers => $auth);
    is $r->{status}, 200, 'Redis down, open mode: served';
    is $r->{json}{model}, 'gemma3:1b', 'as usual';
    ok !exists $r->{headers}{'x-ratelimit-limit-input-tokens'}, 'without quota headers: unmetered';
    $r = $t->post($chat, $hello, nokey => 1);
    Nebula::Test::is_error($r, 401, 'invalid_request_error', 'invalid_api_key',
                           'a request without a key is still refused');
    is outage_lines($t), 1, 'error.log says so once';

    $t->finish;
}

done_testing;
