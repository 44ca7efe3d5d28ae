#!/usr/bin/perl
# make deb (issue 16, part 3): libnginx-mod-http-nebula, laid out as
# Debian's own libnginx-mod-* packages are, passes lintian (no error),
# depends on the exact nginx ABI it was built for, and its module loads
# in nginx from where the package puts it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use Nebula::Test qw(nginx_test_conf);

my $root = $Nebula::Test::ROOT;
ok -x '/usr/bin/lintian', 'lintian is installed (tools/install-deps installs it)'
    or BAIL_OUT('no lintian: run make test, whose tools/install-deps installs it');

my $out = tempdir('nebula-deb-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $deb = `$root/tools/build-deb $out 2>&1`;
is $? >> 8, 0, 'tools/build-deb' or diag $deb;
chomp $deb;
like $deb, qr{/libnginx-mod-http-nebula_[^/]+_amd64\.deb$}, "the package: $deb";

my $lint = `lintian --fail-on error $deb 2>&1`;
is $? >> 8, 0, 'lintian: no error' or diag $lint;
unlike $lint, qr/^E: /m, 'no E: line' or diag $lint;

my $info = `dpkg-deb -f $deb Package Depends Section`;
my ($abi) = `dpkg-query -W -f='\${Provides}' nginx` =~ /(nginx-abi-[^\s,]+)/;
like $info, qr/^Depends: \Q$abi\E, /m, "it depends on the ABI of the nginx it was built for ($abi)";
like $info, qr/^Depends: .*libhiredis0\.14.*libyajl2/m, 'and on the libraries it links';
like $info, qr/^Section: httpd$/m, 'section httpd, as libnginx-mod-* are';

my %files = map { s{^\./}{/}r => 1 } map { (split ' ')[-1] } split /\n/, `dpkg-deb -c $deb`;
for my $f ('/usr/lib/nginx/modules/ngx_http_nebula_module.so',
           '/usr/share/nginx/modules-available/mod-http-nebula.conf',
           '/usr/share/nebula/dashboard/index.html', '/usr/share/nebula/dashboard/js/main.js',
           '/usr/bin/nebulactl', '/usr/share/man/man1/nebulactl.1.gz',
           '/usr/share/bash-completion/completions/nebulactl',
           '/usr/share/doc/libnginx-mod-http-nebula/examples/nebula.conf',
           '/usr/share/doc/libnginx-mod-http-nebula/copyright') {
    ok $files{$f}, "it holds $f";
}

# unpacked, the module loads as its snippet says, and nebulactl runs
my $x = tempdir('nebula-deb-x-XXXXXX', TMPDIR => 1, CLEANUP => 1);
system('dpkg-deb', '-x', $deb, $x) == 0 or die;
open my $s, '<', "$x/usr/share/nginx/modules-available/mod-http-nebula.conf" or die;
is scalar <$s>, "load_module modules/ngx_http_nebula_module.so;\n", 'the snippet loads it from nginx\'s modules/';
my $conf = Nebula::Test::minimal_conf("    server { listen 127.0.0.1:1; location / { nebula models; } }\n")
    =~ s{^load_module \S+;}{load_module $x/usr/lib/nginx/modules/ngx_http_nebula_module.so;}mr;
my ($rc, $nout) = nginx_test_conf($conf);
is $rc, 0, 'nginx -t loads the packaged module' or diag $nout;
my $help = `$x/usr/bin/nebulactl --help 2>&1`;
like $help, qr/^usage: nebulactl/, 'the packaged nebulactl runs';
for my $script (qw(postinst postrm)) {
    system('dpkg-deb', '-e', $deb, "$x/DEBIAN") unless -d "$x/DEBIAN";
    system('sh', '-n', "$x/DEBIAN/$script");
    is $? >> 8, 0, "its $script is valid sh";
}

done_testing;
