#!/usr/bin/perl
# Exact metering of streams (issue 4): what is recorded is what the
# upstream reported, whatever the slicing, with or without the client's
# include_usage; the client receives what the upstream sent but for the
# public name and the usage chunk it did not ask for.  Streams that end
# early (client gone, upstream dropped, stalled, failed) settle once,
# correctly, and a stream cut midway ends with an error event the client
# can read.  A 10 MB stream passes and is metered exactly, in flat
# memory.  A slow stream's first token reaches the client as soon as the
# pool sends it, in both modes.  The $nebula_* variables of the access log
# hold the same numbers as the record.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use Time::HiRes qw(sleep time);
use Nebula::Test;

my $t = Nebula::Test->new(
    patch => sub {
        $_[0] =~ s{(access_log\s+logs/access\.log nebula;)}
                  {log_format metering '\$nebula_key_id|\$nebula_plan|\$nebula_prompt_tokens|\$nebula_completion_tokens|\$nebula_cost|\$nebula_usage_source';\n    access_log logs/metering.log metering;\n    $1}r;
    },
    patch_proxy => sub { $_[0] =~ s/proxy_read_timeout\s+\d+s;/proxy_read_timeout 1s;/r },
    patch_catalog => sub {
        $_[0] . "\nnebula_model  big:1  pool=ollama_local upstream_model=big:1-up context=200000"
              . " max_output=100000 input_price=0.10 output_price=0.30 group=basic;\n";
    },
);
$t->allow_error(qr/upstream prematurely closed/, qr/upstream timed out/);

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

