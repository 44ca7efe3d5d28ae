#!/usr/bin/perl
# Settlements go to Redis in batches, one EVALSHA SETTLE carrying many
# (ngx_nebula_settle.c).  A batch Redis refuses for good (not a "not now"
# such as BUSY) must cost only the settlement that caused it: each of the
# batch goes again alone.  Here one key's day hash is not a hash (an
# operator's mistake, a bug): its settlements fail with WRONGTYPE, in the
# same batches as another key's, whose usage must still be recorded whole.
# And batching itself: a key far from its quota shares scripts, one near
# it settles each request at once.
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

my $bad = $t->new_key(plan => 'enterprise', name => 'broken-day');
my $good = $t->new_key(plan => 'enterprise', name => 'fine');
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

# --- batches: the settlements of a key far from its quota, ending
# within milliseconds of one another, share EVALSHA calls; a key near its
# quota settles each at once (its next request must see the room left)
sub evalsha_calls {
    my ($calls) = $t->redis->cli('INFO', 'commandstats') =~ /cmdstat_evalsha:calls=(\d+)/;
    return $calls // 0;
}

sub burst {
    my ($k, $n) = @_;
    my $before = evalsha_calls();
    my $t0 = Time::HiRes::time();
    my @p;
    for my $i (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $wait = int(1000 * $Nebula::Test::TIME_SCALE - 1000 * (Time::HiRes::time() - $t0));
            $wait = 50 if $wait < 50;
            my $r = $t->post('/v1/chat/completions', {
                    model => 'qwen3:latest', max_tokens => 10,
                    messages => [{ role => 'user', content => "burst $i" }] },
                headers => { Authorization => "Bearer $k->{key}", 'x-sim-delay-ms' => $wait },
                timeout => 30);
            POSIX::_exit($r->{status} == 200 ? 0 : 1);
        }
        push @p, $pid;
    }
    my $ok = 0;
    for (@p) { waitpid $_, 0; $ok++ if $? == 0 }
    Time::HiRes::sleep(0.3);    # the last batch leaves within milliseconds
    return ($ok, evalsha_calls() - $before - $n);    # less one ADMIT each
}

my $far = $t->new_key(plan => 'enterprise', name => 'far');
my ($ok, $settles) = burst($far, 40);
is $ok, 40, 'far from its quota: 40 served';
ok $settles >= 1 && $settles < 40,
    "far from its quota: 40 settlements in $settles scripts";
ok $t->wait_settled($far->{key}), 'and all settled';
is $t->admin('GET', "/admin/keys/$far->{id}")->{json}{usage}{requests}, 40, 'forty recorded';

my $near = $t->new_key(plan => 'developer', name => 'near', limits => { output_tokens => 600 });
($ok, $settles) = burst($near, 20);
is $ok, 20, 'near its quota: 20 served';
is $settles, 20, 'near its quota: each settled at once, a script each';

$t->done;
