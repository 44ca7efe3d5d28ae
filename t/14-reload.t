#!/usr/bin/perl
# nginx reloaded (HUP) under traffic: the old workers finish their
# requests and settle them; no settlement is lost.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use Nebula::Test;

my $t = Nebula::Test->new;
my $k = $t->new_key(plan => 'developer');
my ($C, $N) = (4, 25);     # clients, requests each

pipe my $rd, my $wr or die $!;
my @pids;
for my $c (1 .. $C) {
    my $pid = fork // die $!;
    if ($pid == 0) {
        close $rd;
        for my $i (1 .. $N) {
            my $stream = $i % 2;
            my $r = $t->post('/v1/chat/completions', {
                    model => 'qwen3:latest', stream => $stream ? JSON::PP::true : JSON::PP::false,
                    ($stream ? (stream_options => { include_usage => JSON::PP::true }) : ()),
                    messages => [{ role => 'user', content => "client $c request $i" }] },
                headers => { Authorization => "Bearer $k->{key}", 'x-sim-tokens' => 5 + $i % 7,
                             'x-sim-fault' => 'slow:5' }, timeout => 30);
            my ($p, $o) = (0, 0);
            if ($r->{status} == 200 && $stream) {
                my ($u) = grep { ref $_ && ref $_->{usage} } Nebula::Test::sse_events($r->{body});
                ($p, $o) = ($u->{usage}{prompt_tokens}, $u->{usage}{completion_tokens}) if $u;
            } elsif ($r->{status} == 200) {
                ($p, $o) = ($r->{json}{usage}{prompt_tokens}, $r->{json}{usage}{completion_tokens});
            }
            syswrite $wr, "$r->{status} $p $o\n";
        }
        POSIX::_exit(0);
    }
    push @pids, $pid;
}
close $wr;

# two HUPs that reach a master still busy with a reload are one reload
# (valgrind: a reload takes seconds), so each waits for the last one
my $hups = sub { scalar(() = $t->error_log =~ /signal 1 \(SIGHUP\) received/g) };
for my $i (1 .. 3) {
    sleep 0.3;
    $t->reload;
    my $deadline = time + 5 * $Nebula::Test::TIME_SCALE;
    sleep 0.05 while $hups->() < $i && time < $deadline;
}
waitpid $_, 0 for @pids;
my @res = map { [split / /] } grep { length } split /\n/, do { local $/; <$rd> };

is $hups->(), 3, 'nginx reloaded three times';
is scalar @res, $C * $N, 'every request answered';
my @ok = grep { $_->[0] == 200 } @res;
is scalar @ok, $C * $N, 'every request served across three reloads';
my ($p, $o) = (0, 0);
for (@ok) { $p += $_->[1]; $o += $_->[2] }

ok $t->wait_settled($k->{key}), 'all settled';
my $u = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
is $u->{requests}, scalar @ok, 'every served request was settled';
is $u->{input_tokens}, $p, 'input tokens as reported';
is $u->{output_tokens}, $o, 'output tokens as reported';

$t->done;
