#!/usr/bin/perl
# Accounts through their APIs (issue 14, items 3 and 4): the operator's
# /admin/accounts and the holder's /v1/keys, /v1/account, with the
# account's management key.  A key made by the holder works at once; a
# management key cannot call a model, an API key cannot manage keys; a
# suspended account's keys are refused at once, leases or not.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    lease => 1,         # the shipped configuration: leases on
    patch_catalog => sub {
        $_[0] . "\nnebula_model  acme-ft:7b  pool=ollama_local upstream_model=acme-ft:7b-q4"
              . " context=8192 input_price=1.00 output_price=2.00 private;\n";
    },
);
my $chat = '/v1/chat/completions';

sub as { return (headers => { Authorization => "Bearer $_[0]" }) }

# the account's usage once it counts n requests, none in flight (a
# lease's usage reaches Redis within a second)
sub usage_of {
    my ($id, $n) = @_;
    my $u;
    for (1 .. 200 * $Nebula::Test::TIME_SCALE) {
        $u = $t->admin('GET', "/admin/accounts/$id")->{json}{data}{usage};
        return $u if $u && $u->{requests} >= $n && !$u->{reserved_input_tokens} && !$u->{reserved_output_tokens};
        select undef, undef, undef, 0.025;
    }
    return $u;
}

