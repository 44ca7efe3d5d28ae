#!/usr/bin/perl
# The admin API against the findings of the security review (issue 11):
# PATCH changes only the limits it names, and null puts one back to the
# plan's (item 9); an admin body with a comment is not JSON, and one
# nested deeper than the limit is refused however it hides it, with the
# worker alive after it (item 12).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use Test::More;
use Nebula::Test;

# one worker: the deep bodies below must not kill the one that serves the
# requests after them; the test clock keeps the per-minute test in a
# single minute
my $t = Nebula::Test->new(
    workers => 1,
    patch => sub {
        $_[0] =~ s/(nebula_redis_failure\s+closed;)/$1\n    nebula_test_clock     on;/r
    },
);
my $chat = '/v1/chat/completions';
my $bad = 'invalid_request_error';
my $now = time;

sub limits_of {
    my ($id) = @_;
    return $t->admin('GET', "/admin/keys/$id")->{json}{limits};
}

sub ask {
    my ($key) = @_;
    return $t->post($chat, { model => 'gemma3:1b', max_tokens => 16,
                             messages => [{ role => 'user', content => 'hi' }] },
                    headers => { Authorization => "Bearer $key",
                                 'X-Nebula-Test-Time' => $now });
}

sub worker_pids {
    my $master = $t->nginx_pid or return '';
    return join ',', sort split ' ', `ps -o pid= --ppid $master`;
}

my $workers0 = worker_pids();
ok length $workers0, "worker pid: $workers0";

# ---------------------------------------------------------------------
# item 9: PATCH of one limit leaves the others
# ---------------------------------------------------------------------
my %custom = (input_tokens => 50000, output_tokens => 3000, requests_per_minute => 2);
# developer: 2000000 in, 500000 out, no per-minute limit
my %plan = (input_tokens => 2000000, output_tokens => 500000, requests_per_minute => undef);

my $k = $t->new_key(plan => 'developer', name => 'three limits', limits => {%custom});
is_deeply limits_of($k->{id}), \%custom, 'created with three limits of its own';

my $r = $t->admin('PATCH', "/admin/keys/$k->{id}", { limits => { output_tokens => 1000 } });
is $r->{status}, 200, 'PATCH of output_tokens alone';
my %want = (%custom, output_tokens => 1000);
is_deeply $r->{json}{limits}, \%want, 'its answer: output_tokens changed, the other two stay';
is_deeply limits_of($k->{id}), \%want, 'GET after it: output_tokens changed, the other two stay';

{
    # the per-minute limit of 2 is still enforced
    my @st = map { ask($k->{key})->{status} } 1 .. 2;
    is "@st", '200 200', 'two requests in the minute pass';
    $r = ask($k->{key});
    Nebula::Test::is_error($r, 429, 'rate_limit_error', 'rate_limit_exceeded',
                           'the third in the minute: 429, the key\'s limit of 2 holds');
    is $r->{headers}{'x-ratelimit-limit-requests'}, 2, 'x-ratelimit-limit-requests: 2';
    is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 1000,
       'x-ratelimit-limit-output-tokens: the new 1000';
}

$r = $t->admin('PATCH', "/admin/keys/$k->{id}", { plan => 'pro', name => 'renamed' });
is_deeply $r->{json}{limits}, \%want, 'a PATCH without limits leaves them all';

{
    my $k2 = $t->new_key(plan => 'developer', limits => {%custom});
    $r = $t->admin('PATCH', "/admin/keys/$k2->{id}",
                   { limits => { requests_per_minute => undef } });
    is $r->{status}, 200, 'PATCH of requests_per_minute: null';
    is_deeply limits_of($k2->{id}), { %custom, requests_per_minute => undef },
              'null puts that one back to the plan\'s (none), the other two stay';
    is $t->redis->cli('HEXISTS', "nb:{$k2->{id}}:key", 'rpm_limit'), 0,
       'its override is gone from the record';

    $r = $t->admin('PATCH', "/admin/keys/$k2->{id}",
                   { limits => { input_tokens => 7, output_tokens => undef } });
    is_deeply limits_of($k2->{id}),
              { input_tokens => 7, output_tokens => 500000, requests_per_minute => undef },
              'two named: one set, one back to the plan\'s';

    $r = $t->admin('PATCH', "/admin/keys/$k2->{id}", { limits => {} });
    is $r->{status}, 200, 'PATCH with limits {}';
    is_deeply limits_of($k2->{id}),
              { input_tokens => 7, output_tokens => 500000, requests_per_minute => undef },
              'limits {} changes nothing';

    $r = $t->admin('PATCH', "/admin/keys/$k2->{id}",
                   { limits => { output_tokens => 5, tokens => 1 } });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'an unknown limit: 400', 'limits');
    is limits_of($k2->{id})->{output_tokens}, 500000, 'and nothing changed';

    # as a JSON merge patch (RFC 7396) removes the member: every limit
    $r = $t->admin('PATCH', "/admin/keys/$k2->{id}", '{"limits":null}');
    is_deeply limits_of($k2->{id}), \%plan, 'limits null: all three are the plan\'s';
}

