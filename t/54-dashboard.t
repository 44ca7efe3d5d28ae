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
use File::Temp ();
use Nebula::Test;

my $root = $Nebula::Test::ROOT;

sub slurp {
    open my $f, '<', $_[0] or return "(none: $_[0])";
    local $/;
    return scalar <$f>;
}
my $clients = "$root/build/clients/node_modules";
my $chromium = $ENV{CHROMIUM} // '/usr/bin/chromium';
ok -x $chromium, "chromium is installed ($chromium; tools/install-deps installs it)"
    or BAIL_OUT('no chromium: run make test, whose tools/install-deps installs it');
ok -d "$clients/puppeteer-core", 'puppeteer-core is installed (make clients)'
    or BAIL_OUT("no $clients/puppeteer-core: run make clients");

# a script that prints one check a line: "ok<TAB>what" or "not ok<TAB>what<TAB>why"
sub run_checks {
    my (@cmd) = @_;
    open my $run, '-|', @cmd or die "$cmd[0]: $!";
    my $n = 0;
    while (my $line = <$run>) {
        chomp $line;
        my ($verdict, $what, $why) = split /\t/, $line, 3;
        next unless defined $what && $verdict =~ /^(ok|not ok)$/;
        $n++;
        ok $verdict eq 'ok', $what or diag $why;
    }
    close $run;
    is $? >> 8, 0, "$cmd[-1]: exited cleanly";
    return $n;
}

# make install puts the files where the example's location serves them from
{
    my $dest = File::Temp::tempdir('nebula-install-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    local $ENV{MAKEFLAGS} = '';
    my $out = `make -s -C $root install DESTDIR=$dest 2>&1`;
    is $? >> 8, 0, 'make install DESTDIR=...' or diag $out;
    my ($alias) = slurp("$root/examples/nebula.conf") =~ m{^\s*alias\s+(\S+);}m;
    my @files = map { s{^$root/dashboard/}{}r } glob("$root/dashboard/*.* $root/dashboard/*/*.*");
    ok @files >= 10, scalar(@files) . ' dashboard files';
    is_deeply [grep { slurp("$dest$alias$_") ne slurp("$root/dashboard/$_") } @files], [],
        "each installed where the example's location serves it ($alias)";
    ok -s "$dest/usr/lib/nginx/modules/ngx_http_nebula_module.so", 'and the module where Debian\'s nginx loads modules';
}

# the number formats, alone
ok run_checks('node', "$root/t/dashboard/format.test.mjs") >= 25, 'the formats were checked';

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

my $n = run_checks('timeout', '300', 'node', "$root/t/dashboard/flows.js");
ok $n >= 50, "the flows made their checks ($n)";

$t->done;
