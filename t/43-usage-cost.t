#!/usr/bin/perl
# OpenRouter's usage accounting (issue 13): "usage": {"include": true} in a
# request to /v1/chat/completions or /v1/completions puts "cost", in USD,
# into the answer's usage: the JSON answer's, and a stream's usage chunk
# (which the request then gets, as OpenRouter sends it, without
# stream_options), split anywhere by the pool, and the usage chunk of a
# stream cut at its reservation.  The cost is what the key is charged.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;
my $sim = $t->sim('local');
my $M = 'qwen3:latest';     # 0.20 and 0.60 USD per 1M tokens

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}
sub auth { return (headers => { Authorization => "Bearer $_[0]{key}", %{ $_[1] // {} } }) }
# USD as the gateway writes it: picodollars, 12 decimals at most, no trailing 0
sub usd {
    my ($in, $out, $pin, $pout) = @_;
    my $pico = $in * ($pin // 200000) + $out * ($pout // 600000);
    my $s = sprintf '%d.%012d', int($pico / 1e12), $pico % 1e12;
    $s =~ s/0+$//;
    $s =~ s/\.$//;
    return $s;
}
my $true = JSON::PP::true;
my $false = JSON::PP::false;
my $msgs = [{ role => 'user', content => 'What does it cost?' }];

# ---- a JSON answer
my $k = $t->new_key(plan => 'free');
my $r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs, usage => { include => $true } },
                 auth($k, { 'x-sim-tokens' => 9 }));
is $r->{status}, 200, 'JSON: 200';
my $u = $r->{json}{usage};
ok defined $u->{cost}, 'usage has a cost';
my $want = usd($u->{prompt_tokens}, $u->{completion_tokens});
like $r->{body}, qr/"cost":\Q$want\E\}/, "the cost, $want USD, closes the usage";
is $u->{completion_tokens}, 9, 'the usage as the pool said';
is $r->{headers}{'content-length'}, length $r->{body}, 'the length counts the cost';
my $ku = usage_of($k);
is $ku->{cost_usd} + 0, $want + 0, 'the cost charged is the cost told';
is $sim->last->{body}{usage}{include}, $true, 'the pool gets the field as sent (Ollama ignores it)';

# the answer read in two pieces: held whole all the same
$r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs, usage => { include => $true } },
              auth($k, { 'x-sim-body-delay-ms' => 50 }));
is $r->{status}, 200, 'JSON in two reads: 200';
$u = $r->{json}{usage};
is $u->{cost} + 0, usd($u->{prompt_tokens}, $u->{completion_tokens}) + 0, 'JSON in two reads: the cost';

# not asked, or asked false: no cost
for my $usage (undef, { include => $false }, { include => undef }, 'yes please') {
    my $what = 'usage ' . (defined $usage ? JSON::PP->new->canonical->allow_nonref->encode($usage) : 'absent');
    $r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs, (defined $usage ? (usage => $usage) : ()) },
                  auth($k));
    is $r->{status}, 200, "$what: 200";
    ok !exists $r->{json}{usage}{cost}, "$what: no cost";
}
$r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs, usage => { include => 'yes' } }, auth($k));
is $r->{status}, 400, 'usage.include a string: 400';
is $r->{json}{error}{param}, 'usage.include', 'named';

# ---- streams, split anywhere by the pool
for my $case ([0, 0], [1, 0], [1, 1], [0, 1]) {
    my ($cost, $opts) = @$case;
    my $what = "stream, usage.include $cost, include_usage $opts";
    for my $seed (1 .. 3) {
        my $ks = $t->new_key(plan => 'free');
        $r = $t->post('/v1/chat/completions',
                      { model => $M, messages => $msgs, stream => $true,
                        ($cost ? (usage => { include => $true }) : ()),
                        ($opts ? (stream_options => { include_usage => $true }) : ()) },
                      auth($ks, { 'x-sim-tokens' => 6, 'x-sim-seed' => $seed }));
        is $r->{status}, 200, "$what, seed $seed: 200";
        my @ev = Nebula::Test::sse_events($r->{body});
        is $ev[-1], '[DONE]', "$what, seed $seed: [DONE] last";
        my @chunks = grep { ref $_ } @ev;
        ok !grep({ $_->{unparsed} } @chunks), "$what, seed $seed: every event whole JSON";
        my @uc = grep { $_->{usage} } @chunks;
        is scalar(@uc), ($cost || $opts) ? 1 : 0, "$what, seed $seed: the usage chunk when asked either way";
        my $ku2 = usage_of($ks);
        if (@uc) {
            my $cu = $uc[0]{usage};
            is $cu->{completion_tokens}, 6, "$what, seed $seed: its usage";
            if ($cost) {
                is $cu->{cost} + 0, usd($cu->{prompt_tokens}, 6) + 0, "$what, seed $seed: its cost";
                is $ku2->{cost_usd} + 0, $cu->{cost} + 0, "$what, seed $seed: charged as told";
            } else {
                ok !exists $cu->{cost}, "$what, seed $seed: no cost";
            }
        }
        is $ku2->{output_tokens}, 6, "$what, seed $seed: six charged";
    }
}

