package Nebula::Test;

# The test harness: each test file gets its own nginx prefix and ports, the
# Ollama simulator (two of them: the local pool and the cloud pool), and
# nginx running examples/nebula.conf rendered for those ports.  When the
# file ends, any [error], [crit], [alert] or [emerg] in error.log that the
# test did not declare fails the run.
#
#   my $t = Nebula::Test->new;
#   my $r = $t->post('/v1/chat/completions', {model => ..., messages => ...});
#   is $r->{status}, 200;
#   is $t->sim('local')->last->{model}, 'qwen3:latest';

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use Fcntl qw(:flock);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(free_port json_decode json_encode nginx_test_conf minimal_conf $NGINX $TIME_SCALE);

our $ROOT = abs_path(dirname(__FILE__) . '/../../..');
# make test-asan and make test-valgrind run the same suite with another
# nginx binary and module (NEBULA_NGINX, NEBULA_MODULE), or with nginx
# started under a wrapper command (NEBULA_NGINX_WRAP, e.g. valgrind)
our $NGINX = $ENV{NEBULA_NGINX} // 'nginx';
our $MODULE = $ENV{NEBULA_MODULE} // "$ROOT/build/nginx/objs/ngx_http_nebula_module.so";
our @WRAP = split ' ', $ENV{NEBULA_NGINX_WRAP} // '';
# how much longer than usual nginx may take (make test-valgrind: 10): the
# harness's waits and timeouts, and the tests' waits and the timeouts they
# configure, are multiplied by it; what a test measures is not
our $TIME_SCALE = $ENV{NEBULA_TIME_SCALE} || 1;
my $JSON = JSON::PP->new->canonical->allow_nonref;

my %used_ports;

sub json_decode { my $r = eval { $JSON->decode($_[0]) }; return $r }
sub json_encode { $JSON->encode($_[0]) }

# A port for this file alone, until it exits.  Taken below the kernel's
# ephemeral range (32768 and up), where no client socket (ours, curl's, a
# parallel file's) is given it as its source port, and claimed with a lock
# file that every test process honours: a port bound and released is free
# for anyone else to take in the moment before our nginx binds it, and one
# parallel file's nginx answering another's requests fails both at random.
my $PORT_LOCKS = '/tmp/nebula-test-ports';
my @port_locks;

sub free_port {
    mkdir $PORT_LOCKS, 01777;
    for (1 .. 2000) {
        my $port = 20000 + int(rand(12000));
        next if $used_ports{$port};
        open my $lock, '>', "$PORT_LOCKS/$port" or next;
        unless (flock $lock, LOCK_EX | LOCK_NB) {
            close $lock;
            next;
        }
        # held by nothing of ours, but perhaps by `make run` or anyone else
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                      Proto => 'tcp', Listen => 1, ReuseAddr => 1);
        unless ($s) {
            close $lock;
            next;
        }
        close $s;
        $used_ports{$port} = 1;
        push @port_locks, $lock;
        return $port;
    }
    die "no free port\n";
}

sub new {
    my ($class, %o) = @_;

    my $self = bless {
        allowed => [],
        pids    => [],
        sims    => {},
        nginx   => 0,
    }, $class;

    my $base = $ENV{NEBULA_TEST_TMP} // '/tmp';
    $self->{dir} = tempdir("nebula-t-XXXXXX", DIR => $base,
                           CLEANUP => !$ENV{NEBULA_KEEP});
    # nginx's workers run as nobody and must reach their temp paths
    chmod 0755, $self->{dir};
    make_path("$self->{dir}/logs");
    $self->sanitizer_setup;

    $self->{port} = free_port();
    $self->{admin_token} = 'test-admin-token-' . join('', map { int rand 10 } 1 .. 16);

    for my $pool (qw(local cloud)) {
        $self->{sims}{$pool} = Nebula::Test::Sim->start($self, $pool);
    }
    # cluster => 1 or {options}, sentinel => 1 or {options}: a Redis
    # Cluster (t/lib/Nebula/Test/Cluster.pm) or a Sentinel set-up
    # (Sentinel.pm) started in this file's directory, stopped with it,
    # $t->cluster or $t->sentinel, and nginx's nebula_redis line theirs
    for my $kind (qw(cluster sentinel)) {
        next unless $o{$kind};
        my $class = 'Nebula::Test::' . ucfirst $kind;
        eval "require $class; 1" or die $@;
        $self->{$kind} = $class->start(dir => "$self->{dir}/$kind",
                                       %{ ref $o{$kind} ? $o{$kind} : {} });
        $self->{"own_$kind"} = 1;
        $o{redis_line} //= $self->{$kind}->redis_line;
    }
    if (defined $o{redis_line}) {
        # redis_line => 'cluster 127.0.0.1:7001 ...': the arguments of
        # nginx's nebula_redis, for a Redis the test runs itself; the file
        # has no redis-server of its own, and $t->redis is the redis =>
        # given, if any (not stopped here)
        $self->{redis_line} = $o{redis_line};
        $self->{own_redis} = 0;
        $self->{redis} = $o{redis};
    } else {
        # redis => another test object's: edges that share one Redis
        $self->{own_redis} = !$o{redis};
        $self->{redis} = $o{redis} // Nebula::Test::Redis->start($self, @{ $o{redis_args} // [] });
    }

    unless ($o{no_nginx}) {
        $self->start_nginx(%o);
        # every request carries this key unless a test says otherwise
        $self->{key} = $self->new_key(plan => 'enterprise', name => 'harness')->{key};
    }

    return $self;
}

