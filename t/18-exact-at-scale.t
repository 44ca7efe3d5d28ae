#!/usr/bin/perl
# Exactness at scale, on both admission paths: 1,000 keys, each with a
# monthly quota a few of its requests use up, all driven past it at once
# by 32 clients, JSON and streams, /v1 and native, outputs varied with
# x-sim-tokens.  Once with quota leases as shipped (lease => 1), once per
# request (nebula_lease off, the harness's default); two workers each.
# For every key:
#   1. recorded usage (in, out, req of its month in Redis) = what the pool
#      reported for the requests that got 200, summed (the simulator's
#      records, matched by x-test-key and x-test-req); each client got the
#      usage the pool sent;
#   2. nothing past the quota: input <= its limit, output <= its limit
#      (docs/metering.md, contract 2: admission reserves the prompt's
#      estimate, which the pool's counts here stay below, and the output
#      it asks the pool for); no upstream max_tokens past the limit; keys
#      whose every answer writes its whole reservation end at exactly
#      their output limit;
#   3. every refusal is 429 insufficient_quota in the contract's shape,
#      never reached the pool, is not counted; without leases each came
#      when the key had less input left than the prompt's estimate, or no
#      output;
#   4. no reservation or lease block left (rin, rout, lin, lout 0, the
#      reservations' set empty, none expired unsettled);
#   5. 200s + 429s = requests sent: nothing lost, no 5xx.
# Redis's MONITOR counts the ADMIT scripts: one a request without leases,
# fewer with (requests admitted from a lease's block).  The checks are
# aggregated over the keys, the first mismatches shown.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use POSIX qw(strftime WNOHANG);
use Nebula::Test qw($TIME_SCALE);

# under valgrind (a wrapper) a tenth of the keys: the same paths, slower
my $KEYS = $ENV{NEBULA_EXACT_KEYS} // (@Nebula::Test::WRAP ? 100 : 1000);
my $CLIENTS = 32;     # processes, each with two requests in flight
my $month = strftime('%Y-%m', gmtime);
my $TEXT = 'quota test %04d-%d: the quick brown fox';   # the pool counts 12

# What key $i is and asks, in pairs sent together (0 and 1, 2 and 3, ...).
# The prompt's estimate is the body's bytes / 4 (26-44 here) and the pool
# counts 12, so input reserved is always given back in part.  Each key is
# asked more than its quota holds, so that each is refused: no five of
# its six requests fit (kinds 1-3); kind 0's answers write all they
# reserve, and after its big pair nothing is left but the unused part of
# lease blocks.
#   0  leases: 20,000 input, 200-219 output: a request asking 1 token gets
#      a block of 3 (1/64 of what is left); four such, then two big ones
#      (one without max_tokens, so the whole remainder reserved, and 250
#      tokens to write; 120 of 130), then 5 and 5
#   1  output, whole: every answer writes its whole reservation
#      (x-sim-tokens >= max_tokens): the key ends at exactly its limit
#   2  input: 50-89, a few prompts; answers shorter and longer than asked
#   3  both tight (input 60-84, output 15-44): no max_tokens (the whole
#      remainder reserved), native /api/chat streamed and not, no tokens
sub spec {
    my ($i) = @_;
    my $kind = $i % 4;
    my (@q, $in, $out);
    my $v1 = sub { { path => '/v1/chat/completions', @_ } };
    my $native = sub { { path => '/api/chat', @_ } };
    if ($kind == 0) {
        ($in, $out) = (20000, 200 + $i % 20);
        @q = ($v1->(max => 1, n => 3), $v1->(max => 1, n => 2, stream => 1),
              $v1->(max => 1, n => 1), $v1->(max => 1, n => 4, stream => 1, usage => 1),
              $v1->(n => 250), $v1->(max => 120, n => 130, stream => 1),
              $v1->(max => 5, n => 5), $v1->(max => 5, n => 6, stream => 1));
    } elsif ($kind == 1) {
        ($in, $out) = (100000, 10 + $i % 15);
        for my $j (0 .. 5) {
            my $m = 4 + ($i + $j) % 5;
            push @q, $v1->(max => $m, n => $m + ($i + $j) % 3, stream => $j % 2,
                           usage => $j % 4 == 1);
        }
    } elsif ($kind == 2) {
        ($in, $out) = (50 + $i % 40, 100000);
        for my $j (0 .. 5) {
            push @q, $v1->(max => 2 + ($i + $j) % 5, n => 1 + ($i * 3 + $j) % 8,
                           stream => $j % 2, usage => $j % 4 == 3);
        }
    } else {
        ($in, $out) = (60 + $i % 25, 15 + $i % 30);
        @q = ($v1->(max => 5 + $i % 7, n => ($i + 1) % 13),
              $v1->(n => 3 + $i % 9, stream => 1),
              $native->(max => 6, n => ($i * 7) % 12, stream => 1),
              $v1->(max => 8, n => 10, stream => 1, usage => 1),
              $v1->(n => 4 + $i % 11),
              $native->(max => 4 + $i % 5, n => $i % 9, stream => 0));
    }
    return { kind => $kind, in => $in, out => $out, q => \@q };
}

