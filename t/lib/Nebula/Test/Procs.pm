package Nebula::Test::Procs;

# The redis-server processes of Nebula::Test::Cluster and
# Nebula::Test::Sentinel: started as our children, each with the kernel
# asked to SIGKILL it when the test process dies (prctl PR_SET_PDEATHSIG,
# so even a test killed by a signal leaves none behind), and all of them
# killed in an END block, which runs after a die too (before global
# destruction, whose order would be anyone's guess).

use strict;
use warnings;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my %live;    # pid => the pid of the process that started it

# prctl(2)'s number on the machines we run on
my %SYS_PRCTL = (x86_64 => 157, aarch64 => 167, i686 => 172, i386 => 172);
my ($ARCH) = (POSIX::uname())[4];

# pid of `@cmd` started with stdout and stderr appended to $log
sub spawn {
    my ($log, @cmd) = @_;
    my $parent = $$;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        # PR_SET_PDEATHSIG (1), SIGKILL; exec keeps it
        syscall($SYS_PRCTL{$ARCH}, 1, 9) if $SYS_PRCTL{$ARCH};
        # the parent may have gone in the meantime
        POSIX::_exit(0) if getppid() != $parent;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        # not exit: that would run the parent's END blocks and DESTROYs here
        exec(@cmd) or POSIX::_exit(127);
    }
    $live{$pid} = $$;
    return $pid;
}

sub alive {
    my ($pid) = @_;
    return 0 unless $pid && $live{$pid};
    local $?;
    return 1 if waitpid($pid, WNOHANG) == 0;
    delete $live{$pid};    # gone by itself, reaped now
    return 0;
}

# $sig, then SIGKILL if it has not gone within $secs; reaps it
sub reap {
    my ($pid, $sig, $secs) = @_;
    return unless $pid && $live{$pid};
    local $?;
    kill $sig // 'TERM', $pid;
    my $deadline = time + ($secs // 3);
    while (time < $deadline) {
        last if waitpid($pid, WNOHANG) != 0;
        sleep 0.01;
    }
    if (kill 0, $pid) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    delete $live{$pid};
}

# several at once: TERM to all, then wait for all (a cluster's six nodes
# go in the time of one)
sub reap_all {
    my (@pids) = grep { $_ && $live{$_} } @_;
    return unless @pids;
    # in an END block $? is the test's exit status: waitpid must not touch it
    local $?;
    kill 'TERM', @pids;
    my $deadline = time + 3;
    my %left = map { $_ => 1 } @pids;
    while (%left && time < $deadline) {
        for my $pid (keys %left) {
            delete $left{$pid} if waitpid($pid, WNOHANG) != 0;
        }
        sleep 0.01 if %left;
    }
    for my $pid (keys %left) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    delete @live{@pids};
}

# stdout and stderr of a command run without a shell; $? as it ended
sub capture {
    my (@cmd) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec(@cmd) or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh>;
    close $fh;
    return $out // '';
}

END {
    # a die in the test, or an exit without stop
    reap_all(grep { $live{$_} == $$ } keys %live);
}

1;
