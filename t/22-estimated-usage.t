#!/usr/bin/perl
# Usage the pool did not report (issue 4): an Ollama older than 0.5.2 never
# sends the usage chunk of a stream, and a cached prompt comes without
# prompt_eval_count (or with prompt_tokens 0).  The settlement then charges
# the tokens streamed and the prompt estimate, and says so: in the Redis
# record (est_req, est_in, est_out), the admin API and the access log.
# A stream that ends before its first token is charged nothing, however
# many bytes without a token (a comment, a role chunk) came first.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;
$t->allow_error(qr/upstream prematurely closed/);

sub access_log {
    open my $f, '<', $t->dir . '/logs/access.log' or return;
    return map { Nebula::Test::json_decode($_) } grep { /^\{/ } <$f>;
}

sub log_of {
    my ($k) = @_;
    my @l = grep { ($_->{key_id} // '') eq $k->{id} } access_log();
    return $l[-1];
}

sub key_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json};
}

sub month_hash {
    my ($k, $what) = @_;
    my @t = gmtime;
    my $key = sprintf 'nb:{%s}:%s:%04d-%02d', $k->{id}, $what, $t[5] + 1900, $t[4] + 1;
    $key .= sprintf '-%02d', $t[3] if $what eq 'd';
    return { split /\n/, $t->redis->cli('HGETALL', $key) };
}

# the prompt estimate the admission reserved: on a fresh key, the limit
# less what remains
sub estimate_of {
    my ($r) = @_;
    return $r->{headers}{'x-ratelimit-limit-input-tokens'}
         - $r->{headers}{'x-ratelimit-remaining-input-tokens'};
}

# ---- a stream without its usage chunk (old Ollama), whether or not the
# client asked for usage: settled from the tokens streamed, estimated
for my $usage (0, 1) {
    my $k = $t->new_key(plan => 'enterprise');
    my $body = { model => 'qwen/qwen3-coder:free', stream => JSON::PP::true,
                 messages => [{ role => 'user', content => 'hello there' }],
                 ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()) };
    my $r = $t->post('/v1/chat/completions', $body,
        headers => { Authorization => "Bearer $k->{key}", 'x-sim-no-usage' => 1,
                     'x-sim-tokens' => 17, 'x-sim-seed' => 3 + $usage });
    my $sim = $t->sim('local')->last;
    my $what = "no usage chunk, include_usage $usage";
    is $r->{status}, 200, "$what: 200";
    ok $r->{chunked_complete}, "$what: complete";
    ok $sim->{include_usage}, "$what: the upstream was asked for usage";
    (my $want = $sim->{sent}) =~ s/"model":"qwen3-coder:30b"/"model":"qwen\/qwen3-coder:free"/g;
    is $r->{body}, $want, "$what: the client got the upstream's bytes, public name";
    my $est = estimate_of($r);
    # the larger of what is counted, ceil(11 / 4) + 4 + 3 = 10, and the
    # floor, a token for each 4 bytes of the body: 100 bytes (25 tokens),
    # 140 with stream_options (35)
    is length(Nebula::Test::json_encode($body)), $usage ? 140 : 100, "$what: the body's bytes";
    is $est, $usage ? 35 : 25, "$what: the prompt estimate";
    my $key = key_of($k);
    is $key->{usage}{output_tokens}, 17, "$what: the tokens streamed";
    is $key->{usage}{input_tokens}, $est, "$what: the prompt estimate charged";
    is $key->{usage}{requests}, 1, "$what: one request";
    is $key->{usage}{estimated_requests}, 1, "$what: admin API: estimated";
    is $key->{usage}{estimated_input_tokens}, $est, "$what: admin API: estimated input";
    is $key->{usage}{estimated_output_tokens}, 17, "$what: admin API: estimated output";
    my $m = $key->{usage_by_model}{'qwen/qwen3-coder:free'};
    is $m->{estimated_requests}, 1, "$what: usage_by_model: estimated";
    my $u = month_hash($k, 'u');
    is_deeply [@$u{qw(est_req est_in est_out)}], [1, $est, 17], "$what: Redis month hash";
    my $mh = month_hash($k, 'm');
    is_deeply [@$mh{map { "qwen/qwen3-coder:free|$_" } qw(est_req est_in est_out)}], [1, $est, 17],
        "$what: Redis model hash";
    my $d = month_hash($k, 'd');
    is_deeply [@$d{qw(est_req est_in est_out)}], [1, $est, 17], "$what: Redis day hash";
    my $l = log_of($k);
    is $l->{usage_source}, 'estimated', "$what: logged as estimated";
    is $l->{prompt_tokens}, $est, "$what: log prompt_tokens";
    is $l->{completion_tokens}, 17, "$what: log completion_tokens";
    my $self = $t->get('/v1/key', headers => { Authorization => "Bearer $k->{key}" });
    is $self->{json}{data}{usage}{estimated_requests}, 1, "$what: GET /v1/key says it too";
}

