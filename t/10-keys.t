#!/usr/bin/perl
# API keys and the admin API (contract.md sections 3 and 4): secrets from
# a CSPRNG, only digests stored, revocation on the next request, keys never
# logged nor forwarded; GET /v1/key for the caller.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;
my $chat = '/v1/chat/completions';
my $hello = { model => 'qwen3:latest', messages => [{ role => 'user', content => 'hi' }] };
my $bad = 'invalid_request_error';

# --- the admin API's own guard
my $r = $t->request('GET', '/admin/keys', nokey => 1);
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'admin: no token');
$r = $t->request('GET', '/admin/keys', headers => { Authorization => 'Bearer wrong-token-wrong-token' });
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'admin: wrong token');
$r = $t->request('GET', '/admin/keys', headers => { Authorization => 'Bearer ' . $t->key });
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'admin: an API key is not the admin token');

# --- creating keys
$r = $t->admin('POST', '/admin/keys', { plan => 'developer', name => 'Acme CI' });
is $r->{status}, 201, 'created';
my $k = $r->{json};
like $k->{key}, qr/^nb-[A-Za-z0-9_-]{40,}$/, 'secret: nb- and 40+ random characters';
like $k->{id}, qr/^[0-9a-f]{16}$/, 'an id';
is $k->{plan}, 'developer', 'plan';
is $k->{name}, 'Acme CI', 'name';
like $k->{created}, qr/^\d{10}$/, 'created';

my %seen;
$seen{ $t->new_key(plan => 'free')->{key} }++ for 1 .. 20;
is scalar keys %seen, 20, 'twenty keys, twenty different secrets';

# only a digest is stored: the secret appears nowhere in Redis
my $dump = join "\n", map { $t->redis->cli('HGETALL', $_) }
                      split /\n/, $t->redis->cli('KEYS', 'nb:*:key');
unlike $dump, qr/\Q$k->{key}\E/, 'the secret is not in Redis';
like $dump, qr/\b[0-9a-f]{64}\b/, 'its SHA-256 digest is';

for my $case ([{ name => 'x' }, 'missing_field', 'plan', 'no plan'],
              [{ plan => 'platinum' }, 'invalid_value', 'plan', 'unknown plan'],
              [{ plan => 'free', limits => { input_tokens => -1 } }, 'invalid_value', 'limits', 'negative limit'],
              [{ plan => 'free', limits => { tokens => 5 } }, 'invalid_value', 'limits', 'unknown limit'],
              [{ plan => 'free', models => ['gpt-4o'] }, 'invalid_value', 'models', 'unknown model'],
              [{ plan => 'free', models => 'qwen3:latest' }, 'invalid_value', 'models', 'models not an array'],
              [{ plan => 'free', status => 'revoked' }, 'invalid_value', 'status', 'born revoked']) {
    my ($body, $code, $param, $name) = @$case;
    $r = $t->admin('POST', '/admin/keys', $body);
    Nebula::Test::is_error($r, 400, $bad, $code, "create: $name", $param);
}
$r = $t->request('POST', '/admin/keys', raw_body => '{"plan":',
                 headers => { Authorization => 'Bearer ' . $t->admin_token,
                              'Content-Length' => 8 });
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'create: broken JSON');

# --- using a key
$r = $t->post($chat, $hello, headers => { Authorization => "Bearer $k->{key}" });
is $r->{status}, 200, 'the new key works';
$r = $t->post($chat, $hello, nokey => 1, headers => { 'x-api-key' => $k->{key} });
is $r->{status}, 200, 'x-api-key works too';

$r = $t->post($chat, $hello, nokey => 1);
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'no key');
$r = $t->post($chat, $hello, headers => { Authorization => 'Bearer sk-not-ours' });
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'a key of the wrong shape');
$r = $t->post($chat, $hello, headers => { Authorization => 'Bearer nb-' . ('A' x 43) });
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'a well-formed unknown key');
$r = $t->post($chat, $hello, headers => { Authorization => 'Basic ' . $k->{key} });
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'not a Bearer credential');
$r = $t->post($chat, 'not json', nokey => 1);
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'no key: 401 before the body is read');

# --- GET /v1/key
ok $t->wait_settled($k->{key}), 'settled';
$r = $t->get('/v1/key', headers => { Authorization => "Bearer $k->{key}" });
is $r->{status}, 200, '/v1/key';
my $d = $r->{json}{data};
is $d->{id}, $k->{id}, '/v1/key: id';
is $d->{name}, 'Acme CI', '/v1/key: name';
is $d->{plan}, 'developer', '/v1/key: plan';
is_deeply $d->{limits}, { input_tokens => 2000000, output_tokens => 500000,
                          requests_per_minute => undef }, '/v1/key: the plan\'s limits';
