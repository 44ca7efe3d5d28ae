#!/usr/bin/perl
# The prompt estimate is never below what the pool can be made to read
# (issue 11, item 2): tool-call arguments, a /api/generate context of token
# ids, its suffix and template, thinking, images by their size, and a floor
# from the body's size.  A key with little input left is refused what it
# cannot pay for, however many such requests come at once; the context
# check uses the same estimate; what cannot be bounded (an image URL the
# pool would not read, an image whose size cannot be read) is refused.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Compress::Zlib qw(crc32);
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64);
use Nebula::Test;

my $t = Nebula::Test->new;
my $chat = '/v1/chat/completions';
my $bad = 'invalid_request_error';

# a PNG that says it is W x H pixels: its header is all the gateway reads
sub png {
    my ($w, $h) = @_;
    my $ihdr = 'IHDR' . pack('NNCCCCC', $w, $h, 8, 2, 0, 0, 0);
    my $data = "\x89PNG\r\n\x1a\n" . pack('N', 13) . $ihdr . pack('N', crc32($ihdr))
             . pack('N', 0) . 'IEND' . pack('N', crc32('IEND'));
    return encode_base64($data, '');
}

# what a request reserves of a fresh key's input, and its status
sub reserved {
    my ($path, $body) = @_;
    my $k = $t->new_key(plan => 'enterprise');
    my $r = $t->post($path, $body, headers => { Authorization => "Bearer $k->{key}" });
    return ($r->{headers}{'x-ratelimit-limit-input-tokens'} - $r->{headers}{'x-ratelimit-remaining-input-tokens'}, $r);
}

my $args = '{"text":"' . ('lorem ipsum ' x 17000) . '"}';       # ~200 KB
my $tool_msgs = [
    { role => 'user', content => 'hi' },
    { role => 'assistant', content => undef,
      tool_calls => [{ id => 'call_1', type => 'function',
                       function => { name => 'save', arguments => $args } }] },
    { role => 'tool', tool_call_id => 'call_1', content => 'ok' },
];

# ---- each thing the pool reads counts
{
    my ($est) = reserved($chat, { model => 'deepseek-v3.1:671b-cloud', messages => $tool_msgs, max_tokens => 1 });
    ok $est >= length($args) / 4, "a 200 KB tool-call argument: $est tokens, at least its bytes / 4";

    my ($e2) = reserved('/api/chat', { model => 'deepseek-v3.1:671b-cloud', stream => JSON::PP::false,
        options => { num_predict => 1 },
        messages => [{ role => 'assistant', content => '', thinking => 'x' x 80000 },
                     { role => 'user', content => 'and?' }] });
    ok $e2 >= 20000, "80 KB of thinking: $e2 tokens";

    my ($e3) = reserved('/api/generate', { model => 'deepseek-v3.1:671b-cloud', stream => JSON::PP::false,
        prompt => 'go on', suffix => 'y' x 100000, options => { num_predict => 1 } });
    ok $e3 >= 25000, "a 100 KB suffix: $e3 tokens";

    my ($e4) = reserved('/api/generate', { model => 'deepseek-v3.1:671b-cloud', stream => JSON::PP::false,
        prompt => 'go on', template => '{{ .Prompt }}' . ('z' x 40000), options => { num_predict => 1 } });
    ok $e4 >= 10000, "a 40 KB template: $e4 tokens";

    # 30,000 token ids, each one token whatever its digits
    my ($e5) = reserved('/api/generate', { model => 'deepseek-v3.1:671b-cloud', stream => JSON::PP::false,
        prompt => 'go on', context => [ (1) x 30000 ], options => { num_predict => 1 } });
    ok $e5 >= 30000, "a context of 30,000 ids: $e5 tokens";

    my ($small) = reserved($chat, { model => 'qwen3-vl:235b-cloud', max_tokens => 1,
        messages => [{ role => 'user', content => [{ type => 'text', text => 'what' },
            { type => 'image_url', image_url => { url => 'data:image/png;base64,' . png(64, 64) } }] }] });
    my ($big) = reserved($chat, { model => 'qwen3-vl:235b-cloud', max_tokens => 1,
        messages => [{ role => 'user', content => [{ type => 'text', text => 'what' },
            { type => 'image_url', image_url => { url => 'data:image/png;base64,' . png(2800, 2800) } }] }] });
    ok $small >= 256, "a small image: at least 256 tokens ($small)";
    ok $big - $small >= 10000 - 256, "a 2800 x 2800 image: 10,000 tokens ($big)";
}

# ---- the context check counts the same: 50,000 ids are over 32K
{
    my $r = $t->post('/api/generate', { model => 'qwen3:latest', prompt => 'go on', context => [ (7) x 50000 ] });
    Nebula::Test::is_error($r, 400, $bad, 'context_length_exceeded', '50,000 context ids do not fit 32K');
}

# ---- little input left: such requests refused, however many at once
{
    my $k = $t->new_key(plan => 'enterprise', limits => { input_tokens => 30000 });
    my $body = Nebula::Test::json_encode({ model => 'deepseek-v3.1:671b-cloud', messages => $tool_msgs,
                                           max_tokens => 1 });
    my @s;
    for (1 .. 40) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port) or die $!;
        print $s "POST $chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer $k->{key}\r\n"
                 . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
        push @s, $s;
    }
    my %status;
    for my $s (@s) {
        my $r = Nebula::Test::parse_response(Nebula::Test::read_all($s, 30));
        $status{$r->{status}}++;
    }
    is_deeply \%status, { 429 => 40 }, '40 at once, each over what is left: all 429';
    ok $t->wait_settled($k->{key}), 'nothing held';
    is $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage}{input_tokens}, 0, 'nothing charged';
}

# ---- what cannot be bounded is refused
{
    my $r = $t->post($chat, { model => 'qwen3-vl:235b-cloud', messages => [{ role => 'user', content => [
        { type => 'image_url', image_url => { url => 'https://example.com/cat.png' } }] }] });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'an image by URL: the pool would not read it',
                           'messages[0].content[0].image_url');
    $r = $t->post($chat, { model => 'qwen3-vl:235b-cloud', messages => [{ role => 'user', content => [
        { type => 'image_url', image_url => { url => 'data:image/png;base64,' . encode_base64('not an image', '') } }] }] });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'an image whose size cannot be read',
                           'messages[0].content[0].image_url');
    # a few bytes that would have a pool's decoder allocate 40 GB
    $r = $t->post($chat, { model => 'qwen3-vl:235b-cloud', messages => [{ role => 'user', content => [
        { type => 'image_url', image_url => { url => 'data:image/png;base64,' . png(100000, 100000) } }] }] });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'an image of 10^10 pixels',
                           'messages[0].content[0].image_url');
    like $r->{json}{error}{message}, qr/50 million pixels/, 'said in words';
    $r = $t->post('/api/chat', { model => 'qwen3-vl:235b-cloud', messages => [{ role => 'user', content => 'x',
        images => [ encode_base64("GIF89a\x01", '') ] }] });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'native: a cut image', 'messages[0].images[0]');
}

$t->done;
