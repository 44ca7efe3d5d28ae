package Nebula::Test::Failover;
# What the failover tests share (t/63-cluster.t, t/64-sentinel.t): accounts
# made through edges, clients that load them while a master is killed, the
# answers they got, and the check that Redis holds exactly what the clients
# were told.
#
#   my $f = Nebula::Test::Failover->new(edges => \@E, clients => 6);
#   my @acct = $f->accounts(12);            # {id, key, n, in, out}
#   my $r = $f->ask($edge, $acct);          # one request; a 200 counted
#   my @pids = $f->load($tag, $secs, \@edges, unmetered => 0);
#   my @r = $f->results($tag);              # {id, status, code, in, out, at, elapsed}
#   $f->cap($acct, $output_tokens);         # a monthly cap the load meets
#   $f->expected($r)                        # 200, 503 unavailable, a cap's 429
#   my ($wrong, $lost) = $f->exact(\@r);    # after the leases close: usage
#                                           # exact, nothing reserved, no cap passed
use strict;
use warnings;
use POSIX ();
use Time::HiRes qw(sleep time);
use Nebula::Test qw($TIME_SCALE);

my $chat = '/v1/chat/completions';

sub new {
    my ($class, %o) = @_;
    return bless { clients => 6, %o, t0 => time, acct => [] }, $class;
}

sub t0 { $_[0]{t0} }

# accounts on the enterprise plan (far from any quota), a key each, made
# through the edges in turn
sub accounts {
    my ($self, $n) = @_;
    my $E = $self->{edges};
    for my $i (1 .. $n) {
        my $r = $E->[$i % @$E]->admin('POST', '/admin/accounts', { name => "acct $i", plan => 'enterprise' });
        die "account: $r->{status} $r->{body}\n" unless $r->{status} == 201;
        my $k = $E->[($i + 1) % @$E]->post('/v1/keys', { name => "key $i" },
            headers => { Authorization => "Bearer $r->{json}{management_key}" });
        die "key: $k->{status} $k->{body}\n" unless $k->{status} == 201;
        push @{ $self->{acct} }, { id => $r->{json}{data}{id}, key => $k->{json}{key},
                                   n => 0, in => 0, out => 0 };
    }
    return @{ $self->{acct} };
}

# a monthly output cap of its own for an account: its clients meet 429
# insufficient_quota when it is spent (exact() checks it is never passed)
sub cap {
    my ($self, $a, $out) = @_;
    my $r = $self->{edges}[0]->admin('PATCH', "/admin/accounts/$a->{id}",
                                     { limits => { output_tokens => $out } });
    die "cap: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    $a->{cap} = $out;
}

# what may answer a request of this account in a failover: a 200, a 503
# quota_store_unavailable, and a 429 insufficient_quota once it is capped
sub expected {
    my ($self, $r) = @_;
    return 1 if $r->{status} == 200;
    return 1 if $r->{status} == 503 && $r->{code} eq 'quota_store_unavailable';
    my ($a) = grep { $_->{id} eq $r->{id} } @{ $self->{acct} };
    return $a->{cap} && $r->{status} == 429 && $r->{code} eq 'insufficient_quota';
}

sub capped { my ($self, $id) = @_; return grep { $_->{id} eq $id && $_->{cap} } @{ $self->{acct} } }

# one chat completion; a 200 (unless unmetered) counted as its account's
sub ask {
    my ($self, $e, $a, %o) = @_;
    my $t0 = time;
    my $r = $e->post($chat, { model => 'gemma3:1b', max_tokens => 8,
                              messages => [{ role => 'user', content => 'Say hello.' }] },
                     headers => { Authorization => "Bearer $a->{key}" }, timeout => 10);
    $r->{elapsed} = time - $t0;
    if ($r->{status} == 200 && !$o{unmetered}) {
        $a->{n}++;
        $a->{in} += $r->{json}{usage}{prompt_tokens};
        $a->{out} += $r->{json}{usage}{completion_tokens};
    }
    return $r;
}

