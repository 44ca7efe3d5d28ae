#!/usr/bin/perl
# The $nebula_* variables, as an operator uses them in log_format and
# add_header.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use Nebula::Test;

my $t = Nebula::Test->new(patch_proxy => sub { $_[0] =~ s/proxy_read_timeout\s+\d+s;/proxy_read_timeout 1s;/r },
                          patch => sub {
    my $c = shift;
    $c =~ s{(location = /v1/chat/completions \{\n)}
           {$1            add_header x-nebula-vars "\$nebula_model|\$nebula_upstream_model|\$nebula_pool|\$nebula_pool_url|\$nebula_pool_host|\$nebula_prompt_tokens_estimate" always;\n};
    $c =~ s{(access_log\s+logs/access\.log nebula;)}
           {log_format vars '\$request_uri m=\$nebula_model u=\$nebula_upstream_model p=\$nebula_pool a=\$nebula_pool_authorization';\n    access_log logs/vars.log vars;\n    $1};
    return $c;
});

# a request's line is written as it ends, just after its response: the
# next request, maybe on the other worker, waits for it, or a slow run
# (valgrind) writes the lines out of order
sub logged {
    my ($n) = @_;
    my $deadline = time + 2 * $Nebula::Test::TIME_SCALE;
    while (time < $deadline) {
        open my $f, '<', $t->dir . '/logs/vars.log' or return;
        return if (() = grep { m{^/v1/} } <$f>) >= $n;
        sleep 0.01;
    }
}

my $r = $t->post('/v1/chat/completions', { model => 'qwen/qwen3-coder:free',
                                           messages => [{ role => 'user', content => 'abcdefgh' }] });
is $r->{status}, 200, 'local model';
# the estimate: the larger of what is counted, (8 + 3) / 4 + 4 + 3 = 9,
# and the floor, a token for each 4 bytes of the body's 83: 21
is $r->{headers}{'x-nebula-vars'},
   'qwen/qwen3-coder:free|qwen3-coder:30b|ollama_local|http://ollama_local|ollama_local|21',
   'variables of a local model';
logged(1);

$r = $t->post('/v1/chat/completions', { model => 'deepseek-v3.1:671b-cloud',
                                        messages => [{ role => 'user', content => 'x' }] });
# counted: 1 + 4 + 3 = 8; the floor: 79 bytes, 20 tokens
is $r->{headers}{'x-nebula-vars'},
   'deepseek-v3.1:671b-cloud|deepseek-v3.1:671b|ollama_cloud|http://ollama_cloud|127.0.0.1|20',
   'variables of a cloud model (rendered for plain HTTP to the simulator)';
logged(2);

$r = $t->post('/v1/chat/completions', { model => 'nope', messages => [{ role => 'user', content => 'x' }] });
is $r->{status}, 404, 'unknown model';
is $r->{headers}{'x-nebula-vars'}, '|||||', 'variables are empty before a model is chosen';
logged(3);

# a pool that stalls: nginx's 504 goes through error_page to @nebula_error,
# an internal redirect that forgets module contexts; the log still knows
$t->allow_error(qr/upstream timed out/);
$r = $t->post('/v1/chat/completions', { model => 'qwen3:latest',
                                        messages => [{ role => 'user', content => 'x' }] },
              headers => { 'x-sim-fault' => 'stall' });
is $r->{status}, 504, 'a stalled pool: 504';
is $r->{json}{error}{code}, 'upstream_timeout', 'as upstream_timeout';

$t->stop_nginx;   # flushes the access log
open my $f, '<', $t->dir . '/logs/vars.log' or die $!;
my @log = grep { m{^/v1/} } <$f>;
is scalar @log, 4, 'four requests logged';
like $log[0], qr{^/v1/chat/completions m=qwen/qwen3-coder:free u=qwen3-coder:30b p=ollama_local a=$},
    'log line of the local model: no pool key';
like $log[1], qr{ m=deepseek-v3\.1:671b-cloud u=deepseek-v3\.1:671b p=ollama_cloud a=Bearer sim-cloud-key$},
    'log line of the cloud model';
like $log[2], qr{ m=- u=- p=- a=-$}, 'log line of a refusal';
like $log[3], qr{ m=qwen3:latest u=qwen3:latest p=ollama_local a=$},
    'log line of a 504 answered by @nebula_error: the variables survive the redirect';

$t->done;