sub body_of {
    my ($i, $j, $q) = @_;
    my $b = { model => 'qwen3:latest',
              messages => [{ role => 'user', content => sprintf($TEXT, $i, $j) }] };
    if ($q->{path} eq '/api/chat') {
        $b->{stream} = $q->{stream} ? JSON::PP::true : JSON::PP::false;
        $b->{options} = { num_predict => $q->{max} } if $q->{max};
    } else {
        $b->{max_tokens} = $q->{max} if $q->{max};
        $b->{stream} = JSON::PP::true if $q->{stream};
        $b->{stream_options} = { include_usage => JSON::PP::true } if $q->{usage};
    }
    return Nebula::Test::json_encode($b);
}

# what the client saw of a 200: the pool's usage where it is shown (JSON,
# a stream's usage chunk when asked for, the native final line), else the
# tokens a stream carried; whether it ended as it should
sub seen {
    my ($q, $r) = @_;
    my ($p, $c, $ok) = ('-', '-', 0);
    if ($q->{path} eq '/api/chat' && $q->{stream}) {
        my @l = Nebula::Test::ndjson_lines($r->{body});
        my $last = $l[-1] // {};
        $ok = $r->{chunked_complete} && $last->{done} ? 1 : 0;
        ($p, $c) = ($last->{prompt_eval_count} // '-', $last->{eval_count} // '-');
    } elsif ($q->{path} eq '/api/chat') {
        my $j = $r->{json} // {};
        $ok = $j->{done} ? 1 : 0;
        ($p, $c) = ($j->{prompt_eval_count} // '-', $j->{eval_count} // '-');
    } elsif ($q->{stream}) {
        my @ev = Nebula::Test::sse_events($r->{body});
        $ok = @ev && $ev[-1] eq '[DONE]' && $r->{chunked_complete} ? 1 : 0;
        my @data = grep { ref } @ev;
        my ($u) = grep { $_->{usage} } @data;
        # the usage chunk the gateway asked for itself is not the client's
        $ok = 0 if $u && !$q->{usage} or !$u && $q->{usage};
        $ok = 0 if grep { ($_->{model} // '') ne 'qwen3:latest' } @data;
        $c = grep { ref $_->{choices} && @{ $_->{choices} }
                    && length($_->{choices}[0]{delta}{content} // '') } @data;
        ($p, $c) = ($u->{usage}{prompt_tokens}, $u->{usage}{completion_tokens}) if $u;
    } else {
        my $j = $r->{json} // {};
        $ok = ($j->{model} // '') eq 'qwen3:latest' ? 1 : 0;
        ($p, $c) = ($j->{usage}{prompt_tokens} // '-', $j->{usage}{completion_tokens} // '-');
    }
    return ($p, $c, $ok);
}

# a refusal as the contract has it: 429, JSON, insufficient_quota (on
# Ollama's API, its shape: the message alone), with the key's
# x-ratelimit-* headers
sub refusal_ok {
    my ($r) = @_;
    my $e = ($r->{json} // {})->{error};
    my $shape = ($r->{path} // '') =~ m{^/api/}
        ? defined $e && !ref $e && $e =~ /monthly token quota/
        : ref $e eq 'HASH'
          && ($e->{type} // '') eq 'insufficient_quota'
          && ($e->{code} // '') eq 'insufficient_quota'
          && length($e->{message} // '') && exists $e->{param};
    return $r->{status} == 429
        && ($r->{headers}{'content-type'} // '') =~ m{^application/json}
        && $shape
        && defined $r->{headers}{'x-ratelimit-remaining-input-tokens'}
        && defined $r->{headers}{'x-ratelimit-remaining-output-tokens'} ? 1 : 0;
}

# One Lua call reads every key: usage, reservations, blocks, the
# reservations' set and the lease blocks ("L" members) in it, the set of
# reservations that expired unsettled
my $SCAN = <<'LUA';
local out = {}
for n = 2, #ARGV do
  local id = ARGV[n]
  local u = redis.call('HMGET', 'nb:{' .. id .. '}:u:' .. ARGV[1],
                       'in', 'out', 'req', 'rin', 'rout', 'lin', 'lout')
  local res = redis.call('ZRANGE', 'nb:{' .. id .. '}:res:' .. ARGV[1], 0, -1)
  local leases = {}
  for _, m in ipairs(res) do
    -- "L" and the granting request's id, a generation after it once partly settled
    if string.byte(m, 1) == 76 then leases[#leases + 1] = string.match(m, '^L%x+') end
  end
  local exp = redis.call('SCARD', 'nb:{' .. id .. '}:exp:' .. ARGV[1])
  local line = id
  for k = 1, 7 do line = line .. ' ' .. (u[k] or '0') end
  out[#out + 1] = line .. ' ' .. #res .. ' ' .. exp .. ' ' .. table.concat(leases, ',')
end
return out
LUA

# Redis spoken to directly (RESP), one connection a Redis
my %conn;

sub redis_call {
    my ($port, @args) = @_;
    my $s = $conn{$port} //= IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                                   Timeout => 5 * $TIME_SCALE)
        or die "redis: $!\n";
    binmode $s;
    print $s join('', '*' . @args . "\r\n", map { '$' . length($_) . "\r\n$_\r\n" } @args);
    return resp_read($s);
}

sub resp_read {
    my ($s) = @_;
    my $line = <$s> // die "redis: connection closed\n";
    $line =~ s/\r\n\z//;
    my ($type, $v) = (substr($line, 0, 1), substr($line, 1));
    die "redis: $v\n" if $type eq '-';
    return $v if $type eq '+' || $type eq ':';
    if ($type eq '$') {
        return undef if $v < 0;
        read($s, my $data, $v + 2) == $v + 2 or die "redis: short read\n";
        return substr($data, 0, $v);
    }
    return [ map { resp_read($s) } 1 .. $v ] if $type eq '*';
    die "redis: unexpected reply '$line'\n";
}

sub scan {
    my ($t, $ids) = @_;
    my %s;
    for (@{ redis_call($t->redis->port, 'EVAL', $SCAN, 0, $month, @$ids) }) {
        my ($id, @f) = split / /;
        next unless $id && @f >= 9;
        my %h;
        @h{qw(in out req rin rout lin lout res exp)} = @f[0 .. 8];
        $h{leases} = [ grep { length } split /,/, $f[9] // '' ];
        $s{$id} = \%h;
    }
    return \%s;
}

# every key settled: nothing reserved, no block, no reservation in the
# set, none expired
sub wait_all_settled {
    my ($t, $ids, $secs) = @_;
    my $deadline = time + $secs * $TIME_SCALE;
    while (1) {
        my $s = scan($t, $ids);
        my @busy = grep { my $h = $s->{$_};
                          !$h || grep { $h->{$_} } qw(rin rout lin lout res exp) } @$ids;
        return ($s, \@busy) if !@busy || time > $deadline;
        sleep 0.1;
    }
}

# Redis's MONITOR, written to a file by a process of our own, which
# stops when it is killed; returned once Redis has said +OK to it
sub monitor {
    my ($t, $file) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->redis->port)
            or POSIX::_exit(1);
        open my $out, '>', $file or POSIX::_exit(1);
        syswrite $s, "MONITOR\r\n";
        while (sysread($s, my $buf, 65536)) { syswrite $out, $buf }
        POSIX::_exit(0);
    }
    my $deadline = time + 5 * $TIME_SCALE;
    sleep 0.01 until -s $file || time > $deadline;
    return $pid;
}

sub first_few { my @l = @_; join('; ', @l[0 .. ($#l < 4 ? $#l : 4)]) }

sub run_path {
    my ($name, %o) = @_;
    my $t0 = time;
    my $t = Nebula::Test->new(workers => 2, %o);
    my $dir = $t->dir;

    # --- the keys, through the admin API
    my (@key, @spec);
    for my $i (0 .. $KEYS - 1) {
        $spec[$i] = spec($i);
        $key[$i] = $t->new_key(plan => 'developer', name => "exact $i",
                               limits => { input_tokens => $spec[$i]{in},
                                           output_tokens => $spec[$i]{out} });
    }
    my @ids = map { $_->{id} } @key;
    my %idx = map { $ids[$_] => $_ } 0 .. $#ids;
    is scalar(keys %idx), $KEYS, "$name: $KEYS keys created";
    my $sent = 0;
    $sent += @{ $_->{q} } for @spec;
    my $t_keys = time - $t0;

    # --- every key's requests at once: client c takes keys c, c + C, ...,
    # a round at a time, and sends a key each pair of its requests
    # together, on two connections
    my $before = scan($t, \@ids);
    my $mon = monitor($t, "$dir/monitor.log");
    my $port = $t->port;
    my @pids;
    for my $c (0 .. $CLIENTS - 1) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            $SIG{PIPE} = 'IGNORE';
            open my $out, '>', "$dir/results.$c" or POSIX::_exit(1);
            for (my $j0 = 0; $j0 < 8; $j0 += 2) {
                for (my $i = $c; $i < $KEYS; $i += $CLIENTS) {
                    my @pair = grep { $spec[$i]{q}[$_] } $j0, $j0 + 1;
                    my %s;
                    for my $j (@pair) {
                        my $q = $spec[$i]{q}[$j];
                        my $body = body_of($i, $j, $q);
                        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                                      Timeout => 5 * $TIME_SCALE) or next;
                        binmode $s;
                        print $s "POST $q->{path} HTTP/1.1\r\nHost: localhost\r\n"
                                 . "Connection: close\r\nAuthorization: Bearer $key[$i]{key}\r\n"
                                 . "Content-Type: application/json\r\n"
                                 . 'Content-Length: ' . length($body) . "\r\n"
                                 . "x-test-key: $i\r\nx-test-req: $j\r\n"
                                 . "x-sim-tokens: $q->{n}\r\nx-sim-split: none\r\n\r\n$body";
                        $s{$j} = [$s, length $body];
                    }
                    for my $j (@pair) {
                        my $q = $spec[$i]{q}[$j];
                        my ($s, $len) = @{ $s{$j} // [] };
                        my $r = $s ? Nebula::Test::parse_response(Nebula::Test::read_all($s, 30))
                                   : { status => 0 };
                        close $s if $s;
                        my ($p, $ct, $ok) = ('-', '-', 0);
                        if ($r->{status} == 200) {
                            ($p, $ct, $ok) = seen($q, $r);
                        } elsif ($r->{status} == 429) {
                            $r->{path} = $q->{path};
                            $ok = refusal_ok($r);
                        }
                        # the prompt's estimate: a token every 4 bytes of the body
                        my $est = int(($len // 0) / 4 + 0.75);
                        my @left = map { $r->{headers}{"x-ratelimit-remaining-$_-tokens"} // '-' }
                                   qw(input output);
                        print $out "$i $j $r->{status} $ok $p $ct $est @left\n";
                    }
                }
            }
            close $out;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    # meanwhile, the leases open in Redis
    my %leases;
    my $t_burst = time;
    while (@pids) {
        @pids = grep { waitpid($_, WNOHANG) == 0 } @pids;
        if ($o{lease}) {
            my $s = scan($t, \@ids);
            $leases{$_} = 1 for map { @{ $_->{leases} } } values %$s;
        }
        sleep 0.2 if @pids;
    }
    my $burst_end = time;
    $t_burst = $burst_end - $t_burst;

    my (%res, @dup);
    for my $c (0 .. $CLIENTS - 1) {
        open my $in, '<', "$dir/results.$c" or next;
        while (<$in>) {
            my ($i, $j, $st, $ok, $p, $ct, $est, $lin, $lout) = split;
            push @dup, "key $i req $j twice" if $res{"$i.$j"};
            $res{"$i.$j"} = { i => $i, j => $j, status => $st, ok => $ok, p => $p, c => $ct,
                              est => $est, left_in => $lin, left_out => $lout };
        }
    }

    # --- 5. each answered, 200 or 429, nothing else
    my @ok200 = grep { $_->{status} == 200 } values %res;
    my @r429 = grep { $_->{status} == 429 } values %res;
    my @other = grep { $_->{status} != 200 && $_->{status} != 429 } values %res;
    my @missing = grep { !$res{$_} } map { my $i = $_; map { "$i.$_" } 0 .. $#{ $spec[$i]{q} } }
                  0 .. $KEYS - 1;
    is @ok200 + @r429, $sent, "$name: 200s + 429s = the $sent requests sent ("
        . scalar(@ok200) . ' + ' . scalar(@r429) . ')'
        or diag 'missing: ' . first_few(@missing) . '; other: '
                . first_few(map { "key $_->{i} req $_->{j}: $_->{status}" } @other)
                . '; ' . first_few(@dup);

    # --- the pool's records: each 200 once, no refused request
    my $t_sim = time;
    my $recs = $t->sim('local')->requests;
    $t_sim = time - $t_sim;
    my (%sim, @sim_bad);
    for my $rec (@$recs) {
        my ($i, $j) = ($rec->{headers}{'x-test-key'}, $rec->{headers}{'x-test-req'});
        unless (defined $i && defined $j) {
            push @sim_bad, "untagged $rec->{path}";
            next;
        }
        push @sim_bad, "key $i req $j twice" if $sim{"$i.$j"};
        push @sim_bad, "key $i req $j: " . ($rec->{status} // 'none') . ' ' . ($rec->{outcome} // '')
            unless ($rec->{status} // 0) == 200 && ($rec->{outcome} // '') eq 'ok';
        $sim{"$i.$j"} = $rec;
    }
    my @not_seen = grep { !$sim{"$_->{i}.$_->{j}"} } @ok200;
    my @refused_seen = grep { $sim{"$_->{i}.$_->{j}"} } @r429;
    ok !@not_seen && !@sim_bad && @$recs == @ok200,
       "$name: the pool saw each of the " . scalar(@ok200) . ' requests served, once ('
       . scalar(@$recs) . ' records)'
        or diag first_few(map({ "key $_->{i} req $_->{j} served, not seen" } @not_seen), @sim_bad);

    # --- 3. refusals: the contract's 429, never forwarded, not counted
    my @bad429 = grep { !$_->{ok} } @r429;
    ok !@bad429, "$name: each of the " . scalar(@r429) . ' refusals is 429 insufficient_quota'
        . ' with its x-ratelimit-* headers'
        or diag first_few(map { "key $_->{i} req $_->{j}" } @bad429);
    ok !@refused_seen, "$name: no refused request reached the pool"
        or diag first_few(map { "key $_->{i} req $_->{j}" } @refused_seen);
    # what the refusal says is left (what is used and reserved in Redis
    # taken off; with leases, the unused part of the blocks counted as left)
    my @left = grep { $_->{left_out} ne '-' && $_->{left_out} > 0
                      && $_->{left_in} ne '-' && $_->{left_in} >= $_->{est} } @r429;
    if ($o{lease}) {
        note scalar(@left) . ' refusals while the unused part of lease blocks was left';
    } else {
        ok !@left, "$name: each refusal came with less input left than the prompt's estimate, "
            . 'or no output left'
            or diag scalar(@left) . ': ' . first_few(map { "key $_->{i} req $_->{j}: est $_->{est},"
                                            . " left $_->{left_in} in $_->{left_out} out" } @left);
    }

    # each served answer whole, with what the pool sent
    my @bad200;
    for my $r (@ok200) {
        my $rec = $sim{"$r->{i}.$r->{j}"} or next;
        my $q = $spec[$r->{i}]{q}[$r->{j}];
        my $why = !$r->{ok} ? 'incomplete'
                : $r->{c} ne '-' && $r->{c} != $rec->{completion_tokens}
                    ? "client saw $r->{c} tokens, pool sent $rec->{completion_tokens}"
                : $r->{p} ne '-' && $r->{p} != $rec->{prompt_tokens}
                    ? "client saw prompt $r->{p}, pool $rec->{prompt_tokens}" : '';
        push @bad200, "key $r->{i} req $r->{j} ($q->{path}"
            . ($q->{stream} ? ' stream' : '') . "): $why" if $why;
    }
    ok !@bad200, "$name: each of the " . scalar(@ok200) . ' answers whole, with the usage the pool sent'
        or diag first_few(@bad200);

    # --- 4. everything settled: no reservation, no block (a lease closes
    # five seconds after its grant, once its last request has ended)
    my ($s, $busy) = wait_all_settled($t, \@ids, $o{lease} ? 15 : 5);
    my $t_settle = time - $burst_end;
    ok !@$busy, "$name: no reservation or lease block left on any of the $KEYS keys"
        . sprintf(' (all settled %.1f s after the last answer)', $t_settle)
        or diag scalar(@$busy) . ' keys: '
                . first_few(map { my $h = $s->{$_} // {};
                                  "key $idx{$_} ($_): " . join(' ', map { "$_=" . ($h->{$_} // '?') }
                                                               qw(rin rout lin lout res exp)) } @$busy);

    # the admissions Redis ran, from MONITOR (ADMIT: 8 keys, the first the
    # key's record); what it did not run, a lease admitted
    sleep 0.2;
    kill 'TERM', $mon;
    waitpid $mon, 0;
    my $admits = 0;
    if (open my $m, '<', "$dir/monitor.log") {
        while (<$m>) {
            $admits++ if /"EVAL(?:SHA)?" "(?:[^"\\]|\\.)*" "8" "nb:\{[0-9a-f]{16}\}:key"/;
        }
    }
    if ($o{lease}) {
        ok $admits > 0 && $admits < $sent,
           "$name: leases admitted " . ($sent - $admits) . " of the $sent requests without Redis "
           . '(' . scalar(keys %leases) . " blocks granted; $admits admissions by Redis)";
    } else {
        is $admits, $sent, "$name: Redis admitted each request, once ($admits admissions)";
    }

    # --- 1. recorded = reported, key by key; 2. within the limits
    my (%rep, %n200, %n429);
    for my $r (@ok200) {
        my $rec = $sim{"$r->{i}.$r->{j}"} or next;
        $rep{ $r->{i} }{in} += $rec->{prompt_tokens};
        $rep{ $r->{i} }{out} += $rec->{completion_tokens};
        $n200{ $r->{i} }++;
    }
    $n429{ $_->{i} }++ for @r429;
    my (@usage_bad, @over, @not_whole, @no429, @cap_bad);
    my ($tot_in, $tot_out, $at_limit) = (0, 0, 0);
    for my $i (0 .. $KEYS - 1) {
        my $h = $s->{ $ids[$i] } // {};
        my $b = $before->{ $ids[$i] } // {};
        my ($in, $out, $req) = map { ($h->{$_} // 0) - ($b->{$_} // 0) } qw(in out req);
        my ($ein, $eout, $ereq) = ($rep{$i}{in} // 0, $rep{$i}{out} // 0, $n200{$i} // 0);
        push @usage_bad, "key $i ($ids[$i]): in $in out $out req $req recorded, "
                         . "$ein $eout $ereq reported"
            if $in != $ein || $out != $eout || $req != $ereq;
        my $sp = $spec[$i];
        push @over, "key $i: in $in of $sp->{in}, out $out of $sp->{out}"
            if $in > $sp->{in} || $out > $sp->{out};
        push @not_whole, "key $i: out $out of $sp->{out}"
            if $sp->{kind} == 1 && $out != $sp->{out};
        $at_limit++ if $out == $sp->{out};
        # a refusal comes only once what is used and reserved reaches the
        # limit; with leases, the unused tokens of a block given back when
        # it closes may let the last requests in, clamped to them: such a
        # key ends at exactly its output limit
        push @no429, "key $i (kind $sp->{kind}): $ereq served, out $out of $sp->{out}"
            unless $n429{$i} || $o{lease} && $out == $sp->{out};
        $tot_in += $in;
        $tot_out += $out;
    }
    for my $rec (values %sim) {
        my ($i, $j) = ($rec->{headers}{'x-test-key'}, $rec->{headers}{'x-test-req'});
        my $q = $spec[$i]{q}[$j];
        my $cap = $q->{path} eq '/api/chat' ? $rec->{num_predict} : $rec->{max_tokens};
        push @cap_bad, "key $i req $j: " . ($cap // 'none') . ' (asked ' . ($q->{max} // 'none')
                       . ", limit $spec[$i]{out})"
            if !defined $cap || $cap < 1 || $cap > $spec[$i]{out}
               || ($q->{max} && $cap > $q->{max});
    }
    ok !@usage_bad, "$name: usage exact for all $KEYS keys: recorded in, out and requests "
        . "= what the pool reported ($tot_in in, $tot_out out)"
        or diag scalar(@usage_bad) . ' keys differ: ' . first_few(@usage_bad);
    ok !@over, "$name: no key past its input or output limit"
        or diag scalar(@over) . ' keys over: ' . first_few(@over);
    ok !@not_whole, "$name: each key whose answers write their whole reservation ends at "
        . 'exactly its output limit'
        or diag first_few(@not_whole);
    ok !@cap_bad, "$name: no upstream max_tokens (num_predict) past what was asked or the key's limit"
        or diag first_few(@cap_bad);
    my $refused_keys = grep { $n429{$_} } 0 .. $KEYS - 1;
    ok !@no429, "$name: every key was driven past its quota ($refused_keys refused at least once"
        . ($o{lease} ? ', the others at exactly their output limit)' : ')')
        or diag scalar(@no429) . ' keys not: ' . first_few(@no429);

    # the admin API says the same, for a sample of the keys
    my @admin_bad;
    for (my $i = 0; $i < $KEYS; $i += int($KEYS / 20) || 1) {
        my $u = $t->admin('GET', "/admin/keys/$ids[$i]")->{json}{usage} // {};
        my $h = $s->{ $ids[$i] } // {};
        push @admin_bad, "key $i: admin " . join('/', map { $u->{$_} // '?' }
                                                 qw(input_tokens output_tokens requests))
                         . ' redis ' . join('/', map { $h->{$_} // '?' } qw(in out req))
            if ($u->{input_tokens} // -1) != ($h->{in} // -2)
               || ($u->{output_tokens} // -1) != ($h->{out} // -2)
               || ($u->{requests} // -1) != ($h->{req} // -2)
               || $u->{reserved_input_tokens} || $u->{reserved_output_tokens}
               || $u->{leased_input_tokens} || $u->{leased_output_tokens};
    }
    ok !@admin_bad, "$name: GET /admin/keys/{id} shows the same usage (a sample of 20 keys)"
        or diag first_few(@admin_bad);

    note sprintf '%s: %d keys in %.1f s; %d requests in %.1f s: %d served, %d refused; '
        . '%d keys at their output limit; the pool\'s records read in %.1f s; %.1f s in all',
        $name, $KEYS, $t_keys, $sent, $t_burst, scalar(@ok200), scalar(@r429),
        $at_limit, $t_sim, time - $t0;
    $t->finish;
}

run_path('leases', lease => 1);
run_path('per request');

done_testing;