# ---- a reported request is not estimated
{
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', stream => JSON::PP::true,
                                               messages => [{ role => 'user', content => 'x' }] },
                     headers => { Authorization => "Bearer $k->{key}" });
    my $key = key_of($k);
    is $key->{usage}{requests}, 1, 'reported: one request';
    is $key->{usage}{estimated_requests}, 0, 'reported: not estimated';
    is $key->{usage}{estimated_input_tokens}, 0, 'reported: no estimated input';
    ok !exists month_hash($k, 'u')->{est_req}, 'reported: no est_* fields in Redis';
    is log_of($k)->{usage_source}, 'reported', 'reported: logged so';
}

# ---- a cached prompt: no prompt_eval_count natively, prompt_tokens 0 on /v1
for my $case (['/api/chat', { messages => [{ role => 'user', content => 'hello there' }] }],
              ['/api/generate', { prompt => 'hello there', stream => JSON::PP::true }],
              ['/v1/chat/completions', { messages => [{ role => 'user', content => 'hello there' }],
                                         stream => JSON::PP::true }],
              ['/api/chat', { messages => [{ role => 'user', content => 'hello there' }],
                              stream => JSON::PP::false }]) {
    my ($path, $body) = @$case;
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post($path, { model => 'gemma3:1b', %$body },
                     headers => { Authorization => "Bearer $k->{key}", 'x-sim-no-prompt-count' => 1,
                                  'x-sim-tokens' => 7 });
    my $what = $path . (exists $body->{stream} && !$body->{stream} ? ' (not streamed)' : '')
             . ' without the prompt count';
    is $r->{status}, 200, "$what: 200";
    my $est = estimate_of($r);
    ok $est > 0, "$what: an estimate ($est)";
    my $key = key_of($k);
    is $key->{usage}{input_tokens}, $est, "$what: the prompt estimate charged";
    is $key->{usage}{output_tokens}, 7, "$what: the reported output";
    is $key->{usage}{estimated_requests}, 1, "$what: estimated";
    is $key->{usage}{estimated_input_tokens}, $est, "$what: the input estimated";
    is $key->{usage}{estimated_output_tokens}, 0, "$what: the output reported, not estimated";
    my $l = log_of($k);
    is $l->{usage_source}, 'estimated', "$what: logged as estimated";
    is $l->{prompt_tokens}, $est, "$what: log prompt_tokens";
}

# ---- a stream that ends before any token is charged nothing: the bytes
# that came first (a comment, a role chunk, an empty line) carry none
for my $case (['/v1/chat/completions', { model => 'qwen3:latest', stream => JSON::PP::true,
                                         messages => [{ role => 'user', content => 'x' }] }],
              ['/api/chat', { model => 'gemma3:1b', messages => [{ role => 'user', content => 'x' }] }]) {
    my ($path, $body) = @$case;
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post($path, $body, headers => { Authorization => "Bearer $k->{key}",
                                                'x-sim-preamble' => 1, 'x-sim-fault' => 'drop:0' });
    my $what = "$path dropped before the first token";
    is $r->{status}, 200, "$what: 200 was sent";
    ok !$r->{chunked_complete}, "$what: cut short";
    like $r->{body}, qr/stopped before the answer was complete/, "$what: with an error to read";
    my $key = key_of($k);
    is $key->{usage}{input_tokens}, 0, "$what: no input charged";
    is $key->{usage}{output_tokens}, 0, "$what: no output charged";
    is $key->{usage}{cost_usd}, 0, "$what: nothing to pay";
    is $key->{usage}{requests}, 1, "$what: counted once, as a request";
    is $key->{usage}{estimated_requests}, 0, "$what: nothing estimated";
    is $key->{usage}{reserved_output_tokens}, 0, "$what: the reservation given back";
    my $l = log_of($k);
    is $l->{prompt_tokens}, 0, "$what: log prompt_tokens 0";
    is $l->{completion_tokens}, 0, "$what: log completion_tokens 0";
    is $l->{cost_usd} + 0, 0, "$what: log cost 0";
}

# ---- the same preamble on a whole stream changes nothing
{
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', stream => JSON::PP::true,
                                               messages => [{ role => 'user', content => 'x' }] },
                     headers => { Authorization => "Bearer $k->{key}", 'x-sim-preamble' => 1,
                                  'x-sim-tokens' => 5 });
    my $sim = $t->sim('local')->last;
    (my $want = $sim->{sent}) =~ s/data: \{[^\n]*"choices":\[\],"usage":\{[^\n]*\n\n//g;
    is $r->{body}, $want, 'preamble: the client gets it as sent, without the usage chunk';
    my $key = key_of($k);
    is_deeply [@{ $key->{usage} }{qw(input_tokens output_tokens estimated_requests)}],
              [$sim->{prompt_tokens}, 5, 0], 'preamble: the reported usage';
}

# ---- /admin/usage sums them
{
    my $u = $t->admin('GET', '/admin/usage')->{json};
    # two streams without usage, four cached prompts
    is $u->{total}{estimated_requests}, 6, '/admin/usage: total estimated requests';
    my ($g) = grep { $_->{model} eq 'gemma3:1b' } @{ $u->{models} };
    is $g->{estimated_requests}, 4, '/admin/usage: per model';
    ok !grep({ !exists $_->{estimated_requests} } @{ $u->{keys} }), '/admin/usage: per key';
}

$t->done;
