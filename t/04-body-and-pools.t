#!/usr/bin/perl
# Request bodies of every size and shape, and pools that fail: 413 as JSON,
# bodies spilled to a temp file still rewritten, chunked uploads, and the
# contract's 502/504 when a pool fails or stalls.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch_proxy => sub { $_[0] =~ s/proxy_read_timeout\s+\d+s;/proxy_read_timeout 1s;/r },
);
my $chat = '/v1/chat/completions';
my $bad = 'invalid_request_error';

$t->allow_error(qr/client intended to send too large/,
                qr/upstream timed out/, qr/connect\(\) failed/,
                qr/upstream prematurely closed/);

# over client_max_body_size (8m): refused from the headers alone
my $t0 = time;
my $r = $t->request('POST', $chat, headers => { 'Content-Length' => 100 * 1024 * 1024,
                                                 'Content-Type' => 'application/json' },
                    raw_body => '{"model":', timeout => 10);
Nebula::Test::is_error($r, 413, $bad, 'request_too_large', '100 MB Content-Length: 413');
ok time - $t0 < 5, '413 comes at once, without reading the body';

# a chunked upload grows past the limit: 413 once it gets there
my $chunk = 'x' x (1024 * 1024);
my $raw = join '', map { sprintf("%x\r\n%s\r\n", length $chunk, $chunk) } 1 .. 9;
$r = $t->request('POST', $chat, headers => { 'Transfer-Encoding' => 'chunked' },
                 raw_body => $raw . "0\r\n\r\n");
Nebula::Test::is_error($r, 413, $bad, 'request_too_large', 'chunked upload over the limit: 413');

# 3 MB: over client_body_buffer_size (1m), so nginx spills it to a file
my $big = 'word ' x (600 * 1024);
my $body = Nebula::Test::json_encode({ model => 'qwen3-vl:235b-cloud',
                                       messages => [{ role => 'user', content => $big }] });
# that is ~770K tokens by the estimate, over the 32K context: a 400 then
$r = $t->post($chat, $body);
Nebula::Test::is_error($r, 400, $bad, 'context_length_exceeded', 'spilled body still validated');

# a body that fits the context but not the memory buffer: tools are large
my $tools = [ map { { type => 'function', function => { name => "f$_",
              parameters => { type => 'object', description => 'd' x 2000 } } } } 1 .. 600 ];
my $small_prompt = { model => 'deepseek-v3.1:671b-cloud', tools => $tools,
                     messages => [{ role => 'user', content => 'hi' }] };
$body = Nebula::Test::json_encode($small_prompt);
ok length($body) > 1024 * 1024, 'body of ' . length($body) . ' bytes, over the buffer';
# tools count towards the estimate: 1.2 MB / 4 is over 64K tokens
$r = $t->post($chat, $body);
Nebula::Test::is_error($r, 400, $bad, 'context_length_exceeded', 'tools count in the estimate');

# A body over the buffer that fits the context: a large image, which the
# estimate counts by its size (a PNG of 1024 x 768: 37 x 28 = 1036 tokens),
# not by its bytes.  (1.2 MB in any other field would be over 300K tokens:
# the estimate's floor counts every byte of the body but image data.)
$tools = [ map { { type => 'function', function => { name => "f$_" } } } 1 .. 100 ];
my $png = 'iVBORw0KGgoAAAANSUhEUgAABAAAAAMACAIAAAA12IJa' . ('A' x (1200 * 1024));
my $image = { type => 'image_url', image_url => { url => "data:image/png;base64,$png" } };
$body = Nebula::Test::json_encode({ model => 'qwen3-vl:235b-cloud', tools => $tools,
                                    messages => [{ role => 'user',
                                                   content => [{ type => 'text', text => 'hi' },
                                                               $image] }] });
$t->sim('cloud')->reset;
$r = $t->post($chat, $body);
is $r->{status}, 200, 'a 1.2 MB body spilled to a temp file is proxied';
my $got = $t->sim('cloud')->last;
is $got->{model}, 'qwen3-vl:235b', 'spilled body rewritten for the upstream';
# the gateway changed the model and added max_tokens (the reservation)
my $added = length('"max_tokens":' . $got->{body}{max_tokens} . ',');
is length($got->{raw_body}), length($body) - length('qwen3-vl:235b-cloud')
                                           + length('qwen3-vl:235b') + $added,
    'nothing lost from the spilled body';
is $got->{body}{messages}[0]{content}[1]{image_url}{url}, "data:image/png;base64,$png",
    'the image passed whole';

# a chunked upload that fits
$body = '{"model":"gemma3:1b","messages":[{"role":"user","content":"chunked hello"}]}';
$raw = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) } unpack '(A7)*', $body;
$t->sim('local')->reset;
$r = $t->request('POST', $chat, headers => { 'Transfer-Encoding' => 'chunked' },
                 raw_body => $raw . "0\r\n\r\n");
is $r->{status}, 200, 'chunked upload proxied';
$got = $t->sim('local')->last;
is $got->{model}, 'gemma3:1b', 'chunked upload reached the pool';
is $got->{body}{messages}[0]{content}, 'chunked hello', 'chunked body whole';
is $got->{headers}{'content-length'}, length $got->{raw_body}, 'sent with a Content-Length';

# the pool answers 500: 502 upstream_error, its own message kept
# (t/09-upstream-errors.t has the rest)
$r = $t->post($chat, { model => 'qwen3:latest', messages => [{ role => 'user', content => 'x' }] },
              headers => { 'x-sim-fault' => '500' });
is $r->{status}, 502, 'upstream 500: 502';
is $r->{json}{error}{code}, 'upstream_error', 'upstream 500: upstream_error';
is $r->{json}{error}{message}, 'The model pool failed (HTTP 500): simulated failure',
    'with the upstream error message';

# the pool stalls past proxy_read_timeout: 504 upstream_timeout
$r = $t->post($chat, { model => 'qwen3:latest', messages => [{ role => 'user', content => 'x' }] },
              headers => { 'x-sim-fault' => 'stall' });
Nebula::Test::is_error($r, 504, 'api_error', 'upstream_timeout', 'stalled pool: 504');

# the pool is down: 502 upstream_error, and the other pool still serves
$t->sim('local')->stop;
$r = $t->post($chat, { model => 'qwen3:latest', messages => [{ role => 'user', content => 'x' }] });
Nebula::Test::is_error($r, 502, 'api_error', 'upstream_error', 'pool down: 502');
$r = $t->post($chat, { model => 'deepseek-v3.1:671b-cloud',
                       messages => [{ role => 'user', content => 'x' }] });
is $r->{status}, 200, 'the cloud pool serves while the local one is down';

$t->done;
