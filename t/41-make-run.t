#!/usr/bin/perl
# `make run` (tools/run) as a new user meets it, but in a state directory
# of its own (NEBULA_RUN_DIR) and on free ports, so it never clashes with
# a real `make run` on 8080: no Ollama answers, so the bundled simulator
# stands in; the printed demo key serves the seed's curl example; the
# printed admin token works; SIGTERM stops every process it started.  And
# without NEBULA_ADMIN_TOKEN a token is made, printed and kept.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use POSIX qw(WNOHANG setsid);
use Time::HiRes qw(sleep time);
use Nebula::Test qw(free_port json_decode);

my $root = "$FindBin::Bin/..";
my %running;    # tools/run pid => its output file, until it is stopped

# whatever happens (a failed assertion, a die, ^C), nothing is left behind
sub kill_all {
    for my $pid (keys %running) {
        kill 'TERM', -$pid;    # its process group: run, nginx, redis, sim
        my $deadline = time + 5;
        sleep 0.05 while time < $deadline && waitpid($pid, WNOHANG) == 0;
        kill 'KILL', -$pid;
        waitpid $pid, 0;
        delete $running{$pid};
    }
}
END { my $rc = $?; kill_all(); $? = $rc }
$SIG{INT} = $SIG{TERM} = sub { kill_all(); exit 1 };

# starts tools/run with this environment; returns its pid and output
sub start_run {
    my (%env) = @_;
    my $out = "$env{NEBULA_RUN_DIR}.out";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        setsid();
        delete $ENV{$_} for grep { /^NEBULA_/ } keys %ENV;
        for (keys %env) {
            if (defined $env{$_}) { $ENV{$_} = $env{$_} } else { delete $ENV{$_} }
        }
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or die "$out: $!";
        open STDERR, '>&', \*STDOUT;
        exec "$root/tools/run";
        exit 127;
    }
    $running{$pid} = $out;

    # up when the banner is out, and the curl lines after it
    my $text = '';
    my $deadline = time + 90;
    while (time < $deadline) {
        $text = slurp($out);
        last if $text =~ /Logs: /;
        last if waitpid($pid, WNOHANG) == $pid && do { delete $running{$pid}; 1 };
        sleep 0.1;
    }
    return ($pid, $text);
}

sub slurp {
    open my $f, '<', $_[0] or return '';
    local $/;
    return <$f> // '';
}

# the pids of every descendant of $pid, with their command lines
sub descendants {
    my ($pid) = @_;
    my %children;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $f, '<', $stat or next;
        my $line = <$f> // next;
        my ($p, $ppid) = $line =~ /^(\d+) \(.*\) \S+ (\d+)/s or next;
        push @{ $children{$ppid} }, $p;
    }
    my %all;
    my @queue = ($pid);
    while (defined(my $p = shift @queue)) {
        for my $c (@{ $children{$p} // [] }) {
            next if $all{$c};
            $all{$c} = cmdline($c);
            push @queue, $c;
        }
    }
    return \%all;
}

sub cmdline {
    open my $f, '<', "/proc/$_[0]/cmdline" or return '';
    my $c = do { local $/; <$f> } // '';
    $c =~ s/\0/ /g;
    return $c;
}

sub alive {
    my ($pid) = @_;
    open my $f, '<', "/proc/$pid/stat" or return 0;
    my $line = <$f> // return 0;
    my ($state) = $line =~ /^\d+ \(.*\) (\S)/s;
    return defined $state && $state ne 'Z';
}

