#!/usr/bin/perl
# make bench is not part of make test (timing is not a test), but its setup
# is: bench/run in smoke mode starts its Redis, canned upstream, plain proxy
# and Nebula, checks that both answer right (JSON and SSE, the public model
# name, 200 token chunks), runs wrk for a second a round and writes its
# results, so the benchmark cannot rot unnoticed.  No figure is asserted.
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
like $out, qr/checked: both answer 200, JSON and SSE/, 'both targets answered right';
like $out, qr/^JSON c=\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+/m, 'the table has a JSON line';
like $out, qr/^SSE c=\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+/m, 'the table has an SSE line';

my $f = "$root/build/bench-smoke/results.json";
open my $in, '<', $f or die "$f: $!";
my $res = decode_json(do { local $/; <$in> });
is $res->{mode}, 'smoke', 'results.json written';
ok $res->{json}{plain}{rps} > 0 && $res->{json}{nebula}{rps} > 0, 'JSON rounds measured something';
ok $res->{sse}{plain}{rps} > 0 && $res->{sse}{nebula}{rps} > 0, 'SSE rounds measured something';
ok $res->{stream_scanner}{sse}{mb_per_s} > 0, 'the scanner was timed';
is_deeply $res->{error_log}{counts}, {}, 'no error.log line at [warn] or worse';

done_testing;