# ---- a tool call streamed: its bytes make an estimate larger than the
# count the pool reports; the cost told is still the cost charged
my $kt = $t->new_key(plan => 'free');
$r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs, stream => $true, usage => { include => $true },
                                        tools => [{ type => 'function', function => { name => 'get_weather' } }] },
              auth($kt, { 'x-sim-tool-call' => 'get_weather', 'x-sim-tokens' => 1, 'x-sim-tool-args-bytes' => 400 }));
my @tc = grep { ref $_ && $_->{usage} } Nebula::Test::sse_events($r->{body});
is scalar(@tc), 1, 'tool call stream: the usage chunk';
my $ktu = usage_of($kt);
is $ktu->{cost_usd} + 0, $tc[0]{usage}{cost} + 0, 'tool call stream: the cost told is the cost charged';
is $ktu->{output_tokens}, $tc[0]{usage}{completion_tokens}, "tool call stream: the pool's count charged";

# ---- a free model costs 0
$r = $t->post('/v1/chat/completions', { model => 'qwen/qwen3-coder:free', messages => $msgs,
                                        usage => { include => $true } }, auth($k));
is $r->{status}, 200, 'free model: 200';
like $r->{body}, qr/"cost":0\}/, 'free model: cost 0';

# ---- legacy completions, JSON and a stream
my $kc = $t->new_key(plan => 'free');
$r = $t->post('/v1/completions', { model => $M, prompt => 'Once upon a time', max_tokens => 5,
                                   usage => { include => $true } }, auth($kc));
is $r->{status}, 200, 'completions JSON: 200';
$u = $r->{json}{usage};
is $u->{cost} + 0, usd($u->{prompt_tokens}, 5) + 0, 'completions JSON: the cost';
$r = $t->post('/v1/completions', { model => $M, prompt => 'Once upon a time', stream => $true,
                                   usage => { include => $true } },
              auth($kc, { 'x-sim-tokens' => 4, 'x-sim-seed' => 9 }));
my @uc = grep { ref $_ && $_->{usage} } Nebula::Test::sse_events($r->{body});
is scalar(@uc), 1, 'completions stream: the usage chunk';
is $uc[0]{usage}{cost} + 0, usd($uc[0]{usage}{prompt_tokens}, 4) + 0, 'completions stream: its cost';

# ---- native and other APIs: "usage" is none of theirs
$r = $t->post('/api/chat', { model => $M, messages => $msgs, stream => $false, usage => { include => $true } }, auth($k));
is $r->{status}, 200, '/api/chat with usage: 200';
ok !exists $r->{json}{cost} && !exists $r->{json}{usage}, '/api/chat: nothing added';

# ---- a stream cut at its reservation: its usage chunk has the cost too
my $kl = $t->new_key(plan => 'free', limits => { output_tokens => 4 });
$r = $t->post('/v1/chat/completions', { model => $M, messages => $msgs, stream => $true, max_tokens => 100,
                                        usage => { include => $true } },
              auth($kl, { 'x-sim-ignore-cap' => 1, 'x-sim-tokens' => 30, 'x-sim-seed' => 4 }));
is $r->{status}, 200, 'cut stream: 200';
my @ev = Nebula::Test::sse_events($r->{body});
is $ev[-1], '[DONE]', 'cut stream: ends with [DONE]';
@uc = grep { ref $_ && $_->{usage} } @ev;
is scalar(@uc), 1, 'cut stream: one usage chunk';
is $uc[0]{usage}{completion_tokens}, 4, 'cut stream: the 4 reserved';
is $uc[0]{usage}{cost} + 0, usd($uc[0]{usage}{prompt_tokens}, 4) + 0, 'cut stream: their cost';
my $kl_u = usage_of($kl);
is $kl_u->{cost_usd} + 0, $uc[0]{usage}{cost} + 0, 'cut stream: charged as told';

$t->allow_error(qr/streamed past the 4 tokens it was asked for/);
$t->check_error_log;
done_testing;
