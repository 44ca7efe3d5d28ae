#!/usr/bin/perl
# A slow client behind small socket buffers: the response filter's buffers
# must never be reused while a filter after it still holds them, or
# chunks go out corrupted (found by review).  Both modes: shadow (the
# client asked for usage) and strip (it did not).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Socket;
use Time::HiRes qw(sleep);
use Nebula::Test;

my $t = Nebula::Test->new(
    patch_proxy => sub { $_[0] . "\nproxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 128k;\n" },
    patch => sub { $_[0] =~ s/(listen\s+[^;\s]+)/$1 sndbuf=4k/r });

my $N = $ENV{ITER} // 6;
for my $usage (1, 0) {
    my $bad = 0;
    for my $it (1 .. $N) {
        my $body = Nebula::Test::json_encode({
            model => 'qwen/qwen3-coder:free', stream => JSON::PP::true,
            ($usage ? (stream_options => { include_usage => JSON::PP::true }) : ()),
            messages => [{ role => 'user', content => 'hi' }] });
        my $req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                . "Authorization: Bearer " . $t->key . "\r\nContent-Type: application/json\r\n"
                . "x-sim-tokens: 2000\r\nx-sim-seed: $it\r\nContent-Length: " . length($body)
                . "\r\n\r\n$body";
        socket(my $s, PF_INET, SOCK_STREAM, 0) or die $!;
        # small enough that nginx meets EAGAIN, large enough that TCP does not
        # crawl (a 2 KB window with delayed ACKs took minutes on some runs)
        setsockopt($s, SOL_SOCKET, SO_RCVBUF, 16384);
        connect($s, sockaddr_in($t->port, inet_aton('127.0.0.1'))) or die "connect: $!";
        binmode $s;
        syswrite $s, $req;
        my $raw = '';
        while (1) {
            my $n = sysread($s, my $buf, 700);
            last unless $n;
            $raw .= $buf;
            sleep 0.0005 if rand() < 0.3;
        }
        close $s;
        my $r = Nebula::Test::parse_response($raw);
        my $ok = $r->{status} == 200 && $r->{chunked_complete};
        my @ev = Nebula::Test::sse_events($r->{body} // '');
        $ok &&= $ev[-1] eq '[DONE]';
        pop @ev;
        $ok &&= !grep { ref $_ ne 'HASH' || ($_->{model} // '') ne 'qwen/qwen3-coder:free' } @ev;
        $ok &&= ($usage ? 1 : 0) == scalar grep { ref $_ && $_->{usage} } @ev;
        $bad++ unless $ok;
    }
    is $bad, 0, "include_usage $usage: $N slow reads, no response corrupted";
}

$t->done;
