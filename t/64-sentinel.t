#!/usr/bin/perl
# Redis Sentinel: a master, two replicas and three sentinels (quorum 2,
# down-after 1 s; t/lib/Nebula/Test/Sentinel.pm), and three edges that
# name the master by the sentinels' name: A and B closed mode, C open, all
# with quota leases, `nebula_redis_wait 1` and a 3 s reservation timeout.
#
#   1. The edges find the master through the sentinels and serve.
#   2. The master is killed under load: its replica is promoted; the edges
#      ask the sentinels again and follow it within seconds.  Meanwhile
#      503 quota_store_unavailable (closed mode), never a hang, never
#      another status; afterwards every account's usage in Redis is
#      exactly what its clients were told.
#   3. A failover the sentinels run with the master alive (SENTINEL
#      FAILOVER): the old master's replicas leave it (WAIT comes back
#      short), the edges ask the sentinels and follow the new master; the
#      old one answers READONLY once reconfigured.  Same checks, but the
#      usage the old master took in the window is measured, not asserted.
#   4. Open mode: C serves every request through a failover.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use List::Util qw(max);
use Time::HiRes qw(sleep time);
use Nebula::Test qw($TIME_SCALE);
use Nebula::Test::Failover;

sub conf {
    my ($open) = @_;
    return sub {
        my $x = shift;
        $x =~ s/^(\s*nebula_redis\s[^;]*;)/$1\n    nebula_reservation_timeout 3s;\n    nebula_redis_wait 1;/m
            or die "no nebula_redis\n";
        $x =~ s/^(\s*nebula_redis_failure\s+)closed;/${1}open;/m or die "no failure mode\n" if $open;
        return $x;
    };
}

# two replicas: once one is promoted, the new master still has a replica
# to WAIT for (nebula_redis_wait refuses writes no replica took)
my $A = Nebula::Test->new(sentinel => { replicas => 2 }, lease => 1, patch => conf(0));
my $s = $A->sentinel;
my @E = ($A, Nebula::Test->new(redis_line => $A->redis_line, lease => 1, patch => conf(0)));
my $C = Nebula::Test->new(redis_line => $A->redis_line, lease => 1, patch => conf(1));
for my $e (@E, $C) {
    # the master killed; the master demoted, whose writes no replica takes
    # any more (they are refused until the edge follows the new one)
    $e->allow_error(qr/nebula: redis at "[^"]+" unavailable/,
                    qr/nebula: redis at "[^"]+": WAIT 1 answered 0 within 100 ms/);
}
like $A->redis_line, qr/^sentinel=\w+ 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+ 127\.0\.0\.1:\d+$/,
     'nginx names the master by the sentinels\' name: ' . $A->redis_line;

# --- 1. found through the sentinels
my $f = Nebula::Test::Failover->new(edges => \@E, clients => 6);
my @acct = $f->accounts(6);
my $served = 0;
for my $a (@acct) {
    $served += ($f->ask($_, $a)->{status} == 200) for @E, $C;
}
is $served, 18, 'every edge finds the master through the sentinels and serves';

# an account whose monthly output the load runs out
$f->cap($acct[5], 600);

my $T = $f->t0;

# a load through A and B while the master goes; what the clients got
sub failover {
    my ($what, $go) = @_;
    my @pids = $f->load($what, 9 * $TIME_SCALE, \@E);
    sleep 2;
    my $old = $s->master_port;
    my $at = time - $T;
    $go->();
    my $new = $s->wait_failover(15, $old);
    my $promoted = time - $T;
    ok $new && $new != $old, sprintf("$what: the sentinels promoted %s %.1f s later", $new // 'none',
                                     $promoted - $at);
    waitpid $_, 0 for @pids;

    my @r = $f->results($what);
    my @bad = grep { !$f->expected($_) } @r;
    is scalar(@bad), 0, "$what: " . scalar(@r) . ' answers, each a 200 or a 503 quota_store_unavailable'
                        . ' (or the capped account\'s 429)'
        or diag join "\n", map { "$_->{status} $_->{code} at $_->{at}" } @bad[0 .. ($#bad < 4 ? $#bad : 4)];
    my $slowest = max map { $_->{elapsed} } @r;
    cmp_ok $slowest, '<', 2.5 * $TIME_SCALE, sprintf("$what: none hung (the slowest %.2f s)", $slowest);
    my @refused = grep { $_->{status} == 503 } @r;
    my $last = max(0, map { $_->{at} } @refused);
    ok !@refused || $last < $promoted + 4 * $TIME_SCALE,
       sprintf("$what: %d refused, the last %.1f s after the master went, %.1f s after the promotion",
               scalar(@refused), @refused ? $last - $at : 0, @refused ? $last - $promoted : 0);
    my @tail = grep { $_->{at} > $promoted + 4 * $TIME_SCALE && !$f->capped($_->{id}) } @r;
    is scalar(grep { $_->{status} != 200 } @tail), 0,
       "$what: four seconds after the promotion, all served (" . scalar(@tail) . ' requests)';
    return (\@r, $old);
}

# --- 2. the master killed
my ($r2, $killed) = failover('killed', sub { $s->kill_master });
sleep 3.5 * $TIME_SCALE;
$f->ask($E[$_ % 2], $acct[$_]) for 0 .. $#acct;
my ($wrong, $lost) = $f->exact($r2);
is $wrong, 0, 'killed: every account\'s usage is what its clients were told, nothing reserved, no cap passed'
    or diag "lost: $lost->{n} requests, $lost->{in} input and $lost->{out} output tokens";

# --- 3. a failover with the master alive: READONLY, then the new one
$s->restart_node($killed, wait => 1, as_replica => 1);
my ($r3) = failover('demoted', sub { $s->sentinel_call('SENTINEL', 'FAILOVER', $s->master_name) });
sleep 3.5 * $TIME_SCALE;
$f->ask($E[$_ % 2], $acct[$_]) for 0 .. $#acct;
# What the old master took after its replica's promotion, and its other
# replica acknowledged (WAIT 1 holds) until the sentinels moved that one
# too, is gone once the old master resyncs as a replica: a failover
# forced on a live master loses that window (docs/scaling.md).  Measured,
# not asserted; nothing else may be off: no reservation left, no cap passed.
($wrong, $lost) = $f->exact([@$r2, @$r3]);
diag sprintf 'demoted: %d of %d requests\' usage lost in the window (%d accounts)',
             $lost->{n}, scalar(grep { $_->{status} == 200 } @$r3), $wrong;
cmp_ok $lost->{n}, '>=', 0, 'demoted: no usage counted twice';

# --- 4. open mode: C serves through a failover
my @pids = $f->load('open', 6 * $TIME_SCALE, [$C], unmetered => 1);
sleep 1.5;
my $old = $s->kill_master;
ok $s->wait_failover(15, $old), 'open: the master killed again, a replica promoted';
waitpid $_, 0 for @pids;
my @r = $f->results('open');
is scalar(grep { $_->{status} != 200 && !$f->capped($_->{id}) } @r), 0,
   'open: every request was served through the failover (' . scalar(@r) . ' requests)';

for my $e (@E, $C) {
    my $log = do { local (@ARGV, $/) = ($e->dir . '/logs/error.log'); <> };
    unlike $log, qr/\[(?:alert|crit|emerg)\]/, 'no alert, crit or emerg on edge ' . $e->port;
}

$_->DESTROY for $C, reverse @E;
done_testing;
