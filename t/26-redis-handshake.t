#!/usr/bin/perl
# A new connection carries nothing of a request until its AUTH and SELECT
# have been answered (issue 11, item 14).  Commands pipelined behind a
# SELECT that Redis refuses run in database 0, another deployment's maybe:
# an admission there reserves another deployment's quota.  Here SELECT is
# always refused (db=99 of a Redis with 16); database 0 holds a key whose
# secret the test knows; Redis is made to sleep so that the workers'
# reconnections meet requests while SELECT waits for its answer.  Nothing
# may run in database 0, and clients get 503 quota_store_unavailable.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256_hex);
use POSIX qw(strftime);
use Socket;
use Time::HiRes qw(sleep time);
use Nebula::Test qw($TIME_SCALE);

my $t = Nebula::Test->new(
    no_nginx => 1,
);
$t->allow_error(qr/nebula: redis at "[^"]+" unavailable: SELECT refused/);

# a key in database 0, as another deployment's
my $secret = 'nb-' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 43);
my $digest = sha256_hex($secret);
my $id = substr($digest, 0, 16);
my $month = strftime('%Y-%m', gmtime);
is $t->redis->cli('HSET', "nb:{$id}:key", 'id', $id, 'digest', $digest, 'name', 'other',
                  'plan', 'enterprise', 'status', 'active', 'created', time), 6,
   'a key in database 0';

$t->start_nginx(workers => 1, patch => sub {
    $_[0] =~ s/(nebula_redis\s+\S+);/$1 db=99;/r
          =~ s/nebula_redis_timeout\s+\S+;/nebula_redis_timeout  10s;/r });

sub fire {
    my $body = Nebula::Test::json_encode({ model => 'gemma3:1b',
                                           messages => [{ role => 'user', content => 'hi' }] });
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die $!;
    connect($s, sockaddr_in($t->port, inet_aton('127.0.0.1'))) or die "connect: $!";
    syswrite $s, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                 . "Authorization: Bearer $secret\r\nContent-Type: application/json\r\n"
                 . "Content-Length: " . length($body) . "\r\n\r\n$body";
    return $s;
}

# Redis sleeps 3 s, twice; the worker reconnects every 2 s at most, and
# each time SELECT waits unanswered while requests come
my @socks;
for my $round (1 .. 2) {
    my $pid = fork // die;
    if (!$pid) {
        exec 'redis-cli', '-p', $t->redis->port, 'DEBUG', 'SLEEP', 3 * $TIME_SCALE;
        exit 127;
    }
    my $end = time + 3 * $TIME_SCALE;
    while (time < $end) {
        push @socks, fire();
        sleep 0.1;
    }
    waitpid $pid, 0;
}

my %status;
for my $s (@socks) {
    my $r = Nebula::Test::parse_response(Nebula::Test::read_all($s, 30));
    close $s;
    $status{$r->{status}}++;
    Nebula::Test::is_error($r, 503, 'api_error', 'quota_store_unavailable', 'refused: the quota store is away')
        unless $r->{status} == 503;
}
is_deeply [keys %status], [503], scalar(@socks) . ' requests while SELECT failed: all 503';

is $t->redis->cli('EXISTS', "nb:{$id}:u:$month"), 0, 'no admission ran in database 0 (no usage hash)';
is $t->redis->cli('EXISTS', "nb:{$id}:res:$month"), 0, 'no reservation in database 0';
like $t->error_log, qr/SELECT refused: ERR DB index is out of range/, 'error.log names the refused SELECT';

$t->done;
