#!/usr/bin/perl
# Two edges started alike make different ids (issue 11, item 10).  A
# request's id names its reservation and its settlement in Redis: two
# that meet lose a settlement (the second is taken for a repeat) and leak
# a reservation.  nginx seeds random() from the pid and the time, so two
# containers started together (each master pid 1) draw the same numbers;
# here both edges' random() is made to start from one seed (a shim that
# pins srandom()), the worst case of that, and each serves the same
# requests in the same order for one key.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Nebula::Test;

my $dir = tempdir('nebula-ids-XXXXXX', TMPDIR => 1, CLEANUP => 1);
open my $c, '>', "$dir/srandom.c" or die $!;
print $c <<'C';
#define _GNU_SOURCE
#include <dlfcn.h>

/* every process seeds random() alike, whatever it asks */
void
srandom(unsigned int seed)
{
    void (*real)(unsigned int) = (void (*)(unsigned int)) dlsym(RTLD_NEXT, "srandom");

    (void) seed;
    real(1);
}
C
close $c;
system('cc', '-shared', '-fPIC', '-o', "$dir/srandom.so", "$dir/srandom.c", '-ldl') == 0
    or BAIL_OUT('cannot build the srandom() shim');
chmod 0755, $dir;

local @Nebula::Test::WRAP = ('env', "LD_PRELOAD=$dir/srandom.so", @Nebula::Test::WRAP);

my $e1 = Nebula::Test->new(workers => 1);
my $e2 = Nebula::Test->new(workers => 1, redis => $e1->redis);
my $k = $e1->new_key(plan => 'enterprise', name => 'two edges');
# the same requests on both, in the same order: one admin call more on e2
is $e2->admin('GET', "/admin/keys/$k->{id}")->{status}, 200, 'the key, seen from the second edge';

# both in flight at once: their reservations live side by side
my @socks;
for my $e ($e1, $e2) {
    my $body = Nebula::Test::json_encode({ model => 'gemma3:1b',
                                           messages => [{ role => 'user', content => 'same words' }] });
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $e->port) or die "connect: $!";
    binmode $s;
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             . "Authorization: Bearer $k->{key}\r\nContent-Type: application/json\r\n"
             . "x-sim-fault: slow:500\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    push @socks, $s;
}
my @ids;
for my $s (@socks) {
    my $r = Nebula::Test::parse_response(Nebula::Test::read_all($s, 20));
    close $s;
    is $r->{status}, 200, 'served by edge ' . (@ids + 1);
    push @ids, $r->{headers}{'x-request-id'};
}
like $ids[0], qr/^[0-9a-f]{32}$/, 'a request id';
isnt $ids[0], $ids[1], 'the two edges named their requests differently';

ok $e1->wait_settled($k->{key}), 'both settled';
my $u = $e1->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
is $u->{requests}, 2, 'both requests recorded';
is $u->{output_tokens}, 24, 'both requests\' tokens recorded';
is $u->{reserved_output_tokens}, 0, 'no reservation leaked';

$e2->finish;
$e1->done;
