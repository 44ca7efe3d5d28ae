#!/usr/bin/perl
# Hostile input (issue 6): bodies that are not JSON objects, truncated or
# invalid UTF-8, nested 100,000 deep, numbers out of any range, a model that
# is not a string or carries CR/LF/NUL, duplicate keys, a 100 MB body, a
# 10 KB Authorization header, a body that trickles in, pipelined requests
# and HTTP/2.  For each: a clear OpenAI-style error (or a correct answer
# where the input is in fact valid), nothing refused reaches a pool, no
# header or request line is injected upstream, the worker survives (the
# same worker pid at the end, no [alert]/[crit] in error.log, a normal
# request still served) and the usage of the key that sent the hostile
# requests does not move.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use File::Temp qw(tempfile);
use Time::HiRes qw(sleep time);
use Nebula::Test;

# HTTP/2: examples/nebula.conf does not enable it.  Debian's nginx is built
# --with-http_v2_module, so a second listener with "http2" (cleartext,
# prior knowledge: nginx 1.22's "listen ... http2" without ssl) is added
# for this file only; the example's own listener is left as it is.
my $have_h2 = `$Nebula::Test::NGINX -V 2>&1` =~ /--with-http_v2_module/
              && `curl -V 2>/dev/null` =~ /\bHTTP2\b/;
my $h2port = Nebula::Test::free_port();

# one worker: a request that blocked its worker would block every other
# request of this file, so the trickle test below sees it
my $t = Nebula::Test->new(
    workers => 1,
    $have_h2 ? (patch => sub {
        $_[0] =~ s/^(\s*)(listen\s+127\.0\.0\.1:\d+;)/$1$2\n$1listen       127.0.0.1:$h2port http2;/mr
    }) : (),
);

my $chat = '/v1/chat/completions';
my $bad = 'invalid_request_error';
my $msgs = '"messages":[{"role":"user","content":"Hi"}]';
my $good = "{\"model\":\"qwen3:latest\",$msgs}";

# nginx's own refusals are logged at [error] for these two only
$t->allow_error(qr/client intended to send too large/);

# the hostile requests all come with this key: its usage must not move
my $victim = $t->new_key(plan => 'developer', name => 'hostile');
my $vauth = { Authorization => "Bearer $victim->{key}" };

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key});
    my $u = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
    return Nebula::Test::json_encode($u // {});
}

sub upstream_count {
    return scalar(@{ $t->sim('local')->requests }) + scalar(@{ $t->sim('cloud')->requests });
}

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    binmode $fh;
    local $/;
    return scalar(<$fh>) // '';
}

sub worker_pids {
    my $master = $t->nginx_pid or return '';
    return join ',', sort split ' ', `ps -o pid= --ppid $master`;
}

