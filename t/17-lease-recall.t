#!/usr/bin/perl
# Leases on two workers, a key near its quota: what one worker's lease
# sits on unused is not lost to the key's requests on the other.  When
# Redis refuses a request for want of quota while leases hold unused
# blocks of the key, the worker asks every worker back for them (the
# change feed), and they return within a second, not when the leases
# would have ended (5 s).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(sleep time);
use Nebula::Test;

my $t = Nebula::Test->new(workers => 2, lease => 1);
my $month = strftime('%Y-%m', gmtime);
my $k = $t->new_key(plan => 'developer', name => 'recall',
                    limits => { input_tokens => 100000, output_tokens => 6000 });

sub ask {
    my (%o) = @_;
    return $t->post('/v1/chat/completions',
                    { model => 'qwen3:latest', messages => [{ role => 'user', content => 'hi' }],
                      %{ $o{body} // {} } },
                    headers => { Authorization => "Bearer $k->{key}", %{ $o{headers} // {} } });
}

sub hget { $t->redis->cli('HGET', "nb:{$k->{id}}:u:$month", $_[0]) || 0 }

# both workers get a lease: small requests, at once, until two blocks are
# held (a new connection a request: either worker may take it)
my $blocks = 0;
for (1 .. 20) {
    my @p;
    for (1 .. 4) {
        my $pid = fork // die;
        if (!$pid) { ask(body => { max_tokens => 1 }, headers => { 'x-sim-tokens' => 1 }); POSIX::_exit(0) }
        push @p, $pid;
    }
    waitpid $_, 0 for @p;
    $blocks = () = $t->redis->cli('ZRANGE', "nb:{$k->{id}}:res:$month", 0, -1) =~ /^L/mg;
    last if $blocks >= 2;
}
is $blocks, 2, 'two workers, a lease each';

# a request that takes all Redis can give, and writes it all
my $r = ask(headers => { 'x-sim-tokens' => 100000 });
is $r->{status}, 200, 'a request takes the rest';

# now a request that asks Redis is refused, though leases sit on tokens;
# sent until one lands on a worker whose lease cannot cover it
my ($refused, $said);
for (1 .. 40) {
    $r = ask(body => { max_tokens => 2000 });
    if ($r->{status} == 429) {
        $refused = time;
        $said = $r->{headers}{'x-ratelimit-remaining-output-tokens'};
        last;
    }
}
ok $refused, 'a request refused for want of quota';
ok $said > 0, "while leases sit on unused tokens ($said)";

# the leases give them back within a second
my $back;
while (time - $refused < 4) {
    if (hget('lout') == 0) { $back = time - $refused; last }
    sleep 0.05;
}
ok defined $back, 'the unused blocks came back';
ok defined $back && $back < 1.2, sprintf('within a second (%.2f s), not when the leases end',
                                         $back // -1);

# and what they held is the key's again
my $left = $t->get('/v1/key', headers => { Authorization => "Bearer $k->{key}" })->{json}{data}{remaining};
ok $left->{output_tokens} > 0, "the key has $left->{output_tokens} output tokens again";
$r = ask(body => { max_tokens => $left->{output_tokens} });
is $r->{status}, 200, 'and a request for them is served';

ok $t->wait_settled($k->{key}, 8), 'settled';
my $u = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
ok $u->{output_tokens} <= 6000, "never past the quota ($u->{output_tokens} of 6000)";

$t->done;
