package Nebula::Faults;

# Faults under load: one scenario is a fresh Redis (append-only, fsync at
# every write), the Ollama simulator, nginx with examples/nebula.conf
# (daemonized, so that a binary upgrade works), two keys, steady load
# (wrk with bench/faults.lua on one key; a few streaming "probe" clients
# that keep what they received on the other), and a fault injected while
# it runs.  Then every request that was served is compared with what
# Redis recorded for its key, and the reservations left behind are
# counted.  bench/faults runs the long version and writes the results;
# t/42-faults-under-load.t runs the short one as a test.
#
#   my $r = Nebula::Faults::run('redis-kill', quick => 1, log => sub {...});
#   $r->{lost_tokens} == 0, @{ $r->{problems} } == 0, ...
#
# The ledger: each request asks the simulator for $TOKENS tokens of a
# prompt it counts as $PROMPT tokens, so a request served whole carries
# exactly that usage, whatever the gateway did; the reported part of
# what Redis holds (in - est_in, out - est_out) must equal it.  A stream
# cut short (the pool killed under it) is charged by docs/metering.md's
# rules: the chunks that carried text, and the gateway's prompt estimate,
# both marked estimated; the probes know how many tokens they received.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Copy qw(copy);
use File::Path qw(make_path);
use POSIX qw(ceil strftime);
use Time::HiRes qw(time sleep);

use Nebula::Test qw(json_decode json_encode);

our $ROOT = $Nebula::Test::ROOT;
our $TEXT = 'Count the tokens of this faulty afternoon please';
our $TOKENS = 16;
# t/sim/ollama_sim.py's count: 2 + words + 3 for one message
our $PROMPT = 2 + scalar(split ' ', $TEXT) + 3;
# the gateway's estimate (docs/api.md): the larger of ceil(text / 4) + 4 a
# message + 3, and a floor of ceil(body bytes / 4); the probes' bodies
# differ (stream, stream_options), so each kind has its own
our $ESTIMATE = ceil(length($TEXT) / 4) + 4 + 3;
sub probe_body {
    my ($kind) = @_;
    my $body = { model => 'qwen3:latest', messages => [{ role => 'user', content => $TEXT }] };
    unless ($kind eq 'ndjson') {
        $body->{stream} = JSON::PP::true;
        $body->{stream_options} = { include_usage => JSON::PP::true } if $kind eq 'sse_usage';
    }
    return $body;
}
our %PROBE_ESTIMATE = map {
    my $floor = ceil(length(json_encode(probe_body($_))) / 4);
    ($_ => $floor > $ESTIMATE ? $floor : $ESTIMATE)
} qw(sse sse_usage ndjson);
# qwen3:latest's prices in examples/nebula-catalog.conf, as the cost is
# kept: picodollars a token (USD per 1M tokens x 10^6)
our ($PRICE_IN, $PRICE_OUT) = (200000, 600000);

our @ORDER = qw(redis-kill redis-slow upstream-kill reload upgrade reload-redis-down);

# each scenario: what it does, and when (seconds after the load starts),
# for the full run and for the short one of make test
our %SCENARIO = (
    'redis-kill' => {
        title => 'Redis killed (SIGKILL) and restarted on its port',
        full  => [[3, redis_kill => 1.0], [7.5, redis_kill => 0.2], [11, redis_kill => 2.0]],
        quick => [[0.8, redis_kill => 0.5]],
    },
    'redis-slow' => {
        title => 'Redis blocked 0.3-2 s by a busy Lua script or DEBUG SLEEP',
        full  => [[2.5, redis_stall => 'lua', 0.5], [4, redis_stall => 'debug', 1.5],
                  [6.5, redis_stall => 'lua', 0.8], [8.5, redis_stall => 'debug', 2.0],
                  [11.5, redis_stall => 'lua', 1.2], [13.5, redis_stall => 'debug', 0.3]],
        quick => [[0.5, redis_stall => 'debug', 1.2], [2.0, redis_stall => 'lua', 0.3]],
    },
    'upstream-kill' => {
        title => 'the pool (simulator) killed (SIGKILL) mid-stream, restarted',
        full  => [[3, sim_kill => 1.0], [7, sim_kill => 0.2], [11, sim_kill => 0.5]],
        quick => [[0.8, sim_kill => 0.4]],
    },
    'reload' => {
        title => 'nginx reloaded (SIGHUP) every 2 s',
        full  => [map { [$_, 'reload'] } 2, 4, 6, 8, 10, 12, 14],
        quick => [[0.6, 'reload'], [1.2, 'reload'], [1.8, 'reload']],
    },
    'upgrade' => {
        title => 'nginx binary upgrade: USR2, WINCH, QUIT of the old master',
        full  => [[3, 'upgrade'], [9, 'upgrade']],
        quick => [[0.8, 'upgrade']],
    },
    'reload-redis-down' => {
        title => 'nginx reloaded while Redis is down',
        full  => [[3, 'redis_down'], [3.5, 'reload'], [5, 'redis_up'],
                  [9, 'redis_down'], [9.3, 'reload'], [9.6, 'reload'], [11, 'redis_up']],
        quick => [[0.6, 'redis_down'], [0.9, 'reload'], [1.8, 'redis_up']],
    },
);

