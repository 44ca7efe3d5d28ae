#!/usr/bin/perl
# The Ollama simulator itself, spoken to directly: the stand-in must
# behave as Ollama does for the gateway's tests to mean anything.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(no_nginx => 1);
my $port = $t->sim('local')->port;

sub sim_post {
    my ($path, $body, %h) = @_;
    return $t->request('POST', $path, body => $body, port => $port, headers => \%h);
}

my $msgs = [{ role => 'system', content => 'be brief' }, { role => 'user', content => 'one two three' }];

# JSON answer: usage from the deterministic counts
my $r = sim_post('/v1/chat/completions', { model => 'm', messages => $msgs });
is $r->{status}, 200, 'chat completion';
is $r->{json}{model}, 'm', 'names the model it was asked for';
# (2 + 3) + (3 + 3) + 2 = 13, completion 12 by default
is $r->{json}{usage}{prompt_tokens}, 13, 'prompt tokens: words + 3 a message + 2';
is $r->{json}{usage}{completion_tokens}, 12, '12 tokens by default';

# a stream: chunked, split at random places (seeded), usage only when asked
my $b = Nebula::Test::json_encode({ model => 'm', stream => JSON::PP::true, messages => $msgs });
$r = $t->exchange("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  . "x-sim-seed: 7\r\nx-sim-tokens: 30\r\nContent-Type: application/json\r\n"
                  . "Content-Length: " . length($b) . "\r\n\r\n$b",
                  port => $port);