sub access_log {
    return map { Nebula::Test::json_decode($_) } grep { /^\{/ }
           split /\n/, do { local $/; open my $f, '<', $t->dir . '/logs/access.log'; <$f> };
}

# what the client should get: the simulator's bytes, the public name back,
# and no usage chunk unless it asked
sub expected {
    my ($sent, $upstream, $public, $keep_usage) = @_;
    $sent =~ s/"model":"\Q$upstream\E"/"model":"$public"/g;
    $sent =~ s/data: \{[^\n]*"choices":\[\],"usage":\{[^\n]*\n\n//g unless $keep_usage;
    return $sent;
}

# ---- many streams, random slicing, with and without include_usage
my $k = $t->new_key(plan => 'enterprise');
my ($p, $c, $n) = (0, 0, 0);
for my $seed (1 .. 10) {
    for my $usage (0, 1) {
        my ($model, $up, $pool) = $seed % 2 ? ('qwen3:latest', 'qwen3:latest', 'local')
                                            : ('deepseek-v3.1:671b-cloud', 'deepseek-v3.1:671b', 'cloud');
        my $tokens = 5 + $seed * 3;
        my $r = $t->post('/v1/chat/completions', {
                model => $model, stream => JSON::PP::true,
                messages => [{ role => 'user', content => "seed $seed " x $seed }],
                ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()) },
            headers => { Authorization => "Bearer $k->{key}", 'x-sim-seed' => $seed * 7 + $usage,
                         'x-sim-tokens' => $tokens });
        my $sim = $t->sim($pool)->last;
        my $what = "seed $seed, include_usage $usage";
        is $r->{status}, 200, "$what: 200";
        ok $sim->{include_usage}, "$what: the upstream was asked for usage";
        is $r->{body}, expected($sim->{sent}, $up, $model, $usage),
            "$what: the client got the upstream's bytes, public name" . ($usage ? '' : ', no usage chunk');
        $p += $sim->{prompt_tokens};
        $c += $sim->{completion_tokens};
        $n++;
    }
}
for my $seed (1 .. 4) {
    for my $path ('/api/chat', '/api/generate') {
        my $body = $path eq '/api/chat'
            ? { model => 'gemma3:1b', messages => [{ role => 'user', content => "native $seed" }] }
            : { model => 'gemma3:1b', prompt => "native $seed" };
        my $r = $t->post($path, $body, headers => { Authorization => "Bearer $k->{key}",
                                                    'x-sim-seed' => $seed, 'x-sim-tokens' => 9 + $seed });
        my $sim = $t->sim('local')->last;
        is $r->{body}, expected($sim->{sent}, 'gemma3:1b', 'gemma3:1b', 1), "$path seed $seed: bytes as sent";
        $p += $sim->{prompt_tokens};
        $c += $sim->{completion_tokens};
        $n++;
    }
}
# an event larger than the gateway holds whole (64 KB), first or later in
# the stream: it goes on as it comes, the events after it are held whole
# again, and the usage chunk after them is still cut out
for my $seed (1 .. 3) {
    for my $usage (0, 1) {
        my $r = $t->post('/v1/chat/completions', {
                model => 'qwen3:latest', stream => JSON::PP::true,
                messages => [{ role => 'user', content => "long $seed" }],
                ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()) },
            headers => { Authorization => "Bearer $k->{key}", 'x-sim-seed' => $seed,
                         'x-sim-tokens' => 4 * $seed, 'x-sim-long-token' => 70000 * $seed,
                         ($seed == 3 ? ('x-sim-preamble' => 1) : ()) });
        my $sim = $t->sim('local')->last;
        my $what = "a token of " . (70000 * $seed) . " bytes, include_usage $usage";
        is $r->{status}, 200, "$what: 200";
        ok length($sim->{sent}) > 70000 * $seed, "$what: the upstream sent it";
        is $r->{body}, expected($sim->{sent}, 'qwen3:latest', 'qwen3:latest', $usage),
            "$what: the client got the upstream's bytes" . ($usage ? '' : ', no usage chunk');
        $p += $sim->{prompt_tokens};
        $c += $sim->{completion_tokens};
        $n++;
    }
}
my $u = usage_of($k);
is $u->{input_tokens}, $p, "recorded input = reported ($p)";
is $u->{output_tokens}, $c, "recorded output = reported ($c)";
is $u->{requests}, $n, "$n requests";
my @log = grep { ($_->{key_id} // '') eq $k->{id} } access_log();
is scalar(grep { $_->{usage_source} eq 'reported' } @log), $n, 'every one logged as reported';

# ---- an upstream that never sends usage: the streamed tokens, estimated
my $ke = $t->new_key(plan => 'enterprise');
$t->sim('local')->reset;
my $r = $t->post('/api/chat', { model => 'gemma3:1b', messages => [{ role => 'user', content => 'x' }] },
                 headers => { Authorization => "Bearer $ke->{key}", 'x-sim-fault' => 'drop:6' });
is $r->{status}, 200, 'dropped native stream: 200 was sent';
ok !$r->{chunked_complete}, 'nginx cuts the response short, as HTTP says a failure midway';
my @lines = Nebula::Test::ndjson_lines($r->{body});
is $lines[-1]{error}, 'The model pool stopped before the answer was complete.',
    'and a native error line it can read';
$u = usage_of($ke);
is $u->{output_tokens}, 6, 'the six tokens streamed are charged';
ok $u->{input_tokens} > 0, 'the prompt, estimated';
my ($line) = grep { ($_->{key_id} // '') eq $ke->{id} } access_log();
is $line->{usage_source}, 'estimated', 'logged as estimated';
is $line->{completion_tokens}, 6, 'log: completion_tokens';
is $u->{requests}, 1, 'dropped native stream: settled once';

# ---- the SSE stream dropped mid-way
my $kd = $t->new_key(plan => 'enterprise');
$r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', stream => JSON::PP::true,
                                        messages => [{ role => 'user', content => 'x' }] },
              headers => { Authorization => "Bearer $kd->{key}", 'x-sim-fault' => 'drop:4' });
ok !$r->{chunked_complete}, 'dropped SSE: cut short';
my @ev = Nebula::Test::sse_events($r->{body});
is $ev[-1]{error}{code}, 'upstream_error', 'with an error event last';
is scalar(grep { ref $_ && $_->{choices} } @ev), 4, 'after the four tokens';
$u = usage_of($kd);
is $u->{output_tokens}, 4, 'four tokens charged';
is $u->{requests}, 1, 'dropped SSE: settled once';

# ---- stalled past proxy_read_timeout (1 s here) after three tokens
my $ks = $t->new_key(plan => 'enterprise');
$r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', stream => JSON::PP::true,
                                        messages => [{ role => 'user', content => 'x' }] },
              headers => { Authorization => "Bearer $ks->{key}", 'x-sim-fault' => 'stall-after:3' },
              timeout => 10);
@ev = Nebula::Test::sse_events($r->{body});
is $ev[-1]{error}{code}, 'upstream_error', 'stalled: an error event after the timeout';
$u = usage_of($ks);
is $u->{output_tokens}, 3, 'three tokens charged';
is $u->{requests}, 1, 'stalled: settled once';
is $u->{reserved_output_tokens}, 0, 'stalled: the reservation given back';

# ---- 500 before any token: nothing charged
my $kf = $t->new_key(plan => 'enterprise');
$r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', stream => JSON::PP::true,
                                        messages => [{ role => 'user', content => 'x' }] },
              headers => { Authorization => "Bearer $kf->{key}", 'x-sim-fault' => '500' });
