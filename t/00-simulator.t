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

# ---- Anthropic's Messages API (/v1/messages), as Ollama >= 0.14 serves it
my @TOK = ('Hello', ' wörld', ' 你好', ' 🙂', ' token', ' nebula', ' ünïcödé', ' ok');
sub tokens_text { join '', map { $TOK[$_ % @TOK] } 0 .. $_[0] - 1 }

# event: NAME / data: JSON frames, in order
sub sse_named {
    my ($body) = @_;
    my @ev;
    for my $frame (split /\n\n/, $body) {
        my ($name) = $frame =~ /^event: (.*)$/m;
        my ($data) = $frame =~ /^data: (.*)$/m;
        next unless defined $data;
        push @ev, { event => $name, data => Nebula::Test::json_decode($data), raw => $data };
    }
    return @ev;
}

my %anth = (model => 'qwen3:latest', max_tokens => 100, system => 'be brief',
            messages => [{ role => 'user', content => 'one two three' }]);
$r = sim_post('/v1/messages', \%anth);
is $r->{status}, 200, '/v1/messages: 200';
like $r->{json}{id}, qr/^msg_[0-9a-f]{24}$/, 'an id msg_<24 hex>';
is_deeply [@{ $r->{json} }{qw(type role model stop_reason)}],
          ['message', 'assistant', 'qwen3:latest', 'end_turn'], 'a message, stop_reason end_turn';
ok !exists $r->{json}{stop_sequence}, 'no stop_sequence (Ollama omits an empty one)';
is_deeply $r->{json}{content}, [{ type => 'text', text => tokens_text(12) }], 'one text block';
# system as a message: (2 + 3) + (3 + 3) + 2 = 13
is_deeply $r->{json}{usage}, { input_tokens => 13, output_tokens => 12 }, 'usage: P 13, 12 tokens';
like $r->{raw}, qr/\}\n\z/, 'json.Encoder: a newline ends the body';
$rec = $t->sim('local')->last;
is_deeply [@{$rec}{qw(path status prompt_tokens completion_tokens max_tokens)}],
          ['/v1/messages', 200, 13, 12, 100], 'the record: P, C, max_tokens';

$r = sim_post('/v1/messages', { %anth, stream => JSON::PP::true }, 'x-sim-tokens' => 3);
like $r->{headers}{'content-type'}, qr{^text/event-stream}, 'stream: SSE';
my @an = sse_named($r->{body});
is_deeply [map { $_->{event} } @an],
          [qw(message_start content_block_start content_block_delta content_block_delta
              content_block_delta content_block_stop message_delta message_stop)],
          'stream: the StreamConverter\'s events, in order';
ok !grep({ $_->{event} ne $_->{data}{type} } @an), 'each event named as its type';
# Ollama's estimate: bytes of system, role and text / 4 = (8 + 4 + 13) / 4
is_deeply $an[0]{data}{message}{usage}, { input_tokens => 6, output_tokens => 0 },
          'message_start: input_tokens is Ollama\'s estimate (no prompt_eval_count yet)';
is $t->sim('local')->last->{input_estimate}, 6, 'the record has the estimate';
is_deeply $an[0]{data}{message}{content}, [], 'message_start: content []';
is_deeply $an[1]{data}{content_block}, { type => 'text', text => '' }, 'a text block starts';
is join('', map { $_->{data}{delta}{text} } @an[2 .. 4]), tokens_text(3), 'one text_delta a token';
is_deeply $an[6]{data}, { type => 'message_delta', delta => { stop_reason => 'end_turn' },
                          usage => { input_tokens => 13, output_tokens => 3 } },
          'message_delta: stop_reason, the final usage';
unlike $r->{body}, qr/\[DONE\]/, 'no [DONE]';

# a split stream reassembles
$b = Nebula::Test::json_encode({ %anth, stream => JSON::PP::true });
$r = $t->exchange("POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  . "x-sim-seed: 7\r\nx-sim-tokens: 30\r\nContent-Length: " . length($b)
                  . "\r\n\r\n$b", port => $port);
