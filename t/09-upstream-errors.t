#!/usr/bin/perl
# A pool that answers 5xx: the client gets the contract's 502 api_error
# upstream_error (504 upstream_timeout for a 504) as OpenAI-style JSON,
# with the pool's own message when it sent one in JSON; an HTML page from
# a broken proxy becomes the same JSON.  The pool's 4xx pass through as
# they are.  Such a request is charged nothing.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use Nebula::Test qw(free_port);

# a "broken proxy" pool: answers as the x-test-reply request header says
my $broken_port = free_port();
my $broken = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$broken_port",
                                   Listen => 16, ReuseAddr => 1)
    or die "listen: $!";
my $broken_pid = fork // die "fork: $!";
if ($broken_pid == 0) {
    broken_server($broken);
    exit 0;
}
close $broken;

my $t = Nebula::Test->new(
    patch => sub {
        $_[0] =~ s/(    nebula_pool   ollama_local;\n)/$1    upstream broken { server 127.0.0.1:$broken_port; }\n    nebula_pool   broken;\n/r;
    },
    patch_catalog => sub {
        $_[0] . "\nnebula_model  broken:1  pool=broken upstream_model=broken:1-up context=32768"
              . " max_output=1000 input_price=1 output_price=1 group=basic;\n";
    },
);
$t->allow_error(qr/upstream prematurely closed/);

my $k = $t->new_key(plan => 'enterprise');
my %auth = (Authorization => "Bearer $k->{key}");

sub body_for {
    my ($path, $model, %o) = @_;
    return $path eq '/api/generate'
        ? { model => $model, prompt => 'Hello', %o }
        : { model => $model, messages => [{ role => 'user', content => 'Hello' }], %o };
}

# ---- the simulator's 5xx, on every proxied endpoint, streamed or not
for my $path ('/v1/chat/completions', '/api/chat', '/api/generate') {
    for my $case (['x-sim-status' => 500], ['x-sim-status' => 503],
                  ['x-sim-fault' => 500])
    {
        my ($h, $v) = @$case;
        my $status = $h eq 'x-sim-fault' ? 500 : $v;
        my $msg = $h eq 'x-sim-fault' ? 'simulated failure' : "simulated status $v";
        for my $stream (0, 1) {
            my $name = "$path $h: $v" . ($stream ? ' (stream)' : '');
            my $r = $t->post($path, body_for($path, 'qwen3:latest',
                                             stream => $stream ? JSON::PP::true : JSON::PP::false),
                             headers => { %auth, $h => $v });
            Nebula::Test::is_error($r, 502, 'api_error', 'upstream_error', "$name: 502");
            is Nebula::Test::error_message($r), "The model pool failed (HTTP $status): $msg",
                "$name: the pool's message";
            is $r->{json}{error}{param}, undef, "$name: param null" if $path =~ m{^/v1/};
            unlike $r->{raw}, qr{^HTTP/1\.1 502 Internal}m, "$name: our status line";
        }
    }
}

# ---- a 504 stays a 504
for my $path ('/v1/chat/completions', '/api/chat') {
    my $r = $t->post($path, body_for($path, 'qwen3:latest'),
                     headers => { %auth, 'x-sim-status' => 504 });
    Nebula::Test::is_error($r, 504, 'api_error', 'upstream_timeout', "$path 504: 504");
    is Nebula::Test::error_message($r), 'The model pool timed out (HTTP 504): simulated status 504',
        "$path 504: message";
}

# ---- a 4xx passes through unchanged
my %want400 = (
    '/v1/chat/completions' => '{"error": {"message": "simulated status 400", '
                              . '"type": "invalid_request_error", "param": null, "code": null}}',
    '/api/chat'     => '{"error": "simulated status 400"}',
    '/api/generate' => '{"error": "simulated status 400"}',
);
for my $path (sort keys %want400) {
    my $r = $t->post($path, body_for($path, 'qwen3:latest'),
                     headers => { %auth, 'x-sim-status' => 400 });
    is $r->{status}, 400, "$path 400: passes";
    my $got = Nebula::Test::json_decode($r->{body});
    is_deeply $got, Nebula::Test::json_decode($want400{$path}), "$path 400: the pool's body"
        or diag $r->{body};
}

