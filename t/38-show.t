#!/usr/bin/perl
# POST /api/show (issue 13): the pool's answer about a catalog model, made
# the catalog's: the public name where the pool wrote its own (the
# Modelfile's FROM), model_info's context_length the catalog's context.
# Behind the key and the plan like any model request; no tokens, nothing
# counted; verbose (the tokenizer's whole vocabulary) never asked of a
# pool; errors in Ollama's shape.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch_catalog => sub {
        $_[0] . "\nnebula_model  acme-ft:7b  pool=ollama_local upstream_model=acme-ft:7b-q4"
              . " context=8192 input_price=1.00 output_price=2.00 private;\n";
    },
);
my $sim = $t->sim('local');
sub auth { return (headers => { Authorization => "Bearer $_[0]{key}", %{ $_[1] // {} } }) }

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

my $k = $t->new_key(plan => 'free');
for my $split (0, 1) {
    my $r = $t->post('/api/show', { model => 'qwen/qwen3-coder:free', verbose => JSON::PP::true },
                     auth($k, $split ? {} : { 'x-sim-split' => 'none' }));
    my $what = $split ? 'read in two' : 'read in one';
    is $r->{status}, 200, "$what: 200";
    is $sim->last->{model}, 'qwen3-coder:30b', "$what: the pool was asked by its name";
    ok !exists $sim->last->{body}{verbose}, "$what: verbose never reaches the pool";
    my $j = $r->{json} // {};
    like $j->{modelfile} // '', qr/^# FROM qwen\/qwen3-coder:free$/m, "$what: the Modelfile names the public model";
    unlike $r->{body}, qr/qwen3-coder:30b/, "$what: the upstream name nowhere";
    is $j->{model_info}{'qwen3coder.context_length'}, 32768, "$what: the catalog's context";
    is $j->{model_info}{'qwen3coder.embedding_length'}, 4096, "$what: the rest as the pool said";
    is_deeply $j->{capabilities}, ['completion', 'tools'], "$what: capabilities as they were";
    ok !exists $j->{model_info}{'tokenizer.ggml.tokens'}, "$what: no vocabulary";
    is $r->{headers}{'content-length'}, length $r->{body}, "$what: with its length";
}
my $u = usage_of($k);
is $u->{requests}, 0, 'nothing counted';
is $u->{input_tokens} + $u->{output_tokens}, 0, 'no tokens';

# ---- the same gate as any model request
$sim->reset;
sub ollama_error {
    my ($r, $status, $name, $re) = @_;
    my $j = $r->{json};
    ok $r->{status} == $status && ref $j eq 'HASH' && defined $j->{error} && !ref $j->{error}
       && (!$re || $j->{error} =~ $re), $name
        or diag "status $r->{status}: $r->{body}";
}
ollama_error($t->post('/api/show', { model => 'qwen3:latest' }, nokey => 1), 401, 'no key: 401');
ollama_error($t->post('/api/show', { model => 'qwen3-vl:235b-cloud' }, auth($k)), 403,
             'a model the plan lacks: 403');
ollama_error($t->post('/api/show', { model => 'nope:1b' }, auth($k)), 404, 'an unknown model: 404',
             qr/does not exist/);
my $r404 = $t->post('/api/show', { model => 'acme-ft:7b' }, auth($k));
ollama_error($r404, 404, "another's private model: 404, as unknown", qr/does not exist/);
ollama_error($t->post('/api/show', { name => 'qwen3:latest' }, auth($k)), 400,
             'name instead of model: 400');
ollama_error($t->get('/api/show', auth($k)), 405, 'GET: 405');
is scalar @{ $sim->requests }, 0, 'no refusal reached the pool';

my $kp = $t->new_key(plan => 'free', models => ['acme-ft:7b']);
my $r = $t->post('/api/show', { model => 'acme-ft:7b' }, auth($kp));
is $r->{status}, 200, 'the private model, to its key: 200';
is $r->{json}{model_info}{'acmeft.context_length'}, 8192, 'its context';

# ---- a pool that fails, or answers what cannot be read
ollama_error($t->post('/api/show', { model => 'qwen3:latest' }, auth($k, { 'x-sim-status' => 500 })),
             502, 'the pool fails: 502');
$r = $t->post("/api/show", { model => "qwen3:latest" }, auth($k, { "x-sim-fault" => "drop" }));
ollama_error($r, 502, 'the pool dies midway: 502, nothing of its answer', qr/could not be read/);
unlike $r->{body}, qr/modelfile/, 'no part of the cut answer';
$t->allow_error(qr/upstream prematurely closed|cannot read/);
$u = usage_of($k);
is $u->{requests}, 0, 'still nothing counted';

$t->done;