# a hostile request with the victim's key; asserts the error
sub refused {
    my ($raw, $status, $type, $code, $param, $name, %o) = @_;
    my $r = $t->request('POST', $o{path} // $chat, body => $raw,
                        headers => { %$vauth, %{ $o{headers} // {} } });
    Nebula::Test::is_error($r, $status, $type, $code, $name, $param);
    return $r;
}

# a normal request still works
sub still_serves {
    my ($what) = @_;
    my $r = $t->post($chat, $good);
    ok $r->{status} == 200 && ($r->{json}{model} // '') eq 'qwen3:latest',
       "a normal request is served after $what" or diag "status $r->{status}: $r->{body}";
}

my $usage0 = usage_of($victim);
my $workers0 = worker_pids();
ok length $workers0, "worker pid(s): $workers0";
my $up0 = upstream_count();
my $up = $up0;

# ---------------------------------------------------------------------
# empty body, JSON null, arrays and other non-objects
# ---------------------------------------------------------------------
refused('', 400, $bad, 'invalid_json', undef, 'empty body');
refused("  \r\n\t ", 400, $bad, 'invalid_json', undef, 'whitespace-only body');
{
    # no Content-Length at all
    my $r = $t->exchange("POST $chat HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                         . "Authorization: Bearer $victim->{key}\r\n\r\n");
    Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'no body, no Content-Length');
}
for my $body ('null', ' null ', '[]', '[1,2]', "[$good]", '"string"', '42', 'true',
              '{}', "\xef\xbb\xbf$good") {
    my $code = $body eq '{}' ? 'missing_field' : 'invalid_json';
    refused($body, 400, $bad, $code, undef, "body " . (length $body > 12
            ? substr($body, 0, 12) . '...' : $body) . ": $code");
}
for my $path ('/api/chat', '/api/generate') {
    refused('null', 400, $bad, 'invalid_json', undef, "$path: JSON null", path => $path);
    refused('[]', 400, $bad, 'invalid_json', undef, "$path: JSON array", path => $path);
    refused('', 400, $bad, 'invalid_json', undef, "$path: empty body", path => $path);
}

# ---------------------------------------------------------------------
# truncated JSON: every proper prefix of a valid body
# ---------------------------------------------------------------------
{
    my @wrong;
    for my $n (1 .. length($good) - 1) {
        my $r = $t->request('POST', $chat, body => substr($good, 0, $n), headers => $vauth);
        push @wrong, "$n: $r->{status} " . ($r->{json}{error}{code} // $r->{body} // '')
            unless $r->{status} == 400 && ($r->{json}{error}{code} // '') eq 'invalid_json'
                   && ($r->{json}{error}{type} // '') eq $bad;
    }
    ok !@wrong, 'every one of ' . (length($good) - 1) . ' truncations: 400 invalid_json'
        or diag join "\n", @wrong[0 .. ($#wrong < 9 ? $#wrong : 9)];
}
refused('{"model":"qwen3:latest","messages":[{"role":"user","content":"Hi"}]}}', 400, $bad,
        'invalid_json', undef, 'trailing garbage after the object');
refused("$good$good", 400, $bad, 'invalid_json', undef, 'two objects in one body');
{
    # Content-Length promises more than comes, then the client half-closes:
    # nginx cannot answer a client that went away; nothing goes upstream
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port, Timeout => 5) or die $!;
    print $s "POST $chat HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer $victim->{key}\r\n"
           . "Content-Type: application/json\r\nContent-Length: " . (length($good) + 50)
           . "\r\n\r\n$good";
    shutdown $s, 1;
    my $raw = Nebula::Test::read_until_eof($s, 5);
    close $s;
    ok $raw eq '' || $raw =~ m{^HTTP/1\.1 400 .*\r\ncontent-type: application/json}is,
       'body shorter than its Content-Length, client half-closes: no answer or a JSON 400';
}

is upstream_count(), $up0, 'no empty, non-object or truncated body reached a pool';

# ---------------------------------------------------------------------
# invalid UTF-8
# ---------------------------------------------------------------------
my %utf8 = (
    'byte 0xff'                      => "\xff",
    'lone continuation byte'         => "\x80",
    'truncated 3-byte sequence'      => "\xe2\x82",
    'overlong "/" (0xc0 0xaf)'       => "\xc0\xaf",
    'overlong NUL (0xc0 0x80)'       => "\xc0\x80",
    'UTF-16 surrogate (0xed 0xa0 0x80)' => "\xed\xa0\x80",
    'above U+10FFFF (0xf4 0x90 ...)' => "\xf4\x90\x80\x80",
    '5-byte sequence (0xf8 ...)'     => "\xf8\x88\x80\x80\x80",
);
# yajl checks only the shape of a UTF-8 sequence (a lead byte and its
# continuation bytes), so these four pass it and the module's own strict
# check (RFC 3629) refuses them; they go with a key of their own, so that
# the main hostile key's usage check stays exact
my @strict = ('overlong "/" (0xc0 0xaf)', 'overlong NUL (0xc0 0x80)',
              'UTF-16 surrogate (0xed 0xa0 0x80)', 'above U+10FFFF (0xf4 0x90 ...)');
my $victim8 = $t->new_key(plan => 'developer', name => 'hostile-utf8');
my $usage8 = usage_of($victim8);
$up = upstream_count();
for my $what (sort keys %utf8) {
    my $b = $utf8{$what};
    my $is_strict = grep { $_ eq $what } @strict;
    my %where = (
        'in the model'         => "{\"model\":\"qwen3:latest$b\",$msgs}",
        'in the content'       => "{\"model\":\"qwen3:latest\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi$b\"}]}",
        'in an unknown field'  => "{\"model\":\"qwen3:latest\",\"user\":\"u$b\",$msgs}",
        'in a key'             => "{\"model\":\"qwen3:latest\",\"x$b\":1,$msgs}",
    );
    for my $w (sort keys %where) {
        {
            my $r = $t->request('POST', $chat, body => $where{$w},
                                headers => { Authorization => 'Bearer '
                                             . ($is_strict ? $victim8 : $victim)->{key} });
            # in the model, the name is not in the catalog anyway: a 404 is
            # as safe as the 400 invalid_json
            my $code = $r->{json}{error}{code} // '';
            ok $r->{status} == 400 && $code eq 'invalid_json'
               || ($w eq 'in the model' && $r->{status} == 404 && $code eq 'model_not_found'),
               "invalid UTF-8, $what, $w: refused"
               or diag "status $r->{status}: $r->{body}";
        }
    }
}
{
    is upstream_count(), $up, 'no body with invalid UTF-8 reached a pool';
    is usage_of($victim8), $usage8, 'the key that sent them: usage unchanged';
}
refused("{\"model\":\"gemma3:1b\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
        400, $bad, 'invalid_json', undef, '/api/chat: invalid UTF-8', path => '/api/chat');

# ---------------------------------------------------------------------
# nesting 100,000 deep
# ---------------------------------------------------------------------
my $D = 100_000;
$up = upstream_count();
refused('{"model":"qwen3:latest","x":' . ('[' x $D) . (']' x $D) . ",$msgs}", 400, $bad,
        'invalid_json', undef, 'arrays 100,000 deep in an unknown field');
refused('{"model":"qwen3:latest","x":' . ('{"a":' x $D) . '1' . ('}' x $D) . ",$msgs}", 400,
        $bad, 'invalid_json', undef, 'objects 100,000 deep in an unknown field');
refused('{"model":"qwen3:latest","messages":[{"role":"user","content":' . ('[' x $D)
        . (']' x $D) . '}]}', 400, $bad, 'invalid_json', undef, '100,000 deep in a content');
refused('{"model":"qwen3:latest","x":' . ('[' x $D), 400, $bad, 'invalid_json', undef,
        '100,000 opened and never closed');
refused(('[' x $D) . (']' x $D), 400, $bad, 'invalid_json', undef, 'a top-level array 100,000 deep');
refused('{"model":"gemma3:1b","prompt":"x","options":' . ('{"a":' x $D) . '1' . ('}' x $D)
        . '}', 400, $bad, 'invalid_json', undef, '/api/generate: 100,000 deep',
        path => '/api/generate');
{
    # the admin API parses JSON too
    my $r = $t->admin('POST', '/admin/keys',
                      '{"plan":"free","name":' . ('[' x $D) . (']' x $D) . '}');
    ok $r->{status} == 400 && ($r->{headers}{'content-type'} // '') =~ /json/
       && ref $r->{json}{error} eq 'HASH', 'admin API: 100,000 deep, a JSON 400'
       or diag "status $r->{status}: $r->{body}";
}
is upstream_count(), $up, 'no deep body reached a pool';
still_serves('100,000-deep bodies');

# ---------------------------------------------------------------------
# numbers like 1e400
# ---------------------------------------------------------------------
$up = upstream_count();
for my $n ('1e400', '-1e400', '1' . ('0' x 10_000), '0.' . ('0' x 10_000) . '1e99999') {
    my $show = length $n > 8 ? substr($n, 0, 6) . '...(' . length($n) . ' chars)' : $n;
    refused("{\"model\":\"qwen3:latest\",$msgs,\"temperature\":$n}", 400, $bad,
            'invalid_value', 'temperature', "temperature $show");
    refused("{\"model\":\"qwen3:latest\",$msgs,\"max_tokens\":$n}", 400, $bad,
            'invalid_value', 'max_tokens', "max_tokens $show");
    refused("{\"model\":$n,$msgs}", 400, $bad, 'invalid_value', 'model', "model $show");
    refused("{\"model\":\"gemma3:1b\",\"prompt\":\"x\",\"options\":{\"num_predict\":$n}}",
            400, $bad, 'invalid_value', 'options.num_predict', "num_predict $show",
            path => '/api/generate');
}
refused("{\"model\":\"qwen3:latest\",$msgs,\"max_tokens\":99999999999999999999999}", 400, $bad,
        'invalid_value', 'max_tokens', 'max_tokens past 64 bits');
refused("{\"model\":\"qwen3:latest\",$msgs,\"max_tokens\":-9223372036854775809}", 400, $bad,
        'invalid_value', 'max_tokens', 'max_tokens past -2^63');
refused("{\"model\":\"qwen3:latest\",$msgs,\"temperature\":NaN}", 400, $bad,
        'invalid_json', undef, 'temperature NaN (not JSON)');
refused("{\"model\":\"qwen3:latest\",$msgs,\"temperature\":Infinity}", 400, $bad,
        'invalid_json', undef, 'temperature Infinity (not JSON)');
refused("{\"model\":\"qwen3:latest\",$msgs,\"temperature\":01}", 400, $bad,
        'invalid_json', undef, 'temperature 01 (not JSON)');
is upstream_count(), $up, 'no refused number reached a pool';

# valid: 1e400 in a field the gateway does not read passes through untouched
{
    $t->sim('local')->reset;
    # (4,000 digits: the simulator's Python refuses integers over 4,300)
    my $body = "{\"model\":\"qwen3:latest\",$msgs,\"seed\":1e400,\"top_p\":-1e400,"
             . "\"x\":1" . ('0' x 4000) . "}";
    my $r = $t->post($chat, $body);
    is $r->{status}, 200, '1e400 in fields the gateway does not read: served';
    # (the simulator's log now holds an Infinity JSON::PP cannot decode:
    # read it as text)
    my $log = $t->get('/_sim/requests', port => $t->sim('local')->port)->{body} // '';
    like $log, qr/\\"seed\\":1e400,\\"top_p\\":-1e400,\\"x\\":10{4000}\}/,
        'and passed to the pool untouched';
    $r = $t->post($chat, "{\"model\":\"qwen3:latest\",$msgs,\"temperature\":1e-400}");
    is $r->{status}, 200, 'temperature 1e-400 (in range, rounds to 0): served';
    {
        $r = $t->post($chat, "{\"model\":\"qwen3:latest\",$msgs,\"temperature\":0.5"
                             . ('0' x 80) . "}");
        is $r->{status}, 200, 'temperature 0.5000...(80 zeros): in range, served';
    }
    $t->sim('local')->reset;
}

# ---------------------------------------------------------------------
# model as an array, or anything but a catalog name
# ---------------------------------------------------------------------
$up = upstream_count();
refused("{\"model\":[\"qwen3:latest\"],$msgs}", 400, $bad, 'invalid_value', 'model',
        'model as an array');
refused("{\"model\":[],$msgs}", 400, $bad, 'invalid_value', 'model', 'model as an empty array');
refused("{\"model\":{\"name\":\"qwen3:latest\"},$msgs}", 400, $bad, 'invalid_value', 'model',
        'model as an object');
refused("{\"model\":true,$msgs}", 400, $bad, 'invalid_value', 'model', 'model as a boolean');
{
    my $r = $t->request('POST', $chat, body => "{\"model\":null,$msgs}", headers => $vauth);
    ok $r->{status} == 400 && ($r->{json}{error}{param} // '') eq 'model'
       && ($r->{json}{error}{code} // '') =~ /^(invalid_value|missing_field)$/,
       'model null: 400, param model' or diag "status $r->{status}: $r->{body}";
}
refused("{\"model\":\"\",$msgs}", 400, $bad, 'invalid_value', 'model', 'model empty');
{
    my $r = $t->request('POST', $chat, body => '{"model":"' . ('q' x 5000) . "\",$msgs}",
                        headers => $vauth);
    ok(($r->{status} == 404 && ($r->{json}{error}{code} // '') eq 'model_not_found'
        || $r->{status} == 400 && ($r->{json}{error}{code} // '') eq 'invalid_value')
       && ($r->{json}{error}{param} // '') eq 'model', 'a 5,000-character model name: refused')
       or diag "status $r->{status}: $r->{body}";
}
refused('{"model":["gemma3:1b"],"prompt":"x"}', 400, $bad, 'invalid_value', 'model',
        '/api/generate: model as an array', path => '/api/generate');
is upstream_count(), $up, 'no model of the wrong type reached a pool';

# ---------------------------------------------------------------------
# CR/LF or NUL in the model name: refused, nothing upstream
# ---------------------------------------------------------------------
$up = upstream_count();
for my $m ('qwen3:latest\r\nX-Injected: 1', 'qwen3:latest\n', 'qwen3:latest\r',
           'qwen3:latest\r\n\r\nPOST /api/pull HTTP/1.1\r\nHost: x\r\n\r\n',
           'qwen3:latest\u000d\u000aX-Injected: 1', "qwen3:latest\\u2028") {
    refused("{\"model\":\"$m\",$msgs}", 404, $bad, 'model_not_found', 'model',
            "model \"$m\": 404");
}
refused("{\"model\":\"qwen3:latest\\u0000evil\",$msgs}", 400, $bad, 'invalid_value', 'model',
        'model with an escaped NUL');
refused("{\"model\":\"\\u0000\",$msgs}", 400, $bad, 'invalid_value', 'model',
        'model that is only a NUL');
refused("{\"model\":\"qwen3:latest\r\nX-Injected: 1\",$msgs}", 400, $bad, 'invalid_json',
        undef, 'raw CR/LF bytes in the model string (not JSON)');
refused("{\"model\":\"qwen3:latest\0evil\",$msgs}", 400, $bad, 'invalid_json', undef,
        'raw NUL byte in the model string (not JSON)');
refused("{\"model\":\"qwen3:latest\",\0$msgs}", 400, $bad, 'invalid_json', undef,
        'raw NUL byte between members');
refused("{\"model\":\"gemma3:1b\\r\\nX-Injected: 1\",\"prompt\":\"x\"}", 404, $bad,
        'model_not_found', 'model', '/api/generate: CR/LF in the model', path => '/api/generate');
is upstream_count(), $up, 'no refused model name reached a pool';

# an attempt through the parts that do pass: a field the gateway does not
# read, and the query string, go upstream without adding a header or request
{
    $t->sim('local')->reset;
    my $inj = "x\\r\\nX-Injected: 1\\r\\n\\r\\nGET /api/pull HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n";
    my $r = $t->post("$chat?a=%0D%0AX-Injected:%201%0D%0A",
                     "{\"model\":\"qwen3:latest\",\"user\":\"$inj\",$msgs}");
    is $r->{status}, 200, 'CR/LF in the query string and an unknown field: served';
    my @got = @{ $t->sim('local')->requests };
    is scalar @got, 1, 'exactly one request reached the pool';
    my $g = $got[0] // {};
    is "$g->{method} $g->{path}", "POST $chat", 'with the right request line';
    ok !grep({ /injected|pull|^host:? x/i } keys %{ $g->{headers} // {} }),
       'no injected header upstream' or diag explain $g->{headers};
    is $g->{body}{user}, "x\r\nX-Injected: 1\r\n\r\nGET /api/pull HTTP/1.1\r\nHost: x\r\n\r\n",
        'the field reached the pool as a JSON string, whole';
    is $g->{model}, 'qwen3:latest', 'and the model as the catalog names it';

    $r = $t->post("$chat%0D%0AX-Injected:%201", $good, headers => $vauth);
    Nebula::Test::is_error($r, 404, $bad, 'not_found', 'CR/LF in the path: 404');
    $r = $t->exchange("POST $chat HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                      . "Authorization: Bearer $victim->{key}\r\nX-Evil: a\0b\r\n"
                      . "Content-Length: " . length($good) . "\r\n\r\n$good");
    Nebula::Test::is_error($r, 400, $bad, undef, 'NUL in a request header: a JSON 400');
    is scalar @{ $t->sim('local')->requests }, 1, 'neither reached the pool';
}

# ---------------------------------------------------------------------
# duplicate keys: any field the gateway reads, twice, is refused (the
# gateway would check the first, Ollama use the last); the same field in
# another case or spelling Go's encoding/json folds is refused as well;
# duplicates of fields the gateway does not read pass through untouched
# ---------------------------------------------------------------------
$up = upstream_count();
for ([ "{\"model\":\"qwen3:latest\",\"model\":\"deepseek-v3.1:671b-cloud\",$msgs}", 'model twice' ],
     [ "{\"model\":\"qwen3:latest\",\"mod\\u0065l\":\"deepseek-v3.1:671b-cloud\",$msgs}",
       'model and mod\u0065l' ],
     [ "{\"model\":\"qwen3:latest\",\"MODEL\":\"deepseek-v3.1:671b-cloud\",$msgs}",
       'model and MODEL' ],
     [ "{\"Model\":\"qwen3:latest\",$msgs}", 'Model alone' ],
     [ "{\"model\":\"qwen3:latest\",$msgs,$msgs}", 'messages twice' ],
     [ "{\"model\":\"qwen3:latest\",$msgs,\"max_tokens\":1,\"max_tokens\":100000}",
       'max_tokens twice' ],
     [ "{\"model\":\"qwen3:latest\",$msgs,\"max_to\xe2\x84\xaaens\":100000}",
       'max_tokens with a Kelvin sign (Go folds it to k)' ],
     [ "{\"model\":\"qwen3:latest\",$msgs,\"stream\":false,\"stream\":true}", 'stream twice' ],
     [ "{\"model\":\"qwen3:latest\",$msgs,\"\xc5\xbftream\":true}",
       'stream with a long s (Go folds it to s)' ],
     [ "{\"model\":\"qwen3:latest\",$msgs,\"stream\":true,\"stream_options\":"
       . "{\"include_usage\":false,\"include_usage\":true}}", 'include_usage twice' ],
     [ "{\"model\":\"qwen3:latest\",\"messages\":[{\"role\":\"user\",\"role\":\"system\","
       . "\"content\":\"Hi\"}]}", 'role twice in a message' ],
     [ "{\"model\":\"qwen3:latest\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\","
       . "\"content\":\"" . ('long ' x 20000) . "\"}]}", 'content twice in a message' ],
    ) {
    refused($_->[0], 400, $bad, 'invalid_json', undef, "duplicate keys: $_->[1]");
}
refused('{"model":"gemma3:1b","prompt":"x","options":{"num_predict":1,"num_predict":99999}}',
        400, $bad, 'invalid_json', undef, 'duplicate keys: options.num_predict twice',
        path => '/api/generate');
refused('{"model":"gemma3:1b","prompt":"x","prompt":"y"}', 400, $bad, 'invalid_json', undef,
        'duplicate keys: prompt twice', path => '/api/generate');
is upstream_count(), $up, 'no refused duplicate reached a pool';
{
    $t->sim('local')->reset;
    my $body = "{\"model\":\"qwen3:latest\",\"user\":\"a\",\"user\":\"b\",$msgs}";
    my $r = $t->post($chat, $body);
    is $r->{status}, 200, 'duplicate keys the gateway does not read: served';
    like $t->sim('local')->last->{raw_body} // '', qr/"user":"a","user":"b"/,
        'and passed through untouched';
    $r = $t->post($chat, "{\"mod\\u0065l\":\"qwen3:latest\",$msgs}");
    is $r->{status}, 200, 'mod\u0065l alone is the key "model": served';
    is $t->sim('local')->last->{model}, 'qwen3:latest', 'with that model';
}
still_serves('duplicate keys');

# ---------------------------------------------------------------------
# a 100 MB body: 413 from the headers alone
# ---------------------------------------------------------------------
$up = upstream_count();
{
    my $t0 = time;
    my $r = $t->request('POST', $chat, headers => { %$vauth, 'Content-Length' => 100 * 1024 * 1024,
                                                    'Content-Type' => 'application/json' },
                        raw_body => '{"model":"qwen3:latest","x":"' . ('x' x 4096), timeout => 5);
    my $dt = time - $t0;
    Nebula::Test::is_error($r, 413, $bad, 'request_too_large', '100 MB Content-Length: 413');
    ok $dt < 2, sprintf('answered in %.3f s, without the body', $dt);

    # Expect: 100-continue: the 413 comes instead of the 100
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port, Timeout => 5) or die $!;
    $t0 = time;
    print $s "POST $chat HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer $victim->{key}\r\n"
           . "Content-Type: application/json\r\nContent-Length: " . (100 * 1024 * 1024)
           . "\r\nExpect: 100-continue\r\n\r\n";
    my $raw = Nebula::Test::read_all($s, 5);
    close $s;
    $r = Nebula::Test::parse_response($raw);
    Nebula::Test::is_error($r, 413, $bad, 'request_too_large',
                           '100 MB with Expect: 100-continue: 413, no 100 Continue');
    ok time - $t0 < 2, '... at once';

    # chunked, announcing a 100 MB chunk
    $t0 = time;
    $r = $t->request('POST', $chat, headers => { %$vauth, 'Transfer-Encoding' => 'chunked' },
                     raw_body => sprintf("%x\r\n", 100 * 1024 * 1024) . ('x' x 4096), timeout => 5);
    Nebula::Test::is_error($r, 413, $bad, 'request_too_large', 'a chunk of 100 MB announced: 413');
    ok time - $t0 < 2, '... at once';

    # Content-Lengths nginx cannot take
    for my $cl ('99999999999999999999999999', '-1', '12, 12') {
        $r = $t->request('POST', $chat, headers => { %$vauth, 'Content-Length' => $cl },
                         raw_body => $good, timeout => 5);
        Nebula::Test::is_error($r, 400, $bad, undef, "Content-Length \"$cl\": a JSON 400");
    }
    $r = $t->request('POST', $chat, headers => { %$vauth, 'Transfer-Encoding' => 'chunked',
                                                 'Content-Length' => length $good },
                     raw_body => sprintf("%x\r\n%s\r\n0\r\n\r\n", length $good, $good), timeout => 5);
    ok(($r->{status} == 400 && ref(($r->{json} // {})->{error}) eq 'HASH')
       || $r->{status} == 401 || $r->{status} == 200,
       'Content-Length and Transfer-Encoding together: a JSON 400 (or the chunked body)')
        or diag "status $r->{status}: $r->{body}";
}
is upstream_count(), $up, 'no over-large or malformed body reached a pool';
still_serves('a 100 MB body');

# ---------------------------------------------------------------------
# a 10 KB Authorization header
# ---------------------------------------------------------------------
# A header line over large_client_header_buffers (8k) is nginx's 494; the
# example's "error_page 494 =494 @nebula_error" keeps it a 494 up to
# "nebula error", which answers 400 request_too_large (without "=494"
# nginx would make it a bare 400 first).
$up = upstream_count();
{
    for ([ 'Bearer nb-' . ('A' x 10240), '10 KB Authorization' ],
         [ "Bearer $victim->{key}" . (' ' x 10240), 'a real key padded to 10 KB' ]) {
        my ($auth, $name) = @$_;
        my $r = $t->post($chat, $good, headers => { Authorization => $auth });
        Nebula::Test::is_error($r, 400, $bad, undef, "$name: a JSON 400")
            if ($r->{json}{error}{code} // '') ne 'request_too_large';
        {
            Nebula::Test::is_error($r, 400, $bad, 'request_too_large',
                                   "$name: 400 request_too_large");
        }
    }
    my $r;
    $r = $t->post($chat, $good, headers => { Authorization => 'Bearer nb-' . ('A' x 6000) });
    Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key',
                           '6 KB Authorization that fits the buffers: 401 invalid_api_key');
    $r = $t->post($chat, $good, headers => { Authorization => undef,
                                             'x-api-key' => 'nb-' . ('A' x 6000) });
    Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', '6 KB x-api-key: 401');
    $r = $t->post($chat, $good, headers => { Authorization => 'Bearer ' . ("\xff" x 100) });
    Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'binary Authorization: 401');
    $r = $t->get('/v1/key', headers => { Authorization => 'Bearer nb-' . ('B' x 10240) });
    ok $r->{status} == 400 && ref(($r->{json} // {})->{error}) eq 'HASH',
       '/v1/key, 10 KB key: a JSON 400' or diag "status $r->{status}: $r->{body}";
}
is upstream_count(), $up, 'no request with a hostile Authorization reached a pool';
still_serves('a 10 KB Authorization');

# ---------------------------------------------------------------------
# a body that trickles in, one byte a second, on one connection, while
# requests on other connections are served at once
# ---------------------------------------------------------------------
{
    my $body = '{"model":"gemma3:1b","messages":[{"role":"user","content":"trickle"}]}';
    my $tail = 3;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port, Timeout => 5) or die $!;
    $s->autoflush(1);
    print $s "POST $chat HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           . "Authorization: Bearer " . $t->key . "\r\nContent-Type: application/json\r\n"
           . "Content-Length: " . length($body) . "\r\n\r\n" . substr($body, 0, -$tail);
    my (@lat, @fail);
    for my $i (1 .. $tail) {
        my $until = time + 1;
        while (time < $until) {
            my $t0 = time;
            my $r = $t->post($chat, { model => 'qwen3:latest',
                                      messages => [{ role => 'user', content => "during $i" }] });
            push @lat, time - $t0;
            push @fail, $r->{status} unless $r->{status} == 200;
            $t0 = time;
            $r = $t->get('/v1/models');
            push @lat, time - $t0;
            push @fail, $r->{status} unless $r->{status} == 200;
            sleep 0.05;
        }
        print $s substr($body, length($body) - $tail + $i - 1, 1);
    }
    my $raw = Nebula::Test::read_until_eof($s, 5);
    close $s;
    my $r = Nebula::Test::parse_response($raw);
    is $r->{status}, 200, "the trickled body (last $tail bytes one a second): served";
    is(($r->{json} // {})->{model}, 'gemma3:1b', '... with its model');
    my ($max) = sort { $b <=> $a } @lat;
    ok !@fail, scalar(@lat) . ' requests on other connections meanwhile, all served'
        or diag "statuses: @fail";
    ok @lat >= 10 && $max < 0.5, sprintf('... the slowest in %.3f s', $max // -1);
}

# ---------------------------------------------------------------------
# pipelined requests: several in one write on one keep-alive connection,
# each answered in order, hostile ones among them
# ---------------------------------------------------------------------
{
    my $req = sub {
        my ($body, $auth, %o) = @_;
        my $m = $o{method} // 'POST';
        my $p = $o{path} // $chat;
        return "$m $p HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer $auth\r\n"
             . (defined $body ? "Content-Type: application/json\r\nContent-Length: "
                                . length($body) . "\r\n" : '')
             . ($o{close} ? "Connection: close\r\n" : '') . "\r\n" . ($body // '');
    };
    my $k = $t->key;
    my $v = $victim->{key};
    my @sent = (
        [ $req->("{\"model\":\"qwen3:latest\",$msgs}", $k), 200, 'qwen3:latest' ],
        [ $req->('null', $v), 400, 'invalid_json' ],
        [ $req->("{\"model\":\"gemma3:1b\",$msgs}", $k), 200, 'gemma3:1b' ],
        [ $req->('{"model":"qwen3:latest","x":' . ('[' x 5000) . (']' x 5000) . ",$msgs}", $v),
          400, 'invalid_json' ],
        [ $req->(undef, $k, method => 'GET', path => '/v1/models'), 200, 'list' ],
        [ $req->("{\"model\":\"qwen3:latest\\r\\nX-Injected: 1\",$msgs}", $v), 404,
          'model_not_found' ],
        [ $req->("{\"model\":\"qwen/qwen3-coder:free\",$msgs}", $k), 200, 'qwen/qwen3-coder:free' ],
        [ $req->("{\"model\":\"qwen3:latest\",$msgs,\"stream\":true}", $k, close => 1), 200,
          'stream' ],
    );
    $t->sim('local')->reset;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port, Timeout => 5) or die $!;
    binmode $s;
    print $s join '', map { $_->[0] } @sent;
    my $raw = Nebula::Test::read_until_eof($s, 10);
    close $s;
    my @resp = Nebula::Test::split_responses($raw);
    is scalar @resp, scalar @sent, scalar(@sent) . ' pipelined requests, as many answers';
    for my $i (0 .. $#sent) {
        my ($want_status, $what) = @{ $sent[$i] }[1, 2];
        my $r = $resp[$i] // { status => 0 };
        my $j = $r->{json} // {};
        my $got = $r->{status} != 200 ? ($j->{error}{code} // '')
                : $what eq 'list' ? ($j->{object} // '')
                : $what eq 'stream' ? ((Nebula::Test::sse_events($r->{body}))[-1] // '') eq '[DONE]'
                                      ? 'stream' : 'broken stream'
                : ($j->{model} // '');
        is "$r->{status} $got", "$want_status $what", "pipelined answer $i in order: $what";
    }
    my @models = map { $_->{model} } @{ $t->sim('local')->requests };
    is "@models", 'qwen3:latest gemma3:1b qwen3-coder:30b qwen3:latest',
        'the pool got the accepted ones, in order, and nothing else';
}
still_serves('pipelined requests');

# ---------------------------------------------------------------------
# HTTP/2 (prior knowledge, on the second listener)
# ---------------------------------------------------------------------
SKIP: {
    skip 'nginx without http_v2 or curl without HTTP2', 1 unless $have_h2;

    my $h2 = sub {
        my ($method, $path, $body, %o) = @_;
        my ($fh, $file) = tempfile(DIR => $t->dir, UNLINK => 1);
        binmode $fh;
        print $fh $body // '';
        close $fh;
        my @cmd = ('curl', '-sS', '--http2-prior-knowledge', '-m', '10', '-X', $method,
                   '-D', '-', '-H', 'Authorization: ' . ($o{auth} // "Bearer $victim->{key}"),
                   (map { ('-H', $_) } @{ $o{headers} // [] }),
                   defined $body ? ('-H', 'Content-Type: application/json',
                                    '--data-binary', "\@$file") : (),
                   "http://127.0.0.1:$h2port$path");
        open my $p, '-|', @cmd or die "curl: $!";
        binmode $p;
        my $out = do { local $/; <$p> };
        close $p;
        my ($head, $b) = split /\r\n\r\n/, $out // '', 2;
        my %r = (status => 0, headers => {}, body => $b // '', raw => $out);
        ($r{version}, $r{status}) = ($1, $2) if ($head // '') =~ m{^HTTP/(\S+) (\d+)};
        while (($head // '') =~ /^([^:\r\n]+):[ \t]*(.*?)\r?$/mg) {
            $r{headers}{ lc $1 } = $2;
        }
        $r{json} = Nebula::Test::json_decode($r{body})
            if ($r{headers}{'content-type'} // '') =~ /json/;
        return \%r;
    };

    $t->sim('local')->reset;
    my $r = $h2->('POST', $chat, $good, auth => 'Bearer ' . $t->key);
    is "$r->{version} $r->{status}", '2 200', 'HTTP/2: a normal request served';
    is(($r->{json} // {})->{model}, 'qwen3:latest', 'HTTP/2: the public model name');
    $r = $h2->('POST', $chat, '{"model":"qwen3:latest","stream":true,' . $msgs . '}',
               auth => 'Bearer ' . $t->key);
    is((Nebula::Test::sse_events($r->{body}))[-1], '[DONE]', 'HTTP/2: a whole stream');
    is scalar @{ $t->sim('local')->requests }, 2, 'HTTP/2: both reached the pool';

    $t->sim('local')->reset;
    for ([ '', 400, 'invalid_json', 'empty body' ],
         [ 'null', 400, 'invalid_json', 'JSON null' ],
         [ '{"model":"qwen3:latest",', 400, 'invalid_json', 'truncated JSON' ],
         [ "{\"model\":\"qwen3:latest\xff\",$msgs}", 400, 'invalid_json', 'invalid UTF-8' ],
         [ '{"model":"qwen3:latest","x":' . ('[' x $D) . (']' x $D) . ",$msgs}", 400,
           'invalid_json', '100,000 deep' ],
         [ "{\"model\":[\"qwen3:latest\"],$msgs}", 400, 'invalid_value', 'model as an array' ],
         [ "{\"model\":\"qwen3:latest\\r\\nX-Injected: 1\",$msgs}", 404, 'model_not_found',
           'CR/LF in the model' ],
         [ "{\"model\":\"qwen3:latest\",\"model\":\"gemma3:1b\",$msgs}", 400, 'invalid_json',
           'duplicate keys' ],
         [ "{\"model\":\"qwen3:latest\",$msgs,\"temperature\":1e400}", 400, 'invalid_value',
           'temperature 1e400' ]) {
        my ($body, $st, $code, $name) = @$_;
        $r = $h2->('POST', $chat, $body);
        Nebula::Test::is_error($r, $st, $bad, $code, "HTTP/2: $name");
    }
    $r = $h2->('POST', $chat, $good, auth => 'Bearer nb-' . ('A' x 10240));
    ok $r->{status} =~ /^(400|401|431)$/ && ref(($r->{json} // {})->{error}) eq 'HASH'
       || $r->{status} == 0,
       "HTTP/2: 10 KB Authorization: a JSON refusal or the stream reset ($r->{status})"
       or diag $r->{raw};

    # 100 MB announced, one byte sent and the stream left open (curl
    # uploading from a pipe we hold, closed after a second): nginx answers
    # 413 from the headers.  The time is not measured here: curl reads its
    # stdin with a blocking fread and only reports what it received once
    # the pipe closes; the HTTP/1.1 case above measures it.
    local $SIG{PIPE} = 'IGNORE';
    my $out = $t->dir . '/h2-413.out';
    my $t0 = time;
    open my $w, '|-', 'curl', '-sS', '--http2-prior-knowledge', '-m', '5', '-X', 'POST',
         '-T', '-', '-o', $out, '-D', "$out.head", '-H', "Authorization: Bearer $victim->{key}",
         '-H', 'Content-Type: application/json', '-H', 'Content-Length: ' . 100 * 1024 * 1024,
         "http://127.0.0.1:$h2port$chat" or die "curl: $!";
    $w->autoflush(1);
    print $w '{';
    sleep 1;
    close $w;
    my $dt = time - $t0;
    my $body = slurp($out);
    my $head = slurp("$out.head");
    my $status = $head =~ m{^HTTP/\S+ (\d+)} ? $1 : 0;
    my $ctype = $head =~ /^content-type:\s*(\S+)/mi ? $1 : '';
    $r = { status => $status, body => $body, headers => { 'content-type' => $ctype },
           json => Nebula::Test::json_decode($body) };
    # curl sometimes ends the stream (EOF on its stdin) before it reads
    # the 413 and then reports only a stream error (its exit 92): a reset
    # stream is accepted, any answer that came must be the JSON 413
    if ($status) {
        Nebula::Test::is_error($r, 413, $bad, 'request_too_large',
                               'HTTP/2: 100 MB Content-Length: 413');
    } else {
        pass('HTTP/2: 100 MB Content-Length: the stream reset (curl saw no answer)');
    }
    ok $dt < 3, sprintf('HTTP/2: ... with 1 byte of the body sent (%.1f s, 1 s of it ours)', $dt);
    is scalar @{ $t->sim('local')->requests }, 0, 'HTTP/2: no refusal reached the pool';
}

# ---------------------------------------------------------------------
# the worker survived, nothing refused was metered
# ---------------------------------------------------------------------
still_serves('every hostile request');
is worker_pids(), $workers0, 'the same worker, never restarted';
is usage_of($victim), $usage0, "the hostile key's usage did not move";
unlike $t->error_log, qr/\[(alert|crit|emerg)\]/, 'no [alert], [crit] or [emerg] in error.log';
unlike $t->error_log, qr/worker process \d+ exited on signal/, 'no worker exited on a signal';

$t->done;
