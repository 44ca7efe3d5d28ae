#!/usr/bin/perl
# Errors in the shape of the API the client speaks (contract: "each answers
# errors in its own API's shape"): Ollama's {"error": "..."} on /api/...,
# whether the module refused the request, nginx did (through error_page)
# or the pool failed; OpenAI's on /v1; Anthropic's on /v1/messages.  And
# the native endpoints the gateway answers itself: GET /api/version, and
# the ones that change the fleet, refused with 403 without reaching a
# pool.  GET /v1/models/{model}: one entry of the public list.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch => sub { $_[0] =~ s/(client_max_body_size\s+)8m;/${1}64k;/r },
    patch_catalog => sub {
        $_[0] . "\nnebula_model  acme-ft:7b  pool=ollama_local upstream_model=acme-ft:7b-q4"
              . " context=8192 input_price=1.00 output_price=2.00 private;\n";
    },
);
$t->allow_error(qr/client intended to send too large body/);
my $key = $t->key;
my $msgs = [{ role => 'user', content => 'Hello' }];

# an Ollama error: one member, "error", a string, nothing else
sub ollama_error {
    my ($r, $status, $name, $re) = @_;
    my $j = $r->{json};
    my $ok = $r->{status} == $status
             && ($r->{headers}{'content-type'} // '') =~ m{^application/json}
             && ref $j eq 'HASH' && join(',', keys %$j) eq 'error'
             && defined $j->{error} && !ref $j->{error}
             && (!$re || $j->{error} =~ $re);
    ok $ok, $name or diag "status $r->{status}: " . ($r->{body} // '');
}

# ---- Ollama's shape on the native API, whoever refuses
ollama_error($t->post('/api/chat', { model => 'qwen3:latest', messages => $msgs }, nokey => 1),
             401, '/api/chat without a key: 401', qr/API key/);
ollama_error($t->post('/api/chat', { model => 'qwen3:latest', messages => $msgs },
                      headers => { Authorization => 'Bearer nb-' . ('Z' x 43) }),
             401, '/api/chat with a made-up key: 401');
ollama_error($t->post('/api/generate', { model => 'nope:1b', prompt => 'x' }),
             404, '/api/generate, unknown model: 404', qr/The model 'nope:1b' does not exist/);
ollama_error($t->post('/api/chat', '{"model":'), 400, '/api/chat, broken JSON: 400');
ollama_error($t->get('/api/chat'), 405, 'GET /api/chat: 405');
ollama_error($t->post('/api/generate', { model => 'qwen3:latest', prompt => 'x' x 70000 }),
             413, '/api/generate over client_max_body_size: 413 (nginx, by error_page)');
ollama_error($t->get('/api/nothing-here'), 404, 'an unknown /api path: 404');
ollama_error($t->post('/api/chat', { model => 'qwen3:latest', messages => $msgs,
                                     stream => JSON::PP::false },
                      headers => { 'x-sim-status' => 500 }),
             502, 'the pool failed: 502', qr/^The model pool failed \(HTTP 500\)/);
ollama_error($t->get('/api/tags', nokey => 1), 401, '/api/tags without a key: 401');

# ---- OpenAI's on /v1 stays as it was
my $r = $t->post('/v1/chat/completions', { model => 'nope:1b', messages => $msgs });
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'model_not_found', '/v1: OpenAI shape', 'model');
$r = $t->get('/v1/nothing-here');
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'not_found', '/v1 unknown path: OpenAI shape');

# ---- Anthropic's under /v1/messages, on a path not served (count_tokens)
$r = $t->post('/v1/messages/count_tokens', { model => 'qwen3:latest', messages => $msgs });
is $r->{json}{type}, 'error', '/v1/messages: type error';
is $r->{json}{error}{type}, 'not_found_error', '404 as not_found_error';
ok length($r->{json}{error}{message} // ''), 'with a message';

# ---- GET /api/version: public, answered here
$t->sim('local')->reset;
$t->sim('cloud')->reset;
$r = $t->get('/api/version', nokey => 1);
is $r->{status}, 200, '/api/version: 200 without a key';
like $r->{json}{version} // '', qr/^\d+\.\d+\.\d+$/, 'a version number';
is $t->get('/api/version')->{json}{version}, $r->{json}{version}, 'the same with a key';
ollama_error($t->post('/api/version', {}), 405, 'POST /api/version: 405');

# ---- the endpoints that change the fleet: 403, never a pool
for my $c (['POST', '/api/pull', { model => 'qwen3:latest' }],
           ['POST', '/api/push', { model => 'qwen3:latest' }],
           ['POST', '/api/create', { model => 'mine', from => 'qwen3:latest' }],
           ['POST', '/api/copy', { source => 'qwen3:latest', destination => 'x' }],
           ['DELETE', '/api/delete', { model => 'qwen3:latest' }],
           ['POST', '/api/blobs/sha256:' . ('a' x 64), 'x' x 1000],
           ['HEAD', '/api/blobs/sha256:' . ('a' x 64), undef]) {
    my ($m, $path, $body) = @$c;
    for my $auth ([], [nokey => 1]) {
        my $res = $t->request($m, $path, body => $body, @$auth);
        my $who = @$auth ? 'without a key' : 'with a key';
        if ($m eq 'HEAD') {
            is $res->{status}, 403, "$m $path $who: 403";
        } else {
            ollama_error($res, 403, "$m $path $who: 403", qr/changes the model fleet/);
        }
    }
}
is scalar @{ $t->sim('local')->requests }, 0, 'the local pool saw none of them';
is scalar @{ $t->sim('cloud')->requests }, 0, 'the cloud pool saw none of them';

# ---- GET /v1/models/{model}
my $list = $t->get('/v1/models', nokey => 1)->{json}{data};
for my $m (@$list) {
    $r = $t->get("/v1/models/$m->{id}", nokey => 1);
    is $r->{status}, 200, "/v1/models/$m->{id}: 200";
    is_deeply $r->{json}, $m, "/v1/models/$m->{id}: its entry in the list";
}
ok((grep { $_->{id} eq 'qwen/qwen3-coder:free' } @$list), 'a name with a slash was among them');
$r = $t->get('/v1/models/qwen%2Fqwen3-coder%3Afree', nokey => 1);
is $r->{json}{id}, 'qwen/qwen3-coder:free', 'the name percent-encoded';
$r = $t->get('/v1/models/nope:1b', nokey => 1);
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'model_not_found', 'an unknown model: 404', 'model');
my $unknown = $r->{body};
$r = $t->get('/v1/models/acme-ft:7b');
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'model_not_found', 'a private model: 404');
(my $private = $r->{body}) =~ s/acme-ft:7b/nope:1b/;
is $private, $unknown, 'in the same words as a model that does not exist';
$r = $t->request('HEAD', '/v1/models/qwen3:latest');
is $r->{status}, 200, 'HEAD: 200';
ok $r->{headers}{'content-length'} > 0, 'with the length of the entry';
$r = $t->post('/v1/models/qwen3:latest', {});
Nebula::Test::is_error($r, 405, 'invalid_request_error', 'method_not_allowed', 'POST: 405');

$t->done;
