#!/usr/bin/perl
# Accounts at admission (issue 14, items 1 and 2): an account holds the
# plan and the month's quota, its keys ("nb-ACCOUNT-...") share it, each
# counts its own usage too, and may narrow the account's limits.  One
# ADMIT a request, on one hash slot, so several keys of one account at
# once never pass the account's quota, nor a key its own cap.
#
# The account and its keys are written into Redis by hand here, as the
# admin API writes them (docs/redis.md, "Accounts"): this test is about
# what admission makes of them.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(encode_base64url);
use POSIX qw(strftime);

my $t = Nebula::Test->new(lease => 1);   # the shipped configuration: leases on
my $redis = $t->redis;
my $chat = '/v1/chat/completions';
my $month = strftime('%Y-%m', gmtime);

sub hex16 { join '', map { sprintf '%02x', int rand 256 } 1 .. 8 }

# an account: {tag}
sub account {
    my (%f) = @_;
    my $tag = hex16();
    $redis->cli('HSET', "nb:{$tag}:acct", id => $tag, name => 'acme', status => 'active',
                created => time, %f);
    return $tag;
}

# a key of it: {secret, id}
sub key_of {
    my ($tag, %f) = @_;
    my $secret = "nb-$tag-" . substr(encode_base64url(join '', map { chr int rand 256 } 1 .. 32), 0, 43);
    my $digest = sha256_hex($secret);
    my $id = substr $digest, 0, 16;
    $redis->cli('HSET', "nb:{$tag}:k:$id", id => $id, digest => $digest, name => "key $id",
                status => 'active', created => time, %f);
    $redis->cli('ZADD', "nb:{$tag}:keys", time, $id);
    return { key => $secret, id => $id, tag => $tag };
}

# a change made by hand, told to the workers as the admin API tells them
# (the CHANGED script): their leases of the account close
sub changed {
    my ($tag) = @_;
    my ($s, $us) = split /\n/, $redis->cli('TIME');
    $redis->cli('ZADD', 'nb:changes', $s * 1000 + int($us / 1000), $tag);
    select undef, undef, undef, 0.6;
}