# the plan of a run
my %PLAN = (
    full  => { load => 15, tail => 2, conns => 8, pace_ms => 20, wrk_slow => 10,
               probes => 3, probe_slow => 25, reservation => 5 },
    quick => { load => 2.5, tail => 0.5, conns => 4, pace_ms => 20, wrk_slow => 10,
               probes => 2, probe_slow => 15, reservation => 2 },
);

sub plan { my ($mode) = @_; return { %{ $PLAN{$mode} } } }

# nginx's path: a binary upgrade execs it again by the name it ran under
sub nginx_bin {
    my $n = $Nebula::Test::NGINX;
    return abs_path($n) if $n =~ m{/};
    for my $d (split /:/, $ENV{PATH} // '/usr/sbin:/usr/bin') {
        return "$d/$n" if -x "$d/$n";
    }
    return "/usr/sbin/$n";
}

sub slurp {
    my ($f) = @_;
    open my $in, '<', $f or return '';
    local $/;
    return scalar <$in>;
}

# direct children of a process, from /proc
sub children {
    my ($ppid) = @_;
    my @kids;
    for my $st (glob '/proc/[0-9]*/stat') {
        my $s = slurp($st) or next;
        my ($pid, $rest) = $s =~ /^(\d+) \(.*\) (.*)$/s or next;
        my @f = split ' ', $rest;
        push @kids, $pid if $f[1] == $ppid;
    }
    return @kids;
}

# running: a daemonized nginx is not our child, and a zombie of it stays
# until init reaps it
sub alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    my $st = slurp("/proc/$pid/stat");
    return $st =~ /^\d+ \(.*\) ([A-Za-z])/s && $1 ne 'Z' && $1 ne 'X';
}

sub pid_file {
    my ($f) = @_;
    my $p = slurp($f);
    return $p =~ /(\d+)/ ? $1 : undef;
}

sub wait_for {
    my ($secs, $try, $every) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 if $try->();
        sleep($every // 0.02);
    }
    return 0;
}


# ---------------------------------------------------------------- a run

