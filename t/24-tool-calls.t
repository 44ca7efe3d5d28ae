#!/usr/bin/perl
# Tool calls when the pool reports no usage (issue 11): Ollama sends a
# call whole, in one chunk, so a stream that answers with one is charged
# its texts (a token a chunk with text) plus the call's bytes, four a
# token: nebula_stream_output_estimate(), from the bytes of each
# tool_calls value, brackets included.  An old Ollama's /v1 stream
# without its usage chunk, and a stream the pool cut after the call
# (/v1, native NDJSON), are estimated so; with usage reported the counts
# reported are charged, to the token, whatever the call's size.  (The
# estimate is charged where ngx_nebula_usage() takes it from
# nebula_stream_output_estimate(), not content_docs alone.)
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(ceil);
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

# the prompt estimate the admission reserved: on a fresh key, the limit
# less what remains
sub estimate_of {
    my ($r) = @_;
    return $r->{headers}{'x-ratelimit-limit-input-tokens'}
         - $r->{headers}{'x-ratelimit-remaining-input-tokens'};
}

# The bytes of every tool_calls value in what the pool sent (its
# documents are one line each): from its opening bracket to the one that
# closes it, strings and their escapes skipped.
sub tool_bytes {
    my ($sent) = @_;
    utf8::encode($sent) if utf8::is_utf8($sent);
    my $n = 0;
    while ($sent =~ /"tool_calls":([\[\{])/g) {
        my ($start, $depth, $in_string, $i) = ($-[1], 0, 0, $-[1]);
        for (; $i < length $sent; $i++) {
            my $c = substr $sent, $i, 1;
            if ($in_string) {
                if ($c eq '\\') { $i++ } elsif ($c eq '"') { $in_string = 0 }
                next;
            }
            if ($c eq '"') { $in_string = 1 }
            elsif ($c eq '[' || $c eq '{') { $depth++ }
            elsif ($c eq ']' || $c eq '}') { last if --$depth == 0 }
        }
        $n += $i + 1 - $start;
        pos($sent) = $i + 1;
    }
    return $n;
}

# the documents that carried text: SSE events and NDJSON lines
sub text_docs {
    my ($sent, $sse) = @_;
    my @docs = $sse ? grep { ref } Nebula::Test::sse_events($sent) : Nebula::Test::ndjson_lines($sent);
    return scalar grep {
        my $text = $sse ? ($_->{choices} // [])->[0]{delta}{content} : ($_->{message} // {})->{content};
        defined $text && length $text
    } @docs;
}

my $msgs = [{ role => 'user', content => 'what is the weather in Paris' }];

# ---- no usage: an old Ollama's /v1 stream (no usage chunk, asked for or
# not), and streams the pool cut after the call: /v1 and native.  With
# text before the call, and a bare call (no text: today charged nothing).
my @cases = (
    ['/v1 no usage chunk', '/v1/chat/completions', 1, { 'x-sim-no-usage' => 1 }, 0],
    ['/v1 no usage chunk, include_usage', '/v1/chat/completions', 1, { 'x-sim-no-usage' => 1 }, 1],
    ['/v1 cut after the call', '/v1/chat/completions', 1, { 'x-sim-fault' => 'drop:4' }, 0],
    ['/api/chat cut after the call', '/api/chat', 0, { 'x-sim-fault' => 'drop:4' }, 0],
);
for my $case (@cases) {
    for my $tokens (3, 0) {
        my ($name, $path, $sse, $h, $usage) = @$case;
        my %h = %$h;
        $h{'x-sim-fault'} = 'drop:' . ($tokens + 1) if $h{'x-sim-fault'};
        my $k = $t->new_key(plan => 'enterprise');
        my $r = $t->post($path, {
                model => 'qwen3:latest', messages => $msgs,
                ($sse ? (stream => JSON::PP::true) : ()),
                ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()) },
            headers => { Authorization => "Bearer $k->{key}", 'x-sim-tool-call' => 'get_weather',
                         'x-sim-tool-args-bytes' => 150, 'x-sim-tokens' => $tokens,
                         'x-sim-seed' => 5 + $tokens, %h });
        my $sim = $t->sim('local')->last;
        my $what = "$name, $tokens tokens before the call";
        is $r->{status}, 200, "$what: 200";
        my $bytes = tool_bytes($sim->{sent});
        my $docs = text_docs($sim->{sent}, $sse);
        # the call's value: 150 bytes of arguments and its framing
        ok $bytes > 150, "$what: the pool sent a call ($bytes bytes)";
        is $docs, $tokens, "$what: and $tokens chunks of text";
        my $want = $docs + ceil($bytes / 4);
        my $est = estimate_of($r);
        my $key = key_of($k);
        is $key->{usage}{output_tokens}, $want, "$what: output charged: texts + ceil(bytes / 4) = $want";
        is $key->{usage}{input_tokens}, $est, "$what: the prompt estimate charged";
        is $key->{usage}{estimated_requests}, 1, "$what: estimated";
        is $key->{usage}{estimated_output_tokens}, $want, "$what: the output estimated";
        my $l = log_of($k);
        is $l->{usage_source}, 'estimated', "$what: logged as estimated";
        is $l->{completion_tokens}, $want, "$what: log completion_tokens";
    }
}

# ---- usage reported: the counts reported are charged, to the token; the
# call's bytes change nothing (the pool counts the call's tokens itself)
for my $case (['/v1 stream', '/v1/chat/completions', { stream => JSON::PP::true }],
              ['/v1 stream, include_usage', '/v1/chat/completions',
               { stream => JSON::PP::true, stream_options => { include_usage => JSON::PP::true } }],
              ['/v1 JSON', '/v1/chat/completions', {}],
              ['/api/chat stream', '/api/chat', {}],
              ['/api/chat JSON', '/api/chat', { stream => JSON::PP::false }]) {
    my ($name, $path, $extra) = @$case;
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post($path, { model => 'qwen3:latest', messages => $msgs, %$extra },
                     headers => { Authorization => "Bearer $k->{key}", 'x-sim-tool-call' => 'get_weather',
                                  'x-sim-tool-args-bytes' => 400, 'x-sim-tokens' => 2 });
    my $sim = $t->sim('local')->last;
    my $what = "$name, usage reported";
    is $r->{status}, 200, "$what: 200";
    my $bytes = tool_bytes($r->{body});
    ok $bytes > 400, "$what: the client got the call ($bytes bytes)";
    # 2 tokens of text, the call 10 + 400 / 4: not what the bytes estimate
    is $sim->{completion_tokens}, 112, "$what: the pool counted 112 tokens";
    isnt 2 + ceil($bytes / 4), 112, "$what: (the estimate would differ)";
    my $key = key_of($k);
    is $key->{usage}{output_tokens}, 112, "$what: the reported output charged";
    is $key->{usage}{input_tokens}, $sim->{prompt_tokens}, "$what: the reported input charged";
    is $key->{usage}{estimated_requests}, 0, "$what: not estimated";
    is log_of($k)->{usage_source}, 'reported', "$what: logged as reported";
}

$t->done;
