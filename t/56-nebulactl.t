#!/usr/bin/perl
# nebulactl (issue 16, part 2): the admin API from a terminal, driven
# against a running stack: every command, tables and --json, the exit
# codes (a wrong token, an unreachable gateway, a bad argument), the
# configuration file, and its bash completion.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempfile);
use Nebula::Test;
use POSIX ();

my $ctl = "$Nebula::Test::ROOT/build/cli/nebulactl";
ok -x $ctl, 'nebulactl is built (make cli)' or BAIL_OUT("no $ctl: run make cli");

my $t = Nebula::Test->new;
my $url = 'http://127.0.0.1:' . $t->port;

# runs it; returns (exit code, stdout, stderr)
sub ctl {
    my (@args) = @_;
    my %env = (NEBULA_URL => $url, NEBULA_ADMIN_TOKEN => $t->admin_token, HOME => $t->dir);
    %env = (%env, %{ shift @args }) if ref $args[0];
    my ($efh, $err) = tempfile(DIR => $t->dir);
    local @ENV{keys %env} = values %env;
    delete local $ENV{$_} for grep { !defined $env{$_} } keys %env;
    my $out = `$ctl @{[ map { quotemeta } @args ]} 2>$err`;
    my $rc = $? >> 8;
    my $stderr = do { local $/; <$efh> } // '';
    return ($rc, $out, $stderr);
}

my ($rc, $out, $err) = ctl('status');
is $rc, 0, 'status: 0' or diag $err;
like $out, qr/^gateway\s+ok\s+[\d.]+ ms/m, 'the gateway, its round trip';
like $out, qr/^redis\s+up\s+\d+ ms\s+127\.0\.0\.1:\d+/m, 'Redis up, its round trip and address';
like $out, qr/^pool ollama_local\s+1 of 1 servers up/m, 'each pool and its servers';

($rc, $out) = ctl('models');
like $out, qr/^qwen3:latest\s+32\.8K\s+\$0\.20\s+\$0\.60\s+General, reasoning$/m, 'models: context, prices per 1M, use';
like $out, qr/^qwen\/qwen3-coder:free\s+32\.8K\s+free\s+free/m, 'a free model says free';
($rc, $out) = ctl('plans');
like $out, qr/^developer\s+Developer\s+\$10\.00\s+2M\s+500K\s+-\s+\d+$/m, 'plans: price, tokens, rpm, models';

# accounts: create, list, show, update, suspend, resume, revoke
($rc, $out, $err) = ctl('accounts', 'create', '--name', 'Ada <Ltd>', '--plan', 'developer', '--key', 'ci');
is $rc, 0, 'accounts create: 0' or diag $err;
my ($mkey) = $out =~ /management key \(shown once\): (nbm-\S+)/;
my ($akey) = $out =~ /API key "ci" \(shown once\): (nb-\S+)/;
ok $mkey && $akey, 'the management key and the first key, shown once';
my ($id) = $mkey =~ /^nbm-([0-9a-f]{16})-/;
($rc, $out) = ctl('--json', 'accounts', 'list', '--name', 'ada');
my $j = Nebula::Test::json_decode($out);
is_deeply [map { $_->{id} } @{ $j->{data} }], [$id], '--json accounts list --name ada: the API\'s answer, that account';
($rc, $out) = ctl('accounts', 'show', $id);
like $out, qr/^\Q$id\E\s+Ada <Ltd>\s+developer\s+active/m, 'accounts show: a name shown as it is';
($rc, $out) = ctl('accounts', 'update', $id, '--plan', 'pro');
like $out, qr/^\Q$id\E\s+Ada <Ltd>\s+pro\s+active/m, 'accounts update --plan pro';
($rc) = ctl('accounts', 'suspend', $id);
is $rc, 0, 'accounts suspend: 0';
my $chat = sub {
    my ($key) = @_;
    return $t->post('/v1/chat/completions', { model => 'qwen3:latest', max_tokens => 10,
                                              messages => [{ role => 'user', content => 'hi' }] },
                    headers => { Authorization => "Bearer $key" })->{status};
};
is $chat->($akey), 403, 'its key is refused (403)';
ctl('accounts', 'resume', $id);
is $chat->($akey), 200, 'resumed: served';

# keys: of an account, and of their own
($rc, $out) = ctl('keys', 'list', '--account', $id);
like $out, qr/^([0-9a-f]{16})\s+ci\s+-\s+active\s+1\s/m, 'keys list --account: its key, one request';
my ($kid) = $out =~ /^([0-9a-f]{16})\s+ci\s/m;
($rc) = ctl('keys', 'update', $kid, '--account', $id, '--disabled', 'true');
is $rc, 0, 'keys update --account --disabled true';
is $chat->($akey), 401, 'disabled: 401';
ctl('keys', 'update', $kid, '--account', $id, '--disabled', 'false');
is $chat->($akey), 200, 'enabled again: served';
($rc) = ctl('keys', 'suspend', $kid, '--account', $id);
is $rc, 0, 'keys suspend --account: 0';
is $chat->($akey), 401, 'suspended: 401';
ctl('keys', 'resume', $kid, '--account', $id);
is $chat->($akey), 200, 'keys resume: served';
($rc, $out, $err) = ctl('keys', 'create', '--plan', 'free', '--name', 'solo');
is $rc, 0, 'keys create --plan free: 0' or diag $err;
my ($solo) = $out =~ /key \(shown once\): (nb-\S+)/;
my ($solo_id) = $out =~ /^([0-9a-f]{16})\s+solo/m;
is $chat->($solo), 200, 'the key made works';
($rc, $out, $err) = ctl('keys', 'update', $solo_id, '--disabled', 'true');
is $rc, 2, 'a key of its own has no --disabled (the admin API has none for it): exit 2';
($rc) = ctl('keys', 'revoke', $solo_id);
is $rc, 0, 'keys revoke: 0';
($rc, $out) = ctl('keys', 'show', $solo_id);
like $out, qr/^\Q$solo_id\E\s+solo\s+free\s+revoked/m, 'keys show: revoked';