sub new {
    my ($class, $name, %o) = @_;
    my $sc = $SCENARIO{$name} or die "no scenario $name\n";
    my $mode = $o{quick} ? 'quick' : 'full';
    my $self = bless {
        name => $name, sc => $sc, mode => $mode, plan => { %{ $PLAN{$mode} }, %{ $o{plan} // {} } },
        lease => $o{lease} ? 1 : 0, log => $o{log} // sub {}, events => [], bg => [],
        problems => [], masters => {},
    }, $class;
    return $self;
}

sub say_ { my ($self, $msg) = @_; $self->{log}->($msg) }

sub event {
    my ($self, $what) = @_;
    my $at = defined $self->{t0} ? sprintf('%.2f', time - $self->{t0}) : '-';
    push @{ $self->{events} }, { at => 0 + $at, what => $what };
    $self->say_("  +${at}s $what");
}

sub problem {
    my ($self, $what) = @_;
    push @{ $self->{problems} }, $what;
}

# a fresh Redis, simulators and nginx, and the two keys
sub start {
    my ($self) = @_;
    # the harness's Redis, with persistence: SIGKILL loses no write it
    # acknowledged, so what is measured is the gateway, not Redis
    my $t = $self->{t} = Nebula::Test->new(
        no_nginx => 1, redis_args => [qw(--appendonly yes --appendfsync always)]);
    $self->{month} = strftime('%Y-%m', gmtime);
    $self->start_nginx;
    my %limits = (input_tokens => 1_000_000_000_000, output_tokens => 1_000_000_000_000);
    $self->{key_wrk} = $t->new_key(plan => 'enterprise', name => 'faults-wrk', limits => \%limits);
    $self->{key_probe} = $t->new_key(plan => 'enterprise', name => 'faults-probe',
                                     limits => \%limits);
}

sub start_nginx {
    my ($self) = @_;
    my $t = $self->{t};
    my $p = $self->{plan};
    my $lease = $self->{lease};
    $t->render(lease => $lease, patch => sub {
        my ($c) = @_;
        $c =~ s/^(\s*)(nebula_redis_timeout\s+\S+;)/$1$2\n$1nebula_reservation_timeout $p->{reservation}s;  # faults/m
            or die "no nebula_redis_timeout in nebula.conf\n";
        return $c;
    });
    my $out = `@{[ nginx_bin() ]} -p $t->{dir} -c conf/nebula.conf 2>&1`;
    die "nginx did not start: $out" if $?;
    $t->wait_port($t->port);
    my $pid = pid_file("$t->{dir}/logs/nginx.pid") or die "nginx wrote no pid file\n";
    $self->{masters}{$pid} = 1;
}

sub master { my ($self) = @_; return pid_file("$self->{t}{dir}/logs/nginx.pid") }

sub workers { my ($pid) = @_; return grep { slurp("/proc/$_/cmdline") =~ /worker process/ } children($pid) }


# ---------------------------------------------------------------- faults

sub redis_kill {
    my ($self, $down) = @_;
    $self->redis_down;
    sleep $down;
    $self->redis_up;
}

sub redis_down {
    my ($self) = @_;
    my $r = $self->{t}->redis;
    kill 'KILL', $r->{pid};
    waitpid $r->{pid}, 0;
    $r->{pid} = 0;
    $self->event('redis SIGKILLed');
}

sub redis_up {
    my ($self) = @_;
    $self->{t}->redis->launch;
    $self->event('redis restarted (AOF loaded, answers PING)');
}

sub background {
    my ($self, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec(@cmd) or POSIX::_exit(127);
    }
    push @{ $self->{bg} }, $pid;
    return $pid;
}

# blocks Redis for $secs: a script that spins on TIME, or DEBUG SLEEP
sub redis_stall {
    my ($self, $how, $secs) = @_;
    my @cli = ('redis-cli', '-p', $self->{t}->redis->port);
    if ($how eq 'lua') {
        $self->background(@cli, 'EVAL',
            "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] "
            . "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s >= tonumber(ARGV[1]) "
            . "return 1", 0, int($secs * 1e6));
    } else {
        $self->background(@cli, 'DEBUG', 'SLEEP', $secs);
    }
    $self->event("redis blocked for ${secs}s (" . ($how eq 'lua' ? 'busy Lua script' : 'DEBUG SLEEP')
                 . ')');
    sleep $secs;
}

sub sim_kill {
    my ($self, $down) = @_;
    my $t = $self->{t};
    my $sim = $t->sim('local');
    kill 'KILL', $sim->{pid};
    waitpid $sim->{pid}, 0;
    $self->event("simulator SIGKILLed; down for ${down}s");
    sleep $down;
    # the same port, as the harness starts it
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$t->{dir}/logs/sim-local.log";
        open STDERR, '>&', \*STDOUT;
        exec('python3', "$ROOT/t/sim/ollama_sim.py", '--port', $sim->{port})
            or POSIX::_exit(127);
    }
    $sim->{pid} = $pid;
    $t->wait_port($sim->{port});
    $self->event('simulator restarted');
}

sub reload {
    my ($self) = @_;
    # a master still busy with the last reload gets two HUPs as one: a
    # slow build (make test-asan) waits until it received the last one
    my $sent = $self->{hups}++ // 0;
    my $deadline = time + 10;
    while (time < $deadline) {
        my $got = () = (slurp("$self->{t}{dir}/logs/error.log") // '')
                       =~ /signal 1 \(SIGHUP\) received/g;
        last if $got >= $sent;
        sleep 0.05;
    }
    kill 'HUP', $self->master;
    $self->event('SIGHUP (reload)');
}

# USR2: a new master from the same binary; WINCH: the old workers finish
# and leave; QUIT: the old master goes
sub upgrade {
    my ($self) = @_;
    my $dir = $self->{t}{dir};
    my $old = $self->master;
    kill 'USR2', $old;
    $self->event("USR2 to master $old");
    my $new;
    wait_for(10, sub {
        $new = pid_file("$dir/logs/nginx.pid");
        $new && $new != $old && alive($new) && workers($new) >= 2;
    }) or return $self->problem("upgrade: no new master with workers after USR2");
    $self->{masters}{$new} = 1;
    $self->event("new master $new and its workers up");
    kill 'WINCH', $old;
    $self->event("WINCH to the old master");
    wait_for(15, sub { !workers($old) })
        or $self->problem("upgrade: the old workers did not leave after WINCH");
    $self->event('old workers gone');
    kill 'QUIT', $old;
    wait_for(10, sub { !alive($old) })
        or $self->problem("upgrade: the old master did not exit on QUIT");
    delete $self->{masters}{$old};
    $self->event("QUIT: old master $old gone");
}


# ---------------------------------------------------------------- load

sub start_wrk {
    my ($self) = @_;
    my $t = $self->{t};
    my $p = $self->{plan};
    # wrk takes whole seconds: the load stops when the stop file appears
    my $secs = ceil($p->{load} + $p->{tail});
    $self->{stop_file} = "$t->{dir}/logs/wrk.stop";
    my $out = $self->{wrk_out} = "$t->{dir}/logs/wrk.out";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec('wrk', '-t1', "-c$p->{conns}", "-d${secs}s", '--timeout', '10s',
             '-s', "$ROOT/bench/faults.lua", 'http://127.0.0.1:' . $t->port,
             '--', $self->{key_wrk}{key}, $TOKENS, $PROMPT, $self->{stop_file}, $p->{wrk_slow},
             $p->{pace_ms})
            or POSIX::_exit(127);
    }
    $self->{wrk} = $pid;
}

# a probe: streams one after another until the deadline, each written
# down with what it received
sub start_probes {
    my ($self) = @_;
    my $t = $self->{t};
    my $p = $self->{plan};
    my $file = $self->{probe_out} = "$t->{dir}/logs/probes.jsonl";
    open my $fh, '>', $file or die "$file: $!";
    close $fh;
    for my $id (1 .. $p->{probes}) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            # a probe is a copy of this process: it must never stop what
            # the run started (DESTROY), so a signal or an error just ends it
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
            open my $out, '>>', $file or POSIX::_exit(1);
            my $i = $id;
            eval {
                while (time < $self->{deadline}) {
                    my $start = time - $self->{t0};
                    my $rec = probe_one($t, $self->{key_probe}{key},
                                        (qw(sse sse_usage ndjson))[$i++ % 3], $p->{probe_slow});
                    $rec->{start} = sprintf '%.3f', $start;
                    $rec->{at} = sprintf '%.3f', time - $self->{t0};
                    syswrite $out, json_encode($rec) . "\n";
                    sleep 0.05 unless $rec->{complete};
                }
            };
            POSIX::_exit($@ ? 1 : 0);
        }
        push @{ $self->{probes} }, $pid;
    }
}

