#!/usr/bin/perl
# OpenAI's "developer" role (what newer OpenAI clients send instead of
# "system") and the legacy "function" role: accepted on /v1, metered as
# any message, and sent to Ollama, which knows neither, as "system" and
# "tool".  Ollama's own /api/chat refuses them as any unknown role.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;

my $r = $t->post('/v1/chat/completions', {
    model => 'qwen3:latest',
    messages => [
        { role => 'developer', content => 'Answer in one word.' },
        { role => 'user', content => 'The weather?' },
        { role => 'assistant', content => undef,
          function_call => { name => 'weather', arguments => '{"city":"Oslo"}' } },
        { role => 'function', name => 'weather', content => 'rain' },
    ] });
is $r->{status}, 200, 'developer and function roles: served';
my $sent = $t->sim('local')->last->{body};
is_deeply [ map { $_->{role} } @{ $sent->{messages} } ], [qw(system user assistant tool)],
    'Ollama gets them as system and tool';
is $sent->{messages}[0]{content}, 'Answer in one word.', 'the content as it was';
is $sent->{messages}[3]{name}, 'weather', "the function message's name as it was";
is $r->{json}{model}, 'qwen3:latest', 'the public model name';

# streamed too, and the usage settled as for any request
$r = $t->post('/v1/chat/completions', {
    model => 'qwen3:latest', stream => JSON::PP::true,
    messages => [{ role => 'developer', content => 'Be brief.' },
                 { role => 'user', content => 'Hi' }] });
is $r->{status}, 200, 'a stream with a developer message';
is $t->sim('local')->last->{body}{messages}[0]{role}, 'system', 'streamed: system upstream';
ok $t->wait_settled($t->key), 'settled';

# Ollama's own API: no such roles
$r = $t->post('/api/chat', {
    model => 'qwen3:latest', stream => JSON::PP::false,
    messages => [{ role => 'developer', content => 'x' }] });
is $r->{status}, 400, '/api/chat: developer refused';
like $r->{body}, qr/messages\[0\]\.role/, 'naming the field';

$t->done;
