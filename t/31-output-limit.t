#!/usr/bin/perl
# Output beyond the reservation (issue 11, item 6).  A pool that streams
# past the max_tokens (num_predict) it was sent is cut where the
# reservation ends, and the client gets a proper end: the finish reason
# "length", its usage chunk when it asked for one, [DONE]; natively a last
# line with "done": true.  An honest pool that stops there is untouched:
# its own last chunk and usage pass, byte for byte.  A JSON answer that
# reports more than was reserved is charged the reservation.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;
my $limit = 7;

sub usage_of {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

sub ask {
    my ($path, $body, %h) = @_;
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post($path, $body, headers => { Authorization => "Bearer $k->{key}", %h });
    return ($r, $k);
}

my $msgs = [{ role => 'user', content => 'tell me everything' }];

# ---- /v1 streams, with and without the usage chunk, split anywhere
for my $usage (0, 1) {
    for my $seed (1 .. 3) {
        my $what = "SSE, include_usage $usage, seed $seed";
        my ($r, $k) = ask('/v1/chat/completions',
            { model => 'qwen3:latest', stream => JSON::PP::true, max_tokens => $limit, messages => $msgs,
              ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()) },
            'x-sim-ignore-cap' => 1, 'x-sim-tokens' => 40, 'x-sim-seed' => $seed);
        is $r->{status}, 200, "$what: 200";
        ok $r->{chunked_complete}, "$what: the response ends properly";
        my @ev = Nebula::Test::sse_events($r->{body});
        is $ev[-1], '[DONE]', "$what: [DONE] last";
        my @text = grep { ref $_ && @{ $_->{choices} // [] } && length($_->{choices}[0]{delta}{content} // '') } @ev;
        is scalar(@text), $limit, "$what: $limit tokens, no more";
        my ($fin) = grep { ref $_ && @{ $_->{choices} // [] } && $_->{choices}[0]{finish_reason} } @ev;
        is $fin && $fin->{choices}[0]{finish_reason}, 'length', "$what: finish_reason length";
        is $fin && $fin->{model}, 'qwen3:latest', "$what: its model is the public name";
        my @u = grep { ref $_ && $_->{usage} } @ev;
        is scalar(@u), $usage, "$what: a usage chunk only if asked";
        is $u[0]{usage}{completion_tokens}, $limit, "$what: which says $limit" if $usage;
        ok !grep({ ref $_ && $_->{unparsed} } @ev), "$what: every event is whole JSON";
        my $u = usage_of($k);
        is $u->{output_tokens}, $limit, "$what: $limit charged";
    }
}
like $t->error_log, qr/nebula: pool "ollama_local" streamed past the $limit tokens it was asked for \(model "qwen3:latest"\): cut there/,
    'error.log names the pool';
$t->allow_error(qr/streamed past the \d+ tokens it was asked for/);

# ---- native streams
for my $path ('/api/chat', '/api/generate') {
    for my $seed (1 .. 2) {
        my $what = "$path, seed $seed";
        my ($r, $k) = ask($path,
            { model => 'qwen3:latest', options => { num_predict => $limit },
              ($path eq '/api/chat' ? (messages => $msgs) : (prompt => 'tell me everything')) },
            'x-sim-ignore-cap' => 1, 'x-sim-tokens' => 40, 'x-sim-seed' => $seed);
        is $r->{status}, 200, "$what: 200";
        ok $r->{chunked_complete}, "$what: the response ends properly";
        my @lines = Nebula::Test::ndjson_lines($r->{body});
        ok !grep({ $_->{unparsed} } @lines), "$what: every line is whole JSON";
        my @text = grep { !$_->{done} && length($path eq '/api/chat' ? $_->{message}{content} : $_->{response}) } @lines;
        is scalar(@text), $limit, "$what: $limit tokens, no more";
        my $last = $lines[-1];
        ok $last->{done}, "$what: done last";
        is $last->{done_reason}, 'length', "$what: done_reason length";
        is $last->{eval_count}, $limit, "$what: eval_count $limit";
        is $last->{model}, 'qwen3:latest', "$what: the public name";
        is usage_of($k)->{output_tokens}, $limit, "$what: $limit charged";
    }
}

# ---- an honest pool that stops at the cap: nothing changed
for my $usage (0, 1) {
    my $what = "honest pool, include_usage $usage";
    my ($r, $k) = ask('/v1/chat/completions',
        { model => 'qwen/qwen3-coder:free', stream => JSON::PP::true, max_tokens => $limit, messages => $msgs,
          ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()) },
        'x-sim-tokens' => 40, 'x-sim-seed' => 9);
    my $sim = $t->sim('local')->last;
    (my $want = $sim->{sent}) =~ s/"model":"qwen3-coder:30b"/"model":"qwen\/qwen3-coder:free"/g;
    $want =~ s/data: \{[^\n]*"choices":\[\],"usage"[^\n]*\n\n//g unless $usage;
    is $r->{body}, $want, "$what: the client got the pool's bytes";
    my $u = usage_of($k);
    is $u->{output_tokens}, $limit, "$what: $limit charged";
    is $u->{estimated_requests}, 0, "$what: as the pool reported";
}
{
    my ($r, $k) = ask('/api/chat', { model => 'qwen3:latest', options => { num_predict => $limit }, messages => $msgs },
                      'x-sim-tokens' => 40, 'x-sim-seed' => 4);
    my $sim = $t->sim('local')->last;
    is $r->{body}, $sim->{sent}, 'honest native pool: the client got the pool\'s bytes';
    is usage_of($k)->{estimated_requests}, 0, 'honest native pool: as reported';
}

# ---- a JSON answer past its reservation: charged the reservation
{
    my ($r, $k) = ask('/v1/chat/completions', { model => 'qwen3:latest', max_tokens => $limit, messages => $msgs },
                      'x-sim-ignore-cap' => 1, 'x-sim-tokens' => 40);
    is $r->{status}, 200, 'JSON past the cap: passed';
    is $r->{json}{usage}{completion_tokens}, 40, 'as the pool sent it';
    is usage_of($k)->{output_tokens}, $limit, 'charged the reservation';
    $t->allow_error(qr/reported more output than it could have used/);
}

# ---- a public name as long as a name may be (255 bytes): the stream's
# last words name it twice, and still end whole, [DONE] last
{
    my $long = 'org/' . ('a' x 244) . ':latest';    # 255 bytes
    my $t2 = Nebula::Test->new(patch_catalog => sub {
        $_[0] . "\nnebula_model  $long\n"
              . "              pool=ollama_local  upstream_model=qwen3:latest\n"
              . "              context=32768  input_price=0.20  output_price=0.60\n"
              . "              max_output=8192  group=basic;\n" });
    $t2->allow_error(qr/streamed past the \d+ tokens it was asked for/);
    my $k = $t2->new_key(plan => 'enterprise');
    my $r = $t2->post('/v1/chat/completions',
        { model => $long, stream => JSON::PP::true, max_tokens => $limit, messages => $msgs,
          stream_options => { include_usage => JSON::PP::true } },
        headers => { Authorization => "Bearer $k->{key}", 'x-sim-ignore-cap' => 1,
                     'x-sim-tokens' => 40 });
    is $r->{status}, 200, 'a 255-byte name: 200';
    my @ev = Nebula::Test::sse_events($r->{body});
    is $ev[-1], '[DONE]', 'a 255-byte name: cut, [DONE] last';
    ok !grep({ ref $_ && $_->{unparsed} } @ev), 'a 255-byte name: every event is whole JSON';
    my @u = grep { ref $_ && $_->{usage} } @ev;
    is $u[0] && $u[0]{model}, $long, 'a 255-byte name: the usage chunk names it';
    $t2->finish;
}

$t->done;