sub redis {
    my ($self) = @_;
    return $self->{redis} if $self->{redis} || !defined $self->{redis_line};
    die "this file's nginx has nebula_redis $self->{redis_line}, no redis-server of the"
        . " harness's: use \$t->cluster, \$t->sentinel or the test's own object\n";
}
sub redis_line { $_[0]{redis_line} }
sub cluster { $_[0]{cluster} }
sub sentinel { $_[0]{sentinel} }
sub key { $_[0]{key} }
sub admin_token { $_[0]{admin_token} }

# the admin API, with the admin token
sub admin {
    my ($self, $method, $path, $body) = @_;
    return $self->request($method, $path, body => $body,
                          headers => { Authorization => "Bearer $self->{admin_token}" });
}

# Settlement runs as a request's pool goes, just after its response: a
# test that reads usage right away waits until the key holds no
# reservation, i.e. every request it made is settled.  A key admitted
# from quota leases holds their blocks until they close (five seconds
# after they were granted): such a test gives a longer wait, $secs.
sub wait_settled {
    my ($self, $secret, $secs) = @_;
    my $id;
    # a worker that lost Redis answers 503 until it reconnects
    for (1 .. 100 * $TIME_SCALE) {
        my $me = $self->get('/v1/key', headers => { Authorization => "Bearer $secret" });
        last if $id = $me->{json}{data}{id};
        return 0 unless $me->{status} == 503;
        sleep 0.05;
    }
    return 0 unless $id;
    my $deadline = time + ($secs // 2) * $TIME_SCALE;
    while (time < $deadline) {
        my $u = $self->admin('GET', "/admin/keys/$id")->{json}{usage};
        return 1 if $u && !$u->{reserved_input_tokens} && !$u->{reserved_output_tokens}
                       && !$u->{leased_input_tokens} && !$u->{leased_output_tokens};
        sleep 0.01;
    }
    return 0;
}

# Waits until the key's month counts N requests (a lease's usage reaches
# Redis within a second, its block staying reserved); returns the usage
sub wait_requests {
    my ($self, $id, $n, $secs) = @_;
    my $deadline = time + ($secs // 3) * $TIME_SCALE;
    my $u;
    while (time < $deadline) {
        $u = $self->admin('GET', "/admin/keys/$id")->{json}{usage};
        return $u if $u && ($u->{requests} // 0) >= $n
                       && !$u->{reserved_input_tokens} && !$u->{reserved_output_tokens};
        sleep 0.02;
    }
    return $u;
}

# a new key through the admin API: {id, key, plan, name, created}
sub new_key {
    my ($self, %o) = @_;
    my $r = $self->admin('POST', '/admin/keys', { plan => 'free', %o });
    die "creating a key failed: $r->{status} $r->{body}\n" unless $r->{status} == 201;
    return $r->{json};
}

sub dir { $_[0]{dir} }
sub port { $_[0]{port} }
sub sim { $_[0]{sims}{$_[1]} }

# renders the example for this file's ports; $o{patch} edits the text
sub render {
    my ($self, %o) = @_;
    my $conf = "$self->{dir}/conf";
    remove_tree($conf);
    my @cmd = ("$ROOT/tools/render-conf", '--out', $conf, '--module', $MODULE,
               '--port', $self->{port}, '--workers', $o{workers} // 2,
               '--ollama', '127.0.0.1:' . $self->sim('local')->port,
               '--cloud', 'http://127.0.0.1:' . $self->sim('cloud')->port,
               '--cloud-key', 'sim-cloud-key',
               # with redis_line, a stand-in that the line replaces below
               '--redis', defined $self->{redis_line} ? '127.0.0.1:6379'
                                                      : '127.0.0.1:' . $self->redis->port,
               '--admin-token', $self->{admin_token});
    system(@cmd) == 0 or die "render-conf failed\n";

    if (defined $self->{redis_line}) {
        my $f = "$conf/nebula.conf";
        open my $in, '<', $f or die "$f: $!";
        my $text = do { local $/; <$in> };
        close $in;
        $text =~ s/^(\s*)nebula_redis\s[^;]*;/$1nebula_redis          $self->{redis_line};/m
            or die "render: no nebula_redis in nebula.conf\n";
        open my $out, '>', $f or die "$f: $!";
        print $out $text;
        close $out;
    }

    # The shipped configuration admits busy keys from quota leases, whose
    # usage reaches Redis within a second: a file that reads usage right
    # after its requests runs the per-request path unless it asks for
    # leases (lease => 1), as the files that test them do
    unless ($o{lease}) {
        my $f = "$conf/nebula.conf";
        open my $in, '<', $f or die "$f: $!";
        my $text = do { local $/; <$in> };
        close $in;
        $text =~ s/^(\s*)nebula_lease\s+on;/$1nebula_lease          off;  # the harness: per request/m
            or die "render: no nebula_lease in nebula.conf\n";
        open my $out, '>', $f or die "$f: $!";
        print $out $text;
        close $out;
    }

    # The dashboard's files, copied into the test's directory: the workers
    # (nobody) read them there, wherever the checkout is (a fresh clone in
    # a mktemp -d directory is closed to others)
    {
        my $f = "$conf/nebula.conf";
        open my $in, '<', $f or die "$f: $!";
        my $text = do { local $/; <$in> };
        close $in;
        remove_tree("$self->{dir}/dashboard");
        system('cp', '-R', "$ROOT/dashboard", "$self->{dir}/dashboard") == 0
            or die "render: cannot copy the dashboard\n";
        system('chmod', '-R', 'a+rX', "$self->{dir}/dashboard");
        $text =~ s{^(\s*)alias\s+\S+/dashboard/;}{$1alias        $self->{dir}/dashboard/;}m
            or die "render: no dashboard alias in nebula.conf\n";
        open my $out, '>', $f or die "$f: $!";
        print $out $text;
        close $out;
    }

    # patch => sub { edit nebula.conf }, patch_proxy and patch_catalog
    # for nebula-proxy.conf and nebula-catalog.conf
    for ([patch => 'nebula.conf'], [patch_proxy => 'nebula-proxy.conf'],
         [patch_catalog => 'nebula-catalog.conf']) {
        my ($opt, $file) = @$_;
        next unless $o{$opt};
        my $f = "$conf/$file";
        open my $in, '<', $f or die "$f: $!";
        my $text = do { local $/; <$in> };
        close $in;
        my $new = $o{$opt}->($text);
        die "render: the $opt patch changed nothing\n" if $new eq $text;
        open my $out, '>', $f or die "$f: $!";
        print $out $new;
        close $out;
    }
    return "$conf/nebula.conf";
}

# nginx runs in the foreground as our child, so stopping it is a waitpid
sub start_nginx {
    my ($self, %o) = @_;
    $self->render(%o);
    my $out = `$NGINX -t -q -p $self->{dir} -c conf/nebula.conf 2>&1`;
    die "nginx -t failed:\n$out" if $?;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>>', "$self->{dir}/logs/stderr.log";
        # the wrapper may name its files after this (valgrind's
        # --log-file=%q{NEBULA_TEST_DIR}/logs/valgrind.%p.log)
        $ENV{NEBULA_TEST_DIR} = $self->{dir};
        # make test-asan: LeakSanitizer checks this nginx, master and
        # workers, not nginx -t or -s, which return from main() with all
        # they allocated (NEBULA_LSAN; a later flag wins in ASAN_OPTIONS)
        $ENV{ASAN_OPTIONS} .= ':detect_leaks=1' if $ENV{NEBULA_LSAN};
        exec @WRAP, $NGINX, '-p', $self->{dir}, '-c', 'conf/nebula.conf', '-g', 'daemon off;';
        exit 127;
    }
    $self->{nginx} = $pid;
    $self->wait_port($self->{port});
}

sub nginx_pid {
    my ($self) = @_;
    open my $f, '<', "$self->{dir}/logs/nginx.pid" or return;
    my $pid = <$f>;
    chomp $pid;
    return $pid;
}

sub reload {
    my ($self) = @_;
    my $out = `$NGINX -p $self->{dir} -c conf/nebula.conf -s reload 2>&1`;
    die "reload failed: $out" if $?;
}

# Under a wrapper or a sanitizer, QUIT first: on TERM the master SIGKILLs
# workers that have not exited within about 1.5 s, and a worker under
# valgrind, or LeakSanitizer on a busy machine, may still be checking its
# leaks then ([alert] "exited on signal 9"); a graceful shutdown waits.
sub stop_nginx {
    my ($self) = @_;
    my $pid = $self->{nginx} or return;
    for my $sig ((@WRAP || $self->{sanitizer}) ? qw(QUIT TERM) : qw(TERM)) {
        kill $sig, $pid;
        my $deadline = time + 10 * $TIME_SCALE;
        while (time < $deadline) {
            last if waitpid($pid, WNOHANG) == $pid;
            sleep 0.01;
        }
        last unless kill 0, $pid;
    }
    if (kill 0, $pid) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    $self->{nginx} = 0;
}

sub wait_port {
    my ($self, $port) = @_;
    for (1 .. 200 * $TIME_SCALE) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1);
        return 1 if $s;
        sleep 0.025;
    }
    die "nothing listens on $port\n";
}

