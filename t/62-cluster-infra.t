#!/usr/bin/perl
# The harness's Redis Cluster and Sentinel set-ups on their own, without
# nginx (t/lib/Nebula/Test/Cluster.pm, Sentinel.pm): a cluster of 3
# masters and 3 replicas comes up ok; a key's master is found; a master
# killed is replaced by its replica within seconds, with what was written
# to it (WAIT 1) before; the old node comes back as a replica.  Three
# sentinels see a master and its replica; the master killed, they promote
# the replica.  A test that dies, or is killed, leaves no redis-server.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use Nebula::Test;
use Nebula::Test::Cluster;
use Nebula::Test::Sentinel;

my $FAILOVER_SECS = 10;

# a process that is gone (or a zombie, which is as good as gone)
sub gone {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/stat" or return 1;
    my $stat = <$f>;
    return ($stat // '') =~ /^\d+ \(.*\) Z /;
}

sub all_gone {
    my ($secs, @pids) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 unless grep { !gone($_) } @pids;
        sleep 0.05;
    }
    return 0;
}

# --- the cluster, through the harness's hook (no nginx: the hook's
# rendering is checked below) ---
my $t0 = time;
my $t = Nebula::Test->new(cluster => 1, no_nginx => 1);
my $c = $t->cluster;
note sprintf 'cluster up in %.2f s', time - $t0;

my @ports = $c->ports;
is scalar(@ports), 6, 'six nodes';
is scalar(my @m = $c->masters), 3, 'three masters';
is scalar(my @r = $c->replicas), 3, 'three replicas';
is scalar(my @x = $c->replicas_of($_)), 1, "master $_ has a replica" for @m;
is $c->seeds, join(' ', map { "127.0.0.1:$_" } @ports), 'seeds';
is $c->seeds(3), join(' ', map { "127.0.0.1:$_" } @ports[0 .. 2]), 'the first three seeds';
is $c->redis_line, 'cluster ' . $c->seeds, 'the nebula_redis line';
is $c->redis_line(password => 'pw', user => 'nebula'),
    'cluster ' . $c->seeds . ' user=nebula password=pw', 'with auth';
for my $p (@ports) {
    like $c->cli($p, 'CLUSTER', 'INFO'), qr/^cluster_state:ok/m, "$p: cluster_state:ok";
}
isnt $c->bus_port($ports[0]), $ports[0] + 10000, 'the bus port is one of its own';
ok $c->bus_port($_) < 32768, "bus port below the ephemeral range" for $ports[0];

# the harness's hook: the line replaces the example's in nebula.conf
{
    my $conf = do { local (@ARGV, $/) = ($t->render); <> };
    my ($line) = $conf =~ /^\s*(nebula_redis\s[^;]*;)/m;
    is $line, 'nebula_redis          ' . $c->redis_line . ';', 'nginx gets the cluster line';
    like $conf, qr/^\s*nebula_redis_timeout\s/m, 'nebula_redis_timeout left as it was';
    is $t->redis_line, $c->redis_line, '$t->redis_line';
    ok !eval { $t->redis; 1 }, '$t->redis dies, there is no harness redis-server';
    like $@, qr/nebula_redis cluster/, '... saying why';
}

# a key's slot and master; usage hashes spread over all masters
my $key = 'nb:{k1}:u:2025-01';
my $slot = $c->slot_of_key($key);
is $slot, $c->call($ports[0], 'CLUSTER', 'KEYSLOT', $key), "slot of $key";
my $master = $c->master_of_key($key);
ok((grep { $_ == $master } @m), "$key lives on master $master");
is $c->master_of_slot($slot), $master, 'master_of_slot agrees';
my ($sum, %on) = (0);
for my $i (1 .. 30) {
    my $k = "nb:{k$i}:u:2025-01";
    my $p = $c->master_of_key($k);
    $c->call($p, 'HSET', $k, 'input_tokens', $i, 'output_tokens', 2 * $i);
    $on{$p}++;
    $sum += $i;
}
$c->call($_, 'SET', 'nb:{k1}:not-a-hash', 7) for $master;
is keys %on, 3, 'the keys are on all three masters';
is $c->call($_, 'WAIT', 1, 2000), 1, "$_: the write reached its replica" for sort keys %on;
is_deeply [$c->sum_hash_field('nb:*:u:*', 'input_tokens')], [$sum, 30], 'sum over the masters';
is $c->sum_hash_field('nb:*', 'output_tokens'), 2 * $sum, 'a hash field summed, strings skipped';

