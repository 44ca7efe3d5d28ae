#!/usr/bin/perl
# Exactness under concurrency: 120 requests at once on a key with little
# output quota left.  Nothing is admitted beyond the quota, the upstream
# sees max_tokens clamped to what each reservation holds, and the usage
# recorded equals the sum of what the simulator reported.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;
my $N = 120;
my $OUT = 300;        # output tokens left for the key
my $k = $t->new_key(plan => 'developer', limits => { output_tokens => $OUT });

# each asks for 7 tokens and the simulator would write 12: 42 fit in 300
# at once, and a 43rd gets the 6 left, clamped
# can be in flight at once, the rest are refused or wait their turn
my @pids;
pipe my $rd, my $wr or die $!;
for my $i (1 .. $N) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $rd;
        my $r = $t->post('/v1/chat/completions', {
                model => 'qwen3:latest', max_tokens => 7,
                messages => [{ role => 'user', content => "request number $i" }],
            }, headers => { Authorization => "Bearer $k->{key}", 'x-sim-tokens' => 12,
                            'x-sim-delay-ms' => 200 }, timeout => 30);
        my $code = $r->{json}{error}{code} // '';
        my $ct = $r->{json}{usage}{completion_tokens} // 0;
        syswrite $wr, "$r->{status} $code $ct\n";
        POSIX::_exit(0);
    }
    push @pids, $pid;
}
close $wr;
waitpid $_, 0 for @pids;
my @res = map { [split / /] } grep { length } split /\n/, do { local $/; <$rd> };

is scalar @res, $N, "$N answers";
my @ok = grep { $_->[0] == 200 } @res;
my @refused = grep { $_->[0] == 429 } @res;
is @ok + @refused, $N, 'each served or refused, nothing else';
is scalar(grep { $_->[1] eq 'insufficient_quota' } @refused), scalar @refused,
    'every refusal is insufficient_quota';
# every admitted request writes its whole reservation (the simulator would
# write 12), so a settlement never gives output back: exactly 42 of 7 and
# one of the 6 left are served, the rest refused
is scalar @ok, 43, 'exactly 43 served: 42 x 7 + 6 = 300';
is scalar @refused, $N - 43, 'the others refused';

my $served_out = 0;
$served_out += $_->[2] for @ok;
diag scalar(@ok) . ' served, ' . scalar(@refused) . ' refused';
is scalar(grep { $_->{max_tokens} < 7 } @{ $t->sim('local')->requests }), 1,
    'one max_tokens clamped below the 7 asked';
is scalar(grep { $_->{max_tokens} == 6 } @{ $t->sim('local')->requests }), 1, 'to the 6 left';
is $served_out, $OUT, "output served = the whole quota ($OUT)";
is scalar(grep { $_->[2] == 7 } @ok), 42, '42 answers of 7 tokens';

# what the simulator saw and reported
my @seen = grep { $_->{path} eq '/v1/chat/completions' } @{ $t->sim('local')->requests };
is scalar @seen, scalar @ok, 'the upstream saw only the admitted requests';
ok !grep({ !defined $_->{max_tokens} || $_->{max_tokens} > 7 || $_->{max_tokens} < 1 } @seen),
    'every upstream max_tokens is within 1..7';
my ($sp, $sc) = (0, 0);
for (@seen) { $sp += $_->{prompt_tokens}; $sc += $_->{completion_tokens} }

ok $t->wait_settled($k->{key}), 'all settled';
my $u = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
is $u->{output_tokens}, $sc, "recorded output = simulator's sum ($sc)";
is $u->{input_tokens}, $sp, "recorded input = simulator's sum ($sp)";
is $u->{requests}, scalar @ok, 'recorded requests = served';
is $u->{output_tokens}, $OUT, 'exactly the quota, never beyond';
is $u->{reserved_input_tokens}, 0, 'no input reservation left';
is $u->{reserved_output_tokens}, 0, 'no output reservation left';

$t->done;
