#!/usr/bin/perl
# Faults under load, briefly: each scenario of bench/faults (make faults)
# for a few seconds, at wrk -c4 and two streaming probes, and the last
# with nebula_lease on too.  With steady
# traffic: Redis killed and restarted, Redis blocked by a script and by
# DEBUG SLEEP, the pool killed mid-stream, nginx reloaded, its binary
# upgraded (USR2, WINCH, QUIT), nginx reloaded while Redis is down.  For
# each, every request served whole is recorded in Redis with exactly the
# usage it carried, nothing is recorded beyond it, streams the pool cut
# are charged what they streamed (docs/metering.md), no reservation is
# left once expired ones are swept, every answer served was right, and
# error.log has no [crit], [alert], [emerg] or worker killed by a signal.
# Each also checks that its fault happened and was seen as it should be.
# t/lib/Nebula/Faults.pm does the work; docs/reliability.md the figures.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;
use Nebula::Faults;

plan skip_all => 'faults under load run nginx daemonized (a binary upgrade), not under '
               . 'NEBULA_NGINX_WRAP' if @Nebula::Test::WRAP;
plan skip_all => 'wrk is not installed (tools/install-deps)'
    if system('command -v wrk >/dev/null 2>&1') != 0;

my %fault_seen = (
    'redis-kill' => sub {
        my ($r) = @_;
        ok $r->{failed}{503}, "closed mode: 503 while Redis was down (@{[ $r->{failed}{503} // 0 ]})";
        ok grep({ /redis at .* unavailable/ } keys %{ $r->{error_log}{by_message} }),
            'error.log says Redis was unavailable';
        ok $r->{error_log}{notices}{redis_back} >= 1, 'and that it is back';
    },
    'redis-slow' => sub {
        my ($r) = @_;
        ok grep({ /unavailable: command timed out/ } keys %{ $r->{error_log}{by_message} }),
            'a 1.2 s stall outlasts nebula_redis_timeout (1 s): command timed out';
        ok $r->{error_log}{notices}{redis_back} >= 1, 'Redis is back after it';
    },
    'upstream-kill' => sub {
        my ($r) = @_;
        ok $r->{failed}{502}, "502 while the pool was down (@{[ $r->{failed}{502} // 0 ]})";
        ok grep({ /Connection refused/ } keys %{ $r->{error_log}{by_message} }),
            'error.log: the pool refused connections';
    },
    'reload' => sub {
        my ($r) = @_;
        is $r->{error_log}{notices}{reloads}, 3, 'nginx reloaded three times';
        is_deeply [grep { /^\d+$/ } keys %{ $r->{failed} }], [], 'no request answered an error';
    },
    'upgrade' => sub {
        my ($r) = @_;
        is $r->{error_log}{notices}{upgrades}, 1, 'one binary upgrade (USR2)';
        ok scalar(grep { $_->{what} =~ /^QUIT: old master \d+ gone/ } @{ $r->{events} }),
            'the old master went after WINCH and QUIT';
        is_deeply [grep { /^\d+$/ } keys %{ $r->{failed} }], [], 'no request answered an error';
    },
    'reload-redis-down' => sub {
        my ($r) = @_;
        is $r->{error_log}{notices}{reloads}, 1, 'nginx reloaded once, with Redis down';
        ok $r->{failed}{503}, "closed mode: 503 while Redis was down (@{[ $r->{failed}{503} // 0 ]})";
    },
);

# every scenario without quota leases, and the one where leases matter
# most (a worker that exits with leases to settle and no Redis) with them
for my $run ((map { [$_, 0] } @Nebula::Faults::ORDER), ['reload-redis-down', 1]) {
    my ($name, $lease) = @$run;
    my $r = Nebula::Faults::run($name, quick => 1, lease => $lease,
        # the harness's sanitizer check (make test-asan), nginx stopped
        on_stop => sub { $_[0]->check_sanitizer if $_[0]->can('check_sanitizer') });
    subtest "$name" . ($lease ? ' (nebula_lease on)' : '') . ": $r->{title}" => sub {
        is_deeply $r->{problems}, [], 'no problem found'
            or diag explain $r->{problems};
        ok $r->{served} > 0, "requests served ($r->{served})";
        is $r->{bad}, 0, 'every answer served carried its tokens and usage';
        is $r->{lost_tokens}, 0, "usage lost: none of $r->{tokens_served} tokens served";
        is $r->{over_tokens}, 0, 'nothing recorded beyond what was served';
        is $r->{reservations_left}, 0, 'no reservation left';
        is $r->{error_log}{crit_alert_emerg}, 0, 'no [crit], [alert] or [emerg]';
        is $r->{error_log}{worker_signals}, 0, 'no worker killed by a signal';
        $fault_seen{$name}->($r);
    } or diag Nebula::Faults::table($r);
}

done_testing;
