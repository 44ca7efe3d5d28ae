#!/usr/bin/perl
# Embeddings (issue 13): /v1/embeddings, /api/embed and the legacy
# /api/embeddings, for the catalog's kind=embedding models, through the
# same gate as chat: key, plan, model access, the estimate and the context
# (each input), a reservation of input alone, the public name restored,
# and settlement of what the pool reported (the legacy endpoint reports
# nothing: its estimate, marked so).  Errors in each API's shape.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(decode_base64);
use Nebula::Test;

my $t = Nebula::Test->new(
    patch_catalog => sub {
        $_[0] . "\nnebula_model  nomic-embed-text:latest  pool=ollama_local"
              . " upstream_model=nomic-embed-text:v1.5 context=64 input_price=2.00"
              . " kind=embedding group=basic owned_by=nomic;\n"
              . "nebula_model  acme-embed:1  pool=ollama_local upstream_model=acme-embed:1-q8"
              . " context=512 input_price=1.00 kind=embedding private;\n";
    },
);
my $EMB = 'nomic-embed-text:latest';
my $sim = $t->sim('local');

# the simulator's count: words + 2 an input
sub tokens { my $n = 0; $n += scalar(split ' ', $_) + 2 for @_; return $n }

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

sub auth { return (headers => { Authorization => "Bearer $_[0]{key}", %{ $_[1] // {} } }) }

# ---- the catalog lists it as an embedding model
my ($entry) = grep { $_->{id} eq $EMB } @{ $t->get('/v1/models', nokey => 1)->{json}{data} };
is_deeply $entry->{architecture}{output_modalities}, ['embeddings'], '/v1/models: output embeddings';
is $entry->{pricing}{completion}, '0', 'no output price';

# ---- /v1/embeddings: a string
my $k = $t->new_key(plan => 'free');
my $r = $t->post('/v1/embeddings', { model => $EMB, input => 'the quick brown fox' }, auth($k));
is $r->{status}, 200, '/v1/embeddings: 200';
is $r->{json}{model}, $EMB, 'the public name, not the upstream one';
is $r->{json}{object}, 'list', 'an OpenAI list';
is scalar @{ $r->{json}{data}[0]{embedding} }, 8, 'with its vector';
is $r->{json}{usage}{prompt_tokens}, tokens('the quick brown fox'), "the pool's usage, as it sent it";
my $sent = $sim->last;
is $sent->{body}{model}, 'nomic-embed-text:v1.5', 'the pool got the upstream name';
ok !exists $sent->{body}{max_tokens}, 'and no max_tokens';
my $u = usage_of($k);
is $u->{input_tokens}, tokens('the quick brown fox'), 'settled: the input the pool counted';
is $u->{output_tokens}, 0, 'no output';
is $u->{requests}, 1, 'one request';
is $u->{estimated_requests}, 0, 'reported, not estimated';
is $u->{cost_usd}, tokens('the quick brown fox') * 2 / 1e6, 'priced on input: $2 per 1M';

# an array, base64: the vectors pass as the pool sent them
my @in = ('one', 'two words', 'and three words');
$r = $t->post('/v1/embeddings', { model => $EMB, input => \@in, encoding_format => 'base64' },
              auth($k, { 'x-sim-split' => 'none' }));
is $r->{status}, 200, 'an array, base64: 200';
is scalar @{ $r->{json}{data} }, 3, 'three embeddings';
ok !ref $r->{json}{data}[1]{embedding}, 'base64: a string';
is length(decode_base64($r->{json}{data}[1]{embedding})), 32, 'eight float32s in it';
is $r->{json}{usage}{prompt_tokens}, tokens(@in), 'usage of the three';

# token ids are inputs too: a token each
$r = $t->post('/v1/embeddings', { model => $EMB, input => [[1, 2, 3], [4, 5]] }, auth($k));
is $r->{status}, 200, 'lists of token ids: 200';
is_deeply $sim->last->{body}{input}, [[1, 2, 3], [4, 5]], 'passed as they are';
$u = usage_of($k);
is $u->{input_tokens}, tokens('the quick brown fox') + tokens(@in) + 5, 'every input settled';
is $u->{requests}, 3, 'three requests';

# ---- /api/embed: native, prompt_eval_count
my $kn = $t->new_key(plan => 'free');
$r = $t->post('/api/embed', { model => $EMB, input => ['hello there', 'general kenobi'],
                              keep_alive => 0, options => { num_ctx => 100000, num_gpu => 99 } },
              auth($kn));
is $r->{status}, 200, '/api/embed: 200';
is $r->{json}{model}, $EMB, 'the public name';
is scalar @{ $r->{json}{embeddings} }, 2, 'two embeddings';
is $r->{json}{prompt_eval_count}, tokens('hello there', 'general kenobi'), 'its count';
$sent = $sim->last->{body};
ok !exists $sent->{keep_alive}, "the client's keep_alive dropped";
is_deeply $sent->{options}, { num_ctx => 64 }, 'num_ctx capped at the context, num_gpu dropped';
$u = usage_of($kn);
is $u->{input_tokens}, tokens('hello there', 'general kenobi'), 'settled from prompt_eval_count';
is $u->{output_tokens}, 0, 'no output';

# ---- /api/embeddings: no usage from the pool: the estimate, marked so
my $kl = $t->new_key(plan => 'free');
$r = $t->post('/api/embeddings', { model => $EMB, prompt => 'an old client' }, auth($kl));
is $r->{status}, 200, '/api/embeddings: 200';
is scalar @{ $r->{json}{embedding} }, 8, 'one embedding';
$u = usage_of($kl);
ok $u->{input_tokens} > 0, "charged the estimate ($u->{input_tokens})";
is $u->{estimated_requests}, 1, 'marked estimated';
is $u->{estimated_input_tokens}, $u->{input_tokens}, 'its input estimated';
is $u->{requests}, 1, 'one request';

# ---- the kind decides the endpoint
$sim->reset;
my $ke = $t->new_key(plan => 'free');
$r = $t->post('/v1/embeddings', { model => 'qwen3:latest', input => 'x' }, auth($ke));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value',
                       'a chat model on /v1/embeddings: 400', 'model');
like $r->{json}{error}{message}, qr/does not make embeddings/, 'said in words';
$r = $t->post('/api/embed', { model => 'gemma3:1b', input => 'x' }, auth($ke));
Nebula::Test::is_error($r, 400, '', '', 'a chat model on /api/embed: 400');
$r = $t->post('/v1/chat/completions', { model => $EMB, messages => [{ role => 'user', content => 'hi' }] },
              auth($ke));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value',
                       'an embedding model on chat: 400', 'model');
like $r->{json}{error}{message}, qr/is an embedding model/, 'said in words';
$r = $t->post('/api/generate', { model => $EMB, prompt => 'hi' }, auth($ke));
Nebula::Test::is_error($r, 400, '', '', 'an embedding model on /api/generate: 400');
like $r->{json}{error}, qr/is an embedding model/, "in Ollama's shape";

# ---- the context bounds each input, not their sum
$r = $t->post('/v1/embeddings', { model => $EMB, input => ['word ' x 100] }, auth($ke));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'context_length_exceeded',
                       'an input past the context: 400', 'input');
$r = $t->post('/v1/embeddings', { model => $EMB, input => [('short text here') x 40] }, auth($ke));
is $r->{status}, 200, 'forty short inputs, their sum past the context: 200';
$r = $t->post('/v1/embeddings', { model => $EMB, input => '' }, auth($ke));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value', 'an empty input: 400', 'input');
$r = $t->post('/api/embeddings', { model => $EMB, prompt => '' }, auth($ke));
Nebula::Test::is_error($r, 400, '', '', '/api/embeddings, an empty prompt: 400');
is scalar(grep { $_->{path} ne '/v1/embeddings' } @{ $sim->requests }), 0,
    'no refused request reached the pool';
$u = usage_of($ke);
is $u->{requests}, 1, 'only the one served counted';

# ---- quotas: input alone is spent; no output needed
my $ko = $t->new_key(plan => 'free', limits => { output_tokens => 1 });
$r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', max_tokens => 1,
                                        messages => [{ role => 'user', content => 'hi' }] }, auth($ko));
