package Nebula::Test::RESP;

# A small synchronous Redis client (RESP2) for the harness's own checks of
# the Redis Cluster and Sentinel set-ups: their waits poll several nodes
# many times a second, which redis-cli run through the shell would make
# slow, and they want replies as data, not text.
#
#   my $c = Nebula::Test::RESP->connect($port, password => ..., user => ...)
#       or die;                       # undef when nothing answers
#   my $v = $c->call('HGET', $key, $field);   # dies on an error reply
#   my $v = Nebula::Test::RESP::once($port, \%auth, @cmd);  # undef on any failure
#
# Replies: a status or a bulk string as a scalar, nil as undef, an integer
# as a number, an array as an array ref.  An error reply dies with
# "redis: <message>"; a broken or silent connection dies with "redis io: ...".

use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);

sub connect {
    my ($class, $port, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp',
                                  Timeout => $o{timeout} // 1)
        or return;
    binmode $s;
    my $self = bless { s => $s, buf => '', timeout => $o{timeout} // 2, port => $port }, $class;
    if (defined $o{password} && length $o{password}) {
        my $ok = eval {
            $self->call('AUTH', (defined $o{user} && length $o{user} ? $o{user} : ()),
                        $o{password});
            1;
        };
        return unless $ok;
    }
    return $self;
}

# one command, its reply
sub call {
    my ($self, @args) = @_;
    my $req = '*' . scalar(@args) . "\r\n"
              . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite($self->{s}, $req, length($req) - $off, $off);
        die "redis io: write to $self->{port}: $!\n" unless defined $n;
        $off += $n;
    }
    my $deadline = time + $self->{timeout};
    return $self->_reply($deadline);
}

sub _line {
    my ($self, $deadline) = @_;
    while (1) {
        my $i = index $self->{buf}, "\r\n";
        return substr($self->{buf}, 0, $i + 2, '') =~ s/\r\n\z//r if $i >= 0;
        $self->_fill($deadline);
    }
}

sub _fill {
    my ($self, $deadline) = @_;
    my $left = $deadline - time;
    die "redis io: $self->{port} did not answer\n"
        if $left <= 0 || !IO::Select->new($self->{s})->can_read($left);
    my $n = sysread($self->{s}, my $chunk, 65536);
    die "redis io: $self->{port} closed the connection\n" unless $n;
    $self->{buf} .= $chunk;
}

sub _reply {
    my ($self, $deadline) = @_;
    my $line = $self->_line($deadline);
    my ($t, $rest) = (substr($line, 0, 1), substr($line, 1));
    return $rest if $t eq '+';
    die "redis: $rest\n" if $t eq '-';
    return 0 + $rest if $t eq ':';
    if ($t eq '$') {
        return undef if $rest < 0;
        $self->_fill($deadline) while length($self->{buf}) < $rest + 2;
        my $v = substr($self->{buf}, 0, $rest + 2, '');
        return substr($v, 0, $rest);
    }
    if ($t eq '*') {
        return undef if $rest < 0;
        my @a;
        # an error inside an array (EXEC, a script's table) is kept as text
        for (1 .. $rest) {
            my $v = eval { $self->_reply($deadline) };
            if (!defined $v && $@) {
                die $@ if $@ =~ /^redis io:/;
                ($v = $@) =~ s/\n\z//;
            }
            push @a, $v;
        }
        return \@a;
    }
    die "redis io: unexpected reply from $self->{port}: $line\n";
}

sub close { close $_[0]{s} if $_[0]{s}; delete $_[0]{s} }

# one command on a connection of its own: the reply, or undef when the
# node is unreachable or answered an error (then $@ says what)
sub once {
    my ($port, $auth, @args) = @_;
    my $c = Nebula::Test::RESP->connect($port, %{ $auth // {} }, timeout => 1);
    unless ($c) {
        $@ = "redis io: cannot reach $port\n";
        return undef;
    }
    my $v = eval { $c->call(@args) };
    $c->close;
    return $v;
}

1;
