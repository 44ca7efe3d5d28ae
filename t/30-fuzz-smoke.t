#!/usr/bin/perl
# The fuzz targets (t/fuzz/) run briefly on every `make test`, so they
# build and hold; `make fuzz` runs them for long.
use strict;
use warnings;
use FindBin;
use File::Temp qw(tempdir);
use Test::More;

my $root = "$FindBin::Bin/..";
my $seconds = $ENV{FUZZ_SMOKE_SECONDS} // 3;
my @targets = qw(request image reply sse ndjson json show ps usage cluster);

for my $name (@targets) {
    my $bin = "$root/build/fuzz/fuzz_$name";
    ok -x $bin, "$name is built" or next;
    my $work = tempdir(CLEANUP => 1);
    my $out = `$bin -max_total_time=$seconds -artifact_prefix=$work/ $work $root/t/fuzz/corpus/$name 2>&1`;
    my ($runs) = $out =~ /Done (\d+) runs/;
    is $? >> 8, 0, "$name: no crash in $seconds s" or diag(join "\n", (split /\n/, $out)[-30 .. -1]);
    ok $runs && $runs > 100, "$name: " . ($runs // 0) . ' runs';
}

done_testing;
