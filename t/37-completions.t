#!/usr/bin/perl
# OpenAI's legacy completions, POST /v1/completions (issue 13): metered as
# chat is.  A prompt (one string, as Ollama takes it), JSON and SSE, the
# usage chunk only when asked (the gateway always gets it), max_tokens
# clamped to the reservation, a stream past it cut with an ending of its
# own shape, the public name in every chunk, usage equal to the pool's.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch_catalog => sub {
        $_[0] . "\nnebula_model  nomic-embed-text:latest  pool=ollama_local"
              . " upstream_model=nomic-embed-text:v1.5 context=2048 input_price=1"
              . " kind=embedding group=basic;\n";
    },
);
my $sim = $t->sim('local');
my $M = 'qwen/qwen3-coder:free';     # upstream qwen3-coder:30b

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}
sub auth { return (headers => { Authorization => "Bearer $_[0]{key}", %{ $_[1] // {} } }) }
# the simulator's count, as /api/generate's: words + 2
sub ptokens { return scalar(split ' ', $_[0]) + 2 }

# ---- one answer
my $k = $t->new_key(plan => 'free');
my $r = $t->post('/v1/completions', { model => $M, prompt => 'Once upon a time', max_tokens => 5 }, auth($k));
is $r->{status}, 200, 'JSON: 200';
is $r->{json}{object}, 'text_completion', 'a text completion';
is $r->{json}{model}, $M, 'the public name';
# the harness reads bytes: the text as UTF-8 bytes
my $want = "Hello w\x{f6}rld \x{4f60}\x{597d} \x{1f642} token";
utf8::encode($want);
is $r->{json}{choices}[0]{text}, $want, 'the text';
is $r->{json}{usage}{completion_tokens}, 5, 'five tokens';
is $sim->last->{body}{model}, 'qwen3-coder:30b', 'the pool got the upstream name';
is $sim->last->{body}{max_tokens}, 5, 'and max_tokens as asked';
my $u = usage_of($k);
is $u->{input_tokens}, ptokens('Once upon a time'), "input: the pool's count";
is $u->{output_tokens}, 5, "output: the pool's count";

# ---- a stream, split anywhere, without and with the usage chunk
for my $usage (0, 1) {
    my $ks = $t->new_key(plan => 'free');
    $r = $t->post('/v1/completions', { model => $M, prompt => 'Tell me', stream => JSON::PP::true,
                                       ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()) },
                  auth($ks, { 'x-sim-tokens' => 7, 'x-sim-seed' => 3 + $usage }));
    my $what = "SSE, include_usage $usage";
    is $r->{status}, 200, "$what: 200";
    like $r->{headers}{'content-type'}, qr{^text/event-stream}, "$what: SSE";
    my @ev = Nebula::Test::sse_events($r->{body});
    is $ev[-1], '[DONE]', "$what: [DONE] last";
    my @chunks = grep { ref $_ } @ev;
    ok !grep({ $_->{unparsed} } @chunks), "$what: every event whole JSON";
    is scalar(grep { ($_->{model} // '') ne $M } @chunks), 0, "$what: the public name in every chunk";
    is scalar(grep { @{ $_->{choices} // [] } && length $_->{choices}[0]{text} } @chunks), 7, "$what: seven texts";
    my @uc = grep { $_->{usage} } @chunks;
    is scalar(@uc), $usage, "$what: a usage chunk only if asked";
    ok $sim->last->{body}{stream_options}{include_usage}, "$what: the pool was asked for usage all the same";
    $u = usage_of($ks);
    is $u->{output_tokens}, 7, "$what: seven charged";
    is $u->{input_tokens}, ptokens('Tell me'), "$what: the input the pool counted";
    is $u->{estimated_requests}, 0, "$what: reported, not estimated";
}

# ---- max_tokens clamped to what is left; a pool past it is cut
my $kc = $t->new_key(plan => 'free', limits => { output_tokens => 4 });
$r = $t->post('/v1/completions', { model => $M, prompt => 'go on', max_tokens => 100, stream => JSON::PP::true,
                                   stream_options => { include_usage => JSON::PP::true } },
              auth($kc, { 'x-sim-ignore-cap' => 1, 'x-sim-tokens' => 30 }));
is $r->{status}, 200, 'over its reservation: 200';
is $sim->last->{body}{max_tokens}, 4, 'the pool was asked for the 4 left';
ok $r->{chunked_complete}, 'the cut stream ends properly';
my @ev = Nebula::Test::sse_events($r->{body});
is $ev[-1], '[DONE]', 'cut: [DONE] last';
my @chunks = grep { ref $_ } @ev;
is scalar(grep { @{ $_->{choices} // [] } && length $_->{choices}[0]{text} } @chunks), 4, 'cut: four texts';
my ($fin) = grep { @{ $_->{choices} // [] } && $_->{choices}[0]{finish_reason} } @chunks;
is $fin && $fin->{choices}[0]{finish_reason}, 'length', 'cut: finish_reason length';
is $fin && $fin->{object}, 'text_completion', "cut: the ending in completions' shape";
is $fin && $fin->{model}, $M, 'cut: the public name';
my ($uc) = grep { $_->{usage} } @chunks;
is $uc && $uc->{usage}{completion_tokens}, 4, 'cut: the usage chunk says 4';
$u = usage_of($kc);
is $u->{output_tokens}, 4, 'cut: 4 charged';
$t->allow_error(qr/streamed past the \d+ tokens it was asked for/);
$r = $t->post('/v1/completions', { model => $M, prompt => 'more' }, auth($kc));
Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota', 'then: 429');

# ---- refusals
my $kr = $t->new_key(plan => 'free');
$sim->reset;
my $bad = 'invalid_request_error';
Nebula::Test::is_error($t->post('/v1/completions', { model => $M }, auth($kr)),
                       400, $bad, 'missing_field', 'no prompt: 400', 'prompt');
Nebula::Test::is_error($t->post('/v1/completions', { model => $M, prompt => '' }, auth($kr)),
                       400, $bad, 'missing_field', 'an empty prompt: 400', 'prompt');
Nebula::Test::is_error($t->post('/v1/completions', { model => $M, prompt => ['a', 'b'] }, auth($kr)),
                       400, $bad, 'invalid_value', 'a prompt array: 400', 'prompt');
Nebula::Test::is_error($t->post('/v1/completions', { model => $M, prompt => 'x', n => 2 }, auth($kr)),
                       400, $bad, 'invalid_value', 'n 2: 400', 'n');
Nebula::Test::is_error($t->post('/v1/completions', { model => 'nomic-embed-text:latest', prompt => 'x' }, auth($kr)),
                       400, $bad, 'invalid_value', 'an embedding model: 400', 'model');
Nebula::Test::is_error($t->post('/v1/completions', { model => 'qwen3-vl:235b-cloud', prompt => 'x' }, auth($kr)),
                       403, 'permission_error', 'model_not_allowed', "a model the plan lacks: 403");
Nebula::Test::is_error($t->get('/v1/completions', auth($kr)), 405, $bad, 'method_not_allowed', 'GET: 405');
is scalar @{ $sim->requests }, 0, 'no refusal reached the pool';
Nebula::Test::is_error($t->post('/v1/completions', { model => $M, prompt => 'x' }, auth($kr, { 'x-sim-status' => 500 })),
                       502, 'api_error', 'upstream_error', 'the pool fails: 502');
$u = usage_of($kr);
is $u->{output_tokens} + $u->{input_tokens}, 0, 'nothing charged';

$t->done;