is $r->{status}, 502, 'upstream 500: 502';
$u = usage_of($kf);
is $u->{input_tokens} + $u->{output_tokens}, 0, 'nothing charged';
is $u->{requests}, 1, 'counted once';

# ---- the client leaves after K tokens of a slow stream
my $kc = $t->new_key(plan => 'enterprise');
$t->sim('local')->reset;
my $body = Nebula::Test::json_encode({ model => 'qwen3:latest', stream => JSON::PP::true,
                                       messages => [{ role => 'user', content => 'x' }] });
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die $!;
print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $kc->{key}\r\n"
       . "x-sim-fault: slow:100\r\nx-sim-tokens: 40\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
my ($got, $K) = ('', 5);
my $sel = IO::Select->new($s);
while ($sel->can_read(5 * $Nebula::Test::TIME_SCALE)) {
    last unless sysread $s, my $buf, 4096;
    $got .= $buf;
    last if (() = $got =~ /"content":"[^"]/g) >= $K;
}
close $s;
$u = usage_of($kc);
my $sent = $t->sim('local')->last->{completion_tokens};
ok $u->{output_tokens} >= $K, "client gone after $K tokens: at least $K charged ($u->{output_tokens})";
ok $u->{output_tokens} <= $sent, "and no more than the upstream sent ($sent)";
ok $u->{output_tokens} < 40, 'never the whole answer';
is $u->{reserved_output_tokens}, 0, 'the reservation is given back';
is $u->{requests}, 1, 'client gone: settled once';

# ---- a 10 MB stream passes and is metered exactly
my $kb = $t->new_key(plan => 'enterprise');
# the workers' peak resident memory (VmHWM): memory a stream takes and
# gives back at its end shows too, which the resident size after it hides
my $rss = sub {
    my $total = 0;
    for my $pid (split ' ', `pgrep -P ${\ $t->{nginx} }`) {
        open my $f, '<', "/proc/$pid/status" or next;
        while (<$f>) { $total += $1 if /^VmHWM:\s+(\d+)/ }
    }
    return $total;
};
$t->post('/v1/chat/completions', { model => 'big:1', stream => JSON::PP::true,
                                   messages => [{ role => 'user', content => 'warm up' }] },
         headers => { Authorization => "Bearer $kb->{key}", 'x-sim-tokens' => 2000, 'x-sim-split' => 'none' });
my $before = $rss->();
my $T = 45000;
$r = $t->post('/v1/chat/completions', { model => 'big:1', stream => JSON::PP::true,
                                        messages => [{ role => 'user', content => 'a long one' }] },
              headers => { Authorization => "Bearer $kb->{key}", 'x-sim-tokens' => $T,
                           'x-sim-split' => 'none' }, timeout => 120);