# clients (forked) ask the accounts in turn through the edges for $secs;
# each writes what it got to a file of the first edge's directory
sub load {
    my ($self, $tag, $secs, $edges, %o) = @_;
    my @acct = @{ $self->{acct} };
    my @pids;
    for my $i (0 .. $self->{clients} - 1) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open my $out, '>', $self->{edges}[0]->dir . "/$tag-$i" or POSIX::_exit(1);
            my $end = time + $secs;
            my $n = $i;
            while (time < $end) {
                my $a = $acct[$n % @acct];
                my $e = $edges->[int($n / @acct) % @$edges];
                $n++;
                my $at = time - $self->{t0};
                my $r = $self->ask($e, $a, %o);
                my $u = $r->{status} == 200 ? $r->{json}{usage} : {};
                printf $out "%s %d %s %d %d %.3f %.3f\n", $a->{id}, $r->{status},
                       $r->{json}{error}{code} // '-', $u->{prompt_tokens} // 0,
                       $u->{completion_tokens} // 0, $at, $r->{elapsed};
            }
            close $out;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    return @pids;
}

sub results {
    my ($self, $tag) = @_;
    my @r;
    for my $i (0 .. $self->{clients} - 1) {
        open my $in, '<', $self->{edges}[0]->dir . "/$tag-$i" or next;
        while (<$in>) {
            my ($id, $st, $code, $in, $out, $at, $el) = split;
            push @r, { id => $id, status => $st, code => $code, in => $in, out => $out,
                       at => $at, elapsed => $el };
        }
    }
    return @r;
}

# Waits until every account's month in Redis counts what its clients were
# told (the asks of this process and the 200s of @r) with nothing left
# reserved (the leases closed), for up to 12 s; then the accounts that are
# off (diag'd) and what is missing: {n, in, out}
sub exact {
    my ($self, $r) = @_;
    my %seen;
    for (grep { $_->{status} == 200 } @$r) {
        my $s = $seen{ $_->{id} } //= { n => 0, in => 0, out => 0 };
        $s->{n}++;
        $s->{in} += $_->{in};
        $s->{out} += $_->{out};
    }
    my @acct = @{ $self->{acct} };
    my %want = map {
        my $s = $seen{ $_->{id} } // { n => 0, in => 0, out => 0 };
        ($_->{id} => { n => $_->{n} + $s->{n}, in => $_->{in} + $s->{in}, out => $_->{out} + $s->{out} })
    } @acct;

    my $e = $self->{edges}[-1];
    my %u;
    my $deadline = time + 12 * $TIME_SCALE;
    while (time < $deadline) {
        %u = map { $_->{id} => $e->admin('GET', "/admin/accounts/$_->{id}")->{json}{data}{usage} // {} } @acct;
        last unless grep {
            my $u = $u{ $_->{id} };
            ($u->{reserved_input_tokens} // 1) || ($u->{reserved_output_tokens} // 1)
            || ($u->{requests} // 0) < $want{ $_->{id} }{n}
        } @acct;
        sleep 0.25;
    }

    my ($wrong, %lost) = (0, n => 0, in => 0, out => 0);
    for my $a (@acct) {
        my ($w, $u) = ($want{ $a->{id} }, $u{ $a->{id} });
        $lost{n} += $w->{n} - ($u->{requests} // 0);
        $lost{in} += $w->{in} - ($u->{input_tokens} // 0);
        $lost{out} += $w->{out} - ($u->{output_tokens} // 0);
        next if $w->{n} == ($u->{requests} // -1) && $w->{in} == ($u->{input_tokens} // -1)
                && $w->{out} == ($u->{output_tokens} // -1)
                && !($u->{reserved_input_tokens} // 1) && !($u->{reserved_output_tokens} // 1)
                && (!$a->{cap} || $u->{output_tokens} <= $a->{cap});
        $wrong++;
        Test::More::diag(sprintf '%s: told %d req %d in %d out; redis %s req %s in %s out, reserved %s in %s out',
            $a->{id}, $w->{n}, $w->{in}, $w->{out},
            map { $_ // 'none' } @$u{qw(requests input_tokens output_tokens
                                          reserved_input_tokens reserved_output_tokens)});
    }
    return ($wrong, \%lost);
}

1;