sub probe_one {
    my ($t, $key, $kind, $slow) = @_;
    my $native = $kind eq 'ndjson';
    my $body = probe_body($kind);
    my $r = $t->post($native ? '/api/chat' : '/v1/chat/completions', $body,
                     headers => { Authorization => "Bearer $key", 'x-sim-tokens' => $TOKENS,
                                  'x-sim-split' => 'none', 'x-sim-fault' => "slow:$slow" },
                     timeout => 30);
    my %rec = (kind => $kind, status => 0 + $r->{status}, complete => 0, tokens => 0, bad => 0);
    return \%rec unless $r->{status} == 200;

    my ($usage, $done);
    if ($native) {
        for my $l (Nebula::Test::ndjson_lines($r->{body})) {
            next unless ref $l eq 'HASH';
            if ($l->{done}) {
                $done = 1;
                $usage = [$l->{prompt_eval_count}, $l->{eval_count}];
            } elsif (length(($l->{message} // {})->{content} // '')) {
                $rec{tokens}++;
            }
        }
    } else {
        for my $e (Nebula::Test::sse_events($r->{body})) {
            if (!ref $e) {
                $done = 1 if $e eq '[DONE]';
                next;
            }
            if (ref $e->{usage}) {
                $usage = [$e->{usage}{prompt_tokens}, $e->{usage}{completion_tokens}];
            }
            my $c = (($e->{choices} // [])->[0] // {})->{delta}{content};
            $rec{tokens}++ if defined $c && length $c;
        }
    }
    $rec{complete} = ($r->{chunked_complete} && $done) ? 1 : 0;
    if ($rec{complete}) {
        # whole: every token, and the usage where the client asked for it
        my $want_usage = $kind ne 'sse';
        $rec{bad} = 1 if $rec{tokens} != $TOKENS
            || ($want_usage && !($usage && $usage->[0] == $PROMPT && $usage->[1] == $TOKENS))
            || (!$want_usage && $usage);
    }
    return \%rec;
}


# ---------------------------------------------------------------- Redis

sub hash {
    my ($self, $key) = @_;
    my @l = split /\n/, $self->{t}->redis->cli('HGETALL', $key);
    return {} if @l % 2;
    return {@l};
}

sub ledger {
    my ($self, $k) = @_;
    my $id = $k->{id};
    my $m = $self->{month};
    my $u = $self->hash("nb:{$id}:u:$m");
    my $mh = $self->hash("nb:{$id}:m:$m");
    my %l = map { $_ => 0 + ($u->{$_} // 0) } qw(in out rin rout req cost est_req est_in est_out);
    $l{model} = { map { $_ => 0 + ($mh->{"qwen3:latest|$_"} // 0) }
                  qw(in out req cost est_req est_in est_out) };
    $l{reservations} = 0 + $self->{t}->redis->cli('ZCARD', "nb:{$id}:res:$m");
    $l{expired} = 0 + $self->{t}->redis->cli('SCARD', "nb:{$id}:exp:$m");
    return \%l;
}

sub settled {
    my ($l) = @_;
    return !$l->{rin} && !$l->{rout} && !$l->{reservations};
}


# ---------------------------------------------------------------- the run

sub run {
    my ($name, %o) = @_;
    my $self = __PACKAGE__->new($name, %o);
    $self->{keep_to} = $o{keep_logs};
    $self->{on_stop} = $o{on_stop};
    my $ok = eval { $self->go; 1 };
    my $err = $@;
    $self->stop;
    $self->problem("the run broke: $err") unless $ok;
    my $res = $self->{result} //= { name => $name, title => $self->{sc}{title} };
    $res->{problems} = $self->{problems};
    $res->{ok} = @{ $self->{problems} } ? JSON::PP::false : JSON::PP::true;
    return $res;
}

sub go {
    my ($self) = @_;
    my $p = $self->{plan};
    my $tstart = time;
    $self->say_("== $self->{name}: $self->{sc}{title}" . ($self->{lease} ? ' (nebula_lease on)' : ''));
    $self->start;

    $self->{t0} = time;
    $self->{deadline} = $self->{t0} + $p->{load};
    $self->start_wrk;
    $self->start_probes;

    for my $ev (@{ $self->{sc}{ $self->{mode} } }) {
        my ($at, $action, @args) = @$ev;
        my $wait = $self->{t0} + $at - time;
        sleep $wait if $wait > 0;
        $self->$action(@args);
    }

    # the end of the metered load: wrk sends only GET /v1/models from now
    # on, and what is in flight ends before wrk stops
    my $wait = $self->{deadline} - time;
    sleep $wait if $wait > 0;
    open my $stop, '>', $self->{stop_file} or die "$self->{stop_file}: $!";
    close $stop;
    $self->problem(sprintf 'the faults ran %.1f s past the load', -$wait)
        if $wait < -$p->{tail} / 2;

    for my $pid (@{ $self->{probes} }) {
        waitpid $pid, 0;
        $self->problem("a probe client failed ($?)") if $?;
    }
    $self->{probes} = [];
    waitpid $self->{wrk}, 0;
    my $wrk_status = $? >> 8;
    delete $self->{wrk};
    $self->{load_end} = time;
    $self->event('load over');
    my %wrk = parse_wrk(slurp($self->{wrk_out}));
    $self->problem("wrk exited with $wrk_status: " . slurp($self->{wrk_out})) if $wrk_status;

    # every request settled, or reservations left behind: a reservation
    # nobody settles (an admission Redis applied and whose reply was
    # lost) expires, and the key's next admission gives it back; one
    # request a key, once the timeout has passed, sweeps them
    my @keys = ($self->{key_wrk}, $self->{key_probe});
    my $sweep_at = $self->{deadline} + $p->{reservation} + 1.2;
    my %after;
    wait_for(($sweep_at - time > 2 ? $sweep_at - time : 2), sub {
        %after = map { $_->{id} => $self->ledger($_) } @keys;
        !grep { !settled($_) } values %after;
    }, 0.2);
    my %left = map { $_ => { rin => $after{$_}{rin}, rout => $after{$_}{rout},
                             members => $after{$_}{reservations} } } keys %after;
    my %sweep;
    for my $k (@keys) {
        my $r = $self->{t}->post('/v1/chat/completions',
            { model => 'qwen3:latest', messages => [{ role => 'user', content => $TEXT }] },
            headers => { Authorization => "Bearer $k->{key}", 'x-sim-tokens' => $TOKENS });
        $sweep{ $k->{id} } = $r->{status} == 200 ? 1 : 0;
        $self->problem("the request after the run answered $r->{status}: $r->{body}")
            unless $r->{status} == 200;
    }
    # (with leases, the request after the run opens one, whose block goes
    # back when it closes, five seconds after it was granted)
    my %final;
    wait_for(10, sub {
        %final = map { $_->{id} => $self->ledger($_) } @keys;
        !grep { !settled($_) } values %final;
    }, 0.2);
    $self->event('settled and swept');

    $self->{result} = $self->account(\%wrk, \%left, \%sweep, \%final);
    $self->{result}{duration_s} = 0 + sprintf('%.1f', time - $tstart);
}

sub parse_wrk {
    my ($out) = @_;
    my %w = (status => {}, bad => 0, socket => {}, idle => 0, requests => 0);
    for (split /\n/, $out) {
        if (/^faults socket (\w+) (\d+)/) {
            $w{socket}{$1} = 0 + $2;
        } elsif (/^faults (sent|sent-idle) (\d+)$/) {
            $w{$1 eq 'sent' ? 'sent' : 'sent_idle'} = 0 + $2;
        } elsif (/^faults requests (\d+)/) {
            $w{requests} = 0 + $1;
        } elsif (/^faults (\w+) (\d+)(-bad)? (\d+)/) {
            my ($kind, $st, $bad, $n) = ($1, $2, $3, $4);
            if ($kind eq 'idle') {
                $w{idle} += $n;
                next;
            }
            $w{by_kind}{$kind}{$st} += $n;
            $w{status}{$st} += $n;
            $w{bad} += $n if $bad;
        }
    }
    $w{parsed} = exists $w{socket}{read};
    return %w;
}

sub read_probes {
    my ($self) = @_;
    my @recs;
    for (split /\n/, slurp($self->{probe_out} // '')) {
        my $r = json_decode($_) or next;
        push @recs, $r;
    }
    return @recs;
}

sub account {
    my ($self, $wrk, $left, $sweep, $final) = @_;
    my ($A, $B) = ($self->{key_wrk}{id}, $self->{key_probe}{id});
    my %res = (name => $self->{name}, title => $self->{sc}{title}, mode => $self->{mode},
               lease => $self->{lease} ? JSON::PP::true : JSON::PP::false,
               plan => $self->{plan}, events => $self->{events},
               usage_per_request => { prompt => $PROMPT, completion => $TOKENS },
               prompt_estimate => \%PROBE_ESTIMATE);

    $self->problem('wrk printed no counts') unless $wrk->{parsed};

    # wrk's key: served = the 200s it read whole
    my $served_wrk = ($wrk->{status}{200} // 0) + $sweep->{$A};
    # a metered request written and never answered: its connection closed
    # under it (wrk's socket errors also count idle connections closed)
    $wrk->{answered} = sum(values %{ $wrk->{status} });
    # (wrk calls request() once more than it sends: to check the script)
    $wrk->{unanswered} = ($wrk->{sent} // 1) - 1 - $wrk->{answered};
    my @probes = $self->read_probes;
    my @complete = grep { $_->{status} == 200 && $_->{complete} } @probes;
    my @cut = grep { $_->{status} == 200 && !$_->{complete} } @probes;
    my $served_probe = @complete + $sweep->{$B};

    my %failed;
    for my $st (keys %{ $wrk->{status} }) {
        $failed{$st} += $wrk->{status}{$st} unless $st == 200;
    }
    $failed{'no-response'} = $wrk->{unanswered} if $wrk->{unanswered};
    for my $r (@probes) {
        next if $r->{status} == 200;
        $failed{ $r->{status} ? $r->{status} : 'no-response' }++;
    }
    $failed{'200-cut'} = scalar @cut if @cut;

    my $bad = $wrk->{bad} + grep { $_->{bad} } @probes;
    $self->problem("$bad responses served with the wrong tokens or usage") if $bad;

    $res{wrk} = $wrk;
    $res{probes} = { requests => scalar @probes, complete => scalar @complete, cut => scalar @cut,
                     cut_tokens_received => sum(map { $_->{tokens} } @cut),
                     status => count_by(map { $_->{status} } @probes),
                     cut_list => [ map { { kind => $_->{kind}, tokens => $_->{tokens},
                                           at => 0 + $_->{at} } } @cut ] };
    $res{served} = $served_wrk + $served_probe;
    $res{failed} = \%failed;
    $res{failed_total} = sum(values %failed);
    $res{bad} = $bad;

    # the ledger, a key at a time
    my ($lost, $over, $served_tok, $rec_tok) = (0, 0, 0, 0);
    for my $k ([$A, 'wrk', $served_wrk], [$B, 'probes', $served_probe]) {
        my ($id, $who, $served) = @$k;
        my $l = $final->{$id};
        my %e = (in => $served * $PROMPT, out => $served * $TOKENS);
        my %r = (in => $l->{in} - $l->{est_in}, out => $l->{out} - $l->{est_out});
        my %k = (served => $served, expected => \%e, recorded_reported => \%r,
                 estimated => { requests => $l->{est_req}, in => $l->{est_in}, out => $l->{est_out} },
                 requests_recorded => $l->{req}, cost => $l->{cost},
                 reservations_after_load => $left->{$id},
                 reservations_final => { rin => $l->{rin}, rout => $l->{rout},
                                         members => $l->{reservations} },
                 expired_unsettled => $l->{expired});
        for my $d (qw(in out)) {
            $k{lost}{$d} = $e{$d} > $r{$d} ? $e{$d} - $r{$d} : 0;
            $k{over}{$d} = $r{$d} > $e{$d} ? $r{$d} - $e{$d} : 0;
            $lost += $k{lost}{$d};
            $over += $k{over}{$d};
            $served_tok += $e{$d};
            $rec_tok += $r{$d};
        }
        $self->problem("$who key: $k{lost}{in} input and $k{lost}{out} output tokens of served "
                       . "requests not recorded") if $k{lost}{in} || $k{lost}{out};
        $self->problem("$who key: $k{over}{in} input and $k{over}{out} output tokens recorded "
                       . "as reported beyond what was served") if $k{over}{in} || $k{over}{out};
        $self->problem("$who key: reservations left after the expiry sweep: "
                       . "rin $l->{rin} rout $l->{rout}, $l->{reservations} in flight")
            unless settled($l);
        my $cost = $l->{in} * $PRICE_IN + $l->{out} * $PRICE_OUT;
        $self->problem("$who key: cost $l->{cost} pUSD, its tokens make $cost") if $cost != $l->{cost};
        for my $f (qw(in out req cost est_req est_in est_out)) {
            next if $l->{model}{$f} == $l->{$f};
            $self->problem("$who key: the model's $f ($l->{model}{$f}) is not the month's ($l->{$f})");
        }
        $self->problem("$who key: $l->{req} requests recorded, fewer than the $served served")
            if $l->{req} < $served;
        $res{keys}{$who} = \%k;
    }

    # cut streams are charged what they streamed (docs/metering.md): the
    # probes know how many tokens reached them; the gateway may have
    # counted one more a stream, begun and not yet passed on
    my $pk = $res{keys}{probes};
    my $seen = $res{probes}{cut_tokens_received};
    my $with_tokens = grep { $_->{tokens} > 0 } @cut;
    my $est = $pk->{estimated};
    $res{cut_streams} = { streams => scalar @cut, tokens_received => $seen,
                          charged_out => $est->{out}, charged_in => $est->{in},
                          estimated_requests => $est->{requests} };
    if ($est->{out} < $seen || $est->{out} > $seen + @cut) {
        $self->problem("probes: $seen tokens of cut streams received, $est->{out} charged");
    }
    if ($est->{requests} < $with_tokens || $est->{requests} > @cut) {
        $self->problem("probes: $est->{requests} estimated requests for " . scalar(@cut)
                       . " cut streams ($with_tokens with tokens)");
    }
    my ($lo, $hi) = (sort { $a <=> $b } values %PROBE_ESTIMATE)[0, -1];
    if ($est->{in} < $est->{requests} * $lo || $est->{in} > $est->{requests} * $hi) {
        $self->problem("probes: estimated input $est->{in}, not $est->{requests} estimates of $lo to $hi");
    }

    # after each restart: how long until a probe that starts is served
    # again (probes retry every 50 ms or so while they fail)
    my @ev = @{ $self->{events} };
    for my $i (0 .. $#ev) {
        my $ev = $ev[$i];
        next unless $ev->{what} =~ /restarted/;
        my $until = $i < $#ev ? $ev[$i + 1]{at} : $ev->{at} + 5;
        my ($first) = sort { $a <=> $b } map { $_->{start} }
            grep { $_->{status} == 200 && $_->{start} >= $ev->{at} } @probes;
        my ($fail) = sort { $b <=> $a } map { $_->{start} }
            grep { $_->{status} != 200 && $_->{start} >= $ev->{at} && $_->{start} < $until }
            @probes;
        push @{ $res{recovery} }, { after => $ev->{what}, at => $ev->{at},
            first_served_s => defined $first ? 0 + sprintf('%.2f', $first - $ev->{at}) : undef,
            last_refused_s => defined $fail ? 0 + sprintf('%.2f', $fail - $ev->{at}) : undef };
    }

    $res{tokens_served} = $served_tok;
    $res{tokens_recorded} = $rec_tok;
    $res{lost_tokens} = $lost;
    $res{over_tokens} = $over;
    $res{reservations_after_load} = sum(map { $_->{members} } values %$left);
    $res{reservations_left} = sum(map { $_->{reservations} + ($_->{rin} ? 1 : 0) + ($_->{rout} ? 1 : 0) }
                                  values %$final);
    $res{expired_unsettled} = sum(map { $_->{expired} } values %$final);

    $res{error_log} = $self->error_log_summary;
    return \%res;
}

# the results as a table, a line a run
sub table {
    my (@res) = @_;
    my @out;
    my $fmt = "%-17s %-5s %6s  %-36s %7s %8s %4s %4s %5s %4s %6s  %s";
    push @out, sprintf $fmt, 'scenario', 'lease', 'served', 'failed (by status)', 'tokens',
        'recorded', 'lost', 'cut', 'orph', 'left', 'time', 'ok';
    for my $r (@res) {
        my $f = $r->{failed} // {};
        my $failed = join(' ', map { "$_:$f->{$_}" } sort keys %$f) || '-';
        push @out, sprintf $fmt,
            $r->{name}, ($r->{lease} ? 'on' : 'off'), $r->{served} // '?', $failed,
            $r->{tokens_served} // '?', $r->{tokens_recorded} // '?', $r->{lost_tokens} // '?',
            ($r->{cut_streams} // {})->{streams} // '?', $r->{expired_unsettled} // '?',
            $r->{reservations_left} // '?', (defined $r->{duration_s} ? "$r->{duration_s}s" : '?'),
            $r->{ok} ? 'ok' : 'FAIL';
    }
    return join("\n", @out) . "\n";
}

sub sum { my $s = 0; $s += $_ // 0 for @_; return $s }
sub count_by { my %c; $c{$_}++ for @_; return \%c }

# error.log by message, numbers and addresses folded
sub error_log_summary {
    my ($self) = @_;
    my $text = slurp("$self->{t}{dir}/logs/error.log");
    my (%by, @serious);
    for my $line (split /\n/, $text) {
        next unless $line =~ /\[(warn|error|crit|alert|emerg)\] \d+#\d+: (?:\*\d+ )?(.*)$/;
        my ($lvl, $msg) = ($1, $2);
        $msg =~ s/, client: .*//;
        $msg =~ s/"[^"]*"/"..."/g;
        $msg =~ s/\d+/N/g;
        $by{"[$lvl] $msg"}++;
        push @serious, $line if $lvl =~ /crit|alert|emerg/;
    }
    my @signals = $text =~ /(exited on signal \d+)/g;
    $self->problem(scalar(@serious) . " [crit]/[alert]/[emerg] lines in error.log: $serious[0]")
        if @serious;
    $self->problem("a worker crashed: $signals[0]") if @signals;
    for my $m (keys %by) {
        # the gateway says it could not record usage
        $self->problem("error.log: $m ($by{$m})")
            if $m =~ /settlements? (?:that redis did not take|were dropped|wait for redis)|refused a settlement|no memory to settle|leases unsettled/;
    }
    my %notice;
    $notice{reloads} = () = $text =~ /signal 1 \(SIGHUP\) received/g;
    $notice{upgrades} = () = $text =~ /signal 12 \(SIGUSR2\) received/g;
    $notice{redis_back} = () = $text =~ /nebula: redis at "[^"]+" is back/g;
    return { by_message => \%by, crit_alert_emerg => scalar @serious,
             worker_signals => scalar @signals, notices => \%notice };
}

# keeps the logs of a run
sub keep_logs {
    my ($self, $to) = @_;
    return unless $self->{t} && -d "$self->{t}{dir}/logs";
    make_path($to);
    copy($_, $to) for glob "$self->{t}{dir}/logs/*";
    copy("$self->{t}{dir}/conf/nebula.conf", $to);
}

# stops all it started: nginx (every master of the run), the load, the
# stalls, the simulators, Redis
sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    kill 'TERM', grep { $_ } $self->{wrk}, @{ $self->{probes} // [] };
    waitpid $_, 0 for grep { $_ } $self->{wrk}, @{ $self->{probes} // [] };
    my $t = $self->{t} or return;
    my @masters = grep { alive($_) } keys %{ $self->{masters} },
                  grep { defined } pid_file("$t->{dir}/logs/nginx.pid"),
                  pid_file("$t->{dir}/logs/nginx.pid.oldbin");
    my %m = map { $_ => 1 } @masters;
    my @all = (keys %m, map { children($_) } keys %m);
    kill 'QUIT', keys %m;
    wait_for(10, sub { !grep { alive($_) } @all });
    kill 'KILL', grep { alive($_) } @all;
    for my $pid (@{ $self->{bg} }) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    $self->{bg} = [];
    $self->keep_logs($self->{keep_to}) if $self->{keep_to};
    # nginx is gone: what a caller checks then (the harness's sanitizer
    # reports, in t/42)
    $self->{on_stop}->($t) if $self->{on_stop};
    # the harness stops the simulators and Redis; its error.log check is
    # ours here (a fault run logs [error] lines by design)
    $_->stop for values %{ $t->{sims} };
    $t->{redis}->stop if $t->{redis};
    $t->{destroyed} = 1;
}

sub DESTROY { $_[0]->stop }

1;