# ---- a broken proxy's HTML page, a long message, a body cut short
{
    my $r = $t->post('/v1/chat/completions', body_for('/v1/chat/completions', 'broken:1'),
                     headers => { %auth, 'x-test-reply' => 'html' });
    Nebula::Test::is_error($r, 502, 'api_error', 'upstream_error', 'HTML 500: 502 JSON');
    is Nebula::Test::error_message($r), 'The model pool failed (HTTP 500).',
        'HTML 500: no message of its own';
    unlike $r->{body}, qr/<html/i, 'HTML 500: no HTML';
    ok !exists $r->{headers}{'content-encoding'}, 'HTML 500: no content-encoding';

    $r = $t->post('/api/chat', body_for('/api/chat', 'broken:1'),
                  headers => { %auth, 'x-test-reply' => 'long' });
    Nebula::Test::is_error($r, 502, 'api_error', 'upstream_error', 'long message: 502');
    # the harness decodes bytes as they are: here, as UTF-8
    my $m = (eval { JSON::PP->new->utf8->decode($r->{body}) } // {})->{error} // "";
    like $m, qr/^The model pool failed \(HTTP 503\): "quoted" \x{e9}+$/,
        'long message: escaped, truncated on a character';
    my $pool_part = $m =~ s/^The model pool failed \(HTTP 503\): //r;
    utf8::encode($pool_part);
    ok length($pool_part) <= 200 && length($pool_part) > 150,
        'long message: about 200 bytes of it (' . length($pool_part) . ')';

    $r = $t->post('/api/generate', body_for('/api/generate', 'broken:1'),
                  headers => { %auth, 'x-test-reply' => 'cut' });
    Nebula::Test::is_error($r, 502, 'api_error', 'upstream_error', 'cut 500: whole JSON');
    is Nebula::Test::error_message($r), 'The model pool failed (HTTP 500).', 'cut 500: no message';

    $r = $t->post('/v1/chat/completions', body_for('/v1/chat/completions', 'broken:1'),
                  headers => { %auth, 'x-test-reply' => 'text' });
    Nebula::Test::is_error($r, 502, 'api_error', 'upstream_error', 'text 502 with a body');
    is Nebula::Test::error_message($r), 'The model pool failed (HTTP 502).', 'text 502: no message';
}

# ---- the same key still works, and nothing was charged
my $r = $t->post('/v1/chat/completions', body_for('/v1/chat/completions', 'qwen3:latest'),
                 headers => \%auth);
is $r->{status}, 200, 'the pool answers again';
my $u0 = $r->{json}{usage};

ok $t->wait_settled($k->{key}), 'every request settled';
my $u = $t->get('/v1/key', headers => \%auth)->{json}{data}{usage};
is $u->{input_tokens}, $u0->{prompt_tokens}, 'the failed requests: no input tokens charged';
is $u->{output_tokens}, $u0->{completion_tokens}, 'the failed requests: no output tokens charged';

unlike $t->error_log, qr/\[alert\]/, 'no [alert] in error.log';

$t->finish;
kill 'TERM', $broken_pid;
waitpid $broken_pid, 0;
done_testing;


sub broken_server {
    my ($l) = @_;
    while (my $c = $l->accept) {
        my $head = '';
        while (defined(my $line = <$c>)) {
            $head .= $line;
            last if $line eq "\r\n";
        }
        my ($len) = $head =~ /^content-length:\s*(\d+)/im;
        read $c, my $body, $len if $len;
        my ($what) = $head =~ /^x-test-reply:\s*(\S+)/im;
        $what //= 'html';
        my $reply;
        if ($what eq 'html') {
            my $b = "<html><body><h1>500 Internal Server Error</h1></body></html>\n";
            $reply = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html; charset=utf-8\r\n"
                     . "Content-Length: " . length($b) . "\r\nConnection: close\r\n\r\n$b";
        } elsif ($what eq 'long') {
            my $b = '{"error":"\"quoted\" ' . ("\xc3\xa9" x 400) . '"}';
            $reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     . "Content-Length: " . length($b) . "\r\nConnection: close\r\n\r\n$b";
        } elsif ($what eq 'cut') {
            $reply = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                     . "Content-Length: 100\r\nConnection: close\r\n\r\n{\"error\":\"cut";
        } else {
            $reply = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                     . "Content-Length: 12\r\nConnection: close\r\n\r\nbad gateway\n";
        }
        print $c $reply;
        close $c;
    }
}
