#!/usr/bin/perl
# Where Nebula sits among nginx's phases: nginx's own access checks (allow,
# deny, auth_basic, auth_request) have their say first, so a request they
# refuse reads no body, touches no quota and reaches no pool; and an
# internal redirect from one Nebula location into another (an operator's
# fallback on an upstream error) admits and settles the request once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(patch => sub {
    my $c = shift;
    $c =~ s{(        location = /v1/models \{)}
           {        location = /denied/chat/completions {
            deny all;
            nebula chat;
            include nebula-proxy.conf;
        }

        location = /fallback/chat/completions {
            # the pool serves the public path
            rewrite ^ /v1/chat/completions break;
            nebula chat;
            include nebula-proxy.conf;
            proxy_intercept_errors on;
            error_page 500 = \@retry;
        }

        # a named location: a redirect to a URI would turn POST into GET
        location \@retry {
            rewrite ^ /v1/chat/completions break;
            nebula chat;
            include nebula-proxy.conf;
            proxy_set_header x-sim-fault "";
        }

$1};
    return $c;
});

$t->allow_error(qr/access forbidden by rule/);

my $body = { model => 'qwen3:latest', messages => [{ role => 'user', content => 'hello there' }] };
my $me = $t->get('/v1/key')->{json}{data};

sub usage { $t->admin('GET', "/admin/keys/$me->{id}")->{json}{usage} }

# --- deny all: 403 as JSON, nothing read, nothing counted, nothing sent
$t->sim('local')->reset;
my $r = $t->post('/denied/chat/completions', $body);
is $r->{status}, 403, 'deny all refuses before Nebula';
is $r->{json}{error}{type}, 'permission_error', 'as OpenAI-style JSON';
is scalar @{ $t->sim('local')->requests }, 0, 'no request reached the pool';
ok $t->wait_settled($t->key), 'nothing left reserved';
is usage()->{requests}, 0, 'the key counted no request';

# --- a 500 from the pool, retried through an internal redirect
$t->sim('local')->reset;
$r = $t->post('/fallback/chat/completions', $body, headers => { 'x-sim-fault' => '500' });
is $r->{status}, 200, 'the retry location answered';
is $r->{json}{model}, 'qwen3:latest', 'under the public name';
my @sent = @{ $t->sim('local')->requests };
is scalar @sent, 2, 'the pool saw the first try and the retry';
is $sent[1]{model}, 'qwen3:latest', 'the retry carries the upstream model';
ok !$sent[1]{authorization}, 'and not the client key';
ok $t->wait_settled($t->key), 'settled';
my $u = usage();
is $u->{requests}, 1, 'admitted once, not once a location';
is $u->{input_tokens}, $r->{json}{usage}{prompt_tokens}, 'input as reported by the retry';
is $u->{output_tokens}, $r->{json}{usage}{completion_tokens}, 'output as reported by the retry';

$t->done;