is $r->{status}, 200, 'a chat request spends the only output token';
$t->wait_settled($ko->{key});
$r = $t->post('/v1/chat/completions', { model => 'qwen3:latest',
                                        messages => [{ role => 'user', content => 'hi' }] }, auth($ko));
Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota', 'then chat: 429');
$r = $t->post('/v1/embeddings', { model => $EMB, input => 'still fine' }, auth($ko));
is $r->{status}, 200, 'embeddings need no output left: 200';
is $r->{headers}{'x-ratelimit-remaining-output-tokens'}, 0, 'with no output left, as said';

my $ki = $t->new_key(plan => 'free', limits => { input_tokens => 20 });
$r = $t->post('/v1/embeddings', { model => $EMB, input => 'word ' x 50 }, auth($ki));
Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota',
                       'more input than the quota holds: 429');
$r = $t->post('/api/embed', { model => $EMB, input => 'word ' x 50 }, auth($ki));
is $r->{status}, 429, '/api/embed: 429';
like $r->{json}{error} // '', qr/monthly token quota/, "in Ollama's shape";

# ---- access: no key, a plan without the model, a private model
$r = $t->post('/v1/embeddings', { model => $EMB, input => 'x' }, nokey => 1);
Nebula::Test::is_error($r, 401, 'invalid_request_error', 'invalid_api_key', 'no key: 401');
$r = $t->post('/v1/embeddings', { model => 'acme-embed:1', input => 'x' }, auth($ke));
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'model_not_found',
                       "another's private model: 404", 'model');