sub ask {
    my ($k, %o) = @_;
    return $t->post($chat, { model => $o{model} // 'qwen3:latest', max_tokens => $o{max} // 7,
                             messages => [{ role => 'user', content => $o{text} // 'hello there' }] },
                    headers => { Authorization => "Bearer $k->{key}", %{ $o{headers} // {} } });
}

sub hash {
    my %h = split /\n/, $redis->cli('HGETALL', $_[0]);
    return \%h;
}

# waits until the account holds no reservation and no lease block
sub settled {
    my ($tag) = @_;
    my $u;
    for (1 .. 400 * $Nebula::Test::TIME_SCALE) {
        $u = hash("nb:{$tag}:u:$month");
        return $u if !($u->{rin} // 0) && !($u->{rout} // 0) && !($u->{lin} // 0) && !($u->{lout} // 0)
                     && $redis->cli('ZCARD', "nb:{$tag}:res:$month") == 0;
        select undef, undef, undef, 0.025;
    }
    return $u;
}

# --- two keys of one account: the account counts both, each key its own
{
    my $tag = account(plan => 'developer');
    my ($a, $b) = (key_of($tag), key_of($tag));
    my @ra = map { ask($a, text => "alpha $_") } 1 .. 3;
    my @rb = map { ask($b, text => "beta number $_ with more words") } 1 .. 2;
    is_deeply [map { $_->{status} } @ra, @rb], [(200) x 5], 'both keys of the account are served';
    is $ra[0]{headers}{'x-ratelimit-limit-output-tokens'}, 500000,
        'the limits are the account plan\'s (developer: 500K output)';

    my $u = settled($tag);
    my $ku = hash("nb:{$tag}:ku:$month");
    my (%in, %out);
    for ([$a, \@ra], [$b, \@rb]) {
        my ($k, $rs) = @$_;
        $in{$k->{id}} += $_->{json}{usage}{prompt_tokens} for @$rs;
        $out{$k->{id}} += $_->{json}{usage}{completion_tokens} for @$rs;
    }
    is $u->{req}, 5, 'the account counts five requests';
    is $u->{in}, $in{$a->{id}} + $in{$b->{id}}, 'the account\'s input is both keys\' (as the pool reported)';
    is $u->{out}, $out{$a->{id}} + $out{$b->{id}}, 'the account\'s output is both keys\'';
    is_deeply [@{$ku}{map { "$a->{id}|$_" } qw(req in out)}], [3, $in{$a->{id}}, $out{$a->{id}}],
        'key A\'s own usage: its 3 requests, their tokens';
    is_deeply [@{$ku}{map { "$b->{id}|$_" } qw(req in out)}], [2, $in{$b->{id}}, $out{$b->{id}}],
        'key B\'s own usage: its 2 requests, their tokens';
    is $ku->{"$a->{id}|cost"} + $ku->{"$b->{id}|cost"}, $u->{cost}, 'the keys\' costs add up to the account\'s';
    is_deeply [map { $ku->{"$_|rin"} // 0 } $a->{id}, $b->{id}], [0, 0], 'no key holds a reservation after';
    ok $redis->cli('TTL', "nb:{$tag}:ku:$month") > 86400 * 300, 'the per-key usage expires as the usage does';
    ok !$redis->cli('EXISTS', "nb:{$a->{id}}:u:$month"), 'nothing is written under a key\'s own id';
}

# --- a key narrows the account: its own cap, models, per-minute limit
{
    my $tag = account(plan => 'enterprise');
    my $capped = key_of($tag, out_limit => 20);
    my $free = key_of($tag);
    my $r = ask($capped, max => 500, headers => { 'x-sim-tokens' => 12 });
    is $r->{status}, 200, 'a capped key is served';
    is $t->sim('local')->last->{max_tokens}, 20, 'asked for no more than its own cap leaves (20)';
    is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 20, 'its headers show its own cap, the tighter limit';
    settled($tag);
    $r = ask($capped, max => 500, headers => { 'x-sim-tokens' => 12 });
    is $r->{status}, 200, 'a second request of it fits the 8 left';
    is $t->sim('local')->last->{max_tokens}, 8, 'clamped to the 8 its cap leaves';
    settled($tag);
    $r = ask($capped);
    Nebula::Test::is_error($r, 429, 'insufficient_quota', 'insufficient_quota', 'its cap used up: 429');
    like Nebula::Test::error_message($r), qr/This key exceeded its own monthly token limit/,
        'the message says the key\'s own limit, not the account\'s';
    is $r->{headers}{'x-ratelimit-remaining-output-tokens'}, 0, 'nothing remaining, for this key';
    is ask($free)->{status}, 200, 'the account\'s other key is still served';

    my $coder = key_of($tag, models => 'gemma3:1b');
    is ask($coder, model => 'gemma3:1b')->{status}, 200, 'a key limited to a model reaches it';
    $r = ask($coder, model => 'qwen3:latest');
    Nebula::Test::is_error($r, 403, 'permission_error', 'model_not_allowed', 'and not the others', 'model');

    my $slow = key_of($tag, rpm_limit => 2);
    is_deeply [map { ask($slow)->{status} } 1 .. 2], [200, 200], 'a key with its own per-minute limit: 2 served';
    $r = ask($slow);
    Nebula::Test::is_error($r, 429, 'rate_limit_error', 'rate_limit_exceeded', 'the third in the minute refused');
    like Nebula::Test::error_message($r), qr/Rate limit reached for this key: 2 requests per minute/,
        'the message names the key\'s limit';
    is ask($free)->{status}, 200, 'the account itself has no such limit';
}

# --- the account's own limits and status; the key's status and expiry
{
    my $tag = account(plan => 'free', rpm_limit => 3);
    my ($a, $b) = (key_of($tag), key_of($tag));
    is_deeply [map { ask($_)->{status} } $a, $b, $a], [200, 200, 200], 'three requests of two keys';
    my $r = ask($b);
    Nebula::Test::is_error($r, 429, 'rate_limit_error', 'rate_limit_exceeded',
                           'the account\'s per-minute limit counts every key of it');
    unlike Nebula::Test::error_message($r), qr/for this key/, 'the account\'s limit, so said';

    # a key's own, higher limit does not lift the account's; a key over its
    # own limit takes nothing of the account's minute
    my $tagr = account(plan => 'developer', rpm_limit => 4);
    my $loose = key_of($tagr, rpm_limit => 1000);
    my $tight = key_of($tagr, rpm_limit => 1);
    is ask($tight)->{status}, 200, 'the tight key\'s one request a minute';
    Nebula::Test::is_error(ask($tight), 429, 'rate_limit_error', 'rate_limit_exceeded', 'its second refused');
    Nebula::Test::is_error(ask($tight), 429, 'rate_limit_error', 'rate_limit_exceeded', 'and its third');
    is_deeply [map { ask($loose)->{status} } 1 .. 3], [200, 200, 200],
        'the account\'s other three of four: the tight key\'s refusals took none';
    $r = ask($loose);
    Nebula::Test::is_error($r, 429, 'rate_limit_error', 'rate_limit_exceeded',
                           'the fifth: the account\'s limit holds over a key\'s higher own');
    unlike Nebula::Test::error_message($r), qr/for this key/, 'said to be the account\'s';

    my $tag2 = account(plan => 'developer');
    my ($c, $d) = (key_of($tag2), key_of($tag2));
    is ask($c)->{status}, 200, 'an active account is served';
    $redis->cli('HSET', "nb:{$tag2}:acct", status => 'suspended');
    changed($tag2);
    for my $k ($c, $d) {
        Nebula::Test::is_error(ask($k), 403, 'permission_error', 'account_suspended',
                               'a suspended account: every key of it refused');
    }
    $redis->cli('HSET', "nb:{$tag2}:acct", status => 'active');
    is ask($d)->{status}, 200, 'resumed: served again';

    # no change told: an expiry needs none (no lease outlives it)
    my $soon = key_of($tag2, expires => time + 3);
    is ask($soon)->{status}, 200, 'a key that expires in 3 seconds is served';
    select undef, undef, undef, 3.2;
    like Nebula::Test::error_message(ask($soon)), qr/expired/, 'and refused once it has, leases on or not';
    $redis->cli('HSET', "nb:{$tag2}:k:$c->{id}", expires => time - 1);
    changed($tag2);
    $r = ask($c);
    Nebula::Test::is_error($r, 401, 'invalid_request_error', 'invalid_api_key', 'an expired key: 401');
    like Nebula::Test::error_message($r), qr/expired/, 'said to have expired';
    $redis->cli('HSET', "nb:{$tag2}:k:$d->{id}", expires => time + 3600);
    is ask($d)->{status}, 200, 'a key that expires later is served';
    $redis->cli('HSET', "nb:{$tag2}:k:$d->{id}", status => 'disabled');
    changed($tag2);
    like Nebula::Test::error_message(ask($d)), qr/disabled/, 'a disabled key: 401, said to be disabled';

    # a secret in an account's format whose account is gone, or made up
    my $tag3 = hex16();
    my $orphan = key_of($tag3);
    Nebula::Test::is_error(ask($orphan), 401, 'invalid_request_error', 'invalid_api_key',
                           'a key whose account does not exist: 401');
    my $wrong = { key => "nb-$tag2-" . ('x' x 43) };
    Nebula::Test::is_error(ask($wrong), 401, 'invalid_request_error', 'invalid_api_key',
                           'a made-up secret with a real account tag: 401');
    my $mgmt = { key => "nbm-$tag2-" . ('x' x 43) };
    Nebula::Test::is_error(ask($mgmt), 401, 'invalid_request_error', 'invalid_api_key',
                           'a management secret on a model endpoint: 401');
}

# --- another key's reservation that expired is given back to that key too
{
    my $tag = account(plan => 'developer');
    my ($a, $b) = (key_of($tag), key_of($tag));
    my $stale = ('0' x 32) . "\@$b->{id}:100:50";
    $redis->cli('ZADD', "nb:{$tag}:res:$month", time - 5, $stale);
    $redis->cli('HSET', "nb:{$tag}:u:$month", rin => 100, rout => 50);
    $redis->cli('HSET', "nb:{$tag}:ku:$month", "$b->{id}|rin" => 100, "$b->{id}|rout" => 50);
    is ask($a)->{status}, 200, 'key A is admitted';
    is $redis->cli('SISMEMBER', "nb:{$tag}:exp:$month", $stale), 1, 'key B\'s expired reservation noted as expired';
    my $ku = hash("nb:{$tag}:ku:$month");
    is_deeply [$ku->{"$b->{id}|rin"}, $ku->{"$b->{id}|rout"}], [0, 0], 'and given back to key B';
    my $u = settled($tag);
    is_deeply [$u->{rin}, $u->{rout}], [0, 0], 'and to the account';
}

# --- exactness: 120 requests at once, four keys of one account, one with
# its own cap; the account has 300 output tokens a month
{
    my $tag = account(plan => 'developer', out_limit => 300);
    my @keys = (key_of($tag, out_limit => 50), map { key_of($tag) } 1 .. 3);
    my $N = 120;
    my @pids;
    pipe my $rd, my $wr or die $!;
    for my $i (1 .. $N) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $rd;
            my $k = $keys[$i % 4];
            my $r = ask($k, text => "request $i", headers => { 'x-sim-tokens' => 12, 'x-sim-delay-ms' => 200 });
            my $code = $r->{json}{error}{code} // '';
            syswrite $wr, join(' ', $i % 4, $r->{status}, $code || '-',
                               $r->{json}{usage}{completion_tokens} // 0) . "\n";
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    close $wr;
    waitpid $_, 0 for @pids;
    my @res = map { [split / /] } grep { length } split /\n/, do { local $/; <$rd> };
    is scalar @res, $N, "$N answers";
    my @ok = grep { $_->[1] == 200 } @res;
    is scalar(grep { $_->[1] == 200 || ($_->[1] == 429 && $_->[2] eq 'insufficient_quota') } @res), $N,
        'each served, or refused for quota';
    my (%out, $total);
    $out{$_->[0]} += $_->[3], $total += $_->[3] for @ok;
    is $total, 300, 'served output is exactly the account\'s 300 tokens';
    cmp_ok $out{0} // 0, '<=', 50, 'the capped key got no more than its 50';
    my $u = settled($tag);
    is $u->{out}, 300, 'the account\'s month: 300 output tokens';
    is $u->{req}, scalar @ok, 'and a request for each served';
    my $ku = hash("nb:{$tag}:ku:$month");
    is_deeply [map { $ku->{"$keys[$_]{id}|out"} // 0 } 0 .. 3], [map { $out{$_} // 0 } 0 .. 3],
        'each key\'s own usage is what it was served';
    is_deeply [map { $ku->{"$_->{id}|rout"} // 0 } @keys], [0, 0, 0, 0], 'no reservation left on any key';
}

# --- many keys of one account with leases (the default): exact at the end
{
    my $tag = account(plan => 'enterprise');
    my @keys = map { key_of($tag) } 1 .. 3;
    my (%want_in, %want_out, $n);
    for my $round (1 .. 10) {
        for my $i (0 .. 2) {
            my $r = ask($keys[$i], text => "round $round key $i");
            next unless $r->{status} == 200;
            $n++;
            $want_in{$i} += $r->{json}{usage}{prompt_tokens};
            $want_out{$i} += $r->{json}{usage}{completion_tokens};
        }
    }
    is $n, 30, '30 requests of three keys served';
    my $u = settled($tag);
    my $ku = hash("nb:{$tag}:ku:$month");
    is $u->{req}, 30, 'leases settled: the account counts 30';
    is_deeply [map { $ku->{"$keys[$_]{id}|in"} } 0 .. 2], [map { $want_in{$_} } 0 .. 2],
        'each key\'s input, through its leases, exact';
    is_deeply [map { $ku->{"$keys[$_]{id}|out"} } 0 .. 2], [map { $want_out{$_} } 0 .. 2],
        'each key\'s output exact';
    is_deeply [map { $ku->{"$_->{id}|lin"} // 0 } @keys], [0, 0, 0], 'no key holds a lease block after';
}

# --- leases (the default) under load: four keys of one account hammer it
# past its quota; blocks are granted and recalled across its keys
{
    my $tag = account(plan => 'developer', out_limit => 3000);
    my @keys = (key_of($tag, out_limit => 400), map { key_of($tag) } 1 .. 3);
    my @res;
    for my $wave (1 .. 4) {
        my @pids;
        pipe my $rd, my $wr or die $!;
        for my $i (1 .. 130) {
            my $pid = fork // die "fork: $!";
            if ($pid == 0) {
                close $rd;
                my $r = ask($keys[$i % 4], text => "wave $wave request $i",
                            headers => { 'x-sim-tokens' => 12, 'x-sim-delay-ms' => 20 });
                syswrite $wr, join(' ', $i % 4, $r->{status}, $r->{json}{usage}{completion_tokens} // 0) . "\n";
                POSIX::_exit(0);
            }
            push @pids, $pid;
        }
        close $wr;
        waitpid $_, 0 for @pids;
        push @res, map { [split / /] } grep { length } split /\n/, do { local $/; <$rd> };
    }
    is scalar @res, 520, '520 answers';
    is scalar(grep { $_->[1] != 200 && $_->[1] != 429 } @res), 0, 'each served or refused';
    my (%out, $total);
    $out{$_->[0]} += $_->[2], $total += $_->[2] for grep { $_->[1] == 200 } @res;
    cmp_ok $total, '<=', 3000, "served output within the account's 3000 ($total)";
    cmp_ok $total, '>', 2500, 'and most of it served';
    cmp_ok $out{0} // 0, '<=', 400, 'the capped key within its own 400 (' . ($out{0} // 0) . ')';
    my $u = settled($tag);
    is $u->{out}, $total, 'the account counts exactly what was served';
    my $ku = hash("nb:{$tag}:ku:$month");
    is_deeply [map { $ku->{"$keys[$_]{id}|out"} // 0 } 0 .. 3], [map { $out{$_} // 0 } 0 .. 3],
        'each key counts exactly what it was served';
    is_deeply [map { ($ku->{"$_->{id}|rout"} // 0) . '/' . ($ku->{"$_->{id}|lout"} // 0) } @keys],
        [('0/0') x 4], 'no reservation nor block left on any key';
}

$t->done;
