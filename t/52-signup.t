#!/usr/bin/perl
# Self-service sign-up (issue 14, item 5): off unless nebula_signup names
# a plan; then POST /v1/accounts makes an account of that plan, its
# management key and a first key that works at once; an invite code when
# one is set; and nginx's own limit_req throttles it per client address,
# its 429 in the API's shape.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

# --- off by default
{
    my $t = Nebula::Test->new;
    my $r = $t->request('POST', '/v1/accounts', body => { name => 'me' }, nokey => 1);
    Nebula::Test::is_error($r, 404, 'invalid_request_error', 'not_found', 'sign-up is off by default: 404');
    like Nebula::Test::error_message($r), qr/not open/, 'said so';
    is $t->redis->cli('ZCARD', 'nb:accounts'), 0, 'no account made';
    $t->finish;
}

# --- on, with an invite code
# (the throttle a little looser than the example's, so that the calls
# before the throttle's own test are not throttled)
my $t = Nebula::Test->new(patch => sub {
    $_[0] =~ s/# nebula_signup        free;/nebula_signup free invite=let-me-in;/r
          =~ s/rate=5r\/m/rate=120r\/m/r =~ s/burst=3 /burst=12 /r;
});
my $r = $t->get('/v1/plans', nokey => 1);
is_deeply $r->{json}{signup}, { plan => 'free', invite_required => JSON::PP::true },
    'GET /v1/plans says sign-up is open, on which plan, and that it needs a code';
$r = $t->request('POST', '/v1/accounts', body => { name => 'Ada', email => 'ada@example.org' }, nokey => 1);
Nebula::Test::is_error($r, 403, 'permission_error', 'invalid_invite_code', 'no invite code: 403', 'invite_code');
$r = $t->request('POST', '/v1/accounts', body => { name => 'Ada', invite_code => 'let-me-out' }, nokey => 1);
Nebula::Test::is_error($r, 403, 'permission_error', 'invalid_invite_code', 'a wrong code: 403', 'invite_code');
$r = $t->request('POST', '/v1/accounts', body => { name => 'Ada', plan => 'enterprise', invite_code => 'let-me-in' },
                 nokey => 1);
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value', 'a sign-up cannot pick its plan', 'plan');
$r = $t->request('POST', '/v1/accounts', body => { name => 'Ada', email => 'ada@example.org',
                                                   invite_code => 'let-me-in' }, nokey => 1);
is $r->{status}, 201, 'signed up: 201';
my $d = $r->{json};
is $d->{data}{plan}, 'free', 'on the plan nebula_signup names';
is_deeply [@{ $d->{data} }{qw(name email status)}], ['Ada', 'ada@example.org', 'active'], 'as asked';
like $d->{management_key}, qr/^nbm-\Q$d->{data}{id}\E-/, 'its management key, once';
like $d->{key}{key}, qr/^nb-\Q$d->{data}{id}\E-/, 'and a first key';
is $d->{key}{name}, 'default', 'named "default"';
$r = $t->post('/v1/chat/completions', { model => 'gemma3:1b', messages => [{ role => 'user', content => 'hi' }] },
              headers => { Authorization => "Bearer $d->{key}{key}" });
is $r->{status}, 200, 'the first key works at once';
is $r->{headers}{'x-ratelimit-limit-output-tokens'}, 20000, 'within the free plan';
Nebula::Test::is_error($t->post('/v1/chat/completions', { model => 'deepseek-v3.1:671b-cloud', messages => [{ role => 'user', content => 'hi' }] },
                                headers => { Authorization => "Bearer $d->{key}{key}" }),
                       403, 'permission_error', 'model_not_allowed', 'and reaches what the plan reaches', 'model');
is $t->get('/v1/keys', headers => { Authorization => "Bearer $d->{management_key}" })->{status}, 200,
    'the management key manages its keys';
ok grep({ $_->{id} eq $d->{data}{id} } @{ $t->admin('GET', '/admin/accounts')->{json}{data} }),
    'the operator sees the account';
Nebula::Test::is_error($t->get('/v1/accounts', nokey => 1), 405, 'invalid_request_error', 'method_not_allowed',
                       'GET: 405');

# throttled: 2 a second and a burst of 12 from one address; the refusal
# is the API's 429
my @codes;
for (1 .. 16) {
    push @codes, $t->request('POST', '/v1/accounts', body => { invite_code => 'let-me-in' }, nokey => 1)->{status};
}
ok scalar(grep { $_ == 429 } @codes) >= 2, 'sign-ups from one address throttled (' . join(' ', @codes) . ')';
$r = $t->request('POST', '/v1/accounts', body => { invite_code => 'let-me-in' }, nokey => 1);
Nebula::Test::is_error($r, 429, 'rate_limit_error', 'rate_limit_exceeded', 'the throttle\'s 429 in the API\'s shape');
$t->allow_error(qr/limiting requests/);

# a plan nginx.conf does not declare is refused when nginx starts
for my $case (['nebula_signup gold;', qr/nebula_signup names plan "gold", which no nebula_plan declares/],
              ['nebula_signup free invite;', qr/invalid parameter "invite": the second is invite=CODE/],
              ['nebula_signup free; nebula_signup free;', qr/"nebula_signup" directive is duplicate/]) {
    my ($rc, $out) = Nebula::Test::nginx_test_conf(Nebula::Test::minimal_conf(<<"HTTP"));
    nebula_model a pool=ollama_local upstream_model=m context=4096 input_price=0.1 output_price=0.2 group=basic;
    nebula_plan free input_tokens=10 output_tokens=10 groups=basic;
    $case->[0]
    server { listen 127.0.0.1:1; location / { nebula signup; } }
HTTP
    isnt $rc, 0, "'$case->[0]': nginx -t fails";
    like $out, $case->[1], 'and says why';
}

$t->done;
