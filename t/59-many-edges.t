#!/usr/bin/perl
# Three edges, one Redis: three nginx (each its own prefix, ports,
# simulators and admin token, two workers, the shipped configuration with
# quota leases on) share one redis-server, as a deployment's edges do.
# Accounts and keys are made through all three, each edge's admin API
# with its own token, and each key's requests go to all three at once.
#
#   - 12 accounts on the four plans, each with its own monthly caps of a
#     few hundred output tokens (a third of them input-bound), three keys
#     each (one capped lower still, some with an input cap); 2 accounts
#     of 450 output tokens whose requests are small enough for lease
#     blocks until their quota runs out, four keys each; 4 standalone
#     keys with small caps; 3 enterprise keys far from their quota
#   - some 1,100 chat completions from 24 clients at once, spread over
#     the keys and the three edges: JSON, SSE with and without the usage
#     chunk, small ones a lease covers, one a key without max_tokens (the
#     whole remainder reserved); the demand is about twice the quotas
#
# Then, for every account and key: the usage Redis holds (the admin API
# of an edge other than the one that made it, the per-key hash) is the
# sum of what the clients were told in their 200s (the pool's counts; a
# stream without the usage chunk: its tokens, and the pool's record of
# its prompt), requests counted; nothing reserved, no lease block, no
# reservation left once the leases closed; no account or key past a
# monthly limit; every refusal a 429 insufficient_quota that never
# reached a pool, never a 5xx; each edge served its share.  Across edges:
# a key revoked through one edge in the middle of the load (one of an
# account, one standalone) is refused on the two that held leases of it
# within a second (the change feed), a plan change and a suspension made
# through one hold on the others when the call returns, and no edge's
# error.log has an [error] or worse (the harness), nor a worker that
# exited with leases unsettled.
#
# Not under NEBULA_NGINX_WRAP (make test-valgrind): six workers under
# valgrind on two cores would measure the machine against the one-second
# bound; the paths it runs go under valgrind in t/17, t/18 and t/48.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use List::Util qw(shuffle sum0);
use Time::HiRes qw(sleep time);
use POSIX qw(strftime);
use Nebula::Test qw($TIME_SCALE);

plan skip_all => 'three edges of two workers each: not under NEBULA_NGINX_WRAP' if @Nebula::Test::WRAP;

my $T0 = time;
my $chat = '/v1/chat/completions';
my $month = strftime('%Y-%m', gmtime);
my $CLIENTS = 24;

# --- three edges on one Redis
my $A = Nebula::Test->new(lease => 1, workers => 2);
my @E = ($A, map { Nebula::Test->new(redis => $A->redis, lease => 1, workers => 2) } 1 .. 2);
my $redis = $A->redis;
my @NAME = qw(A B C);
my %ports = map { $_->port => 1 } @E;
is scalar(keys %ports), 3, 'three edges, three ports, one redis-server (' . $redis->port . ')';

# each edge's admin API answers its own token only: nebula_admin_token is
# in each nginx.conf, not in Redis (the harness gives each edge its own)
is $E[1]->request('GET', '/admin/accounts?limit=1',
                  headers => { Authorization => 'Bearer ' . $A->admin_token })->{status}, 401,
   'edge B refuses edge A\'s admin token: each edge has its own';

sub ok_or_die {
    my ($r, $want, $what) = @_;
    die "$what: $r->{status} $r->{body}\n" unless $r->{status} == $want;
    return $r->{json};
}