my $after = $rss->();
ok length($r->{body}) > 10 * 1000 * 1000, sprintf('%.1f MB streamed', length($r->{body}) / 1e6);
ok $r->{chunked_complete}, 'whole';
is scalar(() = $r->{body} =~ /"model":"big:1"/g), $T + 1, 'every chunk names the public model';
unlike $r->{body}, qr/"usage":\{/, 'no usage chunk it did not ask for';
$u = usage_of($kb);
is $u->{output_tokens}, 2000 + $T, 'metered exactly';
# 45,000 events: 50 bytes kept per event would be 2.2 MB
ok $after - $before < 2048, "worker peak memory flat over the stream (+${\ ($after - $before)} kB)";

# ---- time to first token: a slow stream's first token reaches the client
# as soon as the pool sends it, not when the stream ends, whether the
# client asked for usage (the stream passes as it comes) or not (each
# event is held until its own end, and no longer)
for my $usage (1, 0) {
    my $body = Nebula::Test::json_encode({ model => 'qwen3:latest', stream => JSON::PP::true,
        ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()),
        messages => [{ role => 'user', content => 'x' }] });
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die $!;
    binmode $s;
    syswrite $s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               . "Authorization: Bearer " . $t->key . "\r\nx-sim-fault: slow:300\r\n"
               . "x-sim-tokens: 4\r\nx-sim-seed: $usage\r\nContent-Length: " . length($body)
               . "\r\n\r\n$body";
    my ($raw, $first, $end) = ('');
    my $sel = IO::Select->new($s);
    while ($sel->can_read(5 * $Nebula::Test::TIME_SCALE)) {
        last unless sysread $s, my $buf, 65536;
        $raw .= $buf;
        # the body so far, its chunked framing taken off
        my $b = Nebula::Test::parse_response($raw)->{body} // '';
        $first //= time if $b =~ /data: \{[^\n]*"content":"Hello"[^\n]*\n\n/;
    }
    $end = time;
    close $s;
    my $r = Nebula::Test::parse_response($raw);
    my $sim = $t->sim('local')->last;
    my $what = $usage ? 'include_usage (passed as it comes)' : 'no include_usage (events held whole)';
    ok $r->{chunked_complete}, "$what: the slow stream completes";
    is scalar(@{ $sim->{token_times} }), 4, "$what: four tokens sent, 300 ms apart";
    ok defined $first, "$what: the first token arrived";
    $first //= $end;
    my $lag = $first - $sim->{token_times}[0];
    ok $lag < 0.15, sprintf("$what: first token %.0f ms after the pool sent it", $lag * 1000);
    ok $end - $first > 0.6, sprintf("$what: %.0f ms before the stream ended", ($end - $first) * 1000);
}

# ---- the $nebula_* variables in a log_format: one reported request, one
# estimated, the same numbers as the record
sub dec12 {
    my ($pico) = @_;
    my $s = sprintf '%d.%012d', int($pico / 1e12), $pico % 1e12;
    $s =~ s/0+$//;
    $s =~ s/\.$//;
    return $s;
}
my $kv = $t->new_key(plan => 'enterprise');
$t->post('/v1/chat/completions', { model => 'big:1', stream => JSON::PP::true,
                                   stream_options => { include_usage => JSON::PP::true },
                                   messages => [{ role => 'user', content => 'log me' }] },
         headers => { Authorization => "Bearer $kv->{key}", 'x-sim-tokens' => 10 });
my $P = $t->sim('local')->last->{prompt_tokens};
$u = usage_of($kv);
my $ke2 = $t->new_key(plan => 'enterprise');
$r = $t->post('/api/chat', { model => 'big:1', messages => [{ role => 'user', content => 'log me' }] },
              headers => { Authorization => "Bearer $ke2->{key}", 'x-sim-fault' => 'drop:5' });
my $E = $r->{headers}{'x-ratelimit-limit-input-tokens'} - $r->{headers}{'x-ratelimit-remaining-input-tokens'};
my $ue = usage_of($ke2);
$t->stop_nginx;   # flushes the access log
open my $mf, '<', $t->dir . '/logs/metering.log' or die $!;
my @mlog = <$mf>;
chomp @mlog;
my ($lr) = grep { /^\Q$kv->{id}\E\|/ } @mlog;
# big:1 costs 0.10 and 0.30 USD per 1M tokens: 100000 and 300000 picodollars a token
is $lr, join('|', $kv->{id}, 'enterprise', $P, 10, dec12($P * 100000 + 10 * 300000), 'reported'),
    'log_format, reported: key id, plan, prompt, completion, cost, source';
is $u->{cost_usd} + 0, dec12($P * 100000 + 10 * 300000) + 0, 'the same cost recorded';
my ($le) = grep { /^\Q$ke2->{id}\E\|/ } @mlog;
is $le, join('|', $ke2->{id}, 'enterprise', $E, 5, dec12($E * 100000 + 5 * 300000), 'estimated'),
    'log_format, estimated: the prompt estimate and the five tokens streamed';
is_deeply [$ue->{input_tokens}, $ue->{output_tokens}, $ue->{estimated_requests}], [$E, 5, 1],
    'the same numbers recorded, estimated';

$t->done;
