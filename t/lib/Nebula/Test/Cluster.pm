package Nebula::Test::Cluster;

# A private Redis Cluster for one test file: 3 masters and a replica each
# (6 redis-server processes) on loopback ports of its own, created with
# redis-cli --cluster create, with a node timeout of 1 s so that a killed
# master's replica takes over in 2 to 3 s.
#
#   my $c = Nebula::Test::Cluster->start(%o);   # up, ok, replicas in sync
#   my $t = Nebula::Test->new(redis_line => $c->redis_line);
#   # or, started in the file's directory and stopped with it:
#   my $t = Nebula::Test->new(cluster => 1);  # or { %o }; $t->cluster
#
#   $c->ports              all six client ports, in the order they started
#   $c->seeds(N)           "127.0.0.1:p1 127.0.0.1:p2 ..." (the first N, or all)
#   $c->redis_line(%o)     "cluster <seeds> [user=U] [password=P]" for nebula_redis
#   $c->masters            the live ports that serve slots, sorted
#   $c->replicas           the live ports that replicate, sorted
#   $c->replicas_of($port) the live replicas of one master
#   $c->slot_of_key($key)  CLUSTER KEYSLOT
#   $c->master_of_slot($slot), $c->master_of_key($key)   a port
#   $c->slot_map           { "start-end" => master port }, from CLUSTER SLOTS
#   $c->cli($port, @args)  redis-cli's output, chomped (auth given)
#   $c->call($port, @args) one command, the reply as data (dies on an error)
#   $c->kill_node($port)   SIGKILL; the slots it served are remembered
#   $c->wait_failover($old_port, $secs)  the port that took its slots, or
#                          undef: a replica serves all of them and every
#                          live node says cluster_state:ok and agrees
#   $c->restart_node($port, wait => 1)  back with its nodes.conf and AOF; a
#                          failed-over master comes back as a replica
#                          (waits until it replicates, in sync)
#   $c->wait_ok($secs, synced => 1)  every live node ok and agreeing (and
#                          every replica's link up): 1 or 0
#   $c->sum_hash_field($pattern, $field)  the sum over all masters (SCAN
#                          MATCH, TYPE hash) of one field; in list context
#                          (sum, number of keys)
#   $c->stop               all nodes (DESTROY and an END block do it too)
#
# Options of start: dir (else a temporary one), masters (3), replicas (1
# a master), node_timeout (ms, 1000), appendonly (1: yes, fsync everysec),
# password, user (then the default user is off), args (more
# redis-server arguments), timeout (s to come up, 20).
#
# Each node's cluster bus port is one of its own (cluster-port, Redis 7),
# taken with free_port like the client port, not the default port + 10000:
# that would fall into the kernel's ephemeral range (32768 and up, where
# free_port never goes, for good reason) or past 65535.

use strict;
use warnings;
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);

use Nebula::Test ();
use Nebula::Test::Procs;
use Nebula::Test::RESP;

