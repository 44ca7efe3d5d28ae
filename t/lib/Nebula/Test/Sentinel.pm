package Nebula::Test::Sentinel;

# A private Redis Sentinel set-up for one test file: a master, its
# replica(s) and three sentinels (quorum 2) on loopback ports of its own,
# with down-after-milliseconds 1000 and failover-timeout 5000, so that a
# killed master's replica is promoted within 3 to 5 s.
#
#   my $s = Nebula::Test::Sentinel->start(%o);  # sentinels see all
#   my $t = Nebula::Test->new(redis_line => $s->redis_line(db => 2));
#   # or, started in the file's directory and stopped with it:
#   my $t = Nebula::Test->new(sentinel => 1);   # or { %o }; $t->sentinel
#
#   $s->master_name         the monitored name ("nebula")
#   $s->sentinels           "127.0.0.1:s1 127.0.0.1:s2 127.0.0.1:s3"
#   $s->sentinel_ports      the three sentinels' ports
#   $s->redis_line(%o)      "sentinel=NAME <sentinels> [user=U] [password=P] [db=N]"
#   $s->ports               the data nodes' ports (the first started as master)
#   $s->master_port         the master a sentinel names (get-master-addr-by-name)
#   $s->replicas            the live data nodes that say role:slave
#   $s->kill_master         SIGKILLs the current master; its port
#   $s->kill_node($port)    SIGKILLs a data node or a sentinel
#   $s->wait_failover($secs)  the new master's port, or undef: every live
#                           sentinel names the same master, not the one
#                           killed, and it says role:master
#   $s->restart_node($port, wait => 1, as_replica => 0)  a data node (or
#                           a sentinel) back; an old master comes back a
#                           master, and the sentinels make it a replica
#                           about 10 s later (as_replica => 1: started as
#                           the current master's replica); with wait,
#                           until its link is up
#   $s->cli($port, @args)   redis-cli's output, chomped (the data nodes'
#                           auth for a data node; none for a sentinel)
#   $s->call($port, @args)  one command, the reply as data
#   $s->sentinel_call(@args)  one command to the first live sentinel
#   $s->stop                all (DESTROY and an END block do it too)
#
# Options of start: dir, name ("nebula"), replicas (1), quorum (2),
# down_after (ms, 1000), failover_timeout (ms, 5000), appendonly (1),
# password, user (of the data nodes; the sentinels get auth-pass and
# auth-user), args (more redis-server arguments for the data nodes),
# timeout (s to come up, 20).
#
# Each sentinel has its own sentinel.conf in its own directory: sentinels
# rewrite their file (their id, the replicas and the other sentinels they
# learnt, a failover's new master), so it must be writable and not shared.

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
        owner            => $$,
        name             => $o{name} // 'nebula',
        n_replicas       => $o{replicas} // 1,
        quorum           => $o{quorum} // 2,
        down_after       => $o{down_after} // 1000,
        failover_timeout => $o{failover_timeout} // 5000,
        appendonly       => $o{appendonly} // 1,
        password         => $o{password},
        user             => $o{user},
        args             => $o{args} // [],
        nodes            => {},
        order            => [],
        sentinel_order   => [],
    }, $class;
    $self->{dir} = $o{dir}
        // tempdir('nebula-sentinel-XXXXXX', DIR => $ENV{NEBULA_TEST_TMP} // '/tmp',
                   CLEANUP => !$ENV{NEBULA_KEEP});
    make_path($self->{dir});
    my $timeout = ($o{timeout} // 20) * $Nebula::Test::TIME_SCALE;

    # the data nodes: a master, then its replicas
    for my $i (0 .. $self->{n_replicas}) {
        my $port = Nebula::Test::free_port();
        my $dir = "$self->{dir}/redis-$port";
        make_path($dir);
        $self->{nodes}{$port} = { port => $port, dir => $dir, kind => 'redis' };
        push @{ $self->{order} }, $port;
        $self->launch($port, $i ? $self->{order}[0] : undef);
    }
    $self->{first_master} = $self->{order}[0];
    for my $p (@{ $self->{order} }) {
        $self->wait_up($p, $timeout) or die "sentinel: redis $p did not start\n" . $self->log_tail($p);
    }
    # the replicas in sync before the sentinels look: a sentinel learns
    # the replicas from the master's INFO, which it asks at once and then
    # only every 10 s
    my $deadline = time + $timeout;
    for my $p (@{ $self->{order} }[1 .. $#{ $self->{order} }]) {
        until ($self->link_up($p)) {
            die "sentinel: replica $p not in sync\n" . $self->log_tail($p) if time > $deadline;
            sleep 0.02;
        }
    }

    # the sentinels
    for (1 .. 3) {
        my $port = Nebula::Test::free_port();
        my $dir = "$self->{dir}/sentinel-$port";
        make_path($dir);
        $self->{nodes}{$port} = { port => $port, dir => $dir, kind => 'sentinel' };
        push @{ $self->{sentinel_order} }, $port;
        $self->write_sentinel_conf($port);
        $self->launch_sentinel($port);
    }
    for my $p (@{ $self->{sentinel_order} }) {
        $self->wait_up($p, $timeout) or die "sentinel: sentinel $p did not start\n" . $self->log_tail($p);
    }
    # each sees the master, its replicas and the two other sentinels
    # (announced on the master's __sentinel__:hello every 2 s)
    $self->wait_seen($timeout)
        or die "sentinel: the sentinels do not see it all within $timeout s: $self->{why}\n";
    return $self;
}

sub auth { my ($self) = @_; return { password => $self->{password}, user => $self->{user} } }

sub auth_args {
    my ($self) = @_;
    return () unless defined $self->{password};
    return ('--no-auth-warning', (defined $self->{user} ? ('--user', $self->{user}) : ()),
            '--pass', $self->{password});
}

sub node_auth {
    my ($self, $port) = @_;
    return {} if ($self->{nodes}{$port}{kind} // '') eq 'sentinel';
    return $self->auth;
}

sub launch {
    my ($self, $port, $master) = @_;
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
        '--appendonly', $self->{appendonly} ? 'yes' : 'no', '--appendfsync', 'everysec',
        '--enable-debug-command', 'local',
        '--repl-diskless-sync-delay', 0,
        (defined $master ? ('--replicaof', '127.0.0.1', $master) : ()),
        @auth, @{ $self->{args} });
}

sub write_sentinel_conf {
    my ($self, $port) = @_;
    my $node = $self->{nodes}{$port};
    my $n = $self->{name};
    my $conf = join '', map { "$_\n" }
        "port $port",
        'bind 127.0.0.1',
        'daemonize no',
        "dir $node->{dir}",
        "sentinel monitor $n 127.0.0.1 $self->{first_master} $self->{quorum}",
        "sentinel down-after-milliseconds $n $self->{down_after}",
        "sentinel failover-timeout $n $self->{failover_timeout}",
        "sentinel parallel-syncs $n 1",
        (defined $self->{password} ? "sentinel auth-pass $n $self->{password}" : ()),
        (defined $self->{user} ? "sentinel auth-user $n $self->{user}" : ());
    open my $f, '>', "$node->{dir}/sentinel.conf" or die "$node->{dir}/sentinel.conf: $!";
    print $f $conf;
    close $f;
}

sub launch_sentinel {
    my ($self, $port) = @_;
    my $node = $self->{nodes}{$port};
    $node->{pid} = Nebula::Test::Procs::spawn(
        "$node->{dir}/sentinel.log",
        'redis-server', "$node->{dir}/sentinel.conf", '--sentinel');
}

sub wait_up {
    my ($self, $port, $secs) = @_;
    my $deadline = time + ($secs // 10);
    while (time < $deadline) {
        return 0 unless Nebula::Test::Procs::alive($self->{nodes}{$port}{pid});
        my $v = Nebula::Test::RESP::once($port, $self->node_auth($port), 'PING');
        return 1 if defined $v || ($@ && $@ =~ /LOADING/);
        sleep 0.02;
    }
    return 0;
}

sub link_up {
    my ($self, $port) = @_;
    my $r = Nebula::Test::RESP::once($port, $self->auth, 'ROLE');
    return ref $r && $r->[0] eq 'slave' && $r->[3] eq 'connected';
}

sub log_tail {
    my ($self, $port) = @_;
    my $node = $self->{nodes}{$port};
    open my $f, '<', "$node->{dir}/" . ($node->{kind} eq 'sentinel' ? 'sentinel.log' : 'redis.log')
        or return '';
    my @l = <$f>;
    return join '', @l[($#l > 9 ? $#l - 9 : 0) .. $#l];
}

# SENTINEL MASTER's flat list as a hash
sub pairs { my ($l) = @_; return ref $l eq 'ARRAY' ? { @$l } : undef }

# every live sentinel: the master is up (flags "master"), with as many
# replicas as live ones, none down, and the other live sentinels known
sub check_seen {
    my ($self) = @_;
    my @sentinels = grep { $self->is_live($_) } @{ $self->{sentinel_order} };
    my $want_replicas = grep { $self->is_live($_) } @{ $self->{order} };
    $want_replicas--;
    for my $s (@sentinels) {
        my $m = pairs(Nebula::Test::RESP::once($s, {}, 'SENTINEL', 'MASTER', $self->{name}))
            or return $self->why("$s: no SENTINEL MASTER");
        return $self->why("$s: master flags $m->{flags}") unless $m->{flags} eq 'master';
        return $self->why("$s: $m->{'num-other-sentinels'} other sentinels")
            unless $m->{'num-other-sentinels'} >= @sentinels - 1;
        my $reps = Nebula::Test::RESP::once($s, {}, 'SENTINEL', 'REPLICAS', $self->{name});
        my @up = grep { $_->{flags} eq 'slave' && $_->{'master-link-status'} eq 'ok' }
                 map { pairs($_) } @{ $reps // [] };
        return $self->why("$s: " . scalar(@up) . " replicas up") unless @up >= $want_replicas;
    }
    $self->{why} = undef;
    return 1;
}

sub why { $_[0]{why} = $_[1]; return 0 }

sub wait_seen {
    my ($self, $secs) = @_;
    my $deadline = time + ($secs // 10) * $Nebula::Test::TIME_SCALE;
    while (1) {
        return 1 if $self->check_seen;
        return 0 if time >= $deadline;
        sleep 0.05;
    }
}

sub dir { $_[0]{dir} }
sub master_name { $_[0]{name} }
sub ports { @{ $_[0]{order} } }
sub sentinel_ports { @{ $_[0]{sentinel_order} } }
sub pid { $_[0]{nodes}{ $_[1] }{pid} }
sub is_live { my ($self, $port) = @_; Nebula::Test::Procs::alive($self->{nodes}{$port}{pid}) }

sub sentinels { join ' ', map { "127.0.0.1:$_" } @{ $_[0]{sentinel_order} } }

sub redis_line {
    my ($self, %o) = @_;
    my $user = exists $o{user} ? $o{user} : $self->{user};
    my $pass = exists $o{password} ? $o{password} : $self->{password};
    return join ' ', "sentinel=$self->{name}", $self->sentinels,
        (defined $user ? "user=$user" : ()), (defined $pass ? "password=$pass" : ()),
        (defined $o{db} ? "db=$o{db}" : ());
}

sub call {
    my ($self, $port, @args) = @_;
    my $c = Nebula::Test::RESP->connect($port, %{ $self->node_auth($port) })
        or die "redis io: cannot reach $port\n";
    my $v = eval { $c->call(@args) };
    my $err = $@;
    $c->close;
    die $err if $err;
    return $v;
}

sub sentinel_call {
    my ($self, @args) = @_;
    my $err;
    for my $s (grep { $self->is_live($_) } @{ $self->{sentinel_order} }) {
        my $v = eval { $self->call($s, @args) };
        return $v unless $@;
        $err = $@;
    }
    die $err // "sentinel: no live sentinel\n";
}

sub cli {
    my ($self, $port, @args) = @_;
    my @auth = ($self->{nodes}{$port}{kind} // '') eq 'sentinel' ? () : $self->auth_args;
    my $out = Nebula::Test::Procs::capture('redis-cli', '-p', $port, @auth, @args);
    chomp $out;
    return $out;
}

# the master's port as a live sentinel names it
sub master_port {
    my ($self) = @_;
    my $a = $self->sentinel_call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', $self->{name});
    return ref $a ? $a->[1] : undef;
}

sub replicas {
    my ($self) = @_;
    return sort { $a <=> $b } grep {
        my $r = $self->is_live($_) && Nebula::Test::RESP::once($_, $self->auth, 'ROLE');
        ref $r && $r->[0] eq 'slave'
    } @{ $self->{order} };
}

sub kill_node {
    my ($self, $port, $sig) = @_;
    Nebula::Test::Procs::reap($self->{nodes}{$port}{pid}, $sig // 'KILL');
    $self->{nodes}{$port}{pid} = 0;
}

sub kill_master {
    my ($self) = @_;
    my $m = $self->master_port or die "sentinel: no master named\n";
    $self->{killed_master} = $m;
    $self->kill_node($m);
    return $m;
}

sub wait_failover {
    my ($self, $secs, $old) = @_;
    $old //= $self->{killed_master};
    my $deadline = time + ($secs // 15) * $Nebula::Test::TIME_SCALE;
    while (1) {
        my %named;
        for my $s (grep { $self->is_live($_) } @{ $self->{sentinel_order} }) {
            my $a = Nebula::Test::RESP::once($s, {}, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME',
                                             $self->{name});
            $named{ ref $a ? $a->[1] : 0 } = 1;
        }
        my ($new) = keys %named;
        if (keys %named == 1 && $new && (!$old || $new != $old) && $self->is_live($new)) {
            my $r = Nebula::Test::RESP::once($new, $self->auth, 'ROLE');
            return $new if ref $r && $r->[0] eq 'master';
        }
        return undef if time >= $deadline;
        sleep 0.05;
    }
}

sub restart_node {
    my ($self, $port, %o) = @_;
    my $node = $self->{nodes}{$port};
    my $secs = ($o{timeout} // 20) * $Nebula::Test::TIME_SCALE;
    if ($node->{kind} eq 'sentinel') {
        $self->launch_sentinel($port);
        return $self->wait_up($port, $secs);
    }
    # as_replica: started as the current master's replica, as a config
    # an orchestrator rewrote would; else as it was, a master, until the
    # sentinels turn it
    $self->launch($port, $o{as_replica} ? $self->master_port : undef);
    $self->wait_up($port, $secs) or die "sentinel: redis $port did not restart\n" . $self->log_tail($port);
    return 1 unless $o{wait} // 1;
    my $deadline = time + $secs;
    until ($self->link_up($port)) {
        return 0 if time > $deadline;
        sleep 0.05;
    }
    return 1;
}

sub stop {
    my ($self) = @_;
    return unless $self->{owner} && $self->{owner} == $$;
    # the sentinels first: none fails anything over while the rest goes
    my @s = grep { $_ } map { $self->{nodes}{$_}{pid} } @{ $self->{sentinel_order} };
    Nebula::Test::Procs::reap_all(@s);
    my @r = grep { $_ } map { $self->{nodes}{$_}{pid} } @{ $self->{order} };
    Nebula::Test::Procs::reap_all(@r);
    $_->{pid} = 0 for values %{ $self->{nodes} // {} };
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $?);
    eval { $self->stop };
}

1;
