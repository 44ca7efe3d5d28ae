#!/usr/bin/perl
# Plans and monthly quotas (contract.md section 2): model access by plan and
# by key, the per-minute limit, insufficient_quota, max_tokens clamped to
# what is left, the x-ratelimit-* headers, exact settlement with cost, and
# a fresh quota when the month turns (the clock is moved by a header).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use Nebula::Test;

my $t = Nebula::Test->new(
    patch => sub { $_[0] =~ s/(nebula_redis_failure\s+closed;)/$1\n    nebula_test_clock     on;/r },
    patch_catalog => sub {
        $_[0] . "\nnebula_model  acme-ft:7b  pool=ollama_local upstream_model=acme-ft:7b-q4"
              . " context=8192 input_price=1.00 output_price=2.00 private;\n";
    },
);
my $chat = '/v1/chat/completions';
my $bad = 'invalid_request_error';

sub ask {
    my ($key, $model, %o) = @_;
    my $body = { model => $model, messages => [{ role => 'user', content => $o{text} // 'hello there' }],
                 %{ $o{body} // {} } };
    return $t->post($o{path} // $chat, $body, headers => {
        Authorization => "Bearer $key", %{ $o{headers} // {} } });
}

# --- model access by plan
my %plan_models = (
    free       => { 'qwen3:latest' => 1, 'gemma3:1b' => 1, 'qwen/qwen3-coder:free' => 1,
                    'deepseek-v3.1:671b-cloud' => 0, 'qwen3-vl:235b-cloud' => 0 },
    developer  => { 'qwen3:latest' => 1, 'deepseek-v3.1:671b-cloud' => 1, 'qwen3-vl:235b-cloud' => 0 },
    pro        => { 'deepseek-v3.1:671b-cloud' => 1, 'qwen3-vl:235b-cloud' => 1 },
    enterprise => { 'qwen3:latest' => 1, 'deepseek-v3.1:671b-cloud' => 1, 'qwen3-vl:235b-cloud' => 1 },
);
for my $plan (sort keys %plan_models) {
    my $key = $t->new_key(plan => $plan)->{key};
    for my $model (sort keys %{ $plan_models{$plan} }) {
        my $r = ask($key, $model);
        if ($plan_models{$plan}{$model}) {
            is $r->{status}, 200, "$plan reaches $model";
        } else {
            Nebula::Test::is_error($r, 403, 'permission_error', 'model_not_allowed',
                                   "$plan does not reach $model", 'model');
        }
    }
}

# a refusal of a known key carries the x-ratelimit-* headers too
{
    my $fk = $t->new_key(plan => 'free')->{key};
    my $r = ask($fk, 'deepseek-v3.1:671b-cloud');
    Nebula::Test::is_error($r, 403, 'permission_error', 'model_not_allowed', '403 for the headers');
    my $h = $r->{headers};
    is $h->{'x-ratelimit-limit-input-tokens'}, 100000, '403: limit-input-tokens';
    is $h->{'x-ratelimit-remaining-input-tokens'}, 100000, '403: remaining-input-tokens';
    is $h->{'x-ratelimit-limit-output-tokens'}, 20000, '403: limit-output-tokens';
    is $h->{'x-ratelimit-remaining-output-tokens'}, 20000, '403: remaining-output-tokens';
    is $h->{'x-ratelimit-limit-requests'}, 20, '403: limit-requests';
    is $h->{'x-ratelimit-remaining-requests'}, 20, '403: remaining-requests (a refused model is not counted)';
    like $h->{'x-ratelimit-reset-tokens'}, qr/^(\d+d)?(\d+h)?(\d+m)?\d+s$/, '403: reset-tokens';
    ok !exists $h->{'retry-after'}, '403: no retry-after';
    $r = ask($fk, 'qwen3:latest');
    is $r->{headers}{'x-ratelimit-remaining-requests'}, 19, 'the next request is the first counted';
    $r = $t->post($chat, { model => 'qwen3:latest', messages => [{ role => 'user', content => 'hi' }] },
                  headers => { Authorization => 'Bearer nb-' . ('z' x 43) });
    Nebula::Test::is_error($r, 401, $bad, 'invalid_api_key', '401: unauthenticated');
    ok !grep({ /^x-ratelimit/ } keys %{ $r->{headers} }), '401: no x-ratelimit headers';
}

# --- a private model: only the keys that list it, and unknown to others
my $ent = $t->new_key(plan => 'enterprise')->{key};
my $own = $t->new_key(plan => 'enterprise', models => ['acme-ft:7b'])->{key};
Nebula::Test::is_error(ask($ent, 'acme-ft:7b'), 404, $bad, 'model_not_found',
                       'a private model is unknown to other keys', 'model');
my $r = ask($own, 'acme-ft:7b');
is $r->{status}, 200, 'the key that lists it reaches it';
is $r->{json}{model}, 'acme-ft:7b', 'under its public name';
is $t->sim('local')->last->{model}, 'acme-ft:7b-q4', 'sent as the upstream\'s name';
my $dev_extra = $t->new_key(plan => 'free', models => ['deepseek-v3.1:671b-cloud'])->{key};
is ask($dev_extra, 'deepseek-v3.1:671b-cloud')->{status}, 200, 'a key\'s extra model beyond its plan';
sub tags { [ sort map { $_->{name} } @{ $t->get('/api/tags', headers => { Authorization => "Bearer $_[0]" })
                                          ->{json}{models} } ] }
is_deeply tags($t->new_key(plan => 'free')->{key}),
    ['gemma3:1b', 'qwen/qwen3-coder:free', 'qwen3:latest'], '/api/tags: a free key sees the basic models';
is_deeply tags($t->new_key(plan => 'pro')->{key}), ['deepseek-v3.1:671b-cloud', 'gemma3:1b',
    'qwen/qwen3-coder:free', 'qwen3-vl:235b-cloud', 'qwen3:latest'], '/api/tags: pro sees all five';
ok !grep({ $_ eq 'acme-ft:7b' } @{ tags($ent) }), '/api/tags: not the private model of another key';
ok scalar(grep { $_ eq 'acme-ft:7b' } @{ tags($own) }), '/api/tags: the private model of its key';
Nebula::Test::is_error($t->get('/api/tags', nokey => 1), 401, $bad, 'invalid_api_key', '/api/tags needs a key');
my $listing = $t->get('/v1/models');
ok !grep({ $_->{id} eq 'acme-ft:7b' } @{ $listing->{json}{data} }), 'private models are not listed';

# --- headers on an authenticated response, all in one minute
my $minute = time;
$minute += 61 - $minute % 60 if $minute % 60 > 45;
my $k = $t->new_key(plan => 'free');
$r = ask($k->{key}, 'qwen3:latest', headers => { 'X-Nebula-Test-Time' => $minute });
my $h = $r->{headers};
is $h->{'x-ratelimit-limit-requests'}, 20, 'limit-requests: free has 20/minute';
is $h->{'x-ratelimit-remaining-requests'}, 19, 'remaining-requests';
is $h->{'x-ratelimit-limit-input-tokens'}, 100000, 'limit-input-tokens';
is $h->{'x-ratelimit-limit-output-tokens'}, 20000, 'limit-output-tokens';
my $sim = $t->sim('local')->last;
is $h->{'x-ratelimit-remaining-output-tokens'}, 20000 - $sim->{max_tokens},
    'remaining-output-tokens: after this request\'s reservation';
like $h->{'x-ratelimit-reset-tokens'}, qr/^(\d+d)?(\d+h)?(\d+m)?\d+s$/, 'reset-tokens as 6d3h12m5s';
like $h->{'x-request-id'}, qr/^[0-9a-f]{32}$/, 'x-request-id';

# the same limits on the other authenticated answers
for my $path ('/v1/key', '/api/tags') {
    my $h2 = $t->get($path, headers => { Authorization => "Bearer $k->{key}",
                                         'X-Nebula-Test-Time' => $minute })->{headers};
    is $h2->{'x-ratelimit-limit-output-tokens'}, 20000, "$path: limit-output-tokens";
    is $h2->{'x-ratelimit-limit-requests'}, 20, "$path: limit-requests";
    is $h2->{'x-ratelimit-remaining-requests'}, 19, "$path: remaining-requests of this minute";
    like $h2->{'x-ratelimit-reset-tokens'}, qr/s$/, "$path: reset-tokens";
}

# --- settlement is exact, with the cost from the model's prices
my $before = $t->get('/v1/key', headers => { Authorization => "Bearer $k->{key}" })->{json}{data}{usage};
my ($p, $c) = (0, 0);
for my $n (1 .. 5) {
    $r = ask($k->{key}, 'qwen3:latest', text => 'word ' x ($n * 3), headers => { 'x-sim-tokens' => $n * 4 });
    is $r->{status}, 200, "request $n";
    $p += $r->{json}{usage}{prompt_tokens};
    $c += $r->{json}{usage}{completion_tokens};
}
ok $t->wait_settled($k->{key}), 'settled';
my $after = $t->get('/v1/key', headers => { Authorization => "Bearer $k->{key}" })->{json}{data}{usage};
is $after->{input_tokens} - $before->{input_tokens}, $p, 'input tokens recorded = reported';
is $after->{output_tokens} - $before->{output_tokens}, $c, 'output tokens recorded = reported';
is $after->{requests} - $before->{requests}, 5, 'five requests';
# qwen3:latest: $0.20 / 1M in, $0.60 / 1M out
my $want_cost = ($after->{input_tokens} * 0.20 + $after->{output_tokens} * 0.60) / 1e6;
ok abs($after->{cost_usd} - $want_cost) < 1e-12, "cost $after->{cost_usd} = $want_cost";

# --- per-day totals: this key's requests all fell on today (UTC), so the
# day's hash holds what the month's does (unless the run straddles
# midnight UTC)
{
    my %mon = split /\n/, $t->redis->cli('HGETALL', "nb:{$k->{id}}:u:" . strftime('%Y-%m', gmtime));
    my %day = split /\n/, $t->redis->cli('HGETALL', "nb:{$k->{id}}:d:" . strftime('%Y-%m-%d', gmtime));
    ok scalar(keys %day), 'a day hash';
    is $day{$_}, $mon{$_}, "day $_ = month $_ ($mon{$_})" for qw(in out req cost);
    is $day{req}, 6, 'six requests today';
    is $day{in}, $after->{input_tokens}, 'day in = recorded input';
    is $day{out}, $after->{output_tokens}, 'day out = recorded output';
    ok $t->redis->cli('TTL', "nb:{$k->{id}}:d:" . strftime('%Y-%m-%d', gmtime)) > 0, 'the day hash expires';
}

# --- the per-minute limit: free has 20
my $rk = $t->new_key(plan => 'free')->{key};
my $now = time;
$now += 61 - $now % 60 if $now % 60 > 45;   # not across a minute boundary
my @st = map { ask($rk, 'gemma3:1b', headers => { 'X-Nebula-Test-Time' => $now })->{status} } 1 .. 20;
is scalar(grep { $_ == 200 } @st), 20, 'twenty requests in a minute pass';
ok $t->wait_settled($rk), 'the twenty settled';
my $left = $t->get('/v1/key', headers => { Authorization => "Bearer $rk" })->{json}{data}{remaining};
$r = ask($rk, 'gemma3:1b', headers => { 'X-Nebula-Test-Time' => $now });
Nebula::Test::is_error($r, 429, 'rate_limit_error', 'rate_limit_exceeded', 'the 21st is refused');
is $r->{headers}{'x-ratelimit-limit-requests'}, 20, '429 rate limit: limit-requests';
is $r->{headers}{'x-ratelimit-limit-input-tokens'}, 100000, '429 rate limit: limit-input-tokens';
is $r->{headers}{'x-ratelimit-remaining-input-tokens'}, $left->{input_tokens},
    "429 rate limit: remaining-input-tokens ($left->{input_tokens})";
is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 20000, '429 rate limit: limit-output-tokens';
is $r->{headers}{'x-ratelimit-remaining-output-tokens'}, $left->{output_tokens},
    "429 rate limit: remaining-output-tokens ($left->{output_tokens})";
like $r->{headers}{'x-ratelimit-reset-tokens'}, qr/s$/, '429 rate limit: reset-tokens';
like $r->{headers}{'retry-after'}, qr/^\d+$/, 'with retry-after';
ok $r->{headers}{'retry-after'} >= 1 && $r->{headers}{'retry-after'} <= 60, 'within the minute';
is $r->{headers}{'x-ratelimit-remaining-requests'}, 0, 'remaining-requests 0';
$r = ask($rk, 'gemma3:1b', headers => { 'X-Nebula-Test-Time' => $now + 60 });
is $r->{status}, 200, 'the next minute passes again';
my $unlimited = $t->new_key(plan => 'developer')->{key};
$r = ask($unlimited, 'gemma3:1b');
ok !exists $r->{headers}{'x-ratelimit-limit-requests'}, 'no request headers without a per-minute limit';
my $rpm_key = $t->new_key(plan => 'developer', limits => { requests_per_minute => 2 })->{key};
ask($rpm_key, 'gemma3:1b', headers => { 'X-Nebula-Test-Time' => $now }) for 1 .. 2;
$r = ask($rpm_key, 'gemma3:1b', headers => { 'X-Nebula-Test-Time' => $now });
is $r->{status}, 429, 'a key\'s own per-minute limit';

# --- output clamped to what is left; insufficient_quota when nothing is
my $q = $t->new_key(plan => 'developer', limits => { input_tokens => 1000, output_tokens => 30 });
$t->sim('local')->reset;
$r = ask($q->{key}, 'qwen3:latest', body => { max_tokens => 100 }, headers => { 'x-sim-tokens' => 8 });
is $r->{status}, 200, 'served';
is $t->sim('local')->last->{max_tokens}, 30, 'max_tokens 100 clamped to the 30 left';
# its settlement (batched) frees the reservation: on a loaded machine the
# next request could come before it and find the 30 still reserved
ok $t->wait_settled($q->{key}), 'the first settled';
$r = ask($q->{key}, 'qwen3:latest', headers => { 'x-sim-tokens' => 100 });
is $t->sim('local')->last->{max_tokens}, 22, 'no max_tokens: the 22 left are sent';
is $r->{json}{usage}{completion_tokens}, 22, 'the upstream stops there';
is $r->{json}{choices}[0]{finish_reason}, 'length', 'finish_reason length';
ok $t->wait_settled($q->{key}), 'settled';
$left = $t->get('/v1/key', headers => { Authorization => "Bearer $q->{key}" })->{json}{data}{remaining};
$r = ask($q->{key}, 'qwen3:latest');
Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota', 'no output tokens left');
is $r->{headers}{'x-ratelimit-remaining-output-tokens'}, 0, 'remaining-output-tokens 0';
is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 30, '429 quota: limit-output-tokens';
is $r->{headers}{'x-ratelimit-limit-input-tokens'}, 1000, '429 quota: limit-input-tokens';
is $r->{headers}{'x-ratelimit-remaining-input-tokens'}, $left->{input_tokens},
    "429 quota: remaining-input-tokens ($left->{input_tokens})";
ok $left->{input_tokens} > 0 && $left->{input_tokens} < 1000, 'some input used, some left';
like $r->{headers}{'x-ratelimit-reset-tokens'}, qr/s$/, '429 quota: reset-tokens';
ok !exists $r->{headers}{'x-ratelimit-limit-requests'}, '429 quota: no request headers without a limit';
my $qr = $t->new_key(plan => 'free', limits => { output_tokens => 5 })->{key};
ask($qr, 'gemma3:1b', headers => { 'x-sim-tokens' => 50 });
$r = ask($qr, 'gemma3:1b');
Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota', 'free: quota used up');
is $r->{headers}{'x-ratelimit-limit-requests'}, 20, '429 quota: limit-requests with a per-minute limit';
ok defined $r->{headers}{'x-ratelimit-remaining-requests'}, '429 quota: remaining-requests';
$t->wait_settled($q->{key});
my $u = $t->admin('GET', "/admin/keys/$q->{id}")->{json}{usage};
is $u->{output_tokens}, 30, 'exactly the quota used, never more';

# no way around the clamp: a null, or a key in another case
my $q2 = $t->new_key(plan => 'developer', limits => { output_tokens => 30 })->{key};
$r = $t->request('POST', $chat, headers => { Authorization => "Bearer $q2" },
                 body => '{"model":"qwen3:latest","messages":[{"role":"user","content":"hi"}],"max_tokens":null}');
is $r->{status}, 200, 'max_tokens null: served';
my $raw = $t->sim('local')->last->{raw_body};
is scalar(() = $raw =~ /"max_tokens"/g), 1, 'max_tokens null: one max_tokens upstream';
is $t->sim('local')->last->{max_tokens}, 30, 'and it is the clamp';
$r = $t->request('POST', $chat, headers => { Authorization => "Bearer $q2" },
                 body => '{"model":"qwen3:latest","messages":[{"role":"user","content":"hi"}],"Max_Tokens":100000}');
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'Max_Tokens: refused');
$r = $t->request('POST', $chat, headers => { Authorization => "Bearer $q2" },
                 body => '{"model":"gemma3:1b","messages":[{"role":"user","content":"hi"}],"MODEL":"acme-ft:7b-q4"}');
Nebula::Test::is_error($r, 400, $bad, 'invalid_json', 'MODEL: refused');
$r = $t->request('POST', '/api/chat', headers => { Authorization => "Bearer $q2" },
                 body => '{"model":"gemma3:1b","stream":false,"messages":[{"role":"user","content":"hi"}],"options":null}');
is $r->{status}, 200, 'options null: served';
my $np = $t->sim('local')->last->{num_predict};
ok defined $np && $np >= 1 && $np <= 30, 'options null: replaced, num_predict within the output left';

my $qi = $t->new_key(plan => 'developer', limits => { input_tokens => 20 });
$r = ask($qi->{key}, 'qwen3:latest', text => 'x' x 200);
Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota',
                       'a prompt larger than the input left');
$r = ask($qi->{key}, 'qwen3:latest', text => 'hi');
is $r->{status}, 200, 'a smaller prompt still fits';

# native: options.num_predict clamped the same way
my $nk = $t->new_key(plan => 'free', limits => { output_tokens => 7 })->{key};
$r = ask($nk, 'gemma3:1b', path => '/api/chat', body => { stream => JSON::PP::false,
                                                          options => { num_predict => 50, temperature => 0.1 } });
is $r->{status}, 200, 'native chat';
my $got = $t->sim('local')->last;
is $got->{num_predict}, 7, 'num_predict 50 clamped to 7';
is $got->{body}{options}{temperature}, 0.1, 'the other options kept';
$nk = $t->new_key(plan => 'free', limits => { output_tokens => 9 })->{key};
ask($nk, 'gemma3:1b', path => '/api/chat', body => { options => {} });
is $t->sim('local')->last->{num_predict}, 9, 'num_predict added to empty options';
$nk = $t->new_key(plan => 'free', limits => { output_tokens => 11 })->{key};
$r = $t->post('/api/generate', { model => 'gemma3:1b', prompt => 'hi' },
              headers => { Authorization => "Bearer $nk" });
is $r->{status}, 200, 'native generate';
is $t->sim('local')->last->{num_predict}, 11, 'options added where there were none';
my $final = (Nebula::Test::ndjson_lines($r->{body}))[-1];
$t->wait_settled($nk);
$u = $t->get('/v1/key', headers => { Authorization => "Bearer $nk" })->{json}{data}{usage};
is $u->{output_tokens}, $final->{eval_count}, 'native usage from eval_count';
is $u->{input_tokens}, $final->{prompt_eval_count}, 'native usage from prompt_eval_count';

# --- a new month starts a fresh quota
my $m = $t->new_key(plan => 'developer', limits => { output_tokens => 12 });
my @tm = gmtime;
my $next = POSIX::mktime(0, 0, 12, 1, ($tm[4] + 1) % 12, $tm[5] + ($tm[4] == 11)) ;
$r = ask($m->{key}, 'qwen3:latest', headers => { 'x-sim-tokens' => 50 });
is $r->{json}{usage}{completion_tokens}, 12, 'this month: 12 tokens, all of it';
$r = ask($m->{key}, 'qwen3:latest');
is $r->{status}, 429, 'this month is used up';
$r = ask($m->{key}, 'qwen3:latest', headers => { 'X-Nebula-Test-Time' => $next, 'x-sim-tokens' => 5 });
is $r->{status}, 200, 'next month: a fresh quota';
# (wait_settled reads this month: poll next month's usage instead)
my $d;
for (1 .. 200) {
    $d = $t->get('/v1/key', headers => { Authorization => "Bearer $m->{key}", 'X-Nebula-Test-Time' => $next })
           ->{json}{data};
    last if $d->{usage}{requests};
    select undef, undef, undef, 0.01;
}
$d = $t->get('/v1/key', headers => { Authorization => "Bearer $m->{key}", 'X-Nebula-Test-Time' => $next })
          ->{json}{data};
is $d->{usage}{period}, strftime('%Y-%m', gmtime $next), 'next month\'s period';
is $d->{usage}{output_tokens}, 5, 'next month\'s usage alone';

# usage per period for the admin
$r = $t->admin('GET', '/admin/usage?period=' . strftime('%Y-%m', gmtime));
is $r->{status}, 200, 'admin usage';
my ($row) = grep { $_->{id} eq $m->{id} } @{ $r->{json}{keys} };
is $row->{output_tokens}, 12, 'admin usage per key';
ok scalar(grep { $_->{model} eq 'qwen3:latest' } @{ $r->{json}{models} }), 'admin usage per model';
ok $r->{json}{total}{requests} >= 40, 'admin usage total';
Nebula::Test::is_error($t->admin('GET', '/admin/usage?period=2026-1'), 400, $bad,
                       'invalid_value', 'a bad period');

# nothing is left reserved
select undef, undef, undef, 0.2;
$r = $t->admin('GET', '/admin/keys');
is scalar(grep { $_->{usage}{reserved_input_tokens} || $_->{usage}{reserved_output_tokens} }
          @{ $r->{json}{data} }), 0, 'no reservation left on any key';

# --- x-request-id: one a request, on refusals too
my $kid = $t->new_key(plan => 'enterprise')->{key};
my @ids = map { ask($kid, 'qwen3:latest')->{headers}{'x-request-id'} } 1 .. 2;
like $ids[$_], qr/^[0-9a-f]{32}$/, "x-request-id $_" for 0, 1;
isnt $ids[0], $ids[1], 'another request, another id';
my $r401 = $t->post($chat, { model => 'qwen3:latest', messages => [{ role => 'user', content => 'x' }] },
                    headers => { Authorization => 'Bearer nb-nobody' });
like $r401->{headers}{'x-request-id'}, qr/^[0-9a-f]{32}$/, 'x-request-id on a refusal too';

$t->done;
