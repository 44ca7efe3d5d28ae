#!/usr/bin/perl
# Settlements go to Redis in batches, one EVALSHA SETTLE carrying many
# (ngx_nebula_settle.c).  A batch Redis refuses for good (not a "not now"
# such as BUSY) must cost only the settlement that caused it: each of the
# batch goes again alone.  Here one key's day hash is not a hash (an
# operator's mistake, a bug): its settlements fail with WRONGTYPE, in the
# same batches as another key's, whose usage must still be recorded whole.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX ();
use Time::HiRes ();
use Nebula::Test;

my $t = Nebula::Test->new(workers => 1);    # one worker: one batch queue
$t->allow_error(qr/nebula: redis refused (a batch of \d+ settlements|\d+ settlements?): WRONGTYPE/);

my $bad = $t->new_key(plan => 'developer', name => 'broken-day');
my $good = $t->new_key(plan => 'developer', name => 'fine');
my $day = POSIX::strftime('%Y-%m-%d', gmtime);
my $month = POSIX::strftime('%Y-%m', gmtime);
$t->redis->cli('SET', "nb:{$bad->{id}}:d:$day", 'not a hash');

# every answer at the same moment, so that the settlements share batches
my $N = 12;
my $t0 = Time::HiRes::time();
my @pids;
for my $i (1 .. $N) {
    my $k = $i % 2 ? $bad : $good;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $wait = int(1000 * $Nebula::Test::TIME_SCALE - 1000 * (Time::HiRes::time() - $t0));
        $wait = 50 if $wait < 50;
        my $r = $t->post('/v1/chat/completions', {
                model => 'qwen3:latest',
                messages => [{ role => 'user', content => "request $i" }] },
            headers => { Authorization => "Bearer $k->{key}", 'x-test-key' => $k->{id},
                         'x-sim-delay-ms' => $wait }, timeout => 30);
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    push @pids, $pid;
}
my $served = 0;
for (@pids) { waitpid $_, 0; $served++ if $? == 0 }
is $served, $N, "$N served";

my ($in, $out) = (0, 0);
for my $rec (@{ $t->sim('local')->requests }) {
    next unless ($rec->{headers}{'x-test-key'} // '') eq $good->{id};
    $in += $rec->{prompt_tokens};
    $out += $rec->{completion_tokens};
}

ok $t->wait_settled($good->{key}), 'the good key settled';
my $u = $t->admin('GET', "/admin/keys/$good->{id}")->{json}{usage};
is $u->{requests}, $N / 2, 'the good key: every request recorded';
is $u->{input_tokens}, $in, "the good key: input exact ($in)";
is $u->{output_tokens}, $out, "the good key: output exact ($out)";
is $t->redis->cli('HGET', "nb:{$good->{id}}:d:$day", 'req'), $N / 2, 'the good key: per day too';

# the broken key's own settlements failed, and left no reservation behind
# (the script had given it back before the broken hash stopped it)
ok $t->wait_settled($bad->{key}), 'the broken key holds no reservation';
like $t->error_log, qr/nebula: redis refused (a batch of \d+ settlements|\d+ settlements?): WRONGTYPE/,
    'the refusal is logged';
my $batches = () = $t->error_log =~ /refused a batch of \d+ settlements/g;
note "$batches batches refused and sent again one settlement a call";

$t->done;
