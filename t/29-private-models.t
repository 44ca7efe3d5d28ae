#!/usr/bin/perl
# A private model looks exactly like a model that does not exist to anyone
# whose key does not list it (issue 11, item 8): no key, a made-up key, a
# revoked key, a key of another customer; with or without images, with a
# prompt too long for it.  The key that lists it gets the model's own
# checks, and a refusal then gives its reservation back.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch_catalog => sub {
        $_[0] . "\nnebula_model  acme-ft:7b  pool=ollama_local upstream_model=acme-ft:7b-q4"
              . " context=8192 input_price=1.00 output_price=2.00 private;\n";
    },
);
my $chat = '/v1/chat/completions';
my $png = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

my $owner = $t->new_key(plan => 'enterprise', models => ['acme-ft:7b']);
my $other = $t->new_key(plan => 'enterprise');
my $revoked = $t->new_key(plan => 'enterprise', models => ['acme-ft:7b']);
is $t->admin('DELETE', "/admin/keys/$revoked->{id}")->{status}, 200, 'a revoked key that listed it';
my $madeup = 'nb-' . ('Q' x 43);

my %bodies = (
    'plain'      => sub { { model => $_[0], messages => [{ role => 'user', content => 'hi' }] } },
    'an image'   => sub { { model => $_[0], messages => [{ role => 'user', content => [
                            { type => 'text', text => 'what is it' },
                            { type => 'image_url', image_url => { url => $png } }] }] } },
    'too long'   => sub { { model => $_[0], messages => [{ role => 'user', content => 'word ' x 40000 }] } },
);

# what a client sees, the model's name taken out
sub seen {
    my ($r, $name) = @_;
    my %h = %{ $r->{headers} };
    delete @h{qw(date x-request-id content-length)};
    (my $body = $r->{body}) =~ s/\Q$name\E/MODEL/g;
    return { status => $r->{status}, headers => \%h, body => $body };
}

for my $who (['no key', undef], ['a made-up key', $madeup], ['a revoked key', $revoked->{key}],
             ['another customer\'s key', $other->{key}]) {
    my ($what, $key) = @$who;
    for my $b (sort keys %bodies) {
        my %o = defined $key ? (headers => { Authorization => "Bearer $key" }) : (nokey => 1);
        my $private = $t->post($chat, $bodies{$b}->('acme-ft:7b'), %o);
        my $unknown = $t->post($chat, $bodies{$b}->('acme-xx:7b'), %o);
        next if !defined $key && $private->{status} == 401 && $unknown->{status} == 401
                && is_deeply(seen($private, 'acme-ft:7b'), seen($unknown, 'acme-xx:7b'),
                             "$what, $b: the same 401 for both");
        is $private->{status}, 404, "$what, $b: 404 for the private model";
        is_deeply seen($private, 'acme-ft:7b'), seen($unknown, 'acme-xx:7b'),
            "$what, $b: exactly what an unknown model gets";
    }
}

# the key that lists it: the model's own checks, after admission
my $r = $t->post($chat, $bodies{'an image'}->('acme-ft:7b'), headers => { Authorization => "Bearer $owner->{key}" });
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'invalid_value',
                       'its own key: a text model refuses an image', 'messages');
$r = $t->post($chat, $bodies{'too long'}->('acme-ft:7b'), headers => { Authorization => "Bearer $owner->{key}" });
Nebula::Test::is_error($r, 400, 'invalid_request_error', 'context_length_exceeded',
                       'its own key: a prompt over its context', 'messages');
ok $t->wait_settled($owner->{key}), 'settled';
my $u = $t->admin('GET', "/admin/keys/$owner->{id}")->{json}{usage};
is_deeply [@{$u}{qw(requests input_tokens output_tokens reserved_input_tokens reserved_output_tokens)}],
    [0, 0, 0, 0, 0], 'the refusals were given back, not counted';
$r = $t->post($chat, $bodies{plain}->('acme-ft:7b'), headers => { Authorization => "Bearer $owner->{key}" });
is $r->{status}, 200, 'and its own key is served';

$t->done;