# error.log lines matching one of these are expected, not failures
sub allow_error {
    my ($self, @re) = @_;
    push @{ $self->{allowed} }, @re;
}

# an [alert] the test causes itself (a worker it kills): named exactly
sub allow_alert {
    my ($self, @re) = @_;
    push @{ $self->{allowed_alert} }, @re;
}

sub error_log {
    my ($self) = @_;
    open my $f, '<', "$self->{dir}/logs/error.log" or return '';
    local $/;
    return <$f>;
}

sub check_error_log {
    my ($self) = @_;
    my @bad;
    for my $line (split /\n/, $self->error_log) {
        next unless $line =~ /\[(error|crit|alert|emerg)\]/;
        next if $1 eq 'error' && grep { $line =~ $_ } @{ $self->{allowed} };
        next if $1 eq 'alert' && grep { $line =~ $_ } @{ $self->{allowed_alert} // [] };
        push @bad, $line;
    }
    ok(!@bad, 'no unexpected [error], [crit], [alert] or [emerg] in error.log')
        or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
}

# one HTTP/1.1 exchange on a new connection; returns
# {status, headers => {lowercase name => value}, body, raw}
sub request {
    my ($self, $method, $path, %o) = @_;
    my $port = $o{port} // $self->{port};
    my $body = $o{body};
    $body = json_encode($body) if ref $body;
    my %h = (Host => 'localhost', Connection => 'close');
    # the file's key goes to the gateway, unless the test sets its own
    $h{Authorization} = "Bearer $self->{key}"
        if $self->{key} && !$o{port} && !$o{nokey};
    %h = (%h, %{ $o{headers} // {} });
    $h{'Content-Length'} = length $body if defined $body && !exists $h{'Content-Length'}
                                           && !exists $h{'Transfer-Encoding'};
    $h{'Content-Type'} //= 'application/json' if defined $body;
    delete $h{$_} for grep { !defined $h{$_} } keys %h;

    my $req = "$method $path HTTP/1.1\r\n"
              . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n";
    $req .= $body if defined $body && !$o{raw_body};
    $req .= $o{raw_body} if defined $o{raw_body};

    my $r = $self->exchange($req, port => $port, timeout => $o{timeout});
    $r->{path} = $path;
    return $r;
}

sub exchange {
    my ($self, $req, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . ($o{port} // $self->{port}),
                                  Timeout => 5 * $TIME_SCALE)
        or return { status => 0, error => "connect: $!" };
    binmode $s;
    $s->autoflush(1);
    print $s $req;
    my $raw = read_all($s, $o{timeout} // 20);
    close $s;
    return parse_response($raw);
}

# reads until the response is complete (by its Content-Length or its last
# chunk), the peer closes, or the timeout (times $TIME_SCALE) passes
sub read_all {
    my ($s, $timeout) = @_;
    my $sel = IO::Select->new($s);
    my $raw = '';
    my $deadline = time + $timeout * $TIME_SCALE;
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
        last if response_complete($raw);
    }
    return $raw;
}

sub response_complete {
    my ($raw) = @_;
    my $end = index($raw, "\r\n\r\n");
    return 0 if $end < 0;
    my $head = substr($raw, 0, $end);
    my $blen = length($raw) - $end - 4;
    return 1 if $head =~ m{^HTTP/1\.\d (1\d\d|204|304)};
    return $blen >= $1 if $head =~ /\r\ncontent-length:\s*(\d+)/i;
    return substr($raw, -7) eq "\r\n0\r\n\r\n" if $head =~ /\r\ntransfer-encoding:\s*chunked/i;
    return 0;
}

sub read_until_eof {
    my ($s, $timeout) = @_;
    my $sel = IO::Select->new($s);
    my $raw = '';
    my $deadline = time + $timeout * $TIME_SCALE;
    while (time < $deadline && $sel->can_read($deadline - time)) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }
    return $raw;
}

# every response of a pipelined stream of them, parsed, in order
sub split_responses {
    my ($raw) = @_;
    my @resp;
    while (length $raw) {
        my ($one, $rest) = split_response($raw);
        last unless defined $one;
        push @resp, parse_response($one);
        $raw = $rest;
    }
    return @resp;
}

# the first response of a pipelined stream of them, and the rest
sub split_response {
    my ($raw) = @_;
    my $end = index($raw, "\r\n\r\n");
    return if $end < 0;
    my $head = substr($raw, 0, $end + 4);
    my $rest = substr($raw, $end + 4);
    if ($head =~ /\r\ncontent-length:\s*(\d+)/i) {
        return ($head . substr($rest, 0, $1), substr($rest, $1));
    }
    if ($head =~ /\r\ntransfer-encoding:\s*chunked/i) {
        my $i = index($rest, "\r\n0\r\n\r\n");
        $i = index($rest, "0\r\n\r\n") == 0 ? -5 : $i;
        return ($head . substr($rest, 0, $i + 7), substr($rest, $i + 7));
    }
    return ($raw, '');
}

sub parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    return { status => 0, raw => $raw } unless defined $head && $head =~ m{^HTTP/1\.\d (\d+)};
    my %r = (status => $1, raw => $raw, headers => {});
    for my $line (split /\r\n/, $head) {
        next unless $line =~ /^([^:]+):\s*(.*)$/;
        $r{headers}{ lc $1 } = exists $r{headers}{ lc $1 } ? "$r{headers}{lc $1}, $2" : $2;
    }
    $body //= '';
    if (($r{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        my ($out, $complete) = ('', 0);
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            if ($n == 0) { $complete = 1; last }
            $out .= substr($body, 0, $n, '');
            $body =~ s/^\r\n//;
        }
        $r{chunked_complete} = $complete;
        $body = $out;
    }
    $r{body} = $body;
    $r{json} = json_decode($body) if ($r{headers}{'content-type'} // '') =~ /json/;
    return \%r;
}

sub post {
    my ($self, $path, $body, %o) = @_;
    return $self->request('POST', $path, body => $body, %o);
}

sub get {
    my ($self, $path, %o) = @_;
    return $self->request('GET', $path, %o);
}

# the data: payloads of an SSE body, decoded where they are JSON
sub sse_events {
    my ($body) = @_;
    my @ev;
    for my $event (split /\r?\n\r?\n/, $body) {
        my @data = map { /^data: ?(.*)$/ ? $1 : () } split /\r?\n/, $event;
        next unless @data;
        my $d = join "\n", @data;
        push @ev, $d eq '[DONE]' ? '[DONE]' : json_decode($d) // { unparsed => $d };
    }
    return @ev;
}

sub ndjson_lines {
    my ($body) = @_;
    return map { json_decode($_) // { unparsed => $_ } } grep { length } split /\n/, $body;
}

# Anthropic's error type for a status
my %ANTHROPIC_TYPE = (400 => 'invalid_request_error', 401 => 'authentication_error',
                      403 => 'permission_error', 404 => 'not_found_error',
                      413 => 'request_too_large', 429 => 'rate_limit_error');

# Asserts an error in the shape of the API of the request's path: status,
# and for OpenAI's shape type, code (and param if given).  Ollama's native
# API (/api/...) has room for a message only, {"error": "..."}; Anthropic's
# (/v1/messages) for a type that follows from the status.
sub is_error {
    my ($r, $status, $type, $code, $name, $param) = @_;
    my $j = $r->{json} // {};
    my $e = $j->{error};
    my $path = $r->{path} // '';
    my $ok = $r->{status} == $status
             && ($r->{headers}{'content-type'} // '') =~ m{^application/json};
    if ($path =~ m{^/api/}) {
        $ok &&= ref $j eq 'HASH' && keys %$j == 1 && defined $e && !ref $e && length $e;
    } elsif ($path =~ m{^/v1/messages\b}) {
        $ok &&= ($j->{type} // '') eq 'error' && ref $e eq 'HASH'
                && ($e->{type} // '') eq ($ANTHROPIC_TYPE{$status} // ($status >= 500 ? 'api_error' : 'invalid_request_error'))
                && defined $e->{message} && length $e->{message};
    } else {
        $ok &&= ref $e eq 'HASH'
                && ($e->{type} // '') eq $type
                && (defined $code ? ($e->{code} // '') eq $code : !defined $e->{code})
                && defined $e->{message} && length $e->{message}
                && exists $e->{param}
                && (!defined $param || ($e->{param} // '') eq $param);
    }
    Test::More->builder->ok($ok, $name) or Test::More::diag("status $r->{status}: " . ($r->{body} // ''));
    return $ok;
}

# the message of an error in any API's shape
sub error_message {
    my ($r) = @_;
    my $e = ($r->{json} // {})->{error};
    return ref $e eq 'HASH' ? $e->{message} : $e;
}

# the smallest nginx.conf that loads the module: a pool and what $http adds
# (for nginx -t checks of the directives)
sub minimal_conf {
    my ($http) = @_;
    return <<"CONF";
load_module $MODULE;
error_log logs/error.log;
pid logs/nginx.pid;
events { }
http {
    upstream ollama_local { server 127.0.0.1:1; }
$http
}
CONF
}

# nginx -t on a whole configuration text; returns (exit code, output)
sub nginx_test_conf {
    my ($text) = @_;
    my $dir = tempdir("nebula-conf-XXXXXX", TMPDIR => 1, CLEANUP => 1);
    make_path("$dir/conf", "$dir/logs");
    open my $f, '>', "$dir/conf/nginx.conf" or die $!;
    print $f $text;
    close $f;
    # under the wrapper too: the directives' error paths run only here
    local $ENV{NEBULA_TEST_DIR} = $dir;
    my $out = `@WRAP $NGINX -t -p $dir -c conf/nginx.conf 2>&1`;
    my $rc = $? >> 8;
    valgrind_ok("$dir/logs", 'nginx -t');
    return ($rc, $out, "$dir/conf/nginx.conf");
}

# make test-valgrind: every nginx process (master, workers, the old
# generation after a reload) left logs/valgrind.<pid>.log when it exited;
# an error, a block definitely lost, or a log cut short (the process was
# killed before valgrind could report) fails the file, with the record
sub check_valgrind {
    my ($self) = @_;
    valgrind_ok("$self->{dir}/logs", 'nginx processes');
}

sub valgrind_ok {
    my ($dir, $what) = @_;
    my @logs = sort glob "$dir/valgrind.*.log" or return;
    my @bad;
    for my $log (@logs) {
        open my $f, '<', $log or next;
        my $text = do { local $/; <$f> };
        close $f;
        $text =~ s/^==\d+== ?//mg;
        my ($errors) = $text =~ /^ERROR SUMMARY: ([\d,]+) errors/m;
        my ($lost) = $text =~ /^ +definitely lost: ([\d,]+) bytes/m;
        tr/,//d for grep { defined } $errors, $lost;
        if (!defined $errors) {
            push @bad, "$log: no ERROR SUMMARY (killed before valgrind reported?)\n"
                       . join("\n", grep { defined } (split /\n/, $text)[-15 .. -1]);
            next;
        }
        next unless $errors || $lost;
        # the records, without the preamble and the summaries
        my @rec = grep { !/^(Memcheck|Copyright|Using Valgrind|Command:|Parent PID|HEAP SUMMARY|LEAK SUMMARY|Reachable blocks|To see them|For (lists|counts)|ERROR SUMMARY|All heap blocks)/m }
                  grep { /\S/ } split /\n\s*\n/, $text;
        splice @rec, 3 if @rec > 3;
        push @bad, "$log: $errors errors, " . ($lost // 0) . " bytes definitely lost\n"
                   . join("\n\n", @rec);
    }
    ok(!@bad, 'valgrind: no error and nothing definitely lost in '
              . scalar(@logs) . " $what")
        or diag(join "\n\n", @bad[0 .. ($#bad < 2 ? $#bad : 2)]);
}

# make test-asan: ASAN_OPTIONS and UBSAN_OPTIONS name a log_path; this
# file's nginx processes (nginx -t, reloads, master and workers, all
# started from here) write their reports into the file's own directory
# instead, world-writable for the workers (nobody), so a report fails the
# file it belongs to; DESTROY puts the variables back
our %SANITIZER_ENV;
sub sanitizer_setup {
    my ($self) = @_;
    for my $var (qw(ASAN_OPTIONS UBSAN_OPTIONS)) {
        next unless ($ENV{$var} // '') =~ /(?:^|:)log_path=/;
        $SANITIZER_ENV{$var} //= $ENV{$var};
        my $dir = "$self->{dir}/sanitizer";
        mkdir $dir;
        chmod 01777, $dir;
        my $name = lc($var =~ s/_OPTIONS//r);
        $ENV{$var} = $SANITIZER_ENV{$var} =~ s/(^|:)log_path=[^:]*/${1}log_path=$dir\/$name/r;
        $self->{sanitizer} = $dir;
    }
}

# a report (file <asan|ubsan>.<pid>) fails the file, with its first lines;
# a copy goes where log_path first pointed, to outlive the test directory
sub check_sanitizer {
    my ($self) = @_;
    my $dir = $self->{sanitizer} or return;
    $ENV{$_} = $SANITIZER_ENV{$_} for keys %SANITIZER_ENV;
    my @bad;
    for my $f (sort glob "$dir/*") {
        open my $in, '<', $f or next;
        my @lines = grep { /\S/ } <$in>;
        close $in;
        (my $name = $f) =~ s{.*/}{};
        my ($keep) = ($SANITIZER_ENV{ASAN_OPTIONS} // '') =~ /(?:^|:)log_path=([^:]*)/;
        if ($keep && -d dirname($keep)) {
            (my $test = $0) =~ s{.*/|\.t$}{}g;
            system('cp', $f, dirname($keep) . "/$test.$name");
        }
        push @bad, "$name:\n" . join('', @lines[0 .. ($#lines < 24 ? $#lines : 24)]);
    }
    ok(!@bad, 'no AddressSanitizer or UndefinedBehaviorSanitizer report')
        or diag(join "\n", @bad);
    return unless @bad;
    # a master that ASan stopped leaves its workers, which hold prove's
    # pipe open: they go too
    for my $pid ($self->error_log =~ /start worker process (\d+)/g) {
        open my $f, '<', "/proc/$pid/cmdline" or next;
        kill 'KILL', $pid if <$f> =~ /^nginx: worker/;
    }
}

sub DESTROY {
    my ($self) = @_;
    return if $self->{destroyed}++;
    # each step on its own: a test that died leaves half-built objects
    # (global destruction may have freed some), and whatever is left
    # running would hold prove's pipe open
    eval { $self->check_error_log if $self->{nginx} || -s "$self->{dir}/logs/error.log" };
    eval { $self->stop_nginx };
    eval { $self->check_valgrind };
    eval { $self->check_sanitizer };
    for my $sim (values %{ $self->{sims} // {} }) {
        eval { $sim->stop if $sim };
    }
    eval { $self->{redis}->stop if $self->{redis} && $self->{own_redis} };
    for my $kind (qw(cluster sentinel)) {
        eval { $self->{$kind}->stop if $self->{$kind} && $self->{"own_$kind"} };
    }
}

END {
    # objects held in file-scoped lexicals are destroyed in global
    # destruction, too late for Test::More: tests call $t->done instead
}

# checks error.log and stops everything; done also ends the test file
sub finish {
    my ($self) = @_;
    $self->DESTROY;
}

sub done {
    my ($self) = @_;
    $self->DESTROY;
    Test::More::done_testing();
}


package Nebula::Test::Sim;

# One Ollama simulator process (t/sim/ollama_sim.py).

use strict;
use warnings;
use IO::Socket::INET;
use Time::HiRes qw(sleep);

sub start {
    my ($class, $t, $name) = @_;
    my $port = Nebula::Test::free_port();
    my $log = "$t->{dir}/logs/sim-$name.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $log;
        open STDERR, '>&', \*STDOUT;
        exec 'python3', "$Nebula::Test::ROOT/t/sim/ollama_sim.py", '--port', $port;
        exit 127;
    }
    my $self = bless { pid => $pid, port => $port, t => $t, name => $name }, $class;
    $t->wait_port($port);
    return $self;
}

sub port { $_[0]{port} }

sub requests {
    my ($self) = @_;
    my $r = $self->{t}->get('/_sim/requests', port => $self->{port});
    return $r->{json} // [];
}

sub last { my @r = @{ $_[0]->requests }; return $r[-1] }

sub reset {
    my ($self) = @_;
    $self->{t}->post('/_sim/reset', '', port => $self->{port});
}

sub pid { $_[0]{pid} }

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'TERM', $self->{pid};
    waitpid $self->{pid}, 0;
    $self->{pid} = 0;
}



package Nebula::Test::Redis;

# A private redis-server for one test file; it can be stopped, frozen
# (SIGSTOP: accepts connections, never answers) and started again on the
# same port.

use strict;
use warnings;
use Time::HiRes qw(sleep);

sub start {
    my ($class, $t, @args) = @_;
    my $self = bless { t => $t, port => Nebula::Test::free_port(),
                       dir => "$t->{dir}/redis", args => \@args }, $class;
    mkdir $self->{dir};
    $self->launch;
    return $self;
}

sub launch {
    my ($self) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$self->{t}{dir}/logs/redis.log";
        open STDERR, '>&', \*STDOUT;
        exec 'redis-server', '--port', $self->{port}, '--bind', '127.0.0.1',
             '--save', '', '--appendonly', 'no', '--dir', $self->{dir},
             '--daemonize', 'no', '--enable-debug-command', 'local', @{ $self->{args} };
        exit 127;
    }
    $self->{pid} = $pid;
    for (1 .. 200) {
        my $pong = `redis-cli -p $self->{port} PING 2>/dev/null`;
        return if $pong =~ /PONG|NOAUTH/;
        sleep 0.02;
    }
    die "redis-server did not start\n";
}

sub port { $_[0]{port} }

sub cli {
    my ($self, @args) = @_;
    my $auth = $self->{password} ? '--no-auth-warning -a ' . quotemeta($self->{password}) : '';
    my $out = `redis-cli -p $self->{port} $auth @{[ map { quotemeta } @args ]} 2>&1`;
    chomp $out;
    return $out;
}

sub stop {
    my ($self) = @_;
    if ($self->{pid}) {
        kill 'CONT', $self->{pid};
        kill 'TERM', $self->{pid};
        waitpid $self->{pid}, 0;
        $self->{pid} = 0;
    }
    # one a forked child launched again (a fault's restart: its pid went
    # with the child) is not ours to wait for, but is on our port still,
    # perhaps still loading its append-only file
    for (1 .. 40) {
        last if $self->cli('PING') =~ /Could not connect|refused/i;
        $self->cli('SHUTDOWN', 'NOSAVE');
        sleep 0.05;
    }
}

sub freeze { kill 'STOP', $_[0]{pid} }
sub thaw { kill 'CONT', $_[0]{pid} }

sub restart {
    my ($self) = @_;
    $self->stop;
    $self->launch;
}

1;
