#!/usr/bin/perl
# make bench is not part of make test (timing is not a test), but its setup
# is: bench/run in smoke mode starts its Redis, canned upstream, the plain
# proxy, Nebula as shipped and the OpenResty gateway (bench/openresty),
# checks that all three answer right (JSON, SSE chunked and under one
# Content-Length, the public model name, 200 token chunks) and that Nebula
# and the Lua gateway record in Redis what the upstream reported, runs
# wrk for a second a round on three of the rows (the hot key, and the keys
# round-robin), then a few slow streams through plain and Nebula, and
# writes its results, so the benchmark cannot rot unnoticed.  No figure is
# asserted.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;

my $root = "$FindBin::Bin/..";
my $out = `BENCH_SMOKE=1 $root/bench/run 2>&1`;
my $rc = $? >> 8;
is $rc, 0, 'bench/run (smoke) ran to its end' or diag $out;
like $out, qr/checked: plain, nebula, nometrics, lua answer 200 \(JSON, SSE chunked, SSE under one/,
    'all four targets answered right (nometrics: nebula less its metrics location)';
like $out, qr/Redis holds what the upstream reported for nebula and nometrics and lua/,
    'nebula, nometrics and lua metered what the upstream reported';
like $out, qr/^metrics' cost\s+nebula\s+nometrics\s+nebula\/nometrics/m, 'the metrics\' cost is a table of the run';
like $out, qr/^JSON, 1 key\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+/m, 'the table has a JSON row';
like $out, qr/^SSE chunked, 1 key\s+[\d.]+\s+[\d.]+\s+[\d.]+/m, 'the table has an SSE row';
like $out, qr/^SSE length, \d+ keys\s+[\d.]+\s+[\d.]+\s+[\d.]+/m,
    'the table has a row with the keys round-robin';
like $out, qr/^nebula\/plain: memory a stream/m, 'the slow streams ran';
unlike $out, qr/NOT the shipped configuration/, 'nebula ran as shipped';

my $f = "$root/build/bench-smoke/results.json";
open my $in, '<', $f or die "$f: $!";
my $res = decode_json(do { local $/; <$in> });
is $res->{mode}, 'smoke', 'results.json written';
is scalar @{ $res->{rows} }, 3, 'three rows';
for my $row (@{ $res->{rows} }) {
    ok $row->{$_}{rps} > 0, "$row->{label}: $_ measured something" for qw(plain nebula lua);
}
is $res->{metering_checks}{$_}{req}, 2, "$_: the metering check's two requests recorded"
    for qw(nebula lua);
my $slow = $res->{slow_streams};
is $slow->{$_}{ok}, $slow->{streams}, "slow streams through $_: every one whole"
    for qw(plain nebula);
ok $res->{stream_scanner}{sse}{mb_per_s} > 0, 'the scanner was timed';
is $res->{metered}{reserved_output_tokens}, 0, 'every reservation given back';
is_deeply $res->{error_log}{counts}, {}, 'no error.log line at [warn] or worse';

done_testing;