# the key's master killed: its replica takes its slots
my ($replica) = $c->replicas_of($master);
my $pid = $c->pid($master);
$t0 = time;
$c->kill_node($master);
ok gone($pid), 'the master is gone';
my $new = $c->wait_failover($master, $FAILOVER_SECS);
my $took = time - $t0;
is $new, $replica, "failover to its replica within $FAILOVER_SECS s";
note sprintf 'failover in %.2f s', $took;
is $c->master_of_key($key), $new, 'the key\'s master is the new one';
is $c->call($new, 'HGET', $key, 'input_tokens'), 1, 'what was written is there';
is_deeply [$c->sum_hash_field('nb:*:u:*', 'input_tokens')], [$sum, 30], 'the sum is whole';
is scalar(my @m2 = $c->masters), 3, 'three masters again';
like $c->cli($new, 'CLUSTER', 'INFO'), qr/^cluster_state:ok/m, 'cluster_state:ok';

# the old master back: a replica of the new one
$t0 = time;
ok $c->restart_node($master), 'the old master restarted, the cluster ok'
    or diag $c->{why};
note sprintf 'rejoined in %.2f s', time - $t0;
is_deeply [$c->replicas_of($new)], [$master], 'it replicates the new master';
is $c->master_of_key($key), $new, 'the new master keeps the key';
{
    # a replica answers reads on a connection that said READONLY
    my $conn = Nebula::Test::RESP->connect($master);
    $conn->call('READONLY');
    is $conn->call('HGET', $key, 'input_tokens'), 1, 'the key on the old node, now a replica';
}

my @pids = map { $c->pid($_) } @ports;
$t->finish;
ok all_gone(3, @pids), 'the cluster stopped with the test object';

# --- sentinel ---
$t0 = time;
my $s = Nebula::Test::Sentinel->start;
note sprintf 'sentinel up in %.2f s', time - $t0;
my @data = $s->ports;
is $s->master_name, 'nebula', 'master name';
is $s->master_port, $data[0], 'the sentinels name the first node master';
is_deeply [$s->replicas], [$data[1]], 'the other is its replica';
is $s->sentinels, join(' ', map { "127.0.0.1:$_" } $s->sentinel_ports), 'sentinels';
is $s->redis_line(db => 3, password => 'pw'),
    'sentinel=nebula ' . $s->sentinels . ' password=pw db=3', 'the nebula_redis line';
for my $p ($s->sentinel_ports) {
    my %m = @{ $s->call($p, 'SENTINEL', 'MASTER', 'nebula') };
    is "$m{'num-slaves'} $m{'num-other-sentinels'}", '1 2', "$p sees the replica and two sentinels";
}
$s->call($data[0], 'SET', 'nb:x', 42);
is $s->call($data[0], 'WAIT', 1, 2000), 1, 'written and replicated';

$t0 = time;
my $old = $s->kill_master;
is $old, $data[0], 'master killed';
my $promoted = $s->wait_failover($FAILOVER_SECS);
$took = time - $t0;
is $promoted, $data[1], "the replica promoted within $FAILOVER_SECS s";
note sprintf 'sentinel failover in %.2f s', $took;
is $s->master_port, $promoted, 'the sentinels name it';
like $s->cli($promoted, 'INFO', 'replication'), qr/^role:master/m, 'it says role:master';
is $s->call($promoted, 'GET', 'nb:x'), 42, 'what was written is there';
is $s->call($promoted, 'SET', 'nb:y', 1), 'OK', 'it takes writes';
ok $s->restart_node($old, as_replica => 1), 'the old master back as a replica';
@pids = map { $s->pid($_) } $s->ports, $s->sentinel_ports;
$s->stop;
ok all_gone(3, @pids), 'the sentinel set-up stopped';

# --- a test that dies, or is killed, leaves nothing behind (both at
# once, a sentinel set-up each) ---
my %child;
for my $how (qw(die kill)) {
    # in the file's directory: a test killed cleans up no directory
    my $code = q{
        use Nebula::Test::Sentinel;
        $| = 1;
        my $s = Nebula::Test::Sentinel->start(dir => $ARGV[0]);
        print join(' ', map { $s->pid($_) } $s->ports, $s->sentinel_ports), "\n";
    } . ($how eq 'die' ? q{ die "the test died\n"; } : q{ sleep 60; });
    my $pid = open(my $out, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $t->dir . "/$how.err";
        { exec $^X, "-I$FindBin::Bin/lib", '-e', $code, $t->dir . "/sentinel-$how" }
        POSIX::_exit(127);
    }
    $child{$how} = [$pid, $out];
}
for my $how (qw(die kill)) {
    my ($pid, $out) = @{ $child{$how} };
    my $line = <$out>;
    my @p = split ' ', $line // '';
    is scalar(@p), 5, "$how: its child started five processes";
    kill 'KILL', $pid if $how eq 'kill';
    close $out;
    if ($how eq 'die') {
        isnt $? >> 8, 0, 'die: it exited as a die does, its status kept';
    } else {
        is $? & 127, 9, 'kill: it was SIGKILLed';
    }
    ok all_gone(3, @p), "$how: none of its redis-server processes is left";
}

done_testing;
