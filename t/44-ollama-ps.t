#!/usr/bin/perl
# GET /api/ps (issue 13): the models the fleet has loaded, as far as the
# caller's key reaches them.  Every pool serving a model the key reaches
# is asked (with its own credentials, never the client's key); the answers
# come back under the public names with the catalog's context; models
# outside the catalog or the plan are left out; a pool that fails or is
# slow is left out, not an error.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time);
use Nebula::Test;

my $t = Nebula::Test->new;
my $local = $t->sim('local');
my $cloud = $t->sim('cloud');

sub load {
    my ($sim, @models) = @_;
    my $r = $t->request('POST', '/_sim/ps', port => $sim->port, nokey => 1,
                        body => { models => [map { { model => $_->[0], keep_alive => '1h', num_ctx => $_->[1] } } @models] });
    $r->{status} == 200 or die "/_sim/ps: $r->{status}";
}
sub ps_asked { return scalar grep { $_->{path} eq '/api/ps' } @{ $_[0]->requests } }
sub names { return [map { $_->{name} } @{ $_[0]{json}{models} // [] }] }

load($local, ['qwen3', 8192], ['qwen3-coder:30b', 4096], ['llama3:8b', 4096]);
load($cloud, ['qwen3-vl:235b', 2048], ['deepseek-v3.1:671b', 2048]);
$local->reset;
$cloud->reset;

# ---- a free key: its plan reaches the local pool's models alone
my $free = $t->new_key(plan => 'free');
my $r = $t->get('/api/ps', headers => { Authorization => "Bearer $free->{key}" });
is $r->{status}, 200, 'free: 200';
like $r->{headers}{'content-type'}, qr{^application/json}, 'JSON';
is_deeply [sort @{ names($r) }], ['qwen/qwen3-coder:free', 'qwen3:latest'],
          'the catalog models loaded, public names, none the plan lacks or the catalog does not sell';
my ($q) = grep { $_->{name} eq 'qwen3:latest' } @{ $r->{json}{models} };
is $q->{model}, 'qwen3:latest', 'model is the public name too';
is $q->{context_length}, 32768, "the catalog's context, not the runner's";
is $q->{details}{family}, 'qwen3', "the pool's details pass";
ok $q->{size} > 0 && $q->{size_vram} > 0 && $q->{digest} && $q->{expires_at}, "and its sizes, digest, expiry";
my ($c) = grep { $_->{name} eq 'qwen/qwen3-coder:free' } @{ $r->{json}{models} };
is $c->{context_length}, 32768, 'the alias has its own entry';
is ps_asked($local), 1, 'the local pool was asked once';
is ps_asked($cloud), 0, 'the cloud pool, which serves nothing the plan reaches, was not';
my $asked = (grep { $_->{path} eq '/api/ps' } @{ $local->requests })[0];
ok !exists $asked->{headers}{authorization}, "the client's key never reaches a pool";
ok defined $r->{headers}{'x-ratelimit-limit-input-tokens'}, 'the rate-limit headers, as on every authenticated answer';

# ---- an enterprise key: both pools, each with its own credentials
my $ent = $t->new_key(plan => 'enterprise');
$r = $t->get('/api/ps', headers => { Authorization => "Bearer $ent->{key}" });
is $r->{status}, 200, 'enterprise: 200';
is_deeply [sort @{ names($r) }],
          [sort 'qwen3:latest', 'qwen/qwen3-coder:free', 'qwen3-vl:235b-cloud', 'deepseek-v3.1:671b-cloud'],
          'the cloud pool\'s models too';
my %ctx = map { $_->{name} => $_->{context_length} } @{ $r->{json}{models} };
is $ctx{'deepseek-v3.1:671b-cloud'}, 65536, 'each with its catalog context';
$asked = (grep { $_->{path} eq '/api/ps' } @{ $cloud->requests })[-1];
is $asked->{headers}{authorization}, 'Bearer sim-cloud-key', 'the cloud pool gets its own key';
is $asked->{method}, 'GET', 'a GET';

# the key as x-api-key, as Ollama clients may send it? no: Ollama's API takes Bearer
$r = $t->get('/api/ps', headers => { Authorization => 'Bearer nb-' . ('x' x 43) });
Nebula::Test::is_error($r, 401, undef, 'invalid_api_key', 'a wrong key: 401, in Ollama\'s shape');
$r = $t->get('/api/ps', nokey => 1);
Nebula::Test::is_error($r, 401, undef, 'invalid_api_key', 'no key: 401');
$r = $t->request('POST', '/api/ps', headers => { Authorization => "Bearer $free->{key}" }, body => {});
Nebula::Test::is_error($r, 405, undef, 'method_not_allowed', 'POST: 405');
$r = $t->request('HEAD', '/api/ps', headers => { Authorization => "Bearer $free->{key}" });
is $r->{status}, 200, 'HEAD: 200';
is $r->{body} // '', '', 'HEAD: no body';

# ---- nothing loaded: an empty list
$t->request('DELETE', '/_sim/ps', port => $local->port, nokey => 1);
$r = $t->get('/api/ps', headers => { Authorization => "Bearer $free->{key}" });
is_deeply $r->{json}, { models => [] }, 'nothing loaded: {"models":[]}';

# ---- a failing pool is left out; the others are listed
load($local, ['gemma3:1b', 4096]);
$r = $t->get('/api/ps', headers => { Authorization => "Bearer $ent->{key}", 'x-sim-fault' => '500' });
is $r->{status}, 200, 'the pools fail: still 200';
is_deeply names($r), [], 'and an empty list';
like $t->error_log, qr/pool "ollama_local" did not list its running models \(status 500\)/, 'logged, as a warning';

$cloud->stop;
$r = $t->get('/api/ps', headers => { Authorization => "Bearer $ent->{key}" });
is $r->{status}, 200, 'a pool down: 200';
is_deeply names($r), ['gemma3:1b'], 'the other pool\'s models';
$t->allow_error(qr/connect\(\) failed .* while connecting to upstream/);

# ---- a slow pool: the list goes without it after three seconds
my $t0 = time;
$r = $t->get('/api/ps', headers => { Authorization => "Bearer $free->{key}", 'x-sim-delay-ms' => 6000 });
my $took = time - $t0;
is $r->{status}, 200, 'a slow pool: 200';
is_deeply names($r), [], 'without it';
ok $took >= 2.5 && $took < 5.5, sprintf('after about 3 s (%.1f s)', $took);
like $t->error_log, qr/pool "ollama_local" did not list its running models within 3000 ms/, 'logged';

# the gateway still answers (the late subrequest ran on, and ended)
sleep 4;
$r = $t->get('/api/ps', headers => { Authorization => "Bearer $free->{key}" });
is_deeply names($r), ['gemma3:1b'], 'afterwards: listed again';

$t->check_error_log;
done_testing;
