#!/usr/bin/perl
# nebula_lease on (the default): a key far from its quota gets a block of
# tokens with an admission, and the worker admits that key's next requests
# for the model from the block for five seconds without asking Redis.
# What must not change: recorded usage equals what the pool reported,
# request by request, and reaches Redis within a second; the upstream's
# max_tokens is what it would be without a lease; what a client is told
# remains counts no unused block as spent; revocation takes effect within
# a second; a key near its quota, or with a per-minute limit, gets no
# lease; a reload loses nothing.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX qw(strftime);
use Nebula::Test;

my $t = Nebula::Test->new(
    workers => 1,     # one worker: one lease table, so the counts are exact
    lease   => 1,     # as shipped: the harness turns leases off unless asked
);
my $chat = '/v1/chat/completions';
my $month = strftime('%Y-%m', gmtime);

sub ask {
    my ($key, %o) = @_;
    return $t->post($o{path} // $chat,
                    { model => $o{model} // 'qwen3:latest',
                      messages => [{ role => 'user', content => $o{text} // 'hello there' }],
                      %{ $o{body} // {} } },
                    headers => { Authorization => "Bearer $key", %{ $o{headers} // {} } });
}

sub evalsha_calls {
    my ($calls) = $t->redis->cli('INFO', 'commandstats') =~ /cmdstat_evalsha:calls=(\d+)/;
    return $calls // 0;
}

sub usage_of {
    my ($k) = @_;
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

sub reported {
    my ($key) = @_;
    my ($in, $out, $n) = (0, 0, 0);
    for my $rec (@{ $t->sim('local')->requests }) {
        next unless ($rec->{headers}{'x-test-key'} // '') eq $key;
        $in += $rec->{prompt_tokens};
        $out += $rec->{completion_tokens};
        $n++;
    }
    return ($in, $out, $n);
}

# --- a key far from its quota: one admission by Redis, the rest by the lease
my $k = $t->new_key(plan => 'enterprise', name => 'lease');
my $before = evalsha_calls();
my @r;
for my $i (1 .. 20) {
    push @r, ask($k->{key}, text => "hello number $i", headers => { 'x-test-key' => 'a' });
}
my $during = evalsha_calls() - $before;
is scalar(grep { $_->{status} == 200 } @r), 20, 'twenty requests served';
ok $during <= 4, "Redis ran $during scripts for 20 requests (the admission that granted the lease and its settlement)";
like $t->redis->cli('ZRANGE', "nb:{$k->{id}}:res:$month", 0, -1), qr/^L[0-9a-f]{32}:\d+:\d+$/m,
    'the lease is a reservation in Redis';
ok defined $r[-1]{headers}{'x-ratelimit-remaining-output-tokens'},
    'a request admitted from the lease has its x-ratelimit-* headers';
is $r[-1]{json}{model}, 'qwen3:latest', 'and the public model name';

my @sent = grep { ($_->{headers}{'x-test-key'} // '') eq 'a' } @{ $t->sim('local')->requests };
is scalar(@sent), 20, 'the pool saw every request';
is_deeply [ map { $_->{max_tokens} } @sent[1 .. $#sent] ], [ ($sent[0]{max_tokens}) x 19 ],
    'max_tokens sent upstream is what Redis gave the first request';
ok !grep({ $_->{authorization} } @sent), 'no client key reached the pool';

# their usage reaches Redis within a second, the lease still open
my $w0 = time;
my $u = $t->wait_requests($k->{id}, 20, 2);
my $waited = time - $w0;
my ($in, $out, $n) = reported('a');
is $u->{requests}, 20, 'twenty requests recorded';
ok $waited < 1.5, sprintf('within a second or so of the last (%.2f s)', $waited);
is $u->{input_tokens}, $in, "input recorded = reported ($in)";
is $u->{output_tokens}, $out, "output recorded = reported ($out)";
ok $u->{leased_output_tokens} > 0, 'the lease goes on: what is left of its block stays reserved';
my $me = $t->get('/v1/key', headers => { Authorization => "Bearer $k->{key}" })->{json}{data};
is $me->{remaining}{output_tokens}, $me->{limits}{output_tokens} - $out,
    '/v1/key: the unused block is not spent';
# a request admitted from the lease is told what remained when the lease
# was granted (the granting request's reservation then in flight), less
# what the lease's requests used and hold: not the block (8 M tokens)
my $shown = $r[-1]{headers}{'x-ratelimit-remaining-output-tokens'};
ok $shown > $me->{limits}{output_tokens} - 3 * $sent[-1]{max_tokens},
   "x-ratelimit-remaining-output-tokens: neither ($shown)";

# the lease closes five seconds after it was granted; its block goes back
ok $t->wait_settled($k->{key}, 8), 'the lease closed and was settled';
$u = usage_of($k);
is $u->{requests}, 20, 'still twenty';
is $t->redis->cli('ZCARD', "nb:{$k->{id}}:res:$month"), 0, 'no reservation left';
my $rin = $t->redis->cli('HGET', "nb:{$k->{id}}:u:$month", 'rin');
is $rin || 0, 0, 'nothing reserved in the usage hash';
is $t->redis->cli('HGET', "nb:{$k->{id}}:u:$month", 'lin') || 0, 0, 'no block';
my $day = strftime('%Y-%m-%d', gmtime);
is $t->redis->cli('HGET', "nb:{$k->{id}}:d:$day", 'req'), 20, 'per day too';
is $t->redis->cli('HGET', "nb:{$k->{id}}:m:$month", 'qwen3:latest|req'), 20, 'per model too';

# --- streams and the native API from a lease, exact
my $k2 = $t->new_key(plan => 'enterprise', name => 'streams');
for my $i (1 .. 6) {
    my $r = ask($k2->{key}, body => { stream => JSON::PP::true }, headers => { 'x-test-key' => 'b', 'x-sim-tokens' => 5 + $i });
    is $r->{status}, 200, "stream $i";
}
for my $i (1 .. 3) {
    my $r = ask($k2->{key}, path => '/api/chat', headers => { 'x-test-key' => 'b' });
    is $r->{status}, 200, "native $i";
}
$u = $t->wait_requests($k2->{id}, 9);
($in, $out, $n) = reported('b');
is $u->{requests}, 9, 'nine requests recorded';
is $u->{input_tokens}, $in, 'streams and native: input exact';
is $u->{output_tokens}, $out, 'streams and native: output exact';

# --- a second whose requests read a prompt and wrote nothing (a stop at
# once, a client gone before the first token): the partial settlement
# gives back input and no output.  Redis's Lua made "-0" of that nothing,
# which HINCRBY refuses, half-way through a script that cannot roll back.
my $k0 = $t->new_key(plan => 'enterprise', name => 'silent');
for my $i (1 .. 3) {
    is ask($k0->{key}, headers => { 'x-test-key' => 'z', 'x-sim-tokens' => 0 })->{status}, 200,
        "no output $i";
}
$u = $t->wait_requests($k0->{id}, 3, 2);
($in, $out, $n) = reported('z');
is $out, 0, 'the pool wrote nothing';
is $u->{requests}, 3, 'no output: three requests recorded within a second';
is $u->{input_tokens}, $in, "no output: input recorded = reported ($in)";
is $u->{output_tokens}, 0, 'no output: none recorded';
ok $t->wait_settled($k0->{key}, 8), 'no output: the lease closed and was settled';
is $t->redis->cli('HGET', "nb:{$k0->{id}}:u:$month", 'rout') || 0, 0, 'no output: nothing left reserved';

# --- a key near its quota is never refused for tokens its own lease sits
# on: a request the block cannot cover gives the block's unused part back
# ahead of its admission (t/18-exact-at-scale.t found the 429 saying
# "3 tokens remaining")
my $kn = $t->new_key(plan => 'developer', name => 'near',
                     limits => { input_tokens => 20000, output_tokens => 200 });
my $ra = ask($kn->{key}, body => { max_tokens => 1 });
is $ra->{status}, 200, 'near: a first request, and a lease of a few tokens';
my $month_res = $t->redis->cli('ZRANGE', "nb:{$kn->{id}}:res:$month", 0, -1);
like $month_res, qr/^L[0-9a-f]{32}:\d+:(\d+)$/m, 'near: the lease is held';
my ($block) = $month_res =~ /^L[0-9a-f]{32}:\d+:(\d+)$/m;
my $rb = ask($kn->{key}, headers => { 'x-sim-tokens' => 500 });
is $rb->{status}, 200, 'near: a second, more than the block covers, is served';
is $t->sim('local')->last->{max_tokens}, 200 - 1,
    "near: with all that is left, the block's $block given back to it first";
my $rc = ask($kn->{key}, body => { max_tokens => 1 });
is $rc->{status}, 429, 'near: then nothing is left';
is $rc->{headers}{'x-ratelimit-remaining-output-tokens'}, 0, 'near: and the 429 says so';
ok $t->wait_settled($kn->{key}, 8), 'near: settled';
is usage_of($kn)->{output_tokens}, 200, 'near: exactly the quota used';

# --- concurrency: 60 at once on one key, every token accounted
my $k3 = $t->new_key(plan => 'enterprise', name => 'many');
my @pids;
pipe my $rd, my $wr or die $!;
for my $i (1 .. 60) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $rd;
        my $r = ask($k3->{key}, text => "word " x ($i % 7),
                    headers => { 'x-test-key' => 'c', 'x-sim-tokens' => 1 + $i % 9 });
        syswrite $wr, "$r->{status}\n";
        POSIX::_exit(0);
    }
    push @pids, $pid;
}
close $wr;
waitpid $_, 0 for @pids;
my @st = grep { length } split /\n/, do { local $/; <$rd> };
is scalar(grep { $_ == 200 } @st), 60, 'sixty concurrent requests served';
$u = $t->wait_requests($k3->{id}, 60);
($in, $out, $n) = reported('c');
is $u->{requests}, 60, 'sixty recorded';
is $u->{input_tokens}, $in, 'input exact under concurrency';
is $u->{output_tokens}, $out, 'output exact under concurrency';

# --- revocation: within a second, as the contract says (the change feed
# the workers read every quarter of a second closes the lease)
my $k4 = $t->new_key(plan => 'enterprise', name => 'revoked');
is ask($k4->{key})->{status}, 200, 'a lease is granted';
is $t->admin('DELETE', "/admin/keys/$k4->{id}")->{status}, 200, 'revoked';
my $t0 = time;
my ($status, $last_ok) = (0, -1);
while (time - $t0 < 1.5) {
    my $sent = time - $t0;
    $status = ask($k4->{key})->{status};
    $last_ok = $sent if $status == 200;
    sleep 0.02;
}
is $status, 401, 'refused after revocation';
# the contract: a request sent a second or more after it is refused
ok $last_ok < 1.0, sprintf('no request admitted a second after (last at %.2f s)', $last_ok);
ok $last_ok < 0.6, sprintf('nor half a second after (last at %.2f s)', $last_ok);

# --- near its quota: no lease, every request asks Redis, nothing overshoots
my $k5 = $t->new_key(plan => 'enterprise', name => 'tight',
                     limits => { input_tokens => 1000000, output_tokens => 600 });
$before = evalsha_calls();
for (1 .. 3) { ask($k5->{key}, body => { max_tokens => 20 }) }
ok evalsha_calls() - $before >= 3, 'a key near its quota is admitted by Redis each time';
unlike $t->redis->cli('ZRANGE', "nb:{$k5->{id}}:res:$month", 0, -1), qr/^L/m, 'and gets no lease';

# --- a per-minute limit: every request counted in Redis
my $k6 = $t->new_key(plan => 'free', name => 'rpm');
$before = evalsha_calls();
for (1 .. 3) { ask($k6->{key}) }
ok evalsha_calls() - $before >= 3, 'a plan with requests per minute gets no lease';

# --- a reload with a lease open: the old worker settles it before it goes
my $k7 = $t->new_key(plan => 'enterprise', name => 'reload');
for (1 .. 5) { ask($k7->{key}, headers => { 'x-test-key' => 'd' }) }
$t->reload;
ok $t->wait_settled($k7->{key}, 8), 'settled across a reload';
$u = usage_of($k7);
($in, $out, $n) = reported('d');
is $u->{requests}, 5, 'five recorded';
is $u->{output_tokens}, $out, 'output exact across a reload';

$t->done;