sub ask {
    my ($key, %o) = @_;
    return $t->post($chat, { model => $o{model} // 'qwen3:latest', max_tokens => $o{max} // 5,
                             messages => [{ role => 'user', content => $o{text} // 'hello' }] },
                    as($key), %{ $o{extra} // {} });
}

# --- the operator makes an account, with a first key
my $r = $t->admin('POST', '/admin/accounts', { name => 'Acme <Inc>', plan => 'developer',
                                               email => 'ops@acme.example', key => { name => 'first' } });
is $r->{status}, 201, 'POST /admin/accounts: 201';
my $acct = $r->{json}{data};
my $A = $acct->{id};
like $A, qr/^[0-9a-f]{16}$/, 'the account id: 16 hex digits';
is_deeply [@{$acct}{qw(object name email plan status)}], ['account', 'Acme <Inc>', 'ops@acme.example', 'developer', 'active'],
    'the account as asked';
is_deeply $acct->{limits}, { input_tokens => 2000000, output_tokens => 500000, requests_per_minute => undef },
    'its limits: the plan\'s';
my $mkey = $r->{json}{management_key};
like $mkey, qr/^nbm-\Q$A\E-[A-Za-z0-9_-]{43}$/, 'a management key, shown once: nbm-ACCOUNT-...';
my $first = $r->{json}{key};
like $first->{key}, qr/^nb-\Q$A\E-[A-Za-z0-9_-]{43}$/, 'and a first key: nb-ACCOUNT-...';
is $first->{name}, 'first', 'named as asked';
is $t->redis->cli('HGET', "nb:{$A}:acct", 'mdigest') =~ /^[0-9a-f]{64}$/ ? 1 : 0, 1,
    'the management key is stored as its digest';
unlike $t->redis->cli('HGETALL', "nb:{$A}:acct"), qr/\Q$mkey\E/, 'never in the clear';
is ask($first->{key})->{status}, 200, 'the first key works on /v1/chat/completions';

# --- the holder: keys
$r = $t->request('POST', '/v1/keys', body => { name => 'ci', limits => { output_tokens => 40 } }, as($mkey));
is $r->{status}, 201, 'POST /v1/keys with the management key: 201';
my $ci = $r->{json};
like $ci->{key}, qr/^nb-\Q$A\E-/, 'the new key\'s secret, once';
is_deeply [@{$ci->{data}}{qw(object name status disabled)}], ['key', 'ci', 'active', JSON::PP::false],
    'the key as made';
is $ci->{data}{limits}{output_tokens}, 40, 'its own output cap';
is $ci->{data}{limits}{input_tokens}, undef, 'no input cap: the account\'s';
$r = ask($ci->{key}, max => 500, extra => { headers => { Authorization => "Bearer $ci->{key}", 'x-sim-tokens' => 30 } });
is $r->{status}, 200, 'a key made by the holder works at once';
is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 40, 'within its own cap';
is $t->sim('local')->last->{max_tokens}, 40, 'the pool is asked for no more than the cap';

$r = $t->get('/v1/keys', as($mkey));
is $r->{status}, 200, 'GET /v1/keys';
is_deeply [sort map { $_->{name} } @{ $r->{json}{data} }], ['ci', 'first'], 'both keys listed';
is $r->{json}{total}, 2, 'total 2';
unlike $r->{body}, qr/\Q$first->{key}\E|\Q$ci->{key}\E/, 'no secret in a listing';
is $t->get("/v1/keys/$first->{id}/", as($mkey))->{json}{data}{id}, $first->{id}, 'a key\'s path with a slash after it';
$r = $t->get('/v1/keys?limit=1&offset=1', as($mkey));
is scalar @{ $r->{json}{data} }, 1, 'a page of one';
Nebula::Test::is_error($t->get('/v1/keys?limit=0', as($mkey)), 400, 'invalid_request_error', 'invalid_value',
                       'a limit of 0 refused', 'limit');

$r = $t->request('PATCH', "/v1/keys/$ci->{data}{id}", body => { name => 'ci-renamed', models => ['gemma3:1b'] }, as($mkey));
is $r->{status}, 200, 'PATCH /v1/keys/ID';
is $r->{json}{data}{name}, 'ci-renamed', 'renamed';
is_deeply $r->{json}{data}{models}, ['gemma3:1b'], 'narrowed to one model';
Nebula::Test::is_error(ask($ci->{key}), 403, 'permission_error', 'model_not_allowed',
                       'a model outside its list: 403 at once', 'model');
is ask($ci->{key}, model => 'gemma3:1b')->{status}, 200, 'its one model served';

$r = $t->request('PATCH', "/v1/keys/$ci->{data}{id}", body => { disabled => JSON::PP::true }, as($mkey));
is $r->{json}{data}{status}, 'disabled', 'disabled';
like Nebula::Test::error_message(ask($ci->{key}, model => 'gemma3:1b')), qr/disabled/, 'a disabled key: 401, said so';
like Nebula::Test::error_message($t->get('/v1/key', as($ci->{key}))), qr/disabled/, 'and on /v1/key';
$r = $t->request('PATCH', "/v1/keys/$ci->{data}{id}", body => { disabled => JSON::PP::false }, as($mkey));
is ask($ci->{key}, model => 'gemma3:1b')->{status}, 200, 'enabled again: served';

$r = $t->request('PATCH', "/v1/keys/$ci->{data}{id}", body => { expires_at => time - 10 }, as($mkey));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value', 'an expiry in the past refused', 'expires_at');
$t->redis->cli('HSET', "nb:{$A}:k:$ci->{data}{id}", 'expires', time - 1);
like Nebula::Test::error_message($t->get('/v1/key', as($ci->{key}))), qr/expired/, 'an expired key on /v1/key: 401';
$r = $t->request('PATCH', "/v1/keys/$ci->{data}{id}", body => { expires_at => undef }, as($mkey));
is $r->{json}{data}{expires_at}, undef, 'expiry taken away: never';
is $t->get('/v1/key', as($ci->{key}))->{status}, 200, 'and the key reads again';
$r = $t->request('PATCH', "/v1/keys/$ci->{data}{id}", body => { plan => 'pro' }, as($mkey));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value', 'a key has no plan of its own', 'plan');
$r = $t->request('PATCH', "/v1/keys/$ci->{data}{id}", body => { limits => { output_tokens => -1 } }, as($mkey));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value', 'a negative limit refused', 'limits');
$r = $t->request('POST', '/v1/keys', body => '{"name":', as($mkey));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_json', 'a broken body refused');

$r = $t->request('DELETE', "/v1/keys/$ci->{data}{id}", as($mkey));
is $r->{status}, 200, 'DELETE /v1/keys/ID';
ok $r->{json}{deleted}, 'deleted: true';
is $r->{json}{data}{status}, 'revoked', 'the key is revoked (kept, for its usage)';
my $gone = ask($ci->{key}, model => 'gemma3:1b');
Nebula::Test::is_error($gone, 401, 'invalid_request_error', 'invalid_api_key', 'a revoked key: 401 at once');
is ask($first->{key})->{status}, 200, 'the account\'s other key is untouched';
is scalar @{ $t->get('/v1/keys', as($mkey))->{json}{data} }, 1, 'a revoked key is not listed';
is scalar @{ $t->get('/v1/keys?include_revoked=true', as($mkey))->{json}{data} }, 2, 'unless asked';
Nebula::Test::is_error($t->request('DELETE', "/v1/keys/$ci->{data}{id}", as($mkey)), 404, 'invalid_request_error',
                       'key_not_found', 'revoked twice: 404', 'id');

# --- another account's key is not this holder's
$r = $t->admin('POST', '/admin/accounts', { name => 'Other', plan => 'free', key => JSON::PP::true });
my ($B, $mkeyB, $keyB) = ($r->{json}{data}{id}, $r->{json}{management_key}, $r->{json}{key});
Nebula::Test::is_error($t->get("/v1/keys/$keyB->{id}", as($mkey)), 404, 'invalid_request_error', 'key_not_found',
                       'another account\'s key: 404 for this holder', 'id');
Nebula::Test::is_error($t->request('DELETE', "/v1/keys/$keyB->{id}", as($mkey)), 404, 'invalid_request_error',
                       'key_not_found', 'and it cannot revoke it', 'id');
is ask($keyB->{key})->{status}, 200, 'which still works';

# --- who may call what
my $forged = "nbm-$A-" . ('A' x 43);
Nebula::Test::is_error($t->get('/v1/keys', as($forged)), 401, 'invalid_request_error', 'invalid_management_key',
                       'a made-up management key for a real account: 401');
Nebula::Test::is_error($t->get('/v1/keys', nokey => 1), 401, 'invalid_request_error', 'invalid_management_key',
                       'no key: 401');
$r = $t->get('/v1/keys', as($first->{key}));
Nebula::Test::is_error($r, 401, 'invalid_request_error', 'invalid_management_key', 'an API key cannot manage keys');
like Nebula::Test::error_message($r), qr/management key/, 'and is told to use the management key';
Nebula::Test::is_error(ask($mkey), 401, 'invalid_request_error', 'invalid_api_key',
                       'a management key cannot call a model');
like Nebula::Test::error_message(ask($mkey)), qr/use an API key/, 'and is told to use an API key';
Nebula::Test::is_error($t->get('/v1/account', as($mkeyB)) && $t->get("/v1/keys/$first->{id}", as($mkeyB)), 404,
                       'invalid_request_error', 'key_not_found', 'B\'s holder does not see A\'s key', 'id');
Nebula::Test::is_error($t->request('PUT', '/v1/keys', as($mkey)), 405, 'invalid_request_error', 'method_not_allowed',
                       'PUT /v1/keys: 405');

# --- GET /v1/key with an account's key: its own usage and its account
is usage_of($A, 5)->{requests}, 5, 'the account\'s five requests settled (two of its first key, three of ci)';
$r = $t->get('/v1/key', as($first->{key}));
is $r->{status}, 200, 'GET /v1/key with a key of an account';
is $r->{json}{data}{id}, $first->{id}, 'the key';
is $r->{json}{data}{plan}, 'developer', 'its account\'s plan';
is $r->{json}{data}{account}{id}, $A, 'and its account';
cmp_ok $r->{json}{data}{account}{usage}{requests}, '>', $r->{json}{data}{usage}{requests},
    'the account counts more requests than this one key';

# --- activity: the account's last requests, each key's own generations
{
    my $x = ask($first->{key}, text => 'activity probe');
    my $xid = $x->{headers}{'x-request-id'};
    my $rows;
    # the workers send their records every tenth of a second
    for (1 .. 100 * $Nebula::Test::TIME_SCALE) {
        $r = $t->get('/v1/activity', as($mkey));
        $rows = $r->{json}{data};
        last if $rows && @$rows == 6 && grep { $_->{id} eq $xid } @$rows;
        select undef, undef, undef, 0.05;
    }
    is $r->{status}, 200, 'GET /v1/activity';
    is scalar(@$rows), 6, 'the account\'s six requests, refused ones not counted';
    my ($probe) = grep { $_->{id} eq $xid } @$rows;
    ok $probe, 'the last request among them';
    my @t = map { $_->{created_at} } @$rows;
    is_deeply \@t, [sort { $b cmp $a } @t], 'newest first';
    is_deeply $probe->{key}, { id => $first->{id}, name => 'first' }, 'with the key that made it, by name';
    is $probe->{tokens_completion}, $x->{json}{usage}{completion_tokens}, 'its tokens';
    is $probe->{status}, 200, 'its status';
    ok defined $probe->{latency}, 'its latency';
    my %keys = map { $_->{key}{id} => 1 } @$rows;
    is_deeply [sort keys %keys], [sort $first->{id}, $ci->{data}{id}], 'of both its keys';
    my $only = $t->get("/v1/activity?key=$ci->{data}{id}", as($mkey))->{json}{data};
    is scalar(@$only), 3, 'filtered by key: ci\'s three';
    my $gem = $t->get('/v1/activity?model=gemma3:1b', as($mkey))->{json}{data};
    is_deeply [map { $_->{model} } @$gem], ['gemma3:1b', 'gemma3:1b'], 'filtered by model';
    is scalar @{ $t->get('/v1/activity?limit=2', as($mkey))->{json}{data} }, 2, 'limited';
    Nebula::Test::is_error($t->get('/v1/activity?key=zz', as($mkey)), 400, 'invalid_request_error',
                           'invalid_value', 'a bad key filter', 'key');
    is $t->get("/v1/generation?id=$xid", as($first->{key}))->{status}, 200, 'the key that made it finds its generation';
    my $ops = $t->admin('POST', "/admin/accounts/$A/keys", { name => 'peer' });
    Nebula::Test::is_error($t->get("/v1/generation?id=$xid", as($ops->{json}{key})), 404, 'invalid_request_error',
                           'generation_not_found', 'another key of the same account does not', 'id');
    $t->admin('DELETE', "/admin/accounts/$A/keys/$ops->{json}{data}{id}");
    is scalar @{ $t->admin('GET', "/admin/accounts/$A/activity")->{json}{data} }, 6, 'the operator reads it too';
    Nebula::Test::is_error($t->get('/v1/activity', as($first->{key})), 401, 'invalid_request_error',
                           'invalid_management_key', 'not with an API key');
}

# --- the holder's account view: usage by day, model and key
$r = $t->get('/v1/account', as($mkey));
is $r->{status}, 200, 'GET /v1/account';
my $d = $r->{json}{data};
is $d->{id}, $A, 'its account';
my %by_key = map { $_->{id} => $_->{usage} } @{ $d->{usage_by_key} };
my $sum = 0; $sum += $_->{requests} for values %by_key;
is $sum, $d->{usage}{requests}, 'the keys\' requests add up to the account\'s';
my $days = 0; $days += $_->{usage}{requests} for @{ $d->{usage_by_day} };
is $days, $d->{usage}{requests}, 'and so do the days\'';
my $models = 0; $models += $_->{requests} for values %{ $d->{usage_by_model} };
is $models, $d->{usage}{requests}, 'and the models\'';
is_deeply [sort keys %{ $d->{usage_by_model} }], ['gemma3:1b', 'qwen3:latest'], 'by model';
is $d->{keys}{total}, 3, 'three keys made (one by the operator)';
is $d->{keys}{active}, 1, 'one active';
like $d->{reset_at}, qr/^\d{4}-\d\d-01T00:00:00Z$/, 'the reset';
is $d->{remaining}{output_tokens}, 500000 - $d->{usage}{output_tokens}, 'remaining: the plan less the usage';

# --- the operator: show, list, update, suspend, resume, delete
$r = $t->admin('GET', "/admin/accounts/$A");
is $r->{status}, 200, 'GET /admin/accounts/ID';
is $r->{json}{data}{usage}{requests}, $d->{usage}{requests}, 'the operator sees the same usage';
Nebula::Test::is_error($t->admin('GET', '/admin/accounts/0123456789abcdef'), 404, 'invalid_request_error',
                       'account_not_found', 'an unknown account: 404', 'id');
$r = $t->admin('GET', '/admin/accounts?plan=developer');
is_deeply [map { $_->{id} } @{ $r->{json}{data} }], [$A], 'listed by plan';
$r = $t->admin('GET', '/admin/accounts?name=acme');
is_deeply [map { $_->{id} } @{ $r->{json}{data} }], [$A], 'found by a part of its name, any case';
$r = $t->admin('GET', '/admin/accounts?limit=1');
is scalar @{ $r->{json}{data} }, 1, 'a page of one';
ok $r->{json}{has_more}, 'has_more';
my $next = $t->admin('GET', "/admin/accounts?limit=1&after=$r->{json}{last_id}");
is scalar @{ $next->{json}{data} }, 1, 'the next page';
isnt $next->{json}{data}[0]{id}, $r->{json}{data}[0]{id}, 'another account';
ok !$next->{json}{has_more}, 'and the last';

$r = $t->admin('PATCH', "/admin/accounts/$A", { plan => 'pro', limits => { requests_per_minute => 1000 } });
is $r->{status}, 200, 'PATCH /admin/accounts/ID';
is $r->{json}{data}{plan}, 'pro', 'the plan changed';
$r = ask($first->{key});
is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 3000000, 'the next request has the new plan\'s quota';
is usage_of($A, $d->{usage}{requests} + 1)->{requests}, $d->{usage}{requests} + 1,
    'the month\'s usage kept across the change';

# suspend with leases held: refused within a second, on every key
for (1 .. 3) { ask($first->{key}) }
$r = $t->admin('POST', "/admin/accounts/$A/suspend");
is $r->{json}{data}{status}, 'suspended', 'suspended';
my $refused_at;
for my $i (1 .. 40 * $Nebula::Test::TIME_SCALE) {
    my $s = ask($first->{key})->{status};
    if ($s == 403) { $refused_at = $i; last }
    select undef, undef, undef, 0.05;
}
ok $refused_at, 'a suspended account\'s key is refused within two seconds, leases or not';
Nebula::Test::is_error(ask($first->{key}), 403, 'permission_error', 'account_suspended', 'account_suspended');
is $t->get('/v1/account', as($mkey))->{status}, 200, 'the holder still reads the account';
Nebula::Test::is_error($t->get('/v1/key', as($first->{key})), 403, 'permission_error', 'account_suspended',
                       'its keys are refused on /v1/key too');
is $t->get('/api/tags', as($first->{key}))->{status}, 403, 'and on /api/tags';
Nebula::Test::is_error($t->request('POST', '/v1/keys', body => { name => 'x' }, as($mkey)), 403, 'permission_error',
                       'account_suspended', 'but makes no key');
$t->admin('POST', "/admin/accounts/$A/resume");
is ask($first->{key})->{status}, 200, 'resumed: served';

# keys of an account, by the operator
$r = $t->admin('POST', "/admin/accounts/$A/keys", { name => 'ops-made' });
is $r->{status}, 201, 'POST /admin/accounts/ID/keys';
is ask($r->{json}{key})->{status}, 200, 'that key works at once';
is scalar @{ $t->admin('GET', "/admin/accounts/$A/keys")->{json}{data} }, 2, 'listed by the operator';

# --- the operator's usage report: by account, key, model, day, plan; CSV
{
    my $acc = usage_of($A, 0);
    my $rep = $t->admin('GET', "/admin/usage?group_by=account");
    is $rep->{status}, 200, 'GET /admin/usage?group_by=account';
    my ($row) = grep { $_->{account} eq $A } @{ $rep->{json}{data} };
    is_deeply [@{$row}{qw(name plan requests input_tokens output_tokens)}],
        ['Acme <Inc>', 'pro', @{$acc}{qw(requests input_tokens output_tokens)}], 'the account\'s row: its usage';
    my $sum = 0; $sum += $_->{requests} for @{ $rep->{json}{data} };
    is $rep->{json}{total}{requests}, $sum, 'the total adds the rows';
    my $keys = $t->admin('GET', "/admin/usage?group_by=key&account=$A")->{json}{data};
    my $ksum = 0; $ksum += $_->{requests} for @$keys;
    is $ksum, $acc->{requests}, 'by key, one account: its keys add up to it';
    ok !grep({ $_->{account} ne $A } @$keys), 'and only its keys';
    my $models = $t->admin('GET', "/admin/usage?group_by=model&account=$A")->{json}{data};
    is_deeply [map { $_->{model} } @$models], ['gemma3:1b', 'qwen3:latest'], 'by model, sorted';
    my $days = $t->admin('GET', "/admin/usage?group_by=day&account=$A")->{json}{data};
    is $days->[-1]{requests}, $acc->{requests}, 'by day: today\'s row has this month\'s requests (all made today)';
    my $plans = $t->admin('GET', '/admin/usage?group_by=plan')->{json}{data};
    ok grep({ $_->{plan} eq 'pro' } @$plans), 'by plan';
    my $csv = $t->admin('GET', "/admin/usage.csv?group_by=key&account=$A");
    is $csv->{status}, 200, 'GET /admin/usage.csv';
    like $csv->{headers}{'content-type'}, qr{^text/csv}, 'text/csv';
    like $csv->{headers}{'content-disposition'}, qr/attachment; filename="nebula-usage-\d{4}-\d\d\.csv"/,
        'a file, named for its month';
    my @lines = split /\r\n/, $csv->{body};
    is $lines[0], 'period,account,key,name,input_tokens,output_tokens,requests,cost_usd,'
                . 'estimated_requests,estimated_input_tokens,estimated_output_tokens', 'its header';
    is scalar(@lines) - 1, scalar(@$keys), 'a line a key';
    my $hostile = $t->admin('POST', "/admin/accounts/$A/keys", { name => '=HYPERLINK("x"), "q"' });
    $csv = $t->admin('GET', "/admin/usage.csv?group_by=key&account=$A");
    like $csv->{body}, qr/,"'=HYPERLINK\(""x""\), ""q""",/, 'a name that looks like a formula is quoted and defused';
    $t->admin('DELETE', "/admin/accounts/$A/keys/$hostile->{json}{data}{id}");
    Nebula::Test::is_error($t->admin('GET', '/admin/usage?group_by=hour'), 400, 'invalid_request_error',
                           'invalid_value', 'an unknown grouping', 'group_by');
    Nebula::Test::is_error($t->admin('GET', '/admin/usage.csv?period=2026-13'), 400, 'invalid_request_error',
                           'invalid_value', 'a bad period', 'period');
    # a month of over $9,007 (2^53 picodollars): added exactly, not as a double
    my $big = $t->admin('POST', '/admin/accounts', { name => 'big', plan => 'enterprise' })->{json}{data}{id};
    my $month = $t->admin('GET', "/admin/accounts/$big")->{json}{data}{usage}{period};
    $t->redis->cli('HSET', "nb:{$big}:u:$month", cost => '9007199254740993123', req => 1);
    my $raw = $t->admin('GET', "/admin/usage?group_by=account&account=$big")->{body};
    like $raw, qr/"cost_usd":9007199\.254740993123\b/, 'a cost past 2^53 picodollars, to the picodollar';
    $raw = $t->admin('GET', "/admin/usage.csv?group_by=plan")->{body};
    like $raw, qr/^\Q$month\E,"enterprise",.*,9007199\.25474\d*,/m, 'and in the CSV by plan';
    $t->admin('DELETE', "/admin/accounts/$big");
    my $old = $t->admin('GET', '/admin/usage')->{json};
    my $osum = 0; $osum += $_->{requests} for @{ $old->{keys} };
    is $old->{total}{requests}, $osum, '/admin/usage without group_by: keys of accounts too, adding up';
}

# --- private models: unknown to a holder, as to a client; the operator's
{
    my $p = $t->request('POST', '/v1/keys', body => { name => 'ft', models => ['acme-ft:7b'] }, as($mkey));
    my $u = $t->request('POST', '/v1/keys', body => { name => 'ft', models => ['acme-zz:7b'] }, as($mkey));
    Nebula::Test::is_error($p, 400, 'invalid_request_error', 'invalid_value',
                           'a holder naming a private model: 400', 'models');
    (my $pm = Nebula::Test::error_message($p)) =~ s/acme-ft/NAME/;
    (my $um = Nebula::Test::error_message($u)) =~ s/acme-zz/NAME/;
    is $pm, $um, 'the same refusal as an unknown name';
    $t->admin('PATCH', "/admin/accounts/$A", { models => ['acme-ft:7b'] });
    my $k = $t->admin('POST', "/admin/accounts/$A/keys", { name => 'ft', models => ['acme-ft:7b'] });
    is $k->{status}, 201, 'the operator gives the account its fine-tune, and a key narrowed to it';
    is ask($k->{json}{key}, model => 'acme-ft:7b')->{status}, 200, 'which reaches it';
    Nebula::Test::is_error(ask($k->{json}{key}), 403, 'permission_error', 'model_not_allowed',
                           'and nothing else', 'model');
    is ask($first->{key}, model => 'acme-ft:7b')->{status}, 200, 'the account\'s other keys reach it too';
    $t->admin('DELETE', "/admin/accounts/$A/keys/$k->{json}{data}{id}");
    $t->admin('PATCH', "/admin/accounts/$A", { models => undef });
    is ask($first->{key}, model => 'acme-ft:7b')->{status}, 404, 'taken back: 404, as any unknown model';
}

$r = $t->admin('DELETE', "/admin/accounts/$A");
is $r->{json}{data}{status}, 'deleted', 'DELETE /admin/accounts/ID';
Nebula::Test::is_error(ask($first->{key}), 401, 'invalid_request_error', 'invalid_api_key',
                       'a deleted account\'s keys: 401');
Nebula::Test::is_error($t->get('/v1/keys', as($mkey)), 401, 'invalid_request_error', 'invalid_management_key',
                       'and its management key: 401');
ok !grep({ $_->{id} eq $A } @{ $t->admin('GET', '/admin/accounts')->{json}{data} }), 'not listed';
ok grep({ $_->{id} eq $A } @{ $t->admin('GET', '/admin/accounts?status=deleted')->{json}{data} }),
    'unless asked for by its status';
Nebula::Test::is_error($t->admin('POST', '/admin/accounts', { name => 'x' }), 400, 'invalid_request_error',
                       'missing_field', 'an account needs a plan', 'plan');
Nebula::Test::is_error($t->admin('POST', '/admin/accounts', { plan => 'free', email => 'no' }), 400,
                       'invalid_request_error', 'invalid_value', 'a bad email refused', 'email');

$t->done;
