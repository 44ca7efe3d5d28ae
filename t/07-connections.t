#!/usr/bin/perl
# Client connections: keep-alive and pipelined requests, a refusal between
# two good requests on one connection, Expect: 100-continue.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;

sub req {
    my ($body, $close) = @_;
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
         . "Authorization: Bearer " . $t->key . "\r\n"
         . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n"
         . ($close ? "Connection: close\r\n" : '') . "\r\n" . $body;
}

my $good = '{"model":"qwen3:latest","messages":[{"role":"user","content":"one"}]}';
my $stream = '{"model":"gemma3:1b","stream":true,"messages":[{"role":"user","content":"two"}]}';
my $bad = '{"model":"qwen3:latest","messages":[]}';

# three pipelined requests in one write: good, refused, streamed
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die $!;
print $s req($good) . req($bad) . req($stream, 1);
my $raw = Nebula::Test::read_until_eof($s, 10);
close $s;

my @resp = Nebula::Test::split_responses($raw);
is scalar @resp, 3, 'three answers on one connection';
is $resp[0]{status}, 200, 'first: served';
is $resp[0]{json}{model}, 'qwen3:latest', 'first: public name';
is $resp[1]{status}, 400, 'second: refused';
is $resp[1]{json}{error}{code}, 'invalid_value', 'second: the right code';
is $resp[2]{status}, 200, 'third: served after a refusal';
my @ev = Nebula::Test::sse_events($resp[2]{body});
is $ev[-1], '[DONE]', 'third: a whole stream';
is scalar(grep { ref $_ && $_->{model} eq 'gemma3:1b' } @ev), @ev - 1,
    'third: every chunk names the public model';

# Expect: 100-continue is answered before the body is sent
$s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die $!;
print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
       . "Authorization: Bearer " . $t->key . "\r\n"
       . "Content-Length: " . length($good) . "\r\nExpect: 100-continue\r\n\r\n";
my $line = <$s>;
like $line, qr{^HTTP/1\.1 100 }, '100 Continue';
<$s>;
print $s $good;
$raw = Nebula::Test::read_until_eof($s, 10);
like $raw, qr{^HTTP/1\.1 200 }, 'then the answer';

$t->done;
