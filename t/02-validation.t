#!/usr/bin/perl
# Every refusal of the contract's table that the foundation owns, over real
# HTTP: the exact status, type, code and param, JSON always, and nothing
# sent upstream.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new;
my $chat = '/v1/chat/completions';
my $msgs = '"messages":[{"role":"user","content":"Hi"}]';

sub refused {
    my ($raw, $status, $type, $code, $param, $name, %o) = @_;
    my $r = $t->request('POST', $o{path} // $chat, body => $raw, %o);
    Nebula::Test::is_error($r, $status, $type, $code, $name, $param);
    return $r;
}

my $bad = 'invalid_request_error';

refused('', 400, $bad, 'invalid_json', undef, 'empty body');
refused('null', 400, $bad, 'invalid_json', undef, 'JSON null');
refused('[1,2]', 400, $bad, 'invalid_json', undef, 'JSON array');
refused('{"model":"qwen3:latest",', 400, $bad, 'invalid_json', undef, 'truncated JSON');
refused("{\"model\":\"qwen3:latest\xff\",$msgs}", 400, $bad, 'invalid_json', undef,
        'invalid UTF-8');
refused('{"model":"qwen3:latest","model":"gemma3:1b",' . $msgs . '}', 400, $bad,
        'invalid_json', undef, 'duplicate keys');
refused('{"model":"qwen3:latest","x":' . ('[' x 100000) . (']' x 100000) . ",$msgs}",
        400, $bad, 'invalid_json', undef, 'nesting 100,000 deep');

refused("{$msgs}", 400, $bad, 'missing_field', 'model', 'no model');
refused('{"model":"qwen3:latest"}', 400, $bad, 'missing_field', 'messages', 'no messages');
refused('{"model":["qwen3:latest"],' . $msgs . '}', 400, $bad, 'invalid_value', 'model',
        'model as an array');
refused("{\"model\":\"qwen3:latest\\r\\nX-Injected: 1\",$msgs}", 404, $bad,
        'model_not_found', 'model', 'CR/LF in the model name');
refused('{"model":"qwen3:latest","messages":[]}', 400, $bad, 'invalid_value', 'messages',
        'empty messages');
refused('{"model":"qwen3:latest","messages":[{"role":"wizard","content":"x"}]}', 400, $bad,
        'invalid_value', 'messages[0].role', 'unknown role');
refused('{"model":"qwen3:latest","messages":[{"role":"user"}]}', 400, $bad,
        'missing_field', 'messages[0].content', 'message without content');
refused("{\"model\":\"qwen3:latest\",$msgs,\"temperature\":2.01}", 400, $bad,
        'invalid_value', 'temperature', 'temperature above 2');
refused("{\"model\":\"qwen3:latest\",$msgs,\"temperature\":-1}", 400, $bad,
        'invalid_value', 'temperature', 'negative temperature');
refused("{\"model\":\"qwen3:latest\",$msgs,\"temperature\":1e400}", 400, $bad,
        'invalid_value', 'temperature', 'temperature 1e400');
refused("{\"model\":\"qwen3:latest\",$msgs,\"max_tokens\":0}", 400, $bad,
        'invalid_value', 'max_tokens', 'max_tokens 0');
refused("{\"model\":\"qwen3:latest\",$msgs,\"max_tokens\":2.5}", 400, $bad,
        'invalid_value', 'max_tokens', 'fractional max_tokens');
refused("{\"model\":\"qwen3:latest\",$msgs,\"stream\":\"true\"}", 400, $bad,
        'invalid_value', 'stream', 'stream as a string');

refused("{\"model\":\"gpt-4o\",$msgs}", 404, $bad, 'model_not_found', 'model',
        'model not in the catalog');
refused("{\"model\":\"QWEN3:LATEST\",$msgs}", 404, $bad, 'model_not_found', 'model',
        'model names match exactly');

# gemma3:1b has a 4K context: ~20,000 characters do not fit
my $long = 'lorem ipsum ' x 2000;
refused("{\"model\":\"gemma3:1b\",\"messages\":[{\"role\":\"user\",\"content\":\"$long\"}]}",
        400, $bad, 'context_length_exceeded', 'messages', 'prompt over the context');
my $r = $t->post($chat, { model => 'qwen3:latest',
                          messages => [{ role => 'user', content => $long }] });
is $r->{status}, 200, 'the same prompt fits a 32K model';

# images only to a vision model (a real 1 x 1 PNG: the gateway reads its size)
my $png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==';
my $img = { role => 'user', content => [
    { type => 'text', text => 'what is this?' },
    { type => 'image_url', image_url => { url => "data:image/png;base64,$png" } } ] };
refused(Nebula::Test::json_encode({ model => 'qwen3:latest', messages => [$img] }),
        400, $bad, 'invalid_value', 'messages', 'image to a text-only model');
$r = $t->post($chat, { model => 'qwen3-vl:235b-cloud', messages => [$img] });
is $r->{status}, 200, 'image to the vision model passes';

# the native API refuses in the same shape
refused('{"model":"gemma3:1b","messages":"hi"}', 400, $bad, 'invalid_value', 'messages',
        '/api/chat: messages as a string', path => '/api/chat');
refused('{"model":"nope","prompt":"hi"}', 404, $bad, 'model_not_found', 'model',
        '/api/generate: unknown model', path => '/api/generate');
refused('{"model":"gemma3:1b","prompt":"hi","options":{"num_predict":"x"}}', 400, $bad,
        'invalid_value', 'options.num_predict', '/api/generate: bad num_predict',
        path => '/api/generate');

# methods and paths
$r = $t->get($chat);
Nebula::Test::is_error($r, 405, $bad, 'method_not_allowed', 'GET on chat completions');
$r = $t->get('/v1/nothing');
Nebula::Test::is_error($r, 404, $bad, 'not_found', 'unknown path');
unlike $r->{body}, qr/<html/i, 'no nginx HTML page';

# nothing refused went upstream (the three accepted requests did)
is scalar @{ $t->sim('local')->requests }, 1, 'refusals never reach the local pool';
is scalar @{ $t->sim('cloud')->requests }, 1, 'refusals never reach the cloud pool';

$t->done;
