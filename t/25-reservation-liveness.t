#!/usr/bin/perl
# A reservation stays counted for as long as its request lives (issue 11,
# item 1).  The ADMIT script gives back every reservation whose time has
# passed, for a worker that died cannot settle what it held; a request
# that outlives nebula_reservation_timeout (a slow reader, a long
# generation) must not have its quota reserved a second time meanwhile.
# The worker that holds a reservation, or a lease's block, pushes its
# expiry ahead; only a worker that stopped lets it lapse.  The timeout is
# made short here (2s): each stream runs past it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Socket;
use Time::HiRes qw(sleep time);
use Nebula::Test qw($TIME_SCALE);

my $timeout = 2 * $TIME_SCALE;
my $chat = '/v1/chat/completions';

sub conf {
    my ($lease) = @_;
    return (workers => 1, lease => $lease eq 'on', patch => sub {
        $_[0] =~ s/(nebula_redis_failure\s+closed;)/$1\n    nebula_reservation_timeout ${timeout}s;/r });
}

# a request whose answer comes slowly; returns the socket to read it from
sub start {
    my ($t, $key, $body, %h) = @_;
    my $json = Nebula::Test::json_encode($body);
    my $req = "POST $chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            . "Authorization: Bearer $key\r\nContent-Type: application/json\r\n"
            . join('', map { "$_: $h{$_}\r\n" } sort keys %h)
            . "Content-Length: " . length($json) . "\r\n\r\n$json";
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die $!;
    connect($s, sockaddr_in($t->port, inet_aton('127.0.0.1'))) or die "connect: $!";
    binmode $s;
    syswrite $s, $req;
    return $s;
}

sub finish {
    my ($s) = @_;
    my $raw = Nebula::Test::read_all($s, 60);
    close $s;
    return Nebula::Test::parse_response($raw);
}

sub usage_of {
    my ($t, $k) = @_;
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

sub msg { [{ role => 'user', content => $_[0] // 'hello there' }] }

# ---- a request's own reservation, past the timeout
{
    my $t = Nebula::Test->new(conf('off'));
    my $k = $t->new_key(plan => 'developer', limits => { output_tokens => 100 });

    # 20 tokens, 250 ms apart: 5 s, while it holds the whole output quota
    my $s = start($t, $k->{key}, { model => 'qwen3:latest', max_tokens => 100, stream => JSON::PP::true,
                                   messages => msg() },
                  'x-sim-tokens' => 20, 'x-sim-fault' => 'slow:' . 250 * $TIME_SCALE);
    sleep 1.75 * $timeout;

    my $u = usage_of($t, $k);
    is $u->{reserved_output_tokens}, 100, 'past the timeout, the stream still holds its 100 tokens';
    my $r = $t->post($chat, { model => 'qwen3:latest', max_tokens => 10, messages => msg() },
                     headers => { Authorization => "Bearer $k->{key}" });
    Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota',
                           'so nothing more is admitted: the quota is not reserved twice');
    is $r->{headers}{'x-ratelimit-remaining-output-tokens'}, 0, 'and none is left';

    my $a = finish($s);
    is $a->{status}, 200, 'the slow stream completes';
    ok $t->wait_settled($k->{key}), 'and is settled';
    $u = usage_of($t, $k);
    is $u->{output_tokens}, 20, 'its 20 tokens recorded once';
    is $u->{requests}, 1, 'one request counted';
    is $u->{reserved_output_tokens}, 0, 'nothing left reserved';
    is $t->redis->cli('SCARD', "nb:{$k->{id}}:exp:" . POSIX::strftime('%Y-%m', gmtime)), 0,
        'no reservation expired';

    # ---- a worker that dies lets go of what it held, after the timeout
    $s = start($t, $k->{key}, { model => 'qwen3:latest', max_tokens => 50, stream => JSON::PP::true,
                                messages => msg() },
               'x-sim-tokens' => 40, 'x-sim-fault' => 'slow:' . 250 * $TIME_SCALE);
    sleep 0.5 * $TIME_SCALE;
    is usage_of($t, $k)->{reserved_output_tokens}, 50, 'a second stream holds 50';
    my @workers = grep { `cat /proc/$_/cmdline 2>/dev/null` =~ /^nginx: worker/ }
                  map { /(\d+)/ } `pgrep -P ${\ $t->nginx_pid }`;
    is scalar(@workers), 1, 'one worker';
    kill 'KILL', @workers;
    $t->allow_alert(qr/worker process \d+ exited on signal 9/);
    finish($s);
    # the master starts another; the next admission gives the lapsed one back
    my $deadline = time + 3 * $timeout + 5;
    my $reserved;
    while (time < $deadline) {
        $r = $t->post($chat, { model => 'qwen3:latest', max_tokens => 10, messages => msg() },
                      headers => { Authorization => "Bearer $k->{key}" });
        $t->wait_settled($k->{key}) if $r->{status} == 200;
        $reserved = usage_of($t, $k)->{reserved_output_tokens};
        last if $r->{status} == 200 && !$reserved;
        sleep 0.25;
    }
    is $r->{status}, 200, 'once the dead worker\'s reservation lapsed, the key is admitted again';
    is $reserved, 0, 'and nothing stays reserved';
    $t->finish;
}

# ---- a lease's block, while a request admitted from it still runs
{
    my $t = Nebula::Test->new(conf('on'));
    my $k = $t->new_key(plan => 'enterprise');

    # the first request brings the lease; the second is admitted from it
    my $r = $t->post($chat, { model => 'qwen3:latest', max_tokens => 10, messages => msg() },
                     headers => { Authorization => "Bearer $k->{key}" });
    is $r->{status}, 200, 'the request that brings the lease';
    my $s = start($t, $k->{key}, { model => 'qwen3:latest', max_tokens => 10, stream => JSON::PP::true,
                                   messages => msg() },
                  'x-sim-tokens' => 10, 'x-sim-fault' => 'slow:' . 500 * $TIME_SCALE);
    sleep 0.3 * $TIME_SCALE;
    my $held = usage_of($t, $k)->{leased_output_tokens};
    ok $held >= 10 * 1024, "the lease's block is reserved ($held)";
    my $month = POSIX::strftime('%Y-%m', gmtime);
    my ($lease) = $t->redis->cli('ZRANGE', "nb:{$k->{id}}:res:$month", 0, -1) =~ /^(L[0-9a-f]{32}:\d+:\d+)$/m;
    ok $lease, 'the block is a reservation in Redis';
    sleep 2 * $timeout;
    # an admission of the key (another model: Redis decides) sweeps what lapsed
    $r = $t->post($chat, { model => 'gemma3:1b', max_tokens => 10, messages => msg() },
                  headers => { Authorization => "Bearer $k->{key}" });
    is $r->{status}, 200, 'another admission of the key, past the timeout';
    like $t->redis->cli('ZRANGE', "nb:{$k->{id}}:res:$month", 0, -1), qr/^\Q$lease\E$/m,
        'the block is still reserved: a request of it runs';
    is $t->redis->cli('SCARD', "nb:{$k->{id}}:exp:$month"), 0, 'it did not lapse';
    my $a = finish($s);
    is $a->{status}, 200, 'the slow request completes';
    ok $t->wait_settled($k->{key}, 8), 'the lease closes and is settled';
    my $u = usage_of($t, $k);
    is $u->{output_tokens}, 30, 'the three requests\' tokens, once';
    is $u->{requests}, 3, 'three requests';
    is $u->{reserved_output_tokens}, 0, 'nothing left reserved';
    $t->done;
}