# usage
$t->wait_settled($akey);
($rc, $out) = ctl('usage', '--by', 'model');
like $out, qr/^period \d{4}-\d\d, by model$/m, 'usage --by model: the period';
like $out, qr/^qwen3:latest\s+4\s+\d+\s+\d+\s+\$0\.0000\d+$/m, 'qwen3:latest: its 4 requests, tokens, cost';
is_deeply [$out =~ /^qwen3:latest\s+(\d+\s+\d+\s+\d+)/m], [$out =~ /^total\s+(\d+\s+\d+\s+\d+)/m],
    'the total, the one model\'s';
($rc, $out) = ctl('usage', '--by', 'plan', '--csv');
like $out, qr/^period,plan,input_tokens,output_tokens,requests,cost_usd/, 'usage --csv: the CSV';
($rc, $out) = ctl('usage', '--json');
ok Nebula::Test::json_decode($out)->{total}, 'usage --json: the API\'s JSON';

# top: the metrics read twice, a second apart, requests in between
my $pid = fork // die;
if (!$pid) {
    select undef, undef, undef, 0.3;
    $chat->($akey) for 1 .. 4;
    POSIX::_exit(0);
}
($rc, $out, $err) = ctl('top', '--interval', '1.5', '--count', '1');
waitpid $pid, 0;
is $rc, 0, 'top --count 1: 0' or diag $err;
like $out, qr/^qwen3:latest\s+[1-9][\d.]*\s+0\.0\s+\d+\s+\d+$/m, 'top: qwen3:latest, requests a second' or diag $out;

# the exit codes, and one clear line
($rc, $out, $err) = ctl({ NEBULA_ADMIN_TOKEN => 'wrong-token' }, 'accounts', 'list');
is $rc, 4, 'a wrong token: exit 4';
is $err, "nebulactl: 401 invalid_api_key: Incorrect admin token.\n", 'and one line saying so';
($rc, $out, $err) = ctl({ NEBULA_URL => 'http://127.0.0.1:' . Nebula::Test::free_port() }, 'status');
is $rc, 3, 'an unreachable gateway: exit 3';
like $err, qr/^nebulactl: cannot reach http:\/\/127\.0\.0\.1:\d+: /, 'and says which';
($rc, $out, $err) = ctl('accounts', 'show', 'ffffffffffffffff');
is $rc, 1, 'an unknown account: exit 1';
like $err, qr/^nebulactl: 404 account_not_found: /, 'with the API\'s code and words';
for my $bad (['frobnicate'], ['accounts', 'frob'], ['usage', '--by', 'color'], ['--timeout', 'x', 'status'],
             ['keys', 'update', 'abc', '--disabled', 'maybe'], ['accounts', 'create', '--name', 'x']) {
    ($rc, $out, $err) = ctl(@$bad);
    is $rc, 2, "bad usage (@$bad): exit 2";
}

# the configuration file: after flags and the environment
my $cfg = $t->dir . '/nebulactl.conf';
open my $f, '>', $cfg or die;
print $f "# a comment\nurl = $url\ntoken = " . $t->admin_token . "\n";
close $f;
($rc) = ctl({ NEBULA_URL => undef, NEBULA_ADMIN_TOKEN => undef }, '--config', $cfg, 'accounts', 'list');
is $rc, 0, '--config FILE: url and token from it';
mkdir $t->dir . '/.config';
rename $cfg, $t->dir . '/.config/nebulactl.conf';
($rc) = ctl({ NEBULA_URL => undef, NEBULA_ADMIN_TOKEN => undef }, 'accounts', 'list');
is $rc, 0, '~/.config/nebulactl.conf by default';
($rc) = ctl({ NEBULA_ADMIN_TOKEN => 'wrong-token' }, 'accounts', 'list');
is $rc, 4, 'the environment comes before the file';
open $f, '>', $cfg or die;
print $f "colour = blue\n";
close $f;
($rc, $out, $err) = ctl('--config', $cfg, 'status');
is $rc, 2, 'an unknown setting: exit 2';

# the man page and the bash completion
my $man = "$Nebula::Test::ROOT/cli/nebulactl.1";
open my $m, '<', $man or die;
my $page = do { local $/; <$m> };
for my $cmd (qw(status models accounts keys usage top)) {
    like $page, qr/^\.B \Q$cmd\E/m, "the man page has $cmd";
}
like $page, qr/^\.SH EXIT STATUS/m, 'and the exit codes';
my $comp = "$Nebula::Test::ROOT/cli/nebulactl.bash-completion";
my $words = `bash -c 'source /usr/share/bash-completion/bash_completion; source $comp; COMP_WORDS=(nebulactl acc); COMP_CWORD=1; COMP_LINE="nebulactl acc"; COMP_POINT=13; _nebulactl; echo "\${COMPREPLY[*]}"; COMP_WORDS=(nebulactl usage --by m); COMP_CWORD=3; COMP_LINE="nebulactl usage --by m"; COMP_POINT=22; _nebulactl; echo "\${COMPREPLY[*]}"'`;
is $words, "accounts\nmodel\n", 'bash completion: commands and option values';

$t->done;