(undef, $raw) = split /\r\n\r\n/, $r->{raw}, 2;
@sizes = ();
while ($raw =~ s/^([0-9a-f]+)\r\n//) {
    my $n = hex $1;
    last unless $n;
    push @sizes, $n;
    substr($raw, 0, $n, '');
    $raw =~ s/^\r\n//;
}
ok @sizes > 60 && !grep({ $_ > 40 } @sizes), scalar(@sizes) . ' pieces of 1..40 bytes';
ok $r->{chunked_complete}, 'the stream completes';
$rec = $t->sim('local')->last;
is $r->{body}, $rec->{sent}, 'reassembled: the bytes the simulator sent';
@an = sse_named($r->{body});
is join('', map { $_->{data}{delta}{text} // () } @an), tokens_text(30), 'the 30 tokens\' text';
is $an[-2]{data}{usage}{output_tokens}, 30, 'the usage';
is $rec->{completion_tokens}, 30, 'the record: 30 tokens';

# max_tokens caps: stop_reason max_tokens
$r = sim_post('/v1/messages', { %anth, max_tokens => 5 });
is_deeply [$r->{json}{stop_reason}, $r->{json}{usage}{output_tokens}], ['max_tokens', 5],
          'max_tokens 5: 5 tokens, stop_reason max_tokens';
$r = sim_post('/v1/messages', { %anth, max_tokens => 4, stream => JSON::PP::true });
@an = sse_named($r->{body});
is_deeply $an[-2]{data}{delta}, { stop_reason => 'max_tokens' }, 'streamed: the same stop_reason';
is scalar(grep { $_->{event} eq 'content_block_delta' } @an), 4, 'and 4 deltas';

# a tool call: a tool_use block, its input in one input_json_delta
$r = sim_post('/v1/messages', { %anth, stream => JSON::PP::true,
                                tools => [{ name => 'get_weather', input_schema => { type => 'object' } }] },
              'x-sim-tool-call' => 'get_weather', 'x-sim-tool-args-bytes' => 20, 'x-sim-tokens' => 1);
@an = sse_named($r->{body});
is_deeply [map { $_->{event} } @an],
          [qw(message_start content_block_start content_block_delta content_block_stop
              content_block_start content_block_delta content_block_stop message_delta message_stop)],
          'tool call: text block closed, then the tool_use block';
like $an[4]{raw}, qr/^\{"type":"content_block_start","index":1,"content_block":\{"type":"tool_use","id":"call_[0-9a-f]{8}","name":"get_weather","input":\{\}\}\}$/,
     'the tool_use block starts with input {}';
is_deeply $an[5]{data}{delta}, { type => 'input_json_delta', partial_json => '{"query":"xxxxxxxx"}' },
          'its input whole in one input_json_delta';
is_deeply $an[7]{data}, { type => 'message_delta', delta => { stop_reason => 'tool_use' },
                          usage => { input_tokens => 13, output_tokens => 1 + 15 } },
          'stop_reason tool_use; the call counted in the usage';
$r = sim_post('/v1/messages', \%anth, 'x-sim-tool-call' => 'f', 'x-sim-tokens' => 0);
is_deeply $r->{json}{content}[0]{input}, { query => 'x' x 52 }, 'JSON: a tool_use block, input an object';
is $r->{json}{stop_reason}, 'tool_use', 'JSON: stop_reason tool_use';

# a tool_result sent back counts as a tool message; an image 10
$r = sim_post('/v1/messages', { model => 'm', max_tokens => 9, messages => [
    { role => 'user', content => 'weather?' },
    { role => 'assistant', content => [{ type => 'tool_use', id => 'call_1', name => 'f', input => {} }] },
    { role => 'user', content => [{ type => 'tool_result', tool_use_id => 'call_1', content => 'sunny and warm' },
                                  { type => 'image', source => { type => 'base64', media_type => 'image/png',
                                                                data => 'iVBORw0KGgo=' } }] }] });
# (1+3) + (0+3) + tool (3+3) + user (0+3+10) + 2 = 28
is $r->{json}{usage}{input_tokens}, 28, 'tool_use, tool_result and an image counted';

# report-usage and faults as on /v1/chat/completions
$r = sim_post('/v1/messages', { %anth, stream => JSON::PP::true }, 'x-sim-report-usage' => '7,3');
@an = sse_named($r->{body});
is_deeply $an[-2]{data}{usage}, { input_tokens => 7, output_tokens => 3 }, 'x-sim-report-usage: the final counts';
$r = $t->exchange("POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-sim-fault: drop:3\r\n"
                  . "Content-Length: " . length($b) . "\r\n\r\n$b", port => $port, timeout => 5);
ok !$r->{chunked_complete}, 'drop:3: no last chunk';
is scalar(grep { $_->{event} eq 'content_block_delta' } sse_named($r->{body})), 3, 'after three deltas';
$r = sim_post('/v1/messages', \%anth, 'x-sim-fault' => '500');
is $r->{status}, 500, 'fault 500';
is_deeply [@{ $r->{json} }{qw(type)}, @{ $r->{json}{error} }{qw(type message)}],
          ['error', 'api_error', 'simulated failure'], 'in Anthropic\'s error shape';

# 400s in Anthropic's shape
$r = sim_post('/v1/messages', { model => 'm', messages => $anth{messages} });
is $r->{status}, 400, 'no max_tokens: 400';
is_deeply [$r->{json}{type}, @{ $r->{json}{error} }{qw(type message)}],
          ['error', 'invalid_request_error', 'max_tokens is required and must be positive'],
          'Anthropic\'s error, Ollama\'s message';
like $r->{json}{request_id}, qr/^req_[0-9a-f]{24}$/, 'with a request_id';
$r = sim_post('/v1/messages', { model => 'm', max_tokens => 5, messages => [] });
is $r->{json}{error}{message}, 'messages is required', 'no message: 400';
$r = sim_post('/v1/messages', { model => 'm', max_tokens => 5, messages => [{ role => 'user', content => [
    { type => 'image', source => { type => 'url', url => 'https://example.com/a.png' } }] }] });
is_deeply [$r->{status}, $r->{json}{error}{message}],
          [400, 'invalid image source type: url. Only base64 images are supported.'],
          'an image by URL: 400, as Ollama';

# ---- OpenAI's Responses API (/v1/responses), as Ollama >= 0.13.3 serves it
my %resp = (model => 'qwen3:latest', instructions => 'be brief', input => 'one two three');
$r = sim_post('/v1/responses', \%resp);
is $r->{status}, 200, '/v1/responses: 200';
is_deeply [@{ $r->{json} }{qw(object status model instructions incomplete_details)}],
          ['response', 'completed', 'qwen3:latest', 'be brief', undef], 'a completed response';
like $r->{json}{id}, qr/^resp_\d+$/, 'an id resp_N';
is_deeply $r->{json}{output}[0]{content}, [{ type => 'output_text', text => tokens_text(12),
                                             annotations => [], logprobs => [] }],
          'a message item with the output_text';
is_deeply $r->{json}{usage}, { input_tokens => 13, output_tokens => 12, total_tokens => 25,
                               input_tokens_details => { cached_tokens => 0 },
                               output_tokens_details => { reasoning_tokens => 0 } },
          'usage: instructions a system message, the input a user one';
$r = sim_post('/v1/responses', { model => 'm', previous_response_id => 'resp_1', input => [
    { role => 'user', content => 'one two' },
    { type => 'message', role => 'user', content => [{ type => 'input_text', text => 'three four five' }] }] });
is $r->{json}{usage}{input_tokens}, (2 + 3) + (3 + 3) + 2, 'an array of items: each message counted';
$rec = $t->sim('local')->last;
is_deeply [@{$rec}{qw(path status prompt_tokens completion_tokens previous_response_id)}],
          ['/v1/responses', 200, 13, 12, 'resp_1'], 'the record, previous_response_id too (ignored)';

$r = sim_post('/v1/responses', { %resp, stream => JSON::PP::true }, 'x-sim-tokens' => 2);
like $r->{headers}{'content-type'}, qr{^text/event-stream}, 'stream: SSE';
my @re = sse_named($r->{body});
is_deeply [map { $_->{event} } @re],
          [qw(response.created response.in_progress response.output_item.added
              response.content_part.added response.output_text.delta response.output_text.delta
              response.output_text.done response.content_part.done response.output_item.done
              response.completed)], 'stream: Ollama\'s events, in order';
is_deeply [map { $_->{data}{sequence_number} } @re], [0 .. 9], 'sequence_number counts up from 0';
ok !grep({ $_->{event} ne $_->{data}{type} } @re), 'each event named as its type';
like $re[4]{raw}, qr/^\{"content_index":0,"delta":"Hello","item_id":"msg_\d+","logprobs":\[\],"output_index":0,"sequence_number":4,"type":"response.output_text.delta"\}$/,
     'a delta: a Go map, its keys sorted';
is $re[6]{data}{text}, tokens_text(2), 'output_text.done: the whole text';
is_deeply [$re[-1]{data}{response}{status}, $re[-1]{data}{response}{usage}{input_tokens},
           $re[-1]{data}{response}{usage}{output_tokens}, $re[-1]{data}{response}{usage}{total_tokens}],
          ['completed', 13, 2, 15], 'response.completed: the usage';
is $re[0]{data}{response}{usage}, undef, 'response.created: usage null';
unlike $r->{body}, qr/\[DONE\]/, 'no data: [DONE]';

# max_output_tokens caps; Ollama still says completed
$r = sim_post('/v1/responses', { %resp, max_output_tokens => 5 });
is_deeply [$r->{json}{status}, $r->{json}{incomplete_details}, $r->{json}{usage}{output_tokens},
           $r->{json}{max_output_tokens}], ['completed', undef, 5, 5],
          'max_output_tokens 5: 5 tokens, status completed (Ollama never says incomplete)';
$r = sim_post('/v1/responses', { %resp, max_output_tokens => 3, stream => JSON::PP::true });
@re = sse_named($r->{body});
is scalar(grep { $_->{event} eq 'response.output_text.delta' } @re), 3, 'streamed: 3 deltas';
is $re[-1]{data}{response}{usage}{output_tokens}, 3, 'and 3 output tokens';

# a tool call: a function_call item
$r = sim_post('/v1/responses', { %resp, stream => JSON::PP::true }, 'x-sim-tool-call' => 'f',
              'x-sim-tokens' => 0, 'x-sim-tool-args-bytes' => 20);
@re = sse_named($r->{body});
is_deeply [map { $_->{event} } @re],
          [qw(response.created response.in_progress response.output_item.added
              response.function_call_arguments.delta response.function_call_arguments.done
              response.output_item.done response.completed)], 'tool call: a function_call item';
is $re[4]{data}{arguments}, '{"query":"xxxxxxxx"}', 'its arguments';
is $re[-1]{data}{response}{usage}{output_tokens}, 15, 'counted in the usage';
$r = sim_post('/v1/responses', \%resp, 'x-sim-tool-call' => 'f', 'x-sim-tokens' => 0);
is_deeply [@{ $r->{json}{output}[0] }{qw(type name status)}], ['function_call', 'f', 'completed'],
          'JSON: the function_call item';

# faults, and 400s in OpenAI's shape as Ollama's middleware writes them
$b = Nebula::Test::json_encode({ %resp, stream => JSON::PP::true });
$r = $t->exchange("POST /v1/responses HTTP/1.1\r\nHost: x\r\nx-sim-fault: drop:2\r\n"
                  . "Content-Length: " . length($b) . "\r\n\r\n$b", port => $port, timeout => 5);
ok !$r->{chunked_complete}, 'drop:2: no last chunk';
is scalar(grep { $_->{event} eq 'response.output_text.delta' } sse_named($r->{body})), 2, 'after two deltas';
$r = sim_post('/v1/responses', { model => 'm', input => 42 });
is $r->{status}, 400, 'input a number: 400';
is_deeply $r->{json}{error}, { message => 'input must be a string or array: json: cannot unmarshal number'
                                          . ' into Go value of type []json.RawMessage',
                               type => 'invalid_request_error', param => undef, code => undef },
          'OpenAI\'s error shape, Ollama\'s message';
$r = sim_post('/v1/responses', { input => 'hi' });
is_deeply [$r->{status}, $r->{json}{error}{message}], [400, 'model is required'], 'no model: 400';
$r = sim_post('/v1/responses', \%resp, 'x-sim-status' => 404);
is_deeply [$r->{status}, $r->{json}{error}{type}], [404, 'not_found_error'], 'x-sim-status: OpenAI\'s shape';

# /api/ps: what the requests served left loaded, as Ollama lists them
sub sim_get { $t->request($_[0] // 'GET', $_[1], port => $port, headers => { @_[2 .. $#_] }) }
is sim_get('DELETE', '/_sim/ps')->{status}, 200, '/_sim/ps: unloads all';
is_deeply sim_get(undef, '/api/ps')->{json}, { models => [] }, '/api/ps: none loaded';
sim_post('/api/chat', { model => 'qwen3', stream => JSON::PP::false, messages => $msgs,
                        keep_alive => '1h', options => { num_ctx => 8192 } });
sim_post('/api/embed', { model => 'nomic-embed-text', input => 'hi' });
sim_post('/v1/chat/completions', { model => 'gemma3:1b', messages => $msgs, keep_alive => -1 });
sim_post('/api/generate', { model => 'gone:1', prompt => 'hi', stream => JSON::PP::false,
                            keep_alive => 0 });
sim_post('/api/chat', { model => 'refused:1' }, 'x-sim-status' => 500);
$r = sim_get(undef, '/api/ps');
is $r->{status}, 200, '/api/ps: 200';
my @ps = @{ $r->{json}{models} };
is_deeply [map { $_->{name} } @ps], ['gemma3:1b', 'qwen3:latest', 'nomic-embed-text:latest'],
          'loaded by what was served, the longest to live first, :latest added';
is_deeply [map { $_->{model} } @ps], [map { $_->{name} } @ps], 'model is name';
is_deeply [map { $_->{context_length} } @ps], [4096, 8192, 4096], 'options.num_ctx, else 4096';
like $ps[0]{expires_at}, qr/^2[3-9]\d\d-/, 'keep_alive -1: for ever (Go\'s MaxInt64 ns)';
like $ps[1]{expires_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/, 'expires_at as Go writes it';
is_deeply [@{ $ps[1] }{qw(size size_vram)}], [5225388164, 5225388164], 'sizes of the listed model';
is $ps[1]{details}{family}, 'qwen3', 'its details';
is_deeply [sort keys %{ $ps[1] }],
          [sort qw(name model size digest details expires_at size_vram context_length)],
          'Ollama\'s fields';
is sim_get(undef, '/api/ps', 'x-sim-fault' => '500')->{status}, 500, '/api/ps: x-sim-fault: 500';
is sim_get(undef, '/api/ps', 'x-sim-status' => 503)->{status}, 503, '/api/ps: x-sim-status';
is sim_get('HEAD', '/api/ps')->{body} // '', '', '/api/ps: HEAD, no body';
$r = $t->request('POST', '/_sim/ps', port => $port,
                 body => { models => [{ model => 'a', keep_alive => '10s', num_ctx => 2048 }] });
is_deeply [map { [$_->{name}, $_->{context_length}] } @{ $r->{json}{models} }], [['a:latest', 2048]],
          '/_sim/ps: the loaded set replaced';
is_deeply [map { $_->{name} } @{ sim_get(undef, '/api/ps')->{json}{models} }], ['a:latest'],
          '/api/ps lists it';
sim_get('DELETE', '/_sim/ps');

$t->finish;
done_testing;