like $r->{headers}{'content-type'}, qr{^text/event-stream}, 'SSE';
is $r->{headers}{'transfer-encoding'}, 'chunked', 'chunked';
my ($head, $raw) = split /\r\n\r\n/, $r->{raw}, 2;
my @sizes;
while ($raw =~ s/^([0-9a-f]+)\r\n//) {
    my $n = hex $1;
    last unless $n;
    push @sizes, $n;
    my $piece = substr($raw, 0, $n, '');
    $raw =~ s/^\r\n//;
}
ok @sizes > 40, scalar(@sizes) . ' HTTP chunks for 30 tokens: frames are cut';
ok !grep({ $_ > 40 } @sizes), 'no chunk over 40 bytes';
my $cut_utf8 = 0;
{
    # a chunk that ends inside a UTF-8 character: its last byte is a lead
    # or continuation byte whose character is not complete
    my $body = $r->{body};
    my $pos = 0;
    for my $n (@sizes[0 .. $#sizes - 1]) {
        $pos += $n;
        my $next = ord substr($body, $pos, 1);
        $cut_utf8++ if ($next & 0xC0) == 0x80;
    }
}
ok $cut_utf8 > 0, "$cut_utf8 cuts fall inside a UTF-8 character";
my @ev = Nebula::Test::sse_events($r->{body});
is $ev[-1], '[DONE]', 'ends with [DONE]';
ok !grep({ ref $_ && $_->{usage} } @ev), 'no usage chunk unless asked';

$r = sim_post('/v1/chat/completions', { model => 'm', stream => JSON::PP::true, messages => $msgs,
                                        stream_options => { include_usage => JSON::PP::true } });
@ev = Nebula::Test::sse_events($r->{body});
my ($u) = grep { ref $_ && $_->{usage} } @ev;
ok $u, 'a usage chunk when asked';
is_deeply $u->{choices}, [], 'with choices: []';
is $u->{usage}{completion_tokens}, 12, 'its counts';
is $ev[-2], $u, 'just before [DONE]';

# an old Ollama (before 0.5.2): no usage chunk in a stream, even when asked
$r = sim_post('/v1/chat/completions', { model => 'm', stream => JSON::PP::true, messages => $msgs,
                                        stream_options => { include_usage => JSON::PP::true } },
              'x-sim-no-usage' => 1);
@ev = Nebula::Test::sse_events($r->{body});
ok !grep({ ref $_ && $_->{usage} } @ev), 'x-sim-no-usage: no usage chunk though asked';
is scalar(grep { ref $_ && @{ $_->{choices} } } @ev), 13, 'x-sim-no-usage: the 12 tokens and the final chunk';
is $ev[-1], '[DONE]', 'x-sim-no-usage: ends with [DONE]';
is $t->sim('local')->last->{include_usage}, JSON::PP::true, 'x-sim-no-usage: the request still asked for it';

# a cached prompt: no prompt_eval_count natively, prompt_tokens 0 on /v1
$r = sim_post('/api/chat', { model => 'm', messages => $msgs }, 'x-sim-no-prompt-count' => 1);
my @lines = Nebula::Test::ndjson_lines($r->{body});
ok $lines[-1]{done} && !exists $lines[-1]{prompt_eval_count}, 'x-sim-no-prompt-count: /api/chat has no prompt_eval_count';
is $lines[-1]{eval_count}, 12, 'x-sim-no-prompt-count: eval_count still there';
is $t->sim('local')->last->{prompt_tokens}, 13, 'x-sim-no-prompt-count: the record keeps the real count';
$r = sim_post('/api/generate', { model => 'm', prompt => 'a b c', stream => JSON::PP::false },
              'x-sim-no-prompt-count' => 1);
ok !exists $r->{json}{prompt_eval_count}, 'x-sim-no-prompt-count: /api/generate (not streamed) neither';
$r = sim_post('/v1/chat/completions', { model => 'm', stream => JSON::PP::true, messages => $msgs,
                                        stream_options => { include_usage => JSON::PP::true } },
              'x-sim-no-prompt-count' => 1);
($u) = grep { ref $_ && $_->{usage} } Nebula::Test::sse_events($r->{body});
is $u->{usage}{prompt_tokens}, 0, 'x-sim-no-prompt-count: /v1 stream reports prompt_tokens 0';
is $u->{usage}{completion_tokens}, 12, 'and the completion tokens';
$r = sim_post('/v1/chat/completions', { model => 'm', messages => $msgs }, 'x-sim-no-prompt-count' => 1);
is $r->{json}{usage}{prompt_tokens}, 0, 'x-sim-no-prompt-count: /v1 answer reports prompt_tokens 0';

# a preamble without tokens, then drop:0
$r = $t->exchange("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-sim-preamble: 1\r\n"
                  . "x-sim-fault: drop:0\r\nContent-Length: " . length($b) . "\r\n\r\n$b",
                  port => $port, timeout => 5);
like $r->{body}, qr/\A: keep-alive\n\ndata: \{[^\n]*"delta":\{"role":"assistant","content":""\}[^\n]*\n\n\z/,
    'x-sim-preamble, drop:0: a comment and a role chunk, nothing else';
ok !$r->{chunked_complete}, 'then the drop';
is $t->sim('local')->last->{completion_tokens}, 0, 'no token sent';
$r = sim_post('/api/chat', { model => 'm', messages => $msgs }, 'x-sim-preamble' => 1);
@lines = Nebula::Test::ndjson_lines($r->{body});
is $lines[0]{message}{content}, '', 'x-sim-preamble natively: a first line with empty content';
is scalar(@lines), 14, 'then the 12 tokens and the final line';

# token_times: one per token, in order, spaced by slow:MS
$r = sim_post('/v1/chat/completions', { model => 'm', stream => JSON::PP::true, messages => $msgs },
              'x-sim-fault' => 'slow:50', 'x-sim-tokens' => 3);
my $tt = $t->sim('local')->last->{token_times};
is scalar(@$tt), 3, 'token_times: one a token';
ok $tt->[1] - $tt->[0] >= 0.045 && $tt->[2] - $tt->[1] >= 0.045, 'spaced by the slow fault';

# max_tokens and num_predict are honoured
$r = sim_post('/v1/chat/completions', { model => 'm', messages => $msgs, max_tokens => 5 });
is $r->{json}{usage}{completion_tokens}, 5, 'max_tokens caps the answer';
is $r->{json}{choices}[0]{finish_reason}, 'length', 'finish_reason length';
$r = sim_post('/api/chat', { model => 'm', messages => $msgs, options => { num_predict => 4 } });
@lines = Nebula::Test::ndjson_lines($r->{body});
like $r->{headers}{'content-type'}, qr{^application/x-ndjson}, 'native: NDJSON by default';
is $lines[-1]{eval_count}, 4, 'num_predict caps the native answer';
is $lines[-1]{prompt_eval_count}, 13, 'prompt_eval_count on the final line';
ok $lines[-1]{done} && !$lines[0]{done}, 'done only on the last line';
$r = sim_post('/api/generate', { model => 'm', prompt => 'a b c', stream => JSON::PP::false });
is $r->{json}{prompt_eval_count}, 5, '/api/generate: words + 2';
ok defined $r->{json}{response}, '/api/generate answers with response';

# x-sim-tool-call: the text, then the call whole in one chunk, as Ollama
# sends one; its tokens (10 + arguments' bytes / 4) counted in the usage
$r = sim_post('/v1/chat/completions', { model => 'm', stream => JSON::PP::true, messages => $msgs,
                                        stream_options => { include_usage => JSON::PP::true } },
              'x-sim-tool-call' => 'get_weather', 'x-sim-tool-args-bytes' => 40, 'x-sim-tokens' => 2);
@ev = grep { ref $_ } Nebula::Test::sse_events($r->{body});
is scalar(@ev), 5, 'tool call, /v1 stream: 2 tokens, the call, the end, the usage';
my $call = $ev[2]{choices}[0]{delta};
is $call->{content}, '', 'the call\'s chunk has empty content';
is $call->{tool_calls}[0]{function}{name}, 'get_weather', 'the call, named';
is length($call->{tool_calls}[0]{function}{arguments}), 40, 'its arguments, a JSON string of 40 bytes';
like $call->{tool_calls}[0]{id}, qr/^call_[0-9a-f]{8}$/, 'an id';
is_deeply [@{ $call->{tool_calls}[0] }{qw(index type)}], [0, 'function'], 'index and type';
is $ev[3]{choices}[0]{finish_reason}, 'tool_calls', 'finish_reason tool_calls';
is $ev[4]{usage}{completion_tokens}, 2 + 10 + 10, 'usage: the text and the call';
$r = sim_post('/v1/chat/completions', { model => 'm', messages => $msgs },
              'x-sim-tool-call' => 'f', 'x-sim-tokens' => 0);
is $r->{json}{choices}[0]{message}{tool_calls}[0]{function}{arguments},
   '{"query":"' . 'x' x 52 . '"}', '/v1 JSON: the call in message.tool_calls, 64 bytes by default';
is_deeply [$r->{json}{choices}[0]{finish_reason}, $r->{json}{usage}{completion_tokens}],
          ['tool_calls', 26], '/v1 JSON: finish_reason and usage';
$r = sim_post('/api/chat', { model => 'm', messages => $msgs },
              'x-sim-tool-call' => 'f', 'x-sim-tool-args-bytes' => 20, 'x-sim-tokens' => 1);
@lines = Nebula::Test::ndjson_lines($r->{body});
is scalar(@lines), 3, '/api/chat: a token, the call, the final line';
is_deeply $lines[1]{message}{tool_calls}[0]{function},
          { index => 0, name => 'f', arguments => { query => 'x' x 8 } },
          '/api/chat: the call natively, its arguments an object';
is_deeply [@{ $lines[2] }{qw(done_reason eval_count)}], ['stop', 1 + 15],
          '/api/chat: done_reason stop, eval_count with the call';
$r = sim_post('/api/chat', { model => 'm', messages => $msgs, stream => JSON::PP::false },
              'x-sim-tool-call' => 'f', 'x-sim-tokens' => 0);
is $r->{json}{message}{tool_calls}[0]{function}{name}, 'f', '/api/chat (not streamed): the call';
$r = sim_post('/v1/chat/completions', { model => 'm', messages => $msgs, max_tokens => 20 },
              'x-sim-tool-call' => 'f', 'x-sim-tokens' => 3);
ok !$r->{json}{choices}[0]{message}{tool_calls}, 'a cap the call would pass cuts it off';
is_deeply [$r->{json}{choices}[0]{finish_reason}, $r->{json}{usage}{completion_tokens}],
          ['length', 20], 'finish_reason length, the cap counted';
$r = $t->exchange("POST /api/chat HTTP/1.1\r\nHost: x\r\nx-sim-tool-call: f\r\n"
                  . "x-sim-tokens: 2\r\nx-sim-fault: drop:3\r\nContent-Length: "
                  . length($b) . "\r\n\r\n$b", port => $port, timeout => 5);
@lines = Nebula::Test::ndjson_lines($r->{body});
ok !$r->{chunked_complete} && @lines == 3 && $lines[2]{message}{tool_calls},
   'drop:K counts the call as a token: drop:3 stops after it, before the final line';

# what it received is reported
$t->sim('local')->reset;
sim_post('/v1/chat/completions', { model => 'xyz', messages => $msgs, max_tokens => 9 },
         Authorization => 'Bearer leak');
my $rec = $t->sim('local')->last;
is $rec->{model}, 'xyz', 'reports the model';
is $rec->{max_tokens}, 9, 'reports max_tokens';
ok $rec->{authorization}, 'reports an Authorization header';

# faults
$r = sim_post('/v1/chat/completions', { model => 'm', messages => $msgs }, 'x-sim-fault' => '500');
is $r->{status}, 500, 'fault 500';
my $b2 = Nebula::Test::json_encode({ model => 'm', stream => JSON::PP::true, messages => $msgs });
$r = $t->exchange("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-sim-fault: drop:3\r\n"
                  . "Content-Length: " . length($b2) . "\r\n\r\n$b2",
                  port => $port, timeout => 5);
ok !$r->{chunked_complete}, 'drop:3 ends the stream without its last chunk';
is scalar(grep { ref $_ } Nebula::Test::sse_events($r->{body})), 3, 'after three tokens';
$r = $t->exchange("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-sim-fault: stall\r\n"
                  . "Content-Length: " . length($b2) . "\r\n\r\n$b2", port => $port, timeout => 1);
is $r->{status}, 0, 'stall: no answer';

$t->finish;
done_testing;