# --- the customers.  @K: every key the load uses, {key, id, tag (its
# account's, or its own id), caps {in, out} of its own, made (edge)}
my (@K, @ACCT);
my @PLANS = qw(developer pro enterprise free);
# the plans' monthly input tokens (examples/nebula-catalog.conf)
my %PLAN_IN = (free => 100000, developer => 2000000, pro => 15000000, enterprise => 100000000);
for my $i (0 .. 11) {
    my $made = $E[$i % 3];
    my $other = $E[($i + 1) % 3];
    my %lim = (output_tokens => 100 + 15 * $i);
    $lim{input_tokens} = 250 + 10 * $i if $i % 3 == 2;      # input-bound
    $lim{requests_per_minute} = 100000 if $PLANS[$i % 4] eq 'free';   # the plan's 20 a minute would refuse
    my $j = ok_or_die($made->admin('POST', '/admin/accounts',
                                   { name => "edge account $i", plan => $PLANS[$i % 4],
                                     limits => \%lim, key => { name => 'k0' } }),
                      201, "account $i");
    my $acct = { i => $i, id => $j->{data}{id}, plan => $PLANS[$i % 4], mkey => $j->{management_key},
                 in => $lim{input_tokens} // $PLAN_IN{ $PLANS[$i % 4] },
                 out => $lim{output_tokens}, made => $i % 3, keys => [] };
    push @ACCT, $acct;
    my @k = ({ key => $j->{key}{key}, id => $j->{key}{id}, caps => {} });
    # two more keys, made through another edge: one capped
    my %kcap = (output_tokens => 30 + 3 * $i);
    my $k1 = ok_or_die($other->admin('POST', "/admin/accounts/$acct->{id}/keys",
                                     { name => 'k1', limits => \%kcap }), 201, "account $i key 1");
    push @k, { key => $k1->{key}, id => $k1->{data}{id}, caps => { out => $kcap{output_tokens} } };
    my %k2cap = $i % 4 == 1 ? (input_tokens => 150) : ();
    my $k2 = ok_or_die($other->admin('POST', "/admin/accounts/$acct->{id}/keys",
                                     { name => 'k2', %k2cap ? (limits => \%k2cap) : () }), 201,
                       "account $i key 2");
    push @k, { key => $k2->{key}, id => $k2->{data}{id}, caps => { %k2cap ? (in => 150) : () } };
    for (@k) {
        $_->{tag} = $acct->{id};
        $_->{acct} = $acct;
        $_->{kind} = 'account';
        $_->{n} = 16;
        push @K, $_;
        push @{ $acct->{keys} }, $_;
    }
}
# two accounts whose requests are small (2-4 output tokens): while a
# tenth of their 450 is left, a lease's block (1/64 of it) covers some,
# so blocks are granted, settled and recalled across the six workers
# until the quota runs out; four keys each, one capped at 100
for my $i (12, 13) {
    my $plan = $i == 12 ? 'developer' : 'pro';
    my $j = ok_or_die($E[$i % 3]->admin('POST', '/admin/accounts',
                                        { name => "edge lease account $i", plan => $plan,
                                          limits => { output_tokens => 450 }, key => JSON::PP::true }),
                      201, "account $i");
    my $acct = { i => $i, id => $j->{data}{id}, plan => $plan, mkey => $j->{management_key},
                 in => $PLAN_IN{$plan}, out => 450, made => $i % 3, keys => [] };
    push @ACCT, $acct;
    my @k = ({ key => $j->{key}{key}, id => $j->{key}{id}, caps => {} });
    for my $n (1 .. 3) {
        my %cap = $n == 1 ? (limits => { output_tokens => 100 }) : ();
        my $kj = ok_or_die($E[($i + $n) % 3]->admin('POST', "/admin/accounts/$acct->{id}/keys", { name => "k$n", %cap }),
                           201, "account $i key $n");
        push @k, { key => $kj->{key}, id => $kj->{data}{id}, caps => { %cap ? (out => 100) : () } };
    }
    for (@k) {
        @{$_}{qw(tag acct kind n small)} = ($acct->{id}, $acct, 'account', 45, 1);
        push @K, $_;
        push @{ $acct->{keys} }, $_;
    }
}