sub start {
    my ($class, %o) = @_;
    my $self = bless {
        owner        => $$,
        n_masters    => $o{masters} // 3,
        n_replicas   => $o{replicas} // 1,
        node_timeout => $o{node_timeout} // 1000,
        appendonly   => $o{appendonly} // 1,
        password     => $o{password},
        user         => $o{user},
        args         => $o{args} // [],
        nodes        => {},
        order        => [],
        lost         => {},
    }, $class;
    $self->{dir} = $o{dir}
        // tempdir('nebula-cluster-XXXXXX', DIR => $ENV{NEBULA_TEST_TMP} // '/tmp',
                   CLEANUP => !$ENV{NEBULA_KEEP});
    make_path($self->{dir});
    my $timeout = ($o{timeout} // 20) * $Nebula::Test::TIME_SCALE;

    my $n = $self->{n_masters} * (1 + $self->{n_replicas});
    for (1 .. $n) {
        my $port = Nebula::Test::free_port();
        my $bus = Nebula::Test::free_port();
        my $dir = "$self->{dir}/node-$port";
        make_path($dir);
        $self->{nodes}{$port} = { port => $port, bus => $bus, dir => $dir };
        push @{ $self->{order} }, $port;
        $self->launch($port);
    }
    $self->wait_up($_, $timeout) or die "cluster: node $_ did not start\n" . $self->log_tail($_)
        for @{ $self->{order} };

    # redis-cli assigns the slots, makes the first N masters and the rest
    # their replicas, sends CLUSTER MEET (with each node's own bus port),
    # and waits for the nodes to agree on the configuration
    my $log = "$self->{dir}/create.log";
    my @cmd = ('redis-cli', $self->auth_args, '--cluster', 'create',
               (map { "127.0.0.1:$_" } @{ $self->{order} }),
               '--cluster-replicas', $self->{n_replicas}, '--cluster-yes');
    my $out = Nebula::Test::Procs::capture(@cmd);
    open my $f, '>', $log;
    print $f "@cmd\n$out";
    close $f;
    die "cluster: redis-cli --cluster create failed:\n$out" if $? || $out =~ /\[ERR\]/;

    $self->wait_ok($timeout, synced => 1)
        or die "cluster: not ok within $timeout s: " . ($self->{why} // '') . "\n";
    return $self;
}

sub auth { my ($self) = @_; return { password => $self->{password}, user => $self->{user} } }

# for redis-cli
sub auth_args {
    my ($self) = @_;
    return () unless defined $self->{password};
    return ('--no-auth-warning', (defined $self->{user} ? ('--user', $self->{user}) : ()),
            '--pass', $self->{password});
}

sub launch {
    my ($self, $port) = @_;
    my $node = $self->{nodes}{$port};
    my @auth;
    if (defined $self->{password}) {
        if (defined $self->{user}) {
            @auth = ('--user', $self->{user}, 'on', ">$self->{password}", '~*', '&*', '+@all',
                     '--user', 'default', 'off',
                     '--masteruser', $self->{user}, '--masterauth', $self->{password});
        } else {
            @auth = ('--requirepass', $self->{password}, '--masterauth', $self->{password});
        }
    }
    $node->{pid} = Nebula::Test::Procs::spawn(
        "$node->{dir}/redis.log",
        'redis-server', '--port', $port, '--bind', '127.0.0.1', '--dir', $node->{dir},
        '--daemonize', 'no', '--save', '',
        '--cluster-enabled', 'yes', '--cluster-port', $node->{bus},
        '--cluster-config-file', 'nodes.conf',
        '--cluster-node-timeout', $self->{node_timeout},
        '--appendonly', $self->{appendonly} ? 'yes' : 'no', '--appendfsync', 'everysec',
        '--enable-debug-command', 'local',
        # a replica's first sync starts at once, not after 5 s of waiting
        # for more replicas to share it
        '--repl-diskless-sync-delay', 0,
        @auth, @{ $self->{args} });
}

# the node answers (LOADING counts: it is up)
sub wait_up {
    my ($self, $port, $secs) = @_;
    my $deadline = time + ($secs // 10);
    while (time < $deadline) {
        return 0 unless Nebula::Test::Procs::alive($self->{nodes}{$port}{pid});
        my $v = Nebula::Test::RESP::once($port, $self->auth, 'PING');
        return 1 if defined $v || ($@ && $@ =~ /LOADING/);
        sleep 0.02;
    }
    return 0;
}

sub log_tail {
    my ($self, $port) = @_;
    open my $f, '<', "$self->{nodes}{$port}{dir}/redis.log" or return '';
    my @l = <$f>;
    return join '', @l[($#l > 9 ? $#l - 9 : 0) .. $#l];
}

sub dir { $_[0]{dir} }
sub ports { @{ $_[0]{order} } }
sub pid { $_[0]{nodes}{ $_[1] }{pid} }
sub bus_port { $_[0]{nodes}{ $_[1] }{bus} }
sub live_ports { my ($self) = @_; grep { $self->is_live($_) } @{ $self->{order} } }
sub is_live { my ($self, $port) = @_; Nebula::Test::Procs::alive($self->{nodes}{$port}{pid}) }

sub seeds {
    my ($self, $n) = @_;
    my @p = @{ $self->{order} };
    splice @p, $n if $n && $n < @p;
    return join ' ', map { "127.0.0.1:$_" } @p;
}

sub redis_line {
    my ($self, %o) = @_;
    my $user = exists $o{user} ? $o{user} : $self->{user};
    my $pass = exists $o{password} ? $o{password} : $self->{password};
    return join ' ', 'cluster', $self->seeds($o{seeds}),
        (defined $user ? "user=$user" : ()), (defined $pass ? "password=$pass" : ());
}

sub call {
    my ($self, $port, @args) = @_;
    my $c = Nebula::Test::RESP->connect($port, %{ $self->auth })
        or die "redis io: cannot reach $port\n";
    my $v = eval { $c->call(@args) };
    my $err = $@;
    $c->close;
    die $err if $err;
    return $v;
}

sub cli {
    my ($self, $port, @args) = @_;
    my $out = Nebula::Test::Procs::capture('redis-cli', '-p', $port, $self->auth_args, @args);
    chomp $out;
    return $out;
}

# { "start-end" => master port } as a node sees it, or undef
sub slot_map {
    my ($self, $port) = @_;
    for my $p (defined $port ? ($port) : $self->live_ports) {
        my $slots = Nebula::Test::RESP::once($p, $self->auth, 'CLUSTER', 'SLOTS');
        next unless ref $slots eq 'ARRAY';
        return { map { ("$_->[0]-$_->[1]" => $_->[2][1]) } @$slots };
    }
    return undef;
}

sub map_sig {
    my ($m) = @_;
    return join ',', map { "$_=$m->{$_}" } sort { ($a =~ /^(\d+)/)[0] <=> ($b =~ /^(\d+)/)[0] } keys %$m;
}

sub slot_of_key {
    my ($self, $key) = @_;
    for my $p ($self->live_ports) {
        my $v = Nebula::Test::RESP::once($p, $self->auth, 'CLUSTER', 'KEYSLOT', $key);
        return $v if defined $v;
    }
    die "cluster: no node answers CLUSTER KEYSLOT\n";
}

sub master_of_slot {
    my ($self, $slot) = @_;
    return owner($self->slot_map, $slot);
}

sub master_of_key { my ($self, $key) = @_; $self->master_of_slot($self->slot_of_key($key)) }

sub masters {
    my ($self) = @_;
    my $m = $self->slot_map or return;
    my %u = map { $_ => 1 } grep { $self->is_live($_) } values %$m;
    return sort { $a <=> $b } keys %u;
}

# ROLE of a live node: ['master', ...] or ['slave', host, port, state, offset]
sub role { my ($self, $port) = @_; Nebula::Test::RESP::once($port, $self->auth, 'ROLE') }

sub replicas {
    my ($self) = @_;
    return sort { $a <=> $b }
           grep { my $r = $self->role($_); ref $r && $r->[0] eq 'slave' } $self->live_ports;
}

sub replicas_of {
    my ($self, $master) = @_;
    return sort { $a <=> $b } grep {
        my $r = $self->role($_);
        ref $r && $r->[0] eq 'slave' && $r->[2] == $master
    } $self->live_ports;
}

# Every live node says cluster_state:ok and sees the same masters serve
# the same slots (all 16384 of them); with synced, every live node not
# serving slots replicates one that does, its link up.  1, or 0 with
# $self->{why} set
sub check_ok {
    my ($self, %o) = @_;
    my @live = $self->live_ports;
    my ($sig, %serving);
    for my $p (@live) {
        my $info = Nebula::Test::RESP::once($p, $self->auth, 'CLUSTER', 'INFO');
        return $self->why("$p: " . ($@ || 'no CLUSTER INFO')) unless defined $info;
        return $self->why("$p: not cluster_state:ok") unless $info =~ /^cluster_state:ok\r?$/m;
        my $m = $self->slot_map($p) or return $self->why("$p: no CLUSTER SLOTS");
        my $covered = 0;
        for (keys %$m) { my ($a, $b) = split /-/; $covered += $b - $a + 1 }
        return $self->why("$p: $covered slots covered") unless $covered == 16384;
        my $s = map_sig($m);
        return $self->why("$p disagrees: $s vs $sig") if defined $sig && $s ne $sig;
        $sig = $s;
        %serving = map { $_ => 1 } values %$m;
    }
    for my $p (keys %serving) {
        return $self->why("slots served by $p, which is down") unless $self->is_live($p);
    }
    my %serving_ports = %serving;
    if ($o{synced}) {
        my $masters = 0;
        for my $p (@live) {
            my $r = $self->role($p) or return $self->why("$p: no ROLE");
            if ($serving_ports{$p}) {
                return $self->why("$p serves slots but says $r->[0]") unless $r->[0] eq 'master';
                $masters++;
                next;
            }
            return $self->why("$p: $r->[0] without slots") unless $r->[0] eq 'slave';
            return $self->why("$p replicates $r->[2], which serves no slots")
                unless $serving_ports{ $r->[2] };
            return $self->why("$p: link $r->[3]") unless $r->[3] eq 'connected';
        }
    }
    $self->{why} = undef;
    $self->{sig} = $sig;
    return 1;
}

sub why { $_[0]{why} = $_[1]; return 0 }

sub wait_ok {
    my ($self, $secs, %o) = @_;
    my $deadline = time + ($secs // 10) * $Nebula::Test::TIME_SCALE;
    while (1) {
        return 1 if $self->check_ok(%o);
        return 0 if time >= $deadline;
        sleep 0.05;
    }
}

sub kill_node {
    my ($self, $port, $sig) = @_;
    my $m = $self->slot_map;
    $self->{lost}{$port} = [grep { $m->{$_} == $port } keys %$m] if $m;
    Nebula::Test::Procs::reap($self->{nodes}{$port}{pid}, $sig // 'KILL');
    $self->{nodes}{$port}{pid} = 0;
}

sub wait_failover {
    my ($self, $old, $secs) = @_;
    my $lost = $self->{lost}{$old} // [];
    my $deadline = time + ($secs // 10) * $Nebula::Test::TIME_SCALE;
    while (1) {
        # a replica's death moves no slots: 0 once the rest is ok
        return 0 if $self->check_ok && !@$lost;
        if (!$self->{why}) {
            # every range the old master served (at its edges: the new
            # map may split them anew) is a live node's now
            my $m = $self->slot_map;
            my @new = map { my ($a, $b) = split /-/; (owner($m, $a), owner($m, $b)) } @$lost;
            return $new[0] unless grep { !$_ || $_ == $old || !$self->is_live($_) } @new;
        }
        return undef if time >= $deadline;
        sleep 0.05;
    }
}

sub owner {
    my ($m, $slot) = @_;
    for my $r (keys %{ $m // {} }) {
        my ($a, $b) = split /-/, $r;
        return $m->{$r} if $slot >= $a && $slot <= $b;
    }
    return undef;
}

sub restart_node {
    my ($self, $port, %o) = @_;
    $self->launch($port);
    my $secs = ($o{timeout} // 20) * $Nebula::Test::TIME_SCALE;
    $self->wait_up($port, $secs) or die "cluster: node $port did not restart\n" . $self->log_tail($port);
    return 1 unless $o{wait} // 1;
    return $self->wait_ok($secs, synced => 1);
}

sub sum_hash_field {
    my ($self, $pattern, $field) = @_;
    my ($sum, $n) = (0, 0);
    for my $p ($self->masters) {
        my $c = Nebula::Test::RESP->connect($p, %{ $self->auth }, timeout => 5)
            or die "cluster: cannot reach master $p\n";
        my $cursor = 0;
        do {
            my $r = $c->call('SCAN', $cursor, 'MATCH', $pattern, 'COUNT', 1000, 'TYPE', 'hash');
            $cursor = $r->[0];
            for my $k (@{ $r->[1] }) {
                my $v = $c->call('HGET', $k, $field);
                $n++;
                $sum += $v if defined $v;
            }
        } while ($cursor ne '0');
        $c->close;
    }
    return wantarray ? ($sum, $n) : $sum;
}

sub stop {
    my ($self) = @_;
    return unless $self->{owner} && $self->{owner} == $$;
    my @pids = grep { $_ } map { $_->{pid} } values %{ $self->{nodes} // {} };
    Nebula::Test::Procs::reap_all(@pids);
    $_->{pid} = 0 for values %{ $self->{nodes} // {} };
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $?);
    eval { $self->stop };
}

1;