# ---------------------------------------------------------------------
# item 12: no comments, a depth limit yajl's own parse enforces
# ---------------------------------------------------------------------
my $D = 100_000;
# deep enough that freeing yajl's tree of it, one call a level, runs off a
# worker's 8 MB stack (about 300,000 levels), and within the 1 MB
# client_body_buffer_size that keeps an admin body in memory
my $DEEP = 400_000;

$r = $t->admin('POST', '/admin/keys', '{"plan":"free",/* a comment */"name":"c"}');
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'POST: a /* */ comment is not JSON');
$r = $t->admin('POST', '/admin/keys', "{\"plan\":\"free\", // a comment\n\"name\":\"c\"}");
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'POST: a // comment is not JSON');
$r = $t->admin('PATCH', "/admin/keys/$k->{id}", '{"name":"d" /* a comment */}');
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'PATCH: a comment is not JSON');
is $t->admin('GET', "/admin/keys/$k->{id}")->{json}{name}, 'renamed',
   'and the name did not change';

# a quote in a comment hid what follows from the old depth check
for my $case (['/*"*/', 'a quote in a /* */ comment'],
              ["//\"\n", 'a quote in a // comment']) {
    my ($c, $name) = @$case;
    $r = $t->admin('POST', '/admin/keys',
                   '{"plan":"free","name":' . $c . ('[' x $DEEP) . (']' x $DEEP) . '}');
    Nebula::Test::is_error($r, 400, $bad, 'invalid_json', "POST: $name, then $DEEP deep");
    $r = $t->admin('PATCH', "/admin/keys/$k->{id}",
                   '{"limits":' . $c . ('{"a":' x $D) . '1' . ('}' x $D) . '}');
    Nebula::Test::is_error($r, 400, $bad, 'invalid_json', "PATCH: $name, then $D deep");
}

$r = $t->admin('POST', '/admin/keys', '{"plan":"free","name":' . ('[' x $D) . (']' x $D) . '}');
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', "POST: $D deep");
$r = $t->admin('POST', '/admin/keys', '{"plan":"free","x":' . ('[' x 8) . (']' x 8) . '}');
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'POST: 9 deep is over the limit');
$r = $t->admin('POST', '/admin/keys', '{"plan":"free","x":' . ('[' x 7) . (']' x 7) . '}');
is $r->{status}, 201, 'POST: 8 deep is within it';
$r = $t->admin('POST', '/admin/keys', '{"plan":"free","name":"\"/*\\\\","x":"*/"}');
is $r->{status}, 201, 'comment marks in strings are strings';
is $r->{json}{name}, '"/*\\', 'and kept as they are';

{
    # the same connection serves the next request after a deep body
    my $body = '{"plan":"free","name":/*"*/' . ('[' x $DEEP) . (']' x $DEEP) . '}';
    my $auth = 'Authorization: Bearer ' . $t->admin_token;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port,
                                  Timeout => 5 * $Nebula::Test::TIME_SCALE);
    binmode $s;
    print $s "POST /admin/keys HTTP/1.1\r\nHost: localhost\r\n$auth\r\n"
             . "Content-Type: application/json\r\nContent-Length: " . length($body)
             . "\r\n\r\n$body"
             . "GET /admin/keys/$k->{id} HTTP/1.1\r\nHost: localhost\r\n$auth\r\n"
             . "Connection: close\r\n\r\n";
    my @resp = Nebula::Test::split_responses(Nebula::Test::read_until_eof($s, 20));
    close $s;
    is scalar @resp, 2, 'two answers on one connection';
    Nebula::Test::is_error($resp[0] // { status => 0 }, 400, $bad, 'invalid_json',
                           'the first: the deep body refused');
    is(($resp[1] // {})->{status}, 200, 'the second: served on the same connection');
}

$r = $t->admin('GET', "/admin/keys/$k->{id}");
is $r->{status}, 200, 'the next request is served';
is worker_pids(), $workers0, 'the same worker as at the start';
unlike $t->error_log, qr/exited on signal|\[alert\]/, 'no worker died';

$t->done;
