#!/usr/bin/perl
# Open WebUI's requests to an Ollama connection, as its source sends them
# (backend/open_webui/routers/ollama.py, utils/payload.py,
# retrieval/utils.py; docs/clients.md), replayed against the gateway, and
# each answer checked for what Open WebUI reads of it.
#
#   verify:   GET /api/version, Bearer key: 200 and a "version" its
#             get_ollama_versions() parses (dotted integers)
#   models:   GET /api/tags (every entry needs "name" and "model"), then
#             GET /api/ps (the loaded models; an error there it ignores)
#   chat:     POST /api/chat, stream, options from the model's params,
#             keep_alive, think and format at the top
#   title:    POST /api/chat, stream false, a top-level num_predict
#   RAG:      POST /api/embed {input: [chunks], model, truncate: true}
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch_catalog => sub {
        $_[0] . "\nnebula_model  nomic-embed-text:latest  pool=ollama_local"
              . " upstream_model=nomic-embed-text:latest context=2048 input_price=0.01"
              . " kind=embedding group=basic;\n";
    },
);
my $k = $t->new_key(plan => 'developer');
# what aiohttp sends with each of Open WebUI's requests
my %h = (Authorization => "Bearer $k->{key}", 'Content-Type' => 'application/json',
         'X-OpenWebUI-User-Name' => 'Ada', 'X-OpenWebUI-User-Id' => 'u1',
         'X-OpenWebUI-User-Email' => 'ada@example.com', 'X-OpenWebUI-User-Role' => 'user',
         'Accept-Encoding' => 'gzip, deflate');

# ---- verify
my $r = $t->get('/api/version', headers => { Authorization => "Bearer $k->{key}" });
is $r->{status}, 200, 'verify: 200';
(my $v = $r->{json}{version} // '') =~ s/^v|-.*//g;
ok $v =~ /^\d+(\.\d+)*$/, "verify: a version it parses ($r->{json}{version})";

# ---- models
$r = $t->get('/api/tags', headers => \%h);
is $r->{status}, 200, 'tags: 200';
my @models = @{ $r->{json}{models} // [] };
ok @models > 0, 'tags: models';
is scalar(grep { !defined $_->{name} || !defined $_->{model} } @models), 0,
    'tags: each with name and model';
ok !grep({ $_->{name} eq 'qwen3-vl:235b-cloud' } @models), "tags: not a model the plan lacks";
$r = $t->get('/api/ps', headers => \%h);
is $r->{status}, 200, 'ps: 200';
is ref $r->{json}{models}, 'ARRAY', 'ps: a list, as it reads it';

# ---- chat, as convert_payload_openai_to_ollama makes it
$t->sim('local')->reset;
$r = $t->post('/api/chat', {
    model => 'qwen3:latest', stream => JSON::PP::true,
    messages => [{ role => 'system', content => 'You are helpful.' },
                 { role => 'user', content => 'Why is the sky blue?' }],
    options => { temperature => 0.8, top_p => 0.9, num_ctx => 65536, num_predict => 64, seed => 42 },
    keep_alive => '5m', think => JSON::PP::false, format => undef,
}, headers => { %h, 'X-OpenWebUI-Chat-Id' => 'c-1' });
is $r->{status}, 200, 'chat: 200';
my @lines = Nebula::Test::ndjson_lines($r->{body});
ok $lines[-1]{done}, 'chat: NDJSON to done, as it converts';
is scalar(grep { ($_->{model} // '') ne 'qwen3:latest' } @lines), 0, 'chat: the model it asked for on every line';
my $sent = $t->sim('local')->last->{body};
is $sent->{options}{num_ctx}, 32768, 'chat: num_ctx capped at the context';
ok !exists $sent->{keep_alive}, 'chat: its keep_alive not passed';
ok !exists $t->sim('local')->last->{headers}{authorization}, 'chat: the key never reaches the pool';

# ---- title generation
$r = $t->post('/api/chat', {
    model => 'qwen3:latest', stream => JSON::PP::false, num_predict => 1000,
    messages => [{ role => 'user', content => "### Task:\nGenerate a concise title" }],
}, headers => \%h);
is $r->{status}, 200, 'title: 200';
ok defined $r->{json}{message}{content}, 'title: a message';

# ---- RAG embeddings
$r = $t->post('/api/embed', { input => ['first chunk', 'second chunk'], model => 'nomic-embed-text:latest',
                              truncate => JSON::PP::true }, headers => \%h);
is $r->{status}, 200, 'embed: 200';
is scalar @{ $r->{json}{embeddings} // [] }, 2, 'embed: the embeddings it expects';
# with no key configured it sends "Bearer " and gets Ollama's 401
$r = $t->post('/api/embed', { input => ['x'], model => 'nomic-embed-text:latest' },
              headers => { %h, Authorization => 'Bearer ' });
is $r->{status}, 401, 'embed without a key: 401';
ok defined $r->{json}{error} && !ref $r->{json}{error}, "embed without a key: the error it shows";

# the usage of what was served
ok $t->wait_settled($k->{key}), 'settled';
my $u = $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
is $u->{requests}, 3, 'three requests counted: chat, title, embed';

$t->done;