my @SOLO;
for my $s (0 .. 3) {
    my $plan = $PLANS[$s];
    my %lim = (output_tokens => 100 + 25 * $s);
    $lim{input_tokens} = 400 if $s == 1;
    $lim{requests_per_minute} = 100000 if $plan eq 'free';
    my $j = $E[$s % 3]->new_key(plan => $plan, name => "solo $s", limits => \%lim);
    my $k = { key => $j->{key}, id => $j->{id}, tag => $j->{id}, kind => 'solo', standalone => 1, n => 30, made => $s % 3,
              caps => { out => $lim{output_tokens}, in => $lim{input_tokens} // $PLAN_IN{$plan} } };
    push @K, $k;
    push @SOLO, $k;
}
for my $b (0 .. 2) {
    my $j = $E[$b]->new_key(plan => 'enterprise', name => "big $b");
    push @K, { key => $j->{key}, id => $j->{id}, tag => $j->{id}, kind => 'big', standalone => 1, n => 20, made => $b,
               caps => {} };
}
pass(sprintf '%d accounts (%d keys), %d standalone keys and %d big ones made through the three edges',
     scalar @ACCT, scalar(grep { $_->{kind} eq 'account' } @K), scalar @SOLO, 3);

# a key made through one edge is known on the others at once
is_deeply [map { my $e = $_; $e->get('/v1/key', headers => { Authorization => "Bearer $K[0]{key}" })->{status} } @E],
          [200, 200, 200], 'a key made through edge A reads on A, B and C';

# --- what each request asks: a kind from (key, index); max_tokens, the
# tokens the pool writes (x-sim-tokens), stream, the usage chunk
sub spec {
    my ($g, $j) = @_;
    my $v = ($g * 5 + $j) % 8;
    my $max = 6 + ($g + $j) % 9;
    my $n = 4 + ($g * 3 + $j) % 14;
    my %q = (max => $max, n => $n, stream => 0, usage => 0);
    if ($v == 2 || $v == 3) { %q = (%q, stream => 1, usage => 1) }
    elsif ($v == 4) { %q = (%q, stream => 1) }
    elsif ($v == 5) { %q = (%q, max => 2, n => 3) }           # small: a lease's block covers it
    elsif ($v == 6) { %q = (%q, max => 3, n => 2, stream => 1, usage => 1) }
    elsif ($v == 7) { %q = (%q, max => 10, n => 10) }
    %q = (%q, max => undef, n => 8) if $j == 11;              # the whole remainder reserved
    # the lease accounts' keys: 2-4 tokens, written whole
    %q = (%q, max => 2 + ($g + $j) % 3, n => 2 + ($g + $j) % 3) if $K[$g]{small};
    return \%q;
}

# one request, sent and judged as a client sees it: a line of
# "rid edge g status ok code prompt completion usage_seen"
sub one {
    my ($rid, $e, $g, $q) = @_;
    my $k = $K[$g];
    my $body = { model => 'qwen3:latest',
                 messages => [{ role => 'user',
                                content => "edge load $rid: the quick brown fox jumps over the lazy dog" }] };
    $body->{max_tokens} = $q->{max} if defined $q->{max};
    $body->{stream} = JSON::PP::true if $q->{stream};
    $body->{stream_options} = { include_usage => JSON::PP::true } if $q->{usage};
    my $r = $E[$e]->post($chat, $body, timeout => 30,
                         headers => { Authorization => "Bearer $k->{key}", 'x-test-req' => $rid,
                                      'x-sim-tokens' => $q->{n}, 'x-sim-delay-ms' => 5 + ($rid * 7) % 30,
                                      $q->{stream} ? ('x-sim-piece-delay-ms' => 2) : () });
    my ($ok, $code, $p, $c, $seen) = (0, '-', '-', '-', 0);
    if ($r->{status} == 200 && $q->{stream}) {
        my @ev = Nebula::Test::sse_events($r->{body});
        my @data = grep { ref } @ev;
        my ($u) = grep { $_->{usage} } @data;
        $ok = @ev && $ev[-1] eq '[DONE]' && $r->{chunked_complete}
              && !grep({ ($_->{model} // '') ne 'qwen3:latest' } @data)
              && ($q->{usage} ? 1 : 0) == ($u ? 1 : 0) ? 1 : 0;
        if ($u) {
            ($p, $c, $seen) = ($u->{usage}{prompt_tokens}, $u->{usage}{completion_tokens}, 1);
        } else {
            # no usage shown: the tokens it carried
            $c = grep { ref $_->{choices} && @{ $_->{choices} }
                        && length($_->{choices}[0]{delta}{content} // '') } @data;
        }
    } elsif ($r->{status} == 200) {
        my $j = $r->{json} // {};
        $ok = ($j->{model} // '') eq 'qwen3:latest' && $j->{usage} ? 1 : 0;
        ($p, $c, $seen) = ($j->{usage}{prompt_tokens} // '-', $j->{usage}{completion_tokens} // '-', 1);
    } else {
        my $err = ($r->{json} // {})->{error};
        $code = ref $err eq 'HASH' ? ($err->{code} // 'none') : 'none';
        # a refusal as the contract has it: 429, insufficient_quota, its
        # type too, with the key's x-ratelimit-* headers
        $ok = $r->{status} == 429 && ref $err eq 'HASH'
              && ($err->{type} // '') eq 'insufficient_quota'
              && length($err->{message} // '')
              && defined $r->{headers}{'x-ratelimit-remaining-output-tokens'} ? 1 : 0;
    }
    return "$rid $e $g $r->{status} $ok $code $p $c $seen";
}

# which of the tags given hold lease blocks now ("L" reservations), and
# how many
my $LEASES = <<'LUA';
local out = {}
for i = 2, #ARGV do
  local n = 0
  for _, m in ipairs(redis.call('ZRANGE', 'nb:{' .. ARGV[i] .. '}:res:' .. ARGV[1], 0, -1)) do
    if string.byte(m, 1) == 76 then n = n + 1 end
  end
  if n > 0 then out[#out + 1] = ARGV[i] .. ' ' .. n end
end
return out
LUA
$LEASES =~ s{\s+}{ }g;

sub leases_held {
    return map { (split / /)[0] => (split / /)[1] } grep { / \d+$/ } split /\n/,
        $redis->cli('EVAL', $LEASES, 0, $month, @_);
}

# --- requests outside the load, counted all the same
sub probe {
    my ($e, $k) = @_;
    my $r = $E[$e]->post($chat, { model => 'qwen3:latest', max_tokens => 5,
                                  messages => [{ role => 'user', content => 'probe across edges' }] },
                         headers => { Authorization => "Bearer $k->{key}", 'x-sim-tokens' => 4 });
    count_probe($k, $r->{status}, $r->{json}{usage}{prompt_tokens}, $r->{json}{usage}{completion_tokens});
    return $r;
}

# what a key was served outside the load: [in, out, requests]
sub count_probe {
    my ($k, $status, $in, $out) = @_;
    return unless $status == 200;
    $k->{probe}[0] += $in;
    $k->{probe}[1] += $out;
    $k->{probe}[2]++;
}

# an enterprise or developer account far from its quota, with a key
sub account_with_key {
    my ($e, $plan, $name) = @_;
    my $j = ok_or_die($E[$e]->admin('POST', '/admin/accounts', { name => $name, plan => $plan, key => JSON::PP::true }),
                      201, $name);
    my $acct = { id => $j->{data}{id}, plan => $plan, mkey => $j->{management_key}, made => $e, probe_only => 1,
                 in => 1e12, out => 1e12 };
    my $k = { key => $j->{key}{key}, id => $j->{key}{id}, tag => $acct->{id}, acct => $acct, kind => 'probe',
              caps => {}, n => 0 };
    $acct->{keys} = [$k];
    push @ACCT, $acct;
    push @K, $k;
    return $k;
}

# --- across edges: a plan change through B holds on A and C when the
# call returns, their leases of the account included; a suspension
# through C, on A and B
{
    my $k = account_with_key(1, 'developer', 'plan across edges');
    my $acct = $k->{acct};
    my @lim = map { probe($_ % 2 ? 0 : 2, $k)->{headers}{'x-ratelimit-limit-output-tokens'} // '-' } 1 .. 8;
    is_deeply \@lim, [(500000) x 8], 'served on A and C with the developer plan\'s 500000 output tokens';
    my %held = leases_held($k->{tag});
    ok $held{ $k->{tag} }, 'A and C hold leases of it (' . ($held{ $k->{tag} } // 0) . ')';
    my $r = $E[1]->admin('PATCH', "/admin/accounts/$acct->{id}", { plan => 'pro' });
    is $r->{json}{data}{plan}, 'pro', 'the plan changed to pro through B';
    @lim = map { probe($_ % 2 ? 0 : 2, $k)->{headers}{'x-ratelimit-limit-output-tokens'} // '-' } 1 .. 8;
    is_deeply \@lim, [(3000000) x 8], 'A and C: every request after it has pro\'s 3000000';
    is $A->admin('GET', "/admin/accounts/$acct->{id}")->{json}{data}{plan}, 'pro', 'A\'s admin API says pro';
    is $E[2]->get('/v1/account', headers => { Authorization => "Bearer $acct->{mkey}" })->{json}{data}{plan}, 'pro',
       'C\'s /v1/account says pro';

    $r = $E[2]->admin('POST', "/admin/accounts/$acct->{id}/suspend");
    is $r->{json}{data}{status}, 'suspended', 'suspended through C';
    for my $e (0, 1, 0, 1) {
        Nebula::Test::is_error(probe($e, $k), 403, 'permission_error', 'account_suspended',
                               "edge $NAME[$e] refuses it at once");
    }
    $E[0]->admin('POST', "/admin/accounts/$acct->{id}/resume");
    is probe(1, $k)->{status}, 200, 'resumed through A: B serves it';
}

# the keys the load's middle revokes: a key of an account made through
# A, served on B and C; a standalone key made through B, served on A and
# B; each from leases
my $rk = account_with_key(0, 'enterprise', 'revoked across edges');
my $sk = do {
    my $j = $E[1]->new_key(plan => 'enterprise', name => 'standalone revoked across edges');
    my $k = { key => $j->{key}, id => $j->{id}, tag => $j->{id}, kind => 'probe', standalone => 1, made => 1,
              caps => {}, n => 0 };
    push @K, $k;
    $k;
};
my @REVOKE = ({ k => $rk, via => 0, on => [1, 2], call => ['DELETE', "/admin/accounts/$rk->{tag}/keys/$rk->{id}"],
                what => 'a key of an account', answer_holds => 1 },
              { k => $sk, via => 2, on => [0, 1], call => ['DELETE', "/admin/keys/$sk->{id}"],
                what => 'a standalone key' });
for my $v (@REVOKE) {
    # new connections land on either worker: enough requests that each
    # worker of the two edges likely holds a lease of the key
    my @st = map { probe($v->{on}[$_ % 2], $v->{k})->{status} } 1 .. 12;
    is_deeply \@st, [(200) x 12], "$v->{what} served on " . join(' and ', map { $NAME[$_] } @{ $v->{on} });
    my %held = leases_held($v->{k}{tag});
    ok $held{ $v->{k}{tag} }, 'which hold leases of it (' . ($held{ $v->{k}{tag} } // 0) . ')';
}

# --- the load: every key's requests, shuffled, each sent to the edge
# its place says; 24 clients, one request in flight each
srand(59);
my @REQ;
for my $g (0 .. $#K) {
    push @REQ, map { [$g, $_] } 0 .. $K[$g]{n} - 1;
}
@REQ = shuffle @REQ;
my $dir = $A->dir;
my $t_load = time;
my @pids;
for my $c (0 .. $CLIENTS - 1) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        eval {
            $SIG{PIPE} = 'IGNORE';
            open my $out, '>', "$dir/load.$c" or die;
            for (my $x = $c; $x < @REQ; $x += $CLIENTS) {
                my ($g, $j) = @{ $REQ[$x] };
                print $out one($x, $x % 3, $g, spec($g, $j)), "\n";
            }
            close $out;
        };
        POSIX::_exit(0);
    }
    push @pids, $pid;
}

# meanwhile: which accounts and keys hold lease blocks, ten times a
# second, until the load is over
my %tag_kind = map { $_->{tag} => ($_->{small} ? 'lease account' : $_->{kind}) } @K;
my $sampler = fork // die "fork: $!";
if ($sampler == 0) {
    eval {
        open my $out, '>', "$dir/leased" or die;
        $out->autoflush(1);
        my @tags = sort keys %tag_kind;
        until (-e "$dir/load.done") {
            my %now = leases_held(@tags);
            print $out "$_\n" for keys %now;
            sleep 0.1;
        }
        close $out;
    };
    POSIX::_exit(0);
}

# and the two keys revoked while the edges are busy, one through C, the
# other through A: a client on each edge that serves a key asks with it
# all along, from before its revocation to well after it
{
    sleep 1.5;
    my $until = time + 3 * $TIME_SCALE;
    my @probers;
    for my $n (0 .. $#REVOKE) {
        my $v = $REVOKE[$n];
        for my $e (@{ $v->{on} }) {
            my $pid = fork // die "fork: $!";
            if ($pid == 0) {
                eval {
                    open my $out, '>', "$dir/probe.$n.$e" or die;
                    while (time < $until) {
                        my $sent = time;
                        my $r = $E[$e]->post($chat, { model => 'qwen3:latest', max_tokens => 5,
                                                      messages => [{ role => 'user', content => 'probe across edges' }] },
                                             headers => { Authorization => "Bearer $v->{k}{key}", 'x-sim-tokens' => 4 });
                        my $err = ($r->{json} // {})->{error};
                        printf $out "%.4f %d %s %d %d\n", $sent, $r->{status},
                            ref $err eq 'HASH' ? $err->{code} // '-' : '-',
                            $r->{json}{usage}{prompt_tokens} // 0, $r->{json}{usage}{completion_tokens} // 0;
                        sleep 0.02;
                    }
                    close $out;
                };
                POSIX::_exit(0);
            }
            push @probers, $pid;
        }
    }
    sleep 0.6;
    for my $v (reverse @REVOKE) {
        $v->{sent} = time;
        $v->{r} = $E[ $v->{via} ]->admin(@{ $v->{call} });
        $v->{answered} = time;
    }
    waitpid $_, 0 for @probers;
}

waitpid $_, 0 for @pids;
my $t_burst = time - $t_load;
open my $done, '>', "$dir/load.done" or die;
close $done;
waitpid $sampler, 0;
my %leased;
if (open my $in, '<', "$dir/leased") {
    chomp, $leased{$_} = 1 for <$in>;
}
my %leased_kind;
$leased_kind{ $tag_kind{$_} // 'other' }++ for keys %leased;
ok $leased_kind{'lease account'} && $leased_kind{big},
   'under the load, accounts and keys held lease blocks: ' . join(', ', map { "$_ " . ($leased_kind{$_} // 0) }
                                                                 'lease account', 'account', 'solo', 'big');

# the revocations in the middle of the load: refused within a second on
# the other edges (the change feed); a key of an account as soon as the
# call answers, which waits until that holds (docs/accounts.md)
for my $n (0 .. $#REVOKE) {
    my $v = $REVOKE[$n];
    my ($t_sent, $t_ans) = @{$v}{qw(sent answered)};
    is $v->{r}{status}, 200, sprintf('%s revoked through %s during the load (the call took %.2f s)',
                                     $v->{what}, $NAME[ $v->{via} ], $t_ans - $t_sent);
    for my $e (@{ $v->{on} }) {
        open my $in, '<', "$dir/probe.$n.$e" or die "probe.$n.$e: $!";
        my @p = map { [split / /] } grep { /\S/ } <$in>;
        count_probe($v->{k}, @{$_}[1, 3, 4]) for @p;
        my @before = grep { $_->[0] < $t_sent } @p;
        my @served = grep { $_->[1] == 200 } @p;
        my $last_ok = @served ? $served[-1][0] - $t_sent : -1;
        my @after = grep { $_->[0] >= $t_sent + 1.0 } @p;
        ok @before && !grep({ $_->[1] != 200 } @before), "edge $NAME[$e]: served before the revocation ("
           . scalar(@before) . ' requests)';
        ok @after && !grep({ $_->[1] != 401 || $_->[2] ne 'invalid_api_key' } @after),
           "edge $NAME[$e]: every request sent a second after it refused, 401 invalid_api_key ("
           . scalar(@after) . ')';
        ok $last_ok < 1.0, sprintf('edge %s: the last one served was sent %.2f s after the revocation was '
                                   . '(the call answered after %.2f s)', $NAME[$e], $last_ok, $t_ans - $t_sent);
        next unless $v->{answer_holds};
        my @late = grep { $_->[0] >= $t_ans && $_->[1] == 200 } @p;
        ok !@late, "edge $NAME[$e]: none served that was sent after the DELETE had answered"
            or diag scalar(@late) . ' were, the last sent ' . sprintf('%.2f s after the answer', $late[-1][0] - $t_ans);
    }
}

my @res;
for my $c (0 .. $CLIENTS - 1) {
    open my $in, '<', "$dir/load.$c" or next;
    push @res, map { chomp; my @f = split / /; { rid => $f[0], e => $f[1], g => $f[2], status => $f[3], ok => $f[4],
                                                 code => $f[5], p => $f[6], c => $f[7], seen => $f[8] } } <$in>;
}

is scalar @res, scalar @REQ, scalar(@REQ) . ' requests, ' . scalar(@REQ) . ' answers';
my @ok200 = grep { $_->{status} == 200 } @res;
my @r429 = grep { $_->{status} == 429 } @res;
my @other = grep { $_->{status} != 200 && $_->{status} != 429 } @res;
ok !@other, 'every answer a 200 or a 429: no 5xx, nothing lost'
    or diag join '; ', map { "req $_->{rid} on edge $NAME[$_->{e}]: $_->{status} $_->{code}" } @other[0 .. ($#other < 9 ? $#other : 9)];
my @bad429 = grep { !$_->{ok} || $_->{code} ne 'insufficient_quota' } @r429;
ok !@bad429, scalar(@r429) . ' refusals, each 429 insufficient_quota in the contract\'s shape'
    or diag join '; ', map { "req $_->{rid}: $_->{code}" } @bad429[0 .. ($#bad429 < 9 ? $#bad429 : 9)];
my @bad200 = grep { !$_->{ok} } @ok200;
ok !@bad200, scalar(@ok200) . ' served, each complete (a stream to its [DONE], its usage chunk when asked for)'
    or diag join '; ', map { "req $_->{rid} edge $NAME[$_->{e}]" } @bad200[0 .. ($#bad200 < 9 ? $#bad200 : 9)];
my %by_edge;
$by_edge{ $_->{e} }++ for @ok200;
ok !grep({ ($by_edge{$_} // 0) < @ok200 / 6 } 0 .. 2),
   'each edge served its share: ' . join(', ', map { "$NAME[$_] " . ($by_edge{$_} // 0) } 0 .. 2);

# --- what the pools saw: each edge's simulator's record of each request
my %sim;
for my $e (0 .. 2) {
    for my $rec (@{ $E[$e]->sim('local')->requests }) {
        my $rid = $rec->{headers}{'x-test-req'} // next;
        $sim{$rid} = { %$rec, edge => $e };
    }
}
my (@sim_bad, @leak);
for my $r (@ok200) {
    my $rec = $sim{ $r->{rid} };
    if (!$rec || $rec->{edge} != $r->{e}) {
        push @sim_bad, "req $r->{rid}: no record on its edge";
        next;
    }
    # a stream without the usage chunk: its prompt is the pool's count
    $r->{p} = $rec->{prompt_tokens} unless $r->{seen};
    push @sim_bad, "req $r->{rid}: client $r->{p}/$r->{c}, pool $rec->{prompt_tokens}/$rec->{completion_tokens}"
        if $r->{p} ne $rec->{prompt_tokens} || $r->{c} ne $rec->{completion_tokens};
}
push @leak, grep { $sim{ $_->{rid} } } @r429;
ok !@sim_bad, 'each client was told the usage the pool reported (a stream without the usage chunk: its tokens)'
    or diag join '; ', @sim_bad[0 .. ($#sim_bad < 9 ? $#sim_bad : 9)];
ok !@leak, 'no refused request reached a pool'
    or diag scalar(@leak) . ' did, e.g. req ' . $leak[0]{rid};
my @big429 = grep { $K[ $_->{g} ]{kind} eq 'big' } @r429;
ok !@big429, 'the keys far from their quota were never refused'
    or diag scalar(@big429) . ' refusals, e.g. req ' . $big429[0]{rid};

# --- every account and key settled: nothing reserved, no block, no
# reservation, none expired unsettled (leases close 4-5 s after granted)
my $SCAN = <<'LUA';
local out = {}
for i = 2, #ARGV do
  local tag = ARGV[i]
  local u = redis.call('HMGET', 'nb:{' .. tag .. '}:u:' .. ARGV[1], 'rin', 'rout', 'lin', 'lout')
  local busy = 0
  for k = 1, 4 do busy = busy + (tonumber(u[k]) or 0) end
  local ku = redis.call('HGETALL', 'nb:{' .. tag .. '}:ku:' .. ARGV[1])
  for k = 1, #ku, 2 do
    local f = string.match(ku[k], '|(%a+)$')
    if f == 'rin' or f == 'rout' or f == 'lin' or f == 'lout' then
      busy = busy + (tonumber(ku[k + 1]) or 0)
    end
  end
  busy = busy + redis.call('ZCARD', 'nb:{' .. tag .. '}:res:' .. ARGV[1])
         + redis.call('SCARD', 'nb:{' .. tag .. '}:exp:' .. ARGV[1])
  out[#out + 1] = tag .. ' ' .. busy
end
return out
LUA
$SCAN =~ s{\s+}{ }g;
my %tags = map { $_->{tag} => 1 } @K;
my $t_settle = time;
my @busy;
while (1) {
    @busy = grep { !/ 0$/ } split /\n/, $redis->cli('EVAL', $SCAN, 0, $month, sort keys %tags);
    last if !@busy || time - $t_settle > 12 * $TIME_SCALE;
    sleep 0.1;
}
ok !@busy, sprintf('every account and key settled: nothing reserved, no lease block, no reservation '
                   . '(%.1f s after the last checks)', time - $t_settle)
    or diag join '; ', @busy[0 .. ($#busy < 9 ? $#busy : 9)];

# --- what the clients were told, by key and by account
my (%kin, %kout, %kreq, %n429);
for my $r (@ok200) {
    $kin{ $r->{g} } += $r->{p};
    $kout{ $r->{g} } += $r->{c};
    $kreq{ $r->{g} }++;
}
$n429{ $_->{g} }++ for @r429;
for my $g (0 .. $#K) {
    my $pr = $K[$g]{probe} or next;
    $kin{$g} += $pr->[0];
    $kout{$g} += $pr->[1];
    $kreq{$g} += $pr->[2];
}
my %gi = map { $K[$_] => $_ } 0 .. $#K;

my (@acct_bad, @key_bad, @over, @unrefused, @v1_bad);
my ($at_limit, $in_bound) = (0, 0);
for my $a (@ACCT) {
    # read through an edge that did not make it
    my $e = $E[($a->{made} + 2) % 3];
    my $d = $e->admin('GET', "/admin/accounts/$a->{id}")->{json}{data} // {};
    my $u = $d->{usage} // {};
    my @g = map { $gi{$_} } @{ $a->{keys} };
    my ($in, $out, $req) = (sum0(map { $kin{$_} // 0 } @g), sum0(map { $kout{$_} // 0 } @g),
                            sum0(map { $kreq{$_} // 0 } @g));
    my $got = join '/', map { $u->{$_} // '?' } qw(input_tokens output_tokens requests reserved_input_tokens reserved_output_tokens);
    push @acct_bad, "account $a->{id}: redis $got, clients $in/$out/$req/0/0"
        if $got ne "$in/$out/$req/0/0";
    push @acct_bad, "account $a->{id}: limits " . join('/', map { $d->{limits}{$_} // '?' } qw(input_tokens output_tokens))
                    . ", made with $a->{in}/$a->{out}"
        if !$a->{probe_only} && join('/', map { $d->{limits}{$_} // '?' } qw(input_tokens output_tokens)) ne "$a->{in}/$a->{out}";
    my %bykey = map { $_->{id} => $_->{usage} } @{ $d->{usage_by_key} // [] };
    for my $k (@{ $a->{keys} }) {
        my $g = $gi{$k};
        my $ku = $bykey{ $k->{id} } // {};
        my $kg = join '/', map { $ku->{$_} // '?' } qw(input_tokens output_tokens requests);
        my $want = join '/', map { $_ // 0 } $kin{$g}, $kout{$g}, $kreq{$g};
        push @key_bad, "key $k->{id} of $a->{id}: redis $kg, clients $want" if $kg ne $want;
        push @over, "key $k->{id}: out $ku->{output_tokens} of its $k->{caps}{out}"
            if defined $k->{caps}{out} && ($ku->{output_tokens} // 0) > $k->{caps}{out};
        push @over, "key $k->{id}: in $ku->{input_tokens} of its $k->{caps}{in}"
            if defined $k->{caps}{in} && ($ku->{input_tokens} // 0) > $k->{caps}{in};
    }
    next if $a->{probe_only};
    push @over, "account $a->{id}: in $u->{input_tokens} of $a->{in}, out $u->{output_tokens} of $a->{out}"
        if ($u->{input_tokens} // 0) > $a->{in} || ($u->{output_tokens} // 0) > $a->{out};
    push @unrefused, "account $a->{id}" unless sum0(map { $n429{$_} // 0 } @g);
    $at_limit++ if ($u->{output_tokens} // 0) == $a->{out};
    $in_bound++ if defined $d->{remaining} && ($d->{remaining}{input_tokens} // 1e9) < 40;
    # the holder's view, through a third edge, says the same
    if ($a->{i} % 4 == 0) {
        my $v = $E[($a->{made} + 1) % 3]->get('/v1/account', headers => { Authorization => "Bearer $a->{mkey}" })
                ->{json}{data}{usage} // {};
        push @v1_bad, "account $a->{id}: /v1/account " . join('/', map { $v->{$_} // '?' } qw(input_tokens output_tokens requests))
            if join('/', map { $v->{$_} // '?' } qw(input_tokens output_tokens requests)) ne "$in/$out/$req";
    }
}
for my $k (grep { $_->{standalone} } @K) {
    my $g = $gi{$k};
    my $e = $E[($k->{made} + 1) % 3];
    my $u = $e->admin('GET', "/admin/keys/$k->{id}")->{json}{usage} // {};
    my $kg = join '/', map { $u->{$_} // '?' } qw(input_tokens output_tokens requests reserved_input_tokens
                                                  reserved_output_tokens leased_input_tokens leased_output_tokens);
    my $want = join('/', map { $_ // 0 } $kin{$g}, $kout{$g}, $kreq{$g}) . '/0/0/0/0';
    push @key_bad, "$k->{kind} key $k->{id}: redis $kg, clients $want" if $kg ne $want;
    next unless $k->{kind} eq 'solo';
    push @over, "key $k->{id}: in $u->{input_tokens} of $k->{caps}{in}, out $u->{output_tokens} of $k->{caps}{out}"
        if ($u->{input_tokens} // 0) > $k->{caps}{in} || ($u->{output_tokens} // 0) > $k->{caps}{out};
    push @unrefused, "key $k->{id}" unless $n429{$g};
    $at_limit++ if ($u->{output_tokens} // 0) == $k->{caps}{out};
}
my $n_acct = grep { !$_->{probe_only} } @ACCT;
ok !@acct_bad, "each of the $n_acct accounts (and the two of the cross-edge checks): the usage in Redis is "
    . 'exactly what its clients were told (input, output, requests; nothing reserved)'
    or diag join '; ', @acct_bad[0 .. ($#acct_bad < 5 ? $#acct_bad : 5)];
ok !@key_bad, 'each key, of an account or standalone: its own usage is exactly what its clients were told'
    or diag join '; ', @key_bad[0 .. ($#key_bad < 5 ? $#key_bad : 5)];
ok !@over, 'no account or key past a monthly input or output limit, the account\'s or the key\'s own'
    or diag join '; ', @over[0 .. ($#over < 5 ? $#over : 5)];
ok !@unrefused, 'every small account and standalone key was driven past its quota (refused at least once)'
    or diag join '; ', @unrefused;
ok !@v1_bad, 'the holder\'s /v1/account, through another edge, says the same'
    or diag join '; ', @v1_bad;

my ($tin, $tout) = (sum0(values %kin), sum0(values %kout));
note sprintf '%d requests through three edges in %.1f s (%s): %d served (%d in, %d out), %d refused; '
    . '%d accounts and standalone keys at exactly their output limit, %d at their input; %.1f s in all',
    scalar @REQ, $t_burst, join(', ', map { "$NAME[$_] " . ($by_edge{$_} // 0) } 0 .. 2),
    scalar @ok200, $tin, $tout, scalar @r429, $at_limit, $in_bound, time - $T0;

# --- the edges stop (each checks its error.log); none had leases left
$_->finish for reverse @E;
for my $e (0 .. 2) {
    unlike $E[$e]->error_log, qr/leases unsettled/, "edge $NAME[$e]: no worker exited with leases unsettled";
}
done_testing;