like $d->{usage}{period}, qr/^\d{4}-\d\d$/, '/v1/key: period';
is $d->{usage}{requests}, 2, '/v1/key: two requests so far';
ok $d->{usage}{input_tokens} > 0 && $d->{usage}{output_tokens} > 0, '/v1/key: tokens counted';
is $d->{remaining}{input_tokens}, 2000000 - $d->{usage}{input_tokens}, '/v1/key: remaining input';
like $d->{reset_at}, qr/^\d{4}-\d\d-01T00:00:00Z$/, '/v1/key: reset_at';
ok !exists $d->{key}, '/v1/key never shows the secret';
$r = $t->get('/v1/key', nokey => 1);
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', '/v1/key without a key');

# --- admin views and changes
$r = $t->admin('GET', "/admin/keys/$k->{id}");
is $r->{status}, 200, 'admin: get one';
is $r->{json}{status}, 'active', 'admin: active';
is $r->{json}{usage}{requests}, 2, 'admin: with usage';
is $r->{json}{usage_by_model}{'qwen3:latest'}{requests}, 2, 'admin: usage per model';
is $r->{json}{usage}{reserved_output_tokens}, 0, 'admin: no reservation left behind';
ok !exists $r->{json}{key}, 'admin: never the secret again';

$r = $t->admin('GET', '/admin/keys');
is $r->{status}, 200, 'admin: list';
ok scalar(grep { $_->{id} eq $k->{id} } @{ $r->{json}{data} }), 'admin: the key is listed';
ok !grep({ exists $_->{key} } @{ $r->{json}{data} }), 'admin: the list has no secrets';

$r = $t->admin('PATCH', "/admin/keys/$k->{id}",
               { plan => 'pro', limits => { output_tokens => 777 }, models => ['gemma3:1b'] });
is $r->{status}, 200, 'admin: patch';
is $r->{json}{plan}, 'pro', 'admin: plan changed';
is $r->{json}{limits}{output_tokens}, 777, 'admin: a limit overridden';
is $r->{json}{limits}{input_tokens}, 15000000, 'admin: the others from the plan';
is_deeply $r->{json}{models}, ['gemma3:1b'], 'admin: extra models';

$r = $t->admin('PATCH', "/admin/keys/$k->{id}", { limits => { output_tokens => undef } });
is $r->{json}{limits}{output_tokens}, 3000000, 'admin: null restores the plan\'s limit';

$r = $t->admin('GET', '/admin/keys/0123456789abcdef');
Nebula::Test::is_error($r, 404, $bad, 'key_not_found', 'admin: unknown id');
$r = $t->admin('PATCH', '/admin/keys/0123456789abcdef', { plan => 'free' });
Nebula::Test::is_error($r, 404, $bad, 'key_not_found', 'admin: patch an unknown id');
$r = $t->admin('PUT', "/admin/keys/$k->{id}", {});
Nebula::Test::is_error($r, 405, $bad, 'method_not_allowed', 'admin: PUT');

# --- revocation takes effect on the next request
$r = $t->admin('DELETE', "/admin/keys/$k->{id}");
is $r->{status}, 200, 'admin: revoke';
is $r->{json}{status}, 'revoked', 'admin: revoked';
$r = $t->post($chat, $hello, headers => { Authorization => "Bearer $k->{key}" });
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', 'a revoked key is refused at once');
like $r->{json}{error}{message}, qr/revoked/, 'the message says revoked';
$r = $t->get('/v1/key', headers => { Authorization => "Bearer $k->{key}" });
Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', '/v1/key of a revoked key');
$r = $t->admin('PATCH', "/admin/keys/$k->{id}", { status => 'active' });
$r = $t->post($chat, $hello, headers => { Authorization => "Bearer $k->{key}" });
is $r->{status}, 200, 'reactivated';

# --- keys are never logged
$t->stop_nginx;
my $logs = '';
for my $f (glob($t->dir . '/logs/*.log')) {
    next if $f =~ /sim-/;   # the simulator logs what reached it
    open my $fh, '<', $f or next;
    local $/;
    $logs .= <$fh>;
}
unlike $logs, qr/\Q$k->{key}\E/, 'the secret is in no nginx log';
unlike $logs, qr/\Q${\ $t->admin_token }\E/, 'nor the admin token';

$t->done;