sub http {
    my ($port, $method, $path, %o) = @_;
    my %h = (Host => 'localhost', Connection => 'close', %{ $o{headers} // {} });
    my $body = $o{body};
    if (defined $body) {
        $h{'Content-Type'} //= 'application/json';
        $h{'Content-Length'} = length $body;
    }
    my $req = "$method $path HTTP/1.1\r\n" . join('', map { "$_: $h{$_}\r\n" } sort keys %h)
              . "\r\n" . ($body // '');
    return Nebula::Test->exchange($req, port => $port);
}

# SIGTERM to tools/run alone: it and all it started are gone soon after
sub stop_and_check {
    my ($pid, $port, $what) = @_;
    my $procs = descendants($pid);
    my @cmds = values %$procs;
    ok((grep { /\bnginx: master process\b/ } @cmds), "$what: nginx master started")
        or diag explain $procs;
    ok((grep { /\bnginx: worker process\b/ } @cmds), "$what: nginx workers started");
    ok((grep { /redis-server/ } @cmds), "$what: redis-server started");
    ok((grep { /ollama_sim\.py/ } @cmds), "$what: the simulator started");

    kill 'TERM', $pid;
    my $deadline = time + 5;
    my $exited;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) { $exited = $?; last }
        sleep 0.05;
    }
    ok defined $exited, "$what: tools/run exits on SIGTERM";
    is $exited >> 8, 0, "$what: with status 0" if defined $exited;
    delete $running{$pid} if defined $exited;

    # every process it started: gone within a few seconds
    my @left;
    $deadline = time + 5;
    while (time < $deadline) {
        @left = grep { alive($_) } keys %$procs;
        last unless @left;
        sleep 0.05;
    }
    ok !@left, "$what: every process it started is gone ("
               . scalar(keys %$procs) . ' processes)'
        or diag join "\n", map { "$_ $procs->{$_}" } @left;
    my $r = http($port, 'GET', '/v1/models');
    is $r->{status}, 0, "$what: nothing listens on its port any more";
}


# ---- with NEBULA_ADMIN_TOKEN: the tour of the README
{
    my $dir = tempdir('nebula-run-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0755, $dir;    # nginx's workers (nobody) reach Redis's socket in it
    my $state = "$dir/state";
    my $port = free_port();
    my $token = 'run-test-admin-token-' . join('', map { int rand 10 } 1 .. 12);
    my ($pid, $out) = start_run(
        NEBULA_RUN_DIR      => $state,
        NEBULA_PORT         => $port,
        NEBULA_OLLAMA       => '127.0.0.1:' . free_port(),    # nothing there
        NEBULA_OLLAMA_CLOUD => 'http://127.0.0.1:' . free_port(),
        NEBULA_ADMIN_TOKEN  => $token,
    );

    like $out, qr{Nebula is up on http://127\.0\.0\.1:$port\b}, 'tools/run is up on NEBULA_PORT'
        or diag $out;
    like $out, qr/using the bundled simulator/, 'no Ollama answers: the simulator stands in';
    my ($key) = $out =~ /Demo key \(plan developer\):\s+(\S+)/;
    my ($mkey) = $out =~ /Management key:\s+(\S+)/;
    my ($printed) = $out =~ /Admin token:\s+(\S+)/;
    like $key // '', qr/^nb-[0-9a-f]{16}-/, 'a demo API key is printed, a key of an account';
    like $mkey // '', qr/^nbm-[0-9a-f]{16}-/, 'and its account\'s management key, to sign in to the dashboard';
    like $out, qr{Dashboard:\s+http://127\.0\.0\.1:$port/dashboard/}, 'the dashboard\'s address is printed';
    is $printed, $token, 'the admin token printed is NEBULA_ADMIN_TOKEN';
    ok -s "$state/conf/nebula.conf" && -d "$state/logs" && -S "$state/redis/redis.sock",
        'its state is in NEBULA_RUN_DIR';
    ok !-e "$root/run/demo-account" || (stat "$root/run/demo-account")[9] < $^T,
        'nothing written to run/ in the repository';
    my $conf = slurp("$state/conf/nebula.conf");
    like $conf, qr/listen\s+127\.0\.0\.1:$port;/, 'nginx listens on NEBULA_PORT';

    # the seed's curl example, as printed, run by a shell as a user would
    my ($curl) = $out =~ m{^\s*(curl -X POST http://\S+/v1/chat/completions.*?\}')\s*$}ms;
    ok $curl, 'the curl example is printed' or diag $out;
    $curl //= 'false';
    $curl =~ s/\\\n\s*/ /g;
    my $got = `$curl -s -m 20 -w '\\n%{http_code}' 2>&1`;
    my ($body, $code) = $got =~ /^(.*)\n(\d+)$/s;
    is $code, 200, 'the curl example answers 200' or diag $got;
    my $j = json_decode($body // '') // {};
    is $j->{model}, 'qwen3:latest', 'with model qwen3:latest';
    ok length($j->{choices}[0]{message}{content} // ''), 'and an answer';

    # the same, by hand
    my $r = http($port, 'POST', '/v1/chat/completions',
                 headers => { Authorization => "Bearer $key" },
                 body => '{"model": "qwen3:latest", "messages": [{"role": "user", "content": "Hello"}]}');
    is $r->{status}, 200, 'POST /v1/chat/completions with the demo key: 200';
    is $r->{json}{model}, 'qwen3:latest', 'model qwen3:latest';

    $r = http($port, 'GET', '/v1/models');
    is $r->{status}, 200, 'GET /v1/models: 200';
    ok((grep { $_->{id} eq 'qwen3:latest' } @{ $r->{json}{data} // [] }), 'lists qwen3:latest');

    $r = http($port, 'GET', '/v1/key', headers => { Authorization => "Bearer $key" });
    is $r->{status}, 200, 'GET /v1/key with the demo key: 200';
    is $r->{json}{data}{plan}, 'developer', 'the demo key is on the developer plan';

    # the dashboard: its page, under its policy; the account it signs in to
    $r = http($port, 'GET', '/dashboard/');
    is $r->{status}, 200, 'GET /dashboard/: 200';
    like $r->{headers}{'content-security-policy'} // '', qr/default-src 'none'; script-src 'self'/,
        'under a strict Content-Security-Policy';
    like $r->{body}, qr{<script type="module" src="js/main\.js">}, 'the page, its script its own file';
    $r = http($port, 'GET', '/');
    is $r->{status}, 302, 'GET /: to the dashboard';
    $r = http($port, 'GET', '/v1/account', headers => { Authorization => "Bearer $mkey" });
    is $r->{json}{data}{name}, 'make run demo', 'the management key reads its account';
    $r = http($port, 'GET', '/v1/plans');
    is $r->{json}{signup}{plan}, 'free', 'sign-up is open, for the Free plan ("Get Started")';
    like $out, qr{Metrics \(Prometheus\): http://127\.0\.0\.1:$port/metrics}, 'the metrics\' address is printed';
    like $out, qr{Health \(load balancer\): http://127\.0\.0\.1:$port/health}, 'the health probe\'s address is printed';
    $r = http($port, 'GET', '/health');
    is "$r->{status} $r->{json}{status}", '200 ok', 'and it says the edge admits requests';
    $r = http($port, 'GET', '/metrics');
    like $r->{body}, qr/^nebula_requests_total\{model="qwen3:latest",pool="ollama_local",plan="developer",status="200"\} \d+$/m,
        'and they count the requests made above';

    $r = http($port, 'POST', '/admin/keys', headers => { Authorization => "Bearer $token" },
              body => '{"plan": "free", "name": "alice"}');
    is $r->{status}, 201, 'the admin token creates a key';
    like $r->{json}{key} // '', qr/^nb-/, 'and the key is returned';
    $r = http($port, 'GET', '/admin/keys', headers => { Authorization => "Bearer $token-x" });
    is $r->{status}, 401, 'another admin token is refused';

    stop_and_check($pid, $port, 'with a token');

    my $log = slurp("$state/logs/error.log");
    unlike $log, qr/\[(alert|crit|emerg)\]/, 'no [alert], [crit] or [emerg] in its error.log';
    like slurp("$state.out"), qr/nebula: stopped/, 'it says it stopped';
}

# ---- without NEBULA_ADMIN_TOKEN: one is made, printed and kept; and the
# state in a directory only its owner may enter (as in mktemp -d's)
{
    my $dir = tempdir('nebula-run-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0700, $dir;
    my $state = "$dir/state";
    my $port = free_port();
    my ($pid, $out) = start_run(
        NEBULA_RUN_DIR      => $state,
        NEBULA_PORT         => $port,
        NEBULA_OLLAMA       => '127.0.0.1:' . free_port(),
        NEBULA_OLLAMA_CLOUD => 'http://127.0.0.1:' . free_port(),
    );
    my ($token) = $out =~ /Admin token:\s+(\S+)/;
    like $token // '', qr/^nbadm-[A-Za-z0-9_-]{20,}$/, 'a token is generated and printed'
        or diag $out;
    $token //= '';
    my $kept = slurp("$state/admin-token");
    chomp $kept;
    is $kept, $token, "and kept in NEBULA_RUN_DIR's admin-token";
    is((stat "$state/admin-token")[2] & 0777, 0600, 'readable by its owner alone');

    like $out, qr/nobody cannot reach .*\n.*the workers run as/,
        'a closed parent directory: it says the workers run as its own user';
    my $r = http($port, 'GET', '/admin/keys', headers => { Authorization => "Bearer $token" });
    is $r->{status}, 200, 'the generated token works (the workers reach Redis)';

    stop_and_check($pid, $port, 'without a token');
}

done_testing;