my $kp = $t->new_key(plan => 'free', models => ['acme-embed:1']);
$r = $t->post('/v1/embeddings', { model => 'acme-embed:1', input => 'mine' }, auth($kp));
is $r->{status}, 200, 'the private model, to its key: 200';
is $r->{json}{model}, 'acme-embed:1', 'by its public name';
$r = $t->post('/v1/chat/completions', { model => 'acme-embed:1',
                                        messages => [{ role => 'user', content => 'hi' }] }, auth($kp));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value',
                       'the private embedding model on chat, to its key: 400', 'model');
$u = usage_of($kp);
is $u->{requests}, 1, 'its refusal given back, uncounted';
is $u->{reserved_input_tokens}, 0, 'nothing left reserved';

# ---- the pool fails: its error in the shape, nothing charged
my $kf = $t->new_key(plan => 'free');
$r = $t->post('/v1/embeddings', { model => $EMB, input => 'x' }, auth($kf, { 'x-sim-fault' => 500 }));
Nebula::Test::is_error($r, 502, 'api_error', 'upstream_error', '/v1/embeddings, the pool fails: 502');
$r = $t->post('/api/embed', { model => $EMB, input => 'x' }, auth($kf, { 'x-sim-fault' => 500 }));
Nebula::Test::is_error($r, 502, '', '', '/api/embed, the pool fails: 502');
$r = $t->post('/api/embeddings', { model => $EMB, prompt => 'x' }, auth($kf, { 'x-sim-status' => 500 }));
Nebula::Test::is_error($r, 502, '', '', '/api/embeddings, the pool fails: 502');
$u = usage_of($kf);
is $u->{input_tokens}, 0, 'no input charged';
is $u->{cost_usd}, 0, 'nothing to pay';

$t->finish;

# ---- with quota leases on, as shipped: usage exact, output untouched
{
    my $tl = Nebula::Test->new(lease => 1, patch_catalog => sub {
        $_[0] . "\nnebula_model  nomic-embed-text:latest  pool=ollama_local"
              . " upstream_model=nomic-embed-text:v1.5 context=64 input_price=2.00"
              . " kind=embedding group=basic;\n";
    });
    my $kk = $tl->new_key(plan => 'developer');
    my ($want, $ok) = (0, 0);
    for my $i (1 .. 30) {
        my @words = ('w') x (1 + $i % 5);
        my $res = $tl->post('/v1/embeddings', { model => $EMB, input => "@words" },
                            headers => { Authorization => "Bearer $kk->{key}" });
        $ok++ if $res->{status} == 200;
        $want += tokens("@words");
    }
    is $ok, 30, 'leases: thirty embeddings served';
    my $lu = $tl->wait_requests($kk->{id}, 30, 5);
    is $lu->{requests}, 30, 'leases: thirty counted';
    is $lu->{input_tokens}, $want, "leases: input exact ($want)";
    is $lu->{output_tokens}, 0, 'leases: no output';
    ok $tl->wait_settled($kk->{key}, 8), 'leases: every block given back';
    $tl->finish;
}

done_testing;
