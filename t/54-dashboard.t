#!/usr/bin/perl
# The dashboard (issue 15) in a real browser: Debian's chromium, headless,
# driven by puppeteer-core (t/clients/package.json) through the flows of
# t/dashboard/flows.js, on the configuration we ship (quota leases on)
# with sign-up open.  Each page is screenshotted at desktop and phone
# sizes into build/test-shots/ (README.md shows one).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Path qw(make_path remove_tree);
use Nebula::Test;

my $root = $Nebula::Test::ROOT;
my $clients = "$root/build/clients/node_modules";
my $chromium = $ENV{CHROMIUM} // '/usr/bin/chromium';
ok -x $chromium, "chromium is installed ($chromium; tools/install-deps installs it)"
    or BAIL_OUT('no chromium: run make test, whose tools/install-deps installs it');
ok -d "$clients/puppeteer-core", 'puppeteer-core is installed (make clients)'
    or BAIL_OUT("no $clients/puppeteer-core: run make clients");

my $t = Nebula::Test->new(lease => 1, patch => sub {
    $_[0] =~ s/# nebula_signup        free;/nebula_signup free;/r;
});

my $shots = "$root/build/test-shots";
remove_tree($shots);
make_path($shots);

local $ENV{NEBULA_URL} = 'http://127.0.0.1:' . $t->port;
local $ENV{NEBULA_ADMIN_TOKEN} = $t->admin_token;
local $ENV{NEBULA_SHOTS} = $shots;
local $ENV{NODE_PATH} = $clients;
local $ENV{CHROMIUM} = $chromium;
# chromium's profile and crash files go to the test's own directory
local $ENV{HOME} = $t->dir;
local $ENV{XDG_CONFIG_HOME} = $t->dir . '/chromium-config';
local $ENV{XDG_CACHE_HOME} = $t->dir . '/chromium-cache';

open my $run, '-|', 'timeout', '300', 'node', "$root/t/dashboard/flows.js" or die "node: $!";
my $n = 0;
while (my $line = <$run>) {
    chomp $line;
    my ($verdict, $what, $why) = split /\t/, $line, 3;
    next unless defined $what && $verdict =~ /^(ok|not ok)$/;
    $n++;
    ok $verdict eq 'ok', $what or diag $why;
}
close $run;
is $? >> 8, 0, 'the flows exited cleanly';
ok $n >= 50, "the flows made their checks ($n)";

$t->done;
