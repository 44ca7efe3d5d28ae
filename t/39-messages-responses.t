#!/usr/bin/perl
# Anthropic's Messages API (POST /v1/messages) and OpenAI's Responses API
# (POST /v1/responses), as Ollama serves them (issue 13), through the same
# gate as chat: key (x-api-key or Bearer), plan, the output limit clamped
# to the reservation (max_tokens, max_output_tokens), the public name in
# every event, usage settled as the pool counted it (message_start and
# message_delta; response.completed), a stream past its reservation cut
# with an ending of its own API's shape, a broken one ended with its
# API's error event, refusals in its API's error shape, and the state the
# Responses API would keep refused.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;
my $sim = $t->sim('local');
my $M = 'qwen/qwen3-coder:free';     # upstream qwen3-coder:30b
my $UP = 'qwen3-coder:30b';

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}
# Anthropic clients send the key as x-api-key, with anthropic-version
sub anthropic { return (nokey => 1, headers => { 'x-api-key' => $_[0]{key}, 'anthropic-version' => '2023-06-01',
                                     %{ $_[1] // {} } }) }
sub bearer { return (headers => { Authorization => "Bearer $_[0]{key}", %{ $_[1] // {} } }) }
# what the pool counted for its last answer
sub pool_counts { my $l = $sim->last; return ($l->{prompt_tokens}, $l->{completion_tokens}) }
sub types { return map { ref $_ ? ($_->{type} // '') : $_ } @_ }
my $TRUE = JSON::PP::true;
my $want = "Hello w\x{f6}rld \x{4f60}\x{597d} \x{1f642} token";
utf8::encode($want);

# ================================================================ messages

# ---- one answer, the key as x-api-key; Claude Code's path and headers
my $k = $t->new_key(plan => 'free');
my $r = $t->post('/v1/messages?beta=true', { model => $M, max_tokens => 5,
                                             messages => [{ role => 'user', content => 'Hello there' }] },
                 anthropic($k, { 'anthropic-beta' => 'claude-code-20250219' }));
is $r->{status}, 200, 'messages, JSON: 200';
is $r->{json}{type}, 'message', 'a message';
is $r->{json}{model}, $M, 'the public name';
is $r->{json}{content}[0]{text}, $want, 'the text';
is $r->{json}{stop_reason}, 'max_tokens', 'stopped at max_tokens';
is $r->{json}{usage}{output_tokens}, 5, 'five tokens';
is $sim->last->{body}{model}, $UP, 'the pool got the upstream name';
is $sim->last->{body}{max_tokens}, 5, 'and max_tokens as asked';
ok !exists $sim->last->{headers}{'x-api-key'}, 'the key never reaches the pool';
my ($P, $C) = pool_counts();
my $u = usage_of($k);
is $u->{input_tokens}, $P, "input: the pool's count";
is $u->{output_tokens}, 5, "output: the pool's count";

# ---- Bearer, as ANTHROPIC_AUTH_TOKEN sends it
$r = $t->post('/v1/messages', { model => $M, max_tokens => 3, system => 'Be brief.',
                                messages => [{ role => 'user', content => [{ type => 'text', text => 'Hi' }] }] },
              bearer($k));
is $r->{status}, 200, 'messages, Bearer: 200';
is $r->{json}{usage}{output_tokens}, 3, 'three tokens';

# ---- a stream, split anywhere: message_start to message_stop
my $ks = $t->new_key(plan => 'free');
$r = $t->post('/v1/messages', { model => $M, max_tokens => 100, stream => $TRUE,
                                messages => [{ role => 'user', content => 'Tell me' }] },
              anthropic($ks, { 'x-sim-tokens' => 7, 'x-sim-seed' => 5 }));
is $r->{status}, 200, 'messages, SSE: 200';
like $r->{headers}{'content-type'}, qr{^text/event-stream}, 'SSE';
my @ev = Nebula::Test::sse_events($r->{body});
ok !grep({ !ref $_ || $_->{unparsed} } @ev), 'every event whole JSON';
my @ty = types(@ev);
is $ty[0], 'message_start', 'message_start first';
is $ty[-1], 'message_stop', 'message_stop last';
is $ev[0]{message}{model}, $M, 'message_start names the public model';
unlike $r->{body}, qr/\Q$UP\E/, 'the upstream name nowhere';
my $text = join '', map { $_->{delta}{text} // '' } grep { $_->{type} eq 'content_block_delta' } @ev;
is scalar(grep { $_ eq 'content_block_delta' } @ty), 7, 'seven deltas';
my ($md) = grep { $_->{type} eq 'message_delta' } @ev;
is $md && $md->{usage}{output_tokens}, 7, 'message_delta: seven tokens';
($P, $C) = pool_counts();
$u = usage_of($ks);
is $u->{output_tokens}, 7, 'seven charged';
is $u->{input_tokens}, $P, 'the input the pool counted';
is $u->{estimated_requests}, 0, 'reported, not estimated';

# ---- what Claude Code sends: system blocks with cache_control, tools,
# thinking, metadata; a conversation with thinking, tool_use, tool_result
my $kcc = $t->new_key(plan => 'free');
$r = $t->post('/v1/messages?beta=true', {
        model => $M, max_tokens => 32000, stream => $TRUE,
        system => [{ type => 'text', text => 'You are Claude Code.', cache_control => { type => 'ephemeral' } }],
        tools => [{ name => 'Read', description => 'Read a file',
                    input_schema => { type => 'object', properties => { file_path => { type => 'string' } } } }],
        thinking => { type => 'enabled', budget_tokens => 1024 }, metadata => { user_id => 'u_1' },
        messages => [
            { role => 'user', content => [{ type => 'text', text => 'Read README.md' }] },
            { role => 'assistant', content => [
                { type => 'thinking', thinking => 'I should read it.', signature => 'sig' },
                { type => 'tool_use', id => 'toolu_1', name => 'Read', input => { file_path => 'README.md' } }] },
            { role => 'user', content => [
                { type => 'tool_result', tool_use_id => 'toolu_1', content => [{ type => 'text', text => '# Nebula' }] }] },
        ] },
    anthropic($kcc, { 'anthropic-beta' => 'claude-code-20250219,interleaved-thinking-2025-05-14', 'x-sim-tokens' => 4 }));
is $r->{status}, 200, "Claude Code's request: 200";
@ev = Nebula::Test::sse_events($r->{body});
is $ev[-1]{type}, 'message_stop', 'streamed to message_stop';
ok $sim->last->{body}{max_tokens} < 32000, 'max_tokens 32000 clamped to what the key has left';
is_deeply $sim->last->{body}{system}, [{ type => 'text', text => 'You are Claude Code.', cache_control => { type => 'ephemeral' } }],
    'system blocks passed as they are';
$u = usage_of($kcc);
($P, $C) = pool_counts();
is $u->{input_tokens}, $P, "Claude Code's request: the pool's input count";
is $u->{output_tokens}, 4, "Claude Code's request: four tokens";

# ---- max_tokens clamped (Claude Code asks 32000); a pool past it is cut
my $kc = $t->new_key(plan => 'free', limits => { output_tokens => 4 });
$r = $t->post('/v1/messages', { model => $M, max_tokens => 32000, stream => $TRUE,
                                messages => [{ role => 'user', content => 'go on' }] },
              anthropic($kc, { 'x-sim-ignore-cap' => 1, 'x-sim-tokens' => 30 }));
is $r->{status}, 200, 'over its reservation: 200';
is $sim->last->{body}{max_tokens}, 4, 'the pool was asked for the 4 left';
ok $r->{chunked_complete}, 'the cut stream ends properly';
@ev = Nebula::Test::sse_events($r->{body});
@ty = types(@ev);
is scalar(grep { $_ eq 'content_block_delta' } @ty), 4, 'cut: four deltas';
is_deeply [@ty[-2, -1]], ['message_delta', 'message_stop'], 'cut: message_delta, message_stop';
is $ev[-2]{delta}{stop_reason}, 'max_tokens', 'cut: stop_reason max_tokens';
is $ev[-2]{usage}{output_tokens}, 4, 'cut: its usage says 4';
like $r->{body}, qr/event: message_stop\ndata: /, 'cut: the event lines as Anthropic writes them';
$u = usage_of($kc);
is $u->{output_tokens}, 4, 'cut: 4 charged';
$t->allow_error(qr/streamed past the \d+ tokens it was asked for/);

# ---- a pool that breaks off: Anthropic's error event; what streamed is charged
my $kb = $t->new_key(plan => 'free');
$r = $t->post('/v1/messages', { model => $M, max_tokens => 100, stream => $TRUE,
                                messages => [{ role => 'user', content => 'and then' }] },
              anthropic($kb, { 'x-sim-tokens' => 9, 'x-sim-fault' => 'drop:5' }));
is $r->{status}, 200, 'broken: 200';
@ev = Nebula::Test::sse_events($r->{body});
is $ev[-1]{type}, 'error', 'broken: an error event last';
is $ev[-1]{error}{type}, 'api_error', "broken: Anthropic's api_error";
like $r->{body}, qr/event: error\ndata: /, 'broken: as an event named error';
$u = usage_of($kb);
# message_start said output_tokens 0: what streamed after it is charged
is $u->{output_tokens}, 5, 'broken: the five tokens streamed charged';
$t->allow_error(qr/upstream prematurely closed|pool .* stopped|prematurely/);

# ---- refusals, in Anthropic's shape
my $kr = $t->new_key(plan => 'free');
$sim->reset;
my %msg = (model => $M, max_tokens => 5, messages => [{ role => 'user', content => 'x' }]);
Nebula::Test::is_error($t->post('/v1/messages', \%msg, nokey => 1), 401, undef, undef, 'no key: 401');
Nebula::Test::is_error($t->post('/v1/messages', \%msg, anthropic({ key => 'nb-nope' })), 401, undef, undef,
                       'a wrong key: 401');
Nebula::Test::is_error($t->post('/v1/messages', { %msg, max_tokens => undef }, anthropic($kr)), 400, undef, undef,
                       'max_tokens null: 400');
my %nomax = %msg; delete $nomax{max_tokens};
$r = $t->post('/v1/messages', \%nomax, anthropic($kr));
Nebula::Test::is_error($r, 400, undef, undef, 'no max_tokens: 400');
like Nebula::Test::error_message($r), qr/max_tokens/, 'the message names max_tokens';
Nebula::Test::is_error($t->post('/v1/messages', { %msg, model => 'no/such' }, anthropic($kr)), 404, undef, undef,
                       'an unknown model: 404 not_found_error');
Nebula::Test::is_error($t->post('/v1/messages', { %msg, model => 'qwen3-vl:235b-cloud' }, anthropic($kr)), 403,
                       undef, undef, 'a model the plan lacks: 403 permission_error');
$r = $t->post('/v1/messages', { %msg, tools => [{ type => 'web_search_20250305', name => 'web_search' }] },
              anthropic($kr));
Nebula::Test::is_error($r, 400, undef, undef, 'the server tool web_search: 400');
like Nebula::Test::error_message($r), qr/web_search/, 'the message says why';
Nebula::Test::is_error($t->post('/v1/messages', { %msg, messages => [{ role => 'user', content => [
                           { type => 'image', source => { type => 'url', url => 'http://example.com/a.png' } }] }] },
                           anthropic($kr)), 400, undef, undef, 'an image URL: 400');
Nebula::Test::is_error($t->get('/v1/messages', anthropic($kr)), 405, undef, undef, 'GET: 405');
Nebula::Test::is_error($t->post('/v1/messages/count_tokens?beta=true', \%msg, anthropic($kr)), 404, undef, undef,
                       'count_tokens: 404, as Ollama answers it');
is scalar @{ $sim->requests }, 0, 'no refusal reached the pool';
Nebula::Test::is_error($t->post('/v1/messages', \%msg, anthropic($kr, { 'x-sim-status' => 500 })), 502, undef, undef,
                       'the pool fails: 502 api_error');
$u = usage_of($kr);
is $u->{output_tokens} + $u->{input_tokens}, 0, 'nothing charged';

# =============================================================== responses

# ---- one answer
my $kp = $t->new_key(plan => 'free');
$r = $t->post('/v1/responses', { model => $M, input => 'Once upon a time', max_output_tokens => 5 }, bearer($kp));
is $r->{status}, 200, 'responses, JSON: 200';
is $r->{json}{object}, 'response', 'a response';
is $r->{json}{model}, $M, 'the public name';
my ($item) = grep { ($_->{type} // '') eq 'message' } @{ $r->{json}{output} // [] };
is $item && $item->{content}[0]{text}, $want, 'the text';
is $r->{json}{usage}{output_tokens}, 5, 'five tokens';
is $sim->last->{body}{model}, $UP, 'the pool got the upstream name';
is $sim->last->{body}{max_output_tokens}, 5, 'and max_output_tokens as asked';
($P, $C) = pool_counts();
$u = usage_of($kp);
is $u->{input_tokens}, $P, "input: the pool's count";
is $u->{output_tokens}, 5, "output: the pool's count";

# ---- no limit asked: the reservation's is written in
my $kl = $t->new_key(plan => 'free', limits => { output_tokens => 9 });
$r = $t->post('/v1/responses', { model => $M, instructions => 'Be brief.',
                                 input => [{ role => 'user', content => [{ type => 'input_text', text => 'Hi' }] }] },
              bearer($kl, { 'x-sim-tokens' => 3 }));
is $r->{status}, 200, 'items, no max_output_tokens: 200';
is $sim->last->{body}{max_output_tokens}, 9, 'the pool was asked for the 9 left';

# ---- a stream: response.created to response.completed, no [DONE]
my $kt = $t->new_key(plan => 'free');
$r = $t->post('/v1/responses', { model => $M, input => 'Tell me', stream => $TRUE },
              bearer($kt, { 'x-sim-tokens' => 6, 'x-sim-seed' => 9 }));
is $r->{status}, 200, 'responses, SSE: 200';
@ev = Nebula::Test::sse_events($r->{body});
ok !grep({ !ref $_ || $_->{unparsed} } @ev), 'every event whole JSON, no [DONE]';
@ty = types(@ev);
is $ty[0], 'response.created', 'response.created first';
is $ty[-1], 'response.completed', 'response.completed last';
is $ev[0]{response}{model}, $M, 'response.created names the public model';
is $ev[-1]{response}{model}, $M, 'and response.completed';
unlike $r->{body}, qr/\Q$UP\E/, 'the upstream name nowhere';
is scalar(grep { $_ eq 'response.output_text.delta' } @ty), 6, 'six deltas';
$u = usage_of($kt);
($P, $C) = pool_counts();
is $u->{output_tokens}, 6, 'six charged';
is $u->{input_tokens}, $P, 'the input the pool counted';
is $u->{estimated_requests}, 0, 'reported, not estimated';

# ---- cut past the reservation
my $kq = $t->new_key(plan => 'free', limits => { output_tokens => 4 });
$r = $t->post('/v1/responses', { model => $M, input => 'go on', max_output_tokens => 1000, stream => $TRUE },
              bearer($kq, { 'x-sim-ignore-cap' => 1, 'x-sim-tokens' => 30 }));
is $sim->last->{body}{max_output_tokens}, 4, 'responses: the pool was asked for the 4 left';
@ev = Nebula::Test::sse_events($r->{body});
@ty = types(@ev);
is scalar(grep { $_ eq 'response.output_text.delta' } @ty), 4, 'cut: four deltas';
is $ty[-1], 'response.completed', 'cut: response.completed last';
is $ev[-1]{response}{status}, 'incomplete', 'cut: status incomplete';
is $ev[-1]{response}{incomplete_details}{reason}, 'max_output_tokens', 'cut: for max_output_tokens';
is $ev[-1]{response}{usage}{output_tokens}, 4, 'cut: its usage says 4';
is $ev[-1]{response}{model}, $M, 'cut: the public name';
$u = usage_of($kq);
is $u->{output_tokens}, 4, 'cut: 4 charged';

# ---- broken off: the Responses API's error event
my $kx = $t->new_key(plan => 'free');
$r = $t->post('/v1/responses', { model => $M, input => 'and then', stream => $TRUE },
              bearer($kx, { 'x-sim-tokens' => 9, 'x-sim-fault' => 'drop:4' }));
@ev = Nebula::Test::sse_events($r->{body});
is $ev[-1]{type}, 'error', 'broken: an error event last';
is $ev[-1]{code}, 'upstream_error', 'broken: upstream_error';
$u = usage_of($kx);
is $u->{output_tokens}, 4, 'broken: the four tokens streamed charged';

# ---- refusals, in OpenAI's shape; the state it would keep
$sim->reset;
my $bad = 'invalid_request_error';
Nebula::Test::is_error($t->post('/v1/responses', { model => $M, input => 'x', previous_response_id => 'resp_1' },
                                bearer($kr)), 400, $bad, 'invalid_value', 'previous_response_id: 400',
                       'previous_response_id');
Nebula::Test::is_error($t->post('/v1/responses', { model => $M, input => 'x', conversation => 'conv_1' },
                                bearer($kr)), 400, $bad, 'invalid_value', 'conversation: 400', 'conversation');
Nebula::Test::is_error($t->post('/v1/responses', { model => $M }, bearer($kr)), 400, $bad, 'missing_field',
                       'no input: 400', 'input');
Nebula::Test::is_error($t->post('/v1/responses', { model => $M, input => 'x', max_output_tokens => 0 }, bearer($kr)),
                       400, $bad, 'invalid_value', 'max_output_tokens 0: 400', 'max_output_tokens');
Nebula::Test::is_error($t->post('/v1/responses', { model => $M, input => 'x' }, nokey => 1), 401, $bad, 'invalid_api_key',
                       'no key: 401');
is scalar @{ $sim->requests }, 0, 'no refusal reached the pool';

$t->done;
