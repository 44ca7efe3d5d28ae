#!/usr/bin/perl
# The plans as the seed's table shows them (issue 14, item 6): nebula_plan
# takes a title, a monthly price, perks and "popular"; GET /v1/plans lists
# them, public, with their monthly tokens and the models each reaches.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test qw(nginx_test_conf minimal_conf);

my $t = Nebula::Test->new(
    patch_catalog => sub {
        $_[0] . "\nnebula_model  acme-ft:7b  pool=ollama_local upstream_model=acme-ft:7b-q4"
              . " context=8192 input_price=1.00 output_price=2.00 private;\n";
    },
);

my $r = $t->get('/v1/plans', nokey => 1);
is $r->{status}, 200, 'GET /v1/plans, without a key';
like $r->{headers}{'content-type'}, qr{^application/json}, 'JSON';
my @p = @{ $r->{json}{data} };
is_deeply [map { $_->{id} } @p], [qw(free developer pro enterprise)], 'the four plans, in the order declared';
is_deeply [map { $_->{name} } @p], [qw(Free Developer Pro Enterprise)], 'their titles';
is_deeply [map { $_->{price_usd_monthly} } @p], [0, 10, 50, 200], 'the seed\'s prices';
is_deeply [map { $_->{popular} ? 1 : 0 } @p], [0, 1, 0, 0], 'Developer marked popular, as the seed shows';
is_deeply [map { [@{ $_->{limits} }{qw(input_tokens output_tokens)}] } @p],
    [[100000, 20000], [2000000, 500000], [15000000, 3000000], [100000000, 20000000]],
    'the monthly tokens';
is_deeply [map { $_->{limits}{requests_per_minute} } @p], [20, undef, undef, undef], 'the per-minute limits';
is_deeply [map { $_->{perks} } @p],
    [['Basic models', 'Community support'], ['All Ollama models', 'Email support'],
     ['Vision models', 'Priority support'], ['Custom fine-tuning', '24/7 support']],
    'the seed\'s perks, in order';
ok exists $r->{json}{signup} && !defined $r->{json}{signup}, 'sign-up off (the default): "signup" is null';

# the models each reaches: those of its groups in /v1/models, never a private one
my $models = $t->get('/v1/models', nokey => 1)->{json}{data};
is_deeply $p[3]{models}, [map { $_->{id} } @$models], 'Enterprise (groups=*): every public model, as /v1/models lists them';
ok !grep({ $_ eq 'acme-ft:7b' } map { @{ $_->{models} } } @p), 'no private model in any plan';
ok !grep({ $_ eq 'qwen3-vl:235b-cloud' } @{ $p[1]{models} }), 'Developer does not reach the vision model';
ok grep({ $_ eq 'qwen3-vl:235b-cloud' } @{ $p[2]{models} }), 'Pro does';
ok !grep({ $_ eq 'deepseek-v3.1:671b-cloud' } @{ $p[0]{models} }), 'Free does not reach a standard model';

# and what a plan lists is what its keys reach
for my $plan (qw(free developer)) {
    my $k = $t->new_key(plan => $plan);
    my ($row) = grep { $_->{id} eq $plan } @p;
    my %listed = map { $_ => 1 } @{ $row->{models} };
    for my $m (map { $_->{id} } @$models) {
        my $s = $t->post('/v1/chat/completions', { model => $m, max_tokens => 1,
                                                     messages => [{ role => 'user', content => 'hi' }] },
                         headers => { Authorization => "Bearer $k->{key}" })->{status};
        is $s == 200 ? 1 : 0, $listed{$m} ? 1 : 0, "$plan: $m " . ($listed{$m} ? 'listed and served' : 'not listed, refused');
    }
}

Nebula::Test::is_error($t->request('POST', '/v1/plans', body => {}, nokey => 1), 405, 'invalid_request_error',
                       'method_not_allowed', 'POST: 405');
$r = $t->request('HEAD', '/v1/plans', nokey => 1);
is $r->{status}, 200, 'HEAD: 200';

# nginx -t checks the new parameters
for my $case (['price=-1', qr/invalid parameter "price=-1" of plan "p"/],
              ['price=ten', qr/invalid parameter "price=ten"/],
              ['price=1000000', qr/invalid parameter "price=1000000"/],
              ['title=', qr/invalid parameter "title="/],
              ['title=A title=B', qr/invalid parameter "title=B"/],
              [join(' ', map { "perk=p$_" } 1 .. 17), qr/invalid parameter "perk=p17"/],
              ['"perk=' . ('x' x 201) . '"', qr/invalid parameter "perk=x+"/],
              ['famous', qr/invalid parameter "famous"/]) {
    my ($rc, $out) = nginx_test_conf(minimal_conf(<<"HTTP"));
    nebula_model a pool=ollama_local upstream_model=m context=4096 input_price=0.1 output_price=0.2 group=basic;
    nebula_plan p input_tokens=10 output_tokens=10 groups=basic $case->[0];
    server { listen 127.0.0.1:1; location / { nebula plans; } }
HTTP
    isnt $rc, 0, "nebula_plan ... $case->[0]: nginx -t fails" =~ s/(.{90}).*/$1.../r;
    like $out, $case->[1], 'and says which parameter';
}
my ($rc, $out) = nginx_test_conf(minimal_conf(<<"HTTP"));
    nebula_model a pool=ollama_local upstream_model=m context=4096 input_price=0.1 output_price=0.2 group=basic;
    nebula_plan p input_tokens=10 output_tokens=10 groups=basic "title=Plan P" price=9.99 "perk=A perk" popular;
    server { listen 127.0.0.1:1; location / { nebula plans; } }
HTTP
is $rc, 0, 'a plan with a quoted title, a price in cents, a perk and popular passes nginx -t' or diag $out;

$t->done;
