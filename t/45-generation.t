#!/usr/bin/perl
# GET /v1/generation?id= (issue 13, OpenRouter's): one finished request of
# the caller's own, found by the x-request-id its response carried: model,
# tokens, cost, latency, time to first token, finish reason, status.  Kept
# for nebula_generation_ttl (3 s here), then gone; another key's is not
# found; the id checked.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch => sub { my $c = shift; $c =~ s/^(\s*nebula_lease\s.*)$/$1\n    nebula_generation_ttl 3s;/m or die; $c },
);
my $M = 'qwen3:latest';     # 0.20 and 0.60 USD per 1M tokens
my $true = JSON::PP::true;
my $msgs = [{ role => 'user', content => 'How long did it take?' }];
my $k = $t->new_key(plan => 'free');
sub auth { return (headers => { Authorization => "Bearer $_[0]{key}", %{ $_[1] // {} } }) }

sub generation {
    my ($key, $id) = @_;
    $t->wait_settled($key->{key}) or diag 'not settled';
    # the record goes with the settlement, or within a turn of the loop
    for (1 .. 50) {
        my $r = $t->get("/v1/generation?id=$id", auth($key));
        return $r if $r->{status} != 404;
        select undef, undef, undef, 0.02;
    }
    return $t->get("/v1/generation?id=$id", auth($key));
}

# ---- a JSON answer
my $r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs }, auth($k, { 'x-sim-tokens' => 5, 'x-sim-delay-ms' => 150 }));
is $r->{status}, 200, 'chat: 200';
my $id = $r->{headers}{'x-request-id'};
like $id, qr/^[0-9a-f]{32}$/, 'the response names its id';
my $g = generation($k, $id);
is $g->{status}, 200, 'GET /v1/generation: 200';
like $g->{headers}{'content-type'}, qr{^application/json}, 'JSON';
my $d = $g->{json}{data};
is $d->{id}, $id, 'the id';
is $d->{model}, $M, 'the public model';
is $d->{api_type}, 'chat', 'the API';
is $d->{streamed}, JSON::PP::false, 'not streamed';
is $d->{cancelled}, JSON::PP::false, 'not cancelled';
is $d->{status}, 200, 'its status';
is $d->{finish_reason}, 'stop', 'finished by itself';
is $d->{tokens_prompt}, $r->{json}{usage}{prompt_tokens}, "prompt tokens: the pool's";
is $d->{tokens_completion}, 5, 'completion tokens';
is $d->{usage_source}, 'reported', 'reported';
my $cost = ($d->{tokens_prompt} * 200000 + 5 * 600000) / 1e12;
ok abs($d->{total_cost} - $cost) < 1e-15, "its cost, $d->{total_cost}";
my $ku = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
is $ku->{cost_usd} + 0, $d->{total_cost} + 0, 'the cost charged';
ok $d->{time_to_first_token} >= 150, "time to first token $d->{time_to_first_token} ms: after the pool's 150 ms";
ok $d->{latency} >= $d->{time_to_first_token}, "latency $d->{latency} ms";
is $d->{generation_time}, $d->{latency} - $d->{time_to_first_token}, 'generation time: the rest';
like $d->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'created_at';

# ---- a stream stopped at its limit; a tool call; a failed pool; embeddings
$r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs, stream => $true, max_tokens => 3 },
              auth($k, { 'x-sim-tokens' => 10 }));
$d = generation($k, $r->{headers}{'x-request-id'})->{json}{data};
is_deeply [@$d{qw(streamed finish_reason tokens_completion)}], [$true, 'length', 3], 'a stream at max_tokens: length';

$r = $t->post('/api/chat', { model => $M, messages => $msgs, tools => [{ type => 'function', function => { name => 'get_weather' } }] },
              auth($k, { 'x-sim-tool-call' => 'get_weather', 'x-sim-tokens' => 0 }));
$d = generation($k, $r->{headers}{'x-request-id'})->{json}{data};
is_deeply [@$d{qw(api_type finish_reason)}], ['ollama_chat', 'tool_calls'], 'a tool call: tool_calls';

$r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs }, auth($k, { 'x-sim-status' => 500 }));
is $r->{status}, 502, 'the pool fails: 502';
$d = generation($k, $r->{headers}{'x-request-id'})->{json}{data};
is_deeply [@$d{qw(status finish_reason tokens_completion)}], [502, 'error', 0], 'a failed request: its status, error';
$t->allow_error(qr/pool .* answered 500/);

# ---- another key, a wrong id, no key
my $other = $t->new_key(plan => 'free');
$r = $t->get("/v1/generation?id=$id", auth($other));
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'generation_not_found', "another key's: 404", 'id');
$r = $t->get('/v1/generation?id=' . ('0' x 32), auth($k));
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'generation_not_found', 'an unknown id: 404');
$r = $t->get('/v1/generation?id=xyz', auth($k));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value', 'a malformed id: 400', 'id');
$r = $t->get('/v1/generation', auth($k));
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'missing_required_parameter', 'no id: 400', 'id');
$r = $t->get("/v1/generation?id=$id", nokey => 1);
Nebula::Test::is_error($r, 401, 'invalid_request_error', 'invalid_api_key', 'no key: 401');
$r = $t->request('POST', "/v1/generation?id=$id", auth($k), body => {});
Nebula::Test::is_error($r, 405, 'invalid_request_error', 'method_not_allowed', 'POST: 405');

# ---- kept for nebula_generation_ttl
# records go onto the key's list, newest first, which keeps its last 1,000
# and lives the ttl and a quarter after its expiry was set; a lookup takes
# none older than the ttl
my $list = "nb:{$k->{id}}:g";
is $t->redis->cli('TYPE', $list), 'list', "the key's list of records";
is $t->redis->cli('LLEN', $list), 4, 'one a request admitted';
like $t->redis->cli('LINDEX', $list, 3), qr/^\d+ \Q$id\E \Q$k->{id}\E chat 200 stop 000 \d+ 5 \d+ \d+ \d+ \Q$M\E$/,
     'the first, last: a line of words (time, id, key, ...)';
ok $t->redis->cli('TTL', $list) <= 4, 'the list lives the ttl and a quarter, and a second';
sleep 4;
$r = $t->get("/v1/generation?id=$id", auth($k));
Nebula::Test::is_error($r, 404, 'invalid_request_error', 'generation_not_found', 'expired: 404');

$t->check_error_log;
done_testing;
