#!/usr/bin/perl
# Each model of the example catalog goes to its pool under its upstream
# name; the client sees the public name again, in JSON and in every
# streamed chunk however the upstream splits its frames.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;

my %catalog = (
    'qwen3:latest'             => ['local', 'qwen3:latest'],
    'gemma3:1b'                => ['local', 'gemma3:1b'],
    'qwen/qwen3-coder:free'    => ['local', 'qwen3-coder:30b'],
    'qwen3-vl:235b-cloud'      => ['cloud', 'qwen3-vl:235b'],
    'deepseek-v3.1:671b-cloud' => ['cloud', 'deepseek-v3.1:671b'],
);

for my $model (sort keys %catalog) {
    my ($pool, $upstream) = @{ $catalog{$model} };
    my $other = $pool eq 'local' ? 'cloud' : 'local';
    $t->sim($_)->reset for qw(local cloud);

    my $body = {
        model => $model,
        messages => [{ role => 'user', content => 'Hello there' }],
        temperature => 0.3,
        max_tokens => 50,
        seed => 42,
        user_field => { nested => [1, 2, 3] },
    };
    my $r = $t->post('/v1/chat/completions', $body,
                     headers => { 'x-api-key' => $t->key });

    is $r->{status}, 200, "$model: 200";
    is $r->{json}{model}, $model, "$model: public name in the JSON answer";
    like $r->{json}{choices}[0]{message}{content}, qr/^Hello/, "$model: content passed";
    unlike $r->{body}, qr/\Q"$upstream"\E/, "$model: upstream name not leaked"
        if $upstream ne $model;

    my @seen = @{ $t->sim($pool)->requests };
    is scalar @seen, 1, "$model: reached the $pool pool";
    is scalar @{ $t->sim($other)->requests }, 0, "$model: not the $other pool";
    my $got = $seen[0];
    is $got->{model}, $upstream, "$model: upstream got \"$upstream\"";
    is $got->{path}, '/v1/chat/completions', "$model: same path upstream";

    # every other field unchanged, and Content-Length right for the new body
    my %want = (%$body, model => $upstream);
    is_deeply $got->{body}, \%want, "$model: other fields unchanged";
    is $got->{headers}{'content-length'}, length($got->{raw_body}),
        "$model: Content-Length matches the rewritten body";

    # the client's key never goes upstream; the cloud pool gets its own
    unlike $got->{raw_body} . join(' ', values %{ $got->{headers} }), qr/\Q${\ $t->key }\E/,
        "$model: the client's key is nowhere upstream";
    if ($pool eq 'cloud') {
        is $got->{headers}{authorization}, 'Bearer sim-cloud-key',
            "$model: the cloud pool gets the pool's key";
    } else {
        ok !$got->{authorization}, "$model: no Authorization to the local pool";
    }
    ok !exists $got->{headers}{'x-api-key'}, "$model: no x-api-key upstream";
}

# streaming: frames split at random byte boundaries, some inside UTF-8
for my $seed (1 .. 8) {
    for my $usage (0, 1) {
        my $model = $seed % 2 ? 'qwen3:latest' : 'deepseek-v3.1:671b-cloud';
        my $r = $t->post('/v1/chat/completions', {
                model => $model, stream => JSON::PP::true,
                messages => [{ role => 'user', content => 'one two three' }],
                ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()),
            }, headers => { 'x-sim-seed' => $seed, 'x-sim-tokens' => 20 + $seed });

        my $what = "seed $seed, include_usage $usage";
        is $r->{status}, 200, "$what: 200";
        like $r->{headers}{'content-type'}, qr{^text/event-stream}, "$what: SSE";
        ok $r->{chunked_complete}, "$what: stream ended cleanly";

        my @ev = Nebula::Test::sse_events($r->{body});
        is $ev[-1], '[DONE]', "$what: ends with [DONE]";
        pop @ev;
        my @bad = grep { ref $_ ne 'HASH' || ($_->{model} // '') ne $model } @ev;
        is scalar @bad, 0, "$what: every chunk names $model";

        my $text = join '', map { $_->{choices}[0]{delta}{content} // '' } @ev;
        my $n = 20 + $seed;
        my @tok = ("Hello", " wörld", " 你好", " 🙂", " token", " nebula", " ünïcödé", " ok");
        my $want = join '', map { $tok[$_ % @tok] } 0 .. $n - 1;
        utf8::encode($want);
        my $bytes = $text; utf8::encode($bytes);
        is $bytes, $want, "$what: every token intact across split UTF-8";

        my @usage = grep { exists $_->{usage} && ref $_->{usage} eq 'HASH' } @ev;
        is scalar @usage, $usage, "$what: usage chunk only when asked";
    }
}

# keepalive to the pools: requests share upstream connections
for my $pool (qw(local cloud)) {
    my @recs = @{ $t->sim($pool)->requests };
    my %conns = map { $_->{connection} => 1 } @recs;
    ok @recs >= 8 && keys(%conns) < @recs,
        "keepalive to the $pool pool: " . @recs . ' requests on ' . keys(%conns) . ' connections';
}

# native NDJSON keeps the public name on every line
for my $path ('/api/chat', '/api/generate') {
    my $body = $path eq '/api/chat'
        ? { model => 'gemma3:1b', messages => [{ role => 'user', content => 'hi' }] }
        : { model => 'gemma3:1b', prompt => 'hi' };
    my $r = $t->post($path, $body, headers => { 'x-sim-seed' => 3 });
    is $r->{status}, 200, "$path: 200";
    like $r->{headers}{'content-type'}, qr{^application/x-ndjson}, "$path: NDJSON";
    my @lines = Nebula::Test::ndjson_lines($r->{body});
    ok @lines > 2, "$path: several lines";
    is scalar(grep { ($_->{model} // '') eq 'gemma3:1b' } @lines), scalar @lines,
        "$path: every line names the public model";
    ok $lines[-1]{done}, "$path: final line done";
    is $t->sim('local')->last->{path}, $path, "$path: same path upstream";
}

$t->done;
