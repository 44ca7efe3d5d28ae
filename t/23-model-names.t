#!/usr/bin/perl
# The client sees the public model name in every document of a response,
# whatever the upstream names it: the name it was asked for (the catalog
# keeps Ollama's name, and the filter passes the value unsplit), another
# name (an alias resolved, a tag added, one the public name begins, one
# that begins it), in JSON, SSE (with and without the usage chunk) and
# Ollama's NDJSON, with the stream split at random places; and the text
# and usage are the upstream's.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test qw(json_decode);

my $t = Nebula::Test->new;

my %apis = (
    json   => ['/v1/chat/completions', { stream => JSON::PP::false }],
    sse    => ['/v1/chat/completions', { stream => JSON::PP::true }],
    usage  => ['/v1/chat/completions', { stream => JSON::PP::true,
                                         stream_options => { include_usage => JSON::PP::true } }],
    ndjson => ['/api/chat', {}],
    gen    => ['/api/generate', {}],
);

# the documents of a body, by how the API frames them
sub documents {
    my ($api, $body) = @_;
    return (json_decode($body)) if $api eq 'json';
    return grep { ref } Nebula::Test::sse_events($body) if $api eq 'sse' || $api eq 'usage';
    return Nebula::Test::ndjson_lines($body);
}

sub text_of {
    my ($api, @docs) = @_;
    return $docs[0]{choices}[0]{message}{content} if $api eq 'json';
    return join '', map { $_->{choices} && @{ $_->{choices} } ? $_->{choices}[0]{delta}{content} // '' : '' } @docs
        if $api eq 'sse' || $api eq 'usage';
    return join '', map { $_->{message}{content} // $_->{response} // '' } @docs;
}

my $tokens = 9;
my $expected = join '', map { ("Hello", " wörld", " 你好", " 🙂", " token", " nebula", " ünïcödé", " ok")[$_ % 8] }
               0 .. $tokens - 1;

for my $case (['qwen3:latest', undef,                   'the upstream answers with the name asked for'],
              ['qwen3:latest', 'qwen3:8b',              'the upstream answers with a shorter name'],
              ['qwen3:latest', 'qwen3:latest-q4_K_M',   'with a longer name the public one begins'],
              ['qwen3:latest', 'qwen3:late',            'with a name that begins the public one'],
              ['qwen3:latest', 'qwen3:latest"x',        'with a quote in its name'],
              ['qwen/qwen3-coder:free', undef,          'a public name other than the upstream\'s'])
{
    my ($model, $answer, $what) = @$case;
    for my $api (sort keys %apis) {
        my ($path, $extra) = @{ $apis{$api} };
        my $body = { model => $model, %$extra };
        if ($path eq '/api/generate') {
            $body->{prompt} = 'hi';
        } else {
            $body->{messages} = [{ role => 'user', content => 'hi' }];
        }
        my $bad = 0;
        for my $seed (1 .. 4) {
            my $r = $t->post($path, $body, headers => { 'x-sim-tokens' => $tokens, 'x-sim-seed' => $seed,
                                                        defined $answer ? ('x-sim-answer-model' => $answer) : () });
            my @docs = documents($api, $r->{body});
            my @names = grep { defined } map { $_->{model} } @docs;
            my $ok = $r->{status} == 200 && @docs && @names == @docs
                     && !grep { $_ ne $model } @names;
            if ($api eq 'json') {
                # read whole, the answer is told with its exact length
                $ok &&= defined $r->{headers}{'content-length'}
                        && $r->{headers}{'content-length'} == length($r->{body})
                        && !defined $r->{headers}{'transfer-encoding'};
            }
            $ok &&= text_of($api, @docs) eq $expected;
            unless ($ok) {
                $bad++;
                diag "$api, seed $seed: status $r->{status}, names @names; body: "
                     . substr($r->{body}, 0, 400);
            }
        }
        ok !$bad, "$what ($api): every document names $model, the text is the upstream's";
    }
}

# a JSON answer read in two: chunked, as any body the filter changes
for my $answer (undef, 'qwen3:8b') {
    my $r = $t->post('/v1/chat/completions',
                     { model => 'qwen3:latest', messages => [{ role => 'user', content => 'hi' }] },
                     headers => { 'x-sim-tokens' => $tokens, 'x-sim-body-delay-ms' => 100,
                                  defined $answer ? ('x-sim-answer-model' => $answer) : () });
    my $j = json_decode($r->{body});
    ok $r->{status} == 200 && $j && $j->{model} eq 'qwen3:latest'
       && $j->{choices}[0]{message}{content} eq $expected
       && ($r->{headers}{'transfer-encoding'} // '') eq 'chunked'
       && !defined $r->{headers}{'content-length'},
       'an answer read in two goes chunked, whole, with the public name'
           . (defined $answer ? ' (upstream: ' . $answer . ')' : '')
        or diag "$r->{status}: " . substr($r->{raw} // $r->{body}, 0, 400);
}

# a JSON answer the pool cuts short: the client's is cut short too, the
# held header sent first; the request is settled, nothing is left held
{
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post('/v1/chat/completions',
                     { model => 'qwen3:latest', messages => [{ role => 'user', content => 'hi' }] },
                     headers => { Authorization => "Bearer $k->{key}", 'x-sim-tokens' => $tokens,
                                  'x-sim-body-delay-ms' => 'cut' });
    ok $r->{status} == 200 && ($r->{headers}{'transfer-encoding'} // '') eq 'chunked'
       && !json_decode($r->{body}),
       'an answer the pool cuts short reaches the client cut short, chunked'
        or diag "$r->{status}: " . substr($r->{body}, 0, 300);
    ok $t->wait_settled($k->{key}), 'and its reservation is settled';
}
$t->allow_error(qr/upstream prematurely closed connection/);

# what the gateway answers itself keeps its own length
my $h = $t->request('GET', '/v1/models');
ok defined $h->{headers}{'content-length'}, '/v1/models keeps its length';

# the usage the client asked for is the upstream's, in the usage chunk
my $r = $t->post('/v1/chat/completions',
                 { model => 'qwen3:latest', stream => JSON::PP::true,
                   stream_options => { include_usage => JSON::PP::true },
                   messages => [{ role => 'user', content => 'hi' }] },
                 headers => { 'x-sim-tokens' => $tokens });
my ($usage) = grep { ref && $_->{usage} } Nebula::Test::sse_events($r->{body});
is $usage->{usage}{completion_tokens}, $tokens, 'the usage chunk comes through with the name kept';

$t->done;
