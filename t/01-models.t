#!/usr/bin/perl
# GET /v1/models and GET /api/tags, built from the catalog: OpenAI's list
# shape with OpenRouter's fields, public, with the seed's exact catalog.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;

# the seed's table: model, context, USD per 1M input, per 1M output
my %seed = (
    'qwen3:latest'             => [32768, '0.20', '0.60', ['text'], 'General, reasoning'],
    'gemma3:1b'                => [4096,  '0.05', '0.10', ['text'], 'Fast, lightweight'],
    'qwen3-vl:235b-cloud'      => [32768, '0.50', '1.50', ['text', 'image'], 'Vision, multimodal'],
    'deepseek-v3.1:671b-cloud' => [65536, '0.35', '0.90', ['text'], 'Advanced reasoning'],
    'qwen/qwen3-coder:free'    => [32768, '0',    '0',    ['text'], 'Code generation (free)'],
);

my $r = $t->get('/v1/models');
is $r->{status}, 200, 'no key needed';
like $r->{headers}{'content-type'}, qr{^application/json}, 'JSON';
is $r->{json}{object}, 'list', 'object is list';
is scalar @{ $r->{json}{data} }, 5, 'five models';

for my $m (@{ $r->{json}{data} }) {
    my $want = $seed{ $m->{id} };
    ok $want, "$m->{id} is in the seed's catalog" or next;
    is $m->{object}, 'model', "$m->{id}: object";
    like $m->{created}, qr/^\d{10}$/, "$m->{id}: created is a Unix time";
    ok length $m->{owned_by}, "$m->{id}: owned_by";
    is $m->{context_length}, $want->[0], "$m->{id}: context_length";
    # pricing is USD per token, as strings: price per 1M / 10^6
    for ([prompt => $want->[1]], [completion => $want->[2]]) {
        my ($k, $per_m) = @$_;
        my $p = $m->{pricing}{$k};
        ok !ref $p && $p =~ /^\d+(\.\d+)?$/, "$m->{id}: pricing.$k is a decimal string";
        ok abs($p * 1e6 - $per_m) < 1e-9, "$m->{id}: pricing.$k is $per_m per 1M";
    }
    is_deeply $m->{architecture}{input_modalities}, $want->[3], "$m->{id}: input_modalities";
    is $m->{description}, $want->[4], "$m->{id}: description, the seed's use case";
}

$r = $t->get('/api/tags');
is $r->{status}, 200, '/api/tags';
is_deeply [ sort map { $_->{name} } @{ $r->{json}{models} } ], [ sort keys %seed ],
    '/api/tags lists the catalog';
like $r->{json}{models}[0]{modified_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
    'modified_at in RFC 3339';

$r = $t->request('HEAD', '/v1/models');
is $r->{status}, 200, 'HEAD works';
$r = $t->post('/v1/models', {});
Nebula::Test::is_error($r, 405, 'invalid_request_error', 'method_not_allowed', 'POST refused');

# neither reaches a pool
is scalar @{ $t->sim('local')->requests }, 0, 'served by the gateway alone';

$t->done;
