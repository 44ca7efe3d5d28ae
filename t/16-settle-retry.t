#!/usr/bin/perl
# The settlement retry queue: a stream admitted while Redis answers ends
# while Redis is frozen longer than nebula_redis_timeout, so the
# settlement's connection is dropped and the settlement waits in the
# worker's queue; once Redis is thawed it is sent again, and the usage
# recorded is what the simulator reported, with the reservation given back.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use Nebula::Test;

# (under valgrind, NEBULA_TIME_SCALE: a worker's loop that runs longer than
# the timeout times out the commands it queued before they were written)
my $timeout = 300 * $Nebula::Test::TIME_SCALE;
my $t = Nebula::Test->new(
    patch => sub { $_[0] =~ s/nebula_redis_timeout\s+1s;/nebula_redis_timeout  ${timeout}ms;/r });
$t->allow_error(qr/nebula: redis at "[^"]+" unavailable/);
my $k = $t->new_key(plan => 'developer', name => 'settle-retry');
my $auth = { Authorization => "Bearer $k->{key}" };
my $month = POSIX::strftime('%Y-%m', gmtime);

# 10 tokens, 250 ms apart: the stream runs about 2.5 s
pipe my $rd, my $wr or die $!;
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    close $rd;
    my $r = $t->post('/v1/chat/completions', {
            model => 'gemma3:1b', stream => JSON::PP::true,
            messages => [{ role => 'user', content => 'a slow story please' }] },
        headers => { %$auth, 'x-sim-tokens' => 10, 'x-sim-fault' => 'slow:250' }, timeout => 30);
    syswrite $wr, "$r->{status} " . ($r->{chunked_complete} ? 1 : 0) . "\n";
    POSIX::_exit(0);
}
close $wr;

# admitted: the reservation is in Redis, the stream has started
my $admitted = 0;
for (1 .. 100 * $Nebula::Test::TIME_SCALE) {
    last if $admitted = $t->redis->cli('ZCARD', "nb:{$k->{id}}:res:$month") == 1
                        && @{ $t->sim('local')->requests };
    sleep 0.02;
}
ok $admitted, 'the stream is admitted and running';
$t->redis->freeze;

waitpid $pid, 0;
my ($status, $complete) = split ' ', scalar <$rd>;
is $status, 200, 'the stream is served while Redis is frozen';
ok $complete, 'to its end';
sleep 1.7 + $timeout / 1000;    # longer than the command timeout: the connection drops
like $t->error_log, qr/nebula: redis at "[^"]+" unavailable/, 'the settlement found Redis gone';
$t->redis->thaw;

my $sim = (grep { $_->{path} eq '/v1/chat/completions' } @{ $t->sim('local')->requests })[-1];
is $sim->{completion_tokens}, 10, 'the simulator streamed 10 tokens';
ok $t->wait_settled($k->{key}), 'settled once Redis is back';
my $u = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
is $u->{requests}, 1, 'one request recorded';
is $u->{output_tokens}, $sim->{completion_tokens}, 'output = what the simulator reported';
is $u->{input_tokens}, $sim->{prompt_tokens}, 'input = what the simulator reported';
is $u->{reserved_input_tokens}, 0, 'the input reservation given back';
is $u->{reserved_output_tokens}, 0, 'the output reservation given back';
is $t->redis->cli('ZCARD', "nb:{$k->{id}}:res:$month"), 0, 'no reservation in the ledger';
sleep 1;            # a repeat of the settlement would change nothing
is $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage}{output_tokens}, 10, 'counted once';

$t->done;
