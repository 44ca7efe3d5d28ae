#!/usr/bin/perl
# Real clients from npm drive the gateway (issue 13): the official openai
# SDK (chat, completions, embeddings, responses), Anthropic's SDK
# (messages, streams, tools), ollama-js and LangChain.js (@langchain/openai, @langchain/ollama),
# installed at build time into build/clients
# (t/clients/package.json).  Each script prints what its client saw; the
# usage each request settled equals what the simulator reported.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $clients = "$Nebula::Test::ROOT/build/clients/node_modules";
ok -d "$clients/openai" && -d "$clients/ollama" && -d "$clients/\@langchain/openai"
   && -d "$clients/\@anthropic-ai/sdk",
    'the SDKs are installed (make clients)'
    or BAIL_OUT("no $clients: run make clients");

my $t = Nebula::Test->new(
    patch_catalog => sub {
        $_[0] . "\nnebula_model  nomic-embed-text:latest  pool=ollama_local"
              . " upstream_model=nomic-embed-text:v1.5 context=2048 input_price=0.01"
              . " kind=embedding group=basic;\n";
    },
);

sub run_client {
    my ($script, $key) = @_;
    local $ENV{NEBULA_URL} = 'http://127.0.0.1:' . $t->port;
    local $ENV{NEBULA_KEY} = $key->{key};
    local $ENV{NODE_PATH} = $clients;
    my $out = `node $Nebula::Test::ROOT/t/clients/$script 2>&1`;
    is $?, 0, "$script ran" or diag $out;
    my ($line) = grep { /^\{/ } split /\n/, $out;
    my $j = Nebula::Test::json_decode($line // '') // {};
    return $j;
}

# what the simulator counted, and what the key's month says
sub pool_usage {
    my ($sim, @paths) = @_;
    my ($p, $c, $n) = (0, 0, 0);
    for my $rec (@{ $sim->requests }) {
        next unless ($rec->{status} // 0) == 200;
        $p += $rec->{prompt_tokens} // 0;
        $c += $rec->{completion_tokens} // 0;
        $n++;
    }
    return ($p, $c, $n);
}

sub key_usage {
    my ($k) = @_;
    $t->wait_settled($k->{key}) or diag 'not settled';
    return $t->admin('GET', "/admin/keys/$k->{id}")->{json}{usage};
}

# ---- openai
$t->sim('local')->reset;
my $k = $t->new_key(plan => 'developer');
my $o = run_client('openai.js', $k);

my $chat = $o->{chat}{ok} // {};
is $chat->{model}, 'qwen3:latest', 'openai chat: the public name';
ok length($chat->{text} // ''), 'openai chat: a text';
is $chat->{usage}{completion_tokens}, 5, 'openai chat: max_tokens 5 honoured';

my $st = $o->{stream}{ok} // {};
ok length($st->{text} // ''), 'openai stream: a text';
is_deeply $st->{models}, ['qwen3:latest'], 'openai stream: every chunk names the public model';
is $st->{usage}{completion_tokens}, 12, 'openai stream: the usage chunk it asked for';

my $cp = $o->{completion}{ok} // {};
is $cp->{model}, 'qwen3:latest', 'openai completions: the public name';
is $cp->{usage}{completion_tokens}, 4, 'openai completions: usage';
ok length($o->{completion_stream}{ok}{text} // ''), 'openai completions stream: a text';

my $em = $o->{embedding}{ok} // {};
is $em->{model}, 'nomic-embed-text:latest', 'openai embeddings: the public name';
is $em->{count}, 2, 'openai embeddings: two';
is $em->{dims}, 8, 'openai embeddings: base64 passed through, decoded by the SDK';
ok defined $em->{first} && $em->{first} =~ /^-?[\d.]+(e-?\d+)?$/i, 'openai embeddings: numbers';
is $em->{usage}{prompt_tokens}, (2 + 2) + (2 + 2), 'openai embeddings: usage';

is_deeply $o->{model}{ok}, { id => 'qwen/qwen3-coder:free', object => 'model' },
    'openai models.retrieve: a name with a slash';
ok scalar(grep { $_ eq 'qwen3:latest' } @{ $o->{models}{ok} // [] }), 'openai models.list';

is $o->{unknown_model}{error}, 'NotFoundError', 'openai: an unknown model is NotFoundError';
is $o->{unknown_model}{code}, 'model_not_found', '... with its code';
is $o->{bad_key}{error}, 'AuthenticationError', 'openai: a bad key is AuthenticationError';
is $o->{not_allowed}{error}, 'PermissionDeniedError', "openai: a model the plan lacks is PermissionDeniedError";
is $o->{bad_temperature}{error}, 'BadRequestError', 'openai: temperature 5 is BadRequestError';
is $o->{bad_temperature}{param}, 'temperature', '... naming the param';

my $rs = $o->{responses}{ok} // {};
is $rs->{status}, 'completed', 'openai responses: completed';
is $rs->{model}, 'qwen3:latest', 'openai responses: the public name';
ok length($rs->{text} // ''), 'openai responses: a text';
my $rss = $o->{responses_stream}{ok} // {};
ok length($rss->{text} // ''), 'openai responses stream: a text';
is $rss->{last}, 'response.completed', 'openai responses stream: response.completed last';
ok $rss->{usage}{output_tokens}, "openai responses stream: the completed event's usage";

my ($p, $c, $n) = pool_usage($t->sim('local'));
my $u = key_usage($k);
is $n, 7, 'openai: seven answers from the pool';
is $u->{input_tokens}, $p, "openai: input settled = the pool's ($p)";
is $u->{output_tokens}, $c, "openai: output settled = the pool's ($c)";

# ---- @anthropic-ai/sdk
$t->sim('local')->reset;
my $ka = $t->new_key(plan => 'developer');
my $an = run_client('anthropic.js', $ka);

my $am = $an->{message}{ok} // {};
is $am->{model}, 'qwen3:latest', 'anthropic message: the public name';
is $am->{type}, 'message', 'anthropic message: a message';
ok length($am->{text} // ''), 'anthropic message: a text';
is $am->{usage}{output_tokens}, 5, 'anthropic message: max_tokens 5 honoured';
my $as = $an->{stream}{ok} // {};
ok length($as->{text} // ''), 'anthropic stream: a text';
is $as->{text}, $as->{final_text}, "anthropic stream: the final message is the deltas'";
is $as->{model}, 'qwen3:latest', 'anthropic stream: the public name';
is $as->{last}, 'message_stop', 'anthropic stream: message_stop last';
is $as->{usage}{output_tokens}, 12, "anthropic stream: message_delta's usage";
my $at = $an->{tool_use}{ok} // {};
is $at->{stop_reason}, 'tool_use', 'anthropic tools: stop_reason tool_use';
is $at->{name}, 'get_weather', 'anthropic tools: the call';
is_deeply $at->{input_keys}, ['query'], 'anthropic tools: its input';
is $at->{answer}{stop_reason}, 'end_turn', 'anthropic tools: the tool_result answered';
is $an->{tool_use_stream}{ok}{stop_reason}, 'tool_use', 'anthropic tools, streamed: tool_use';
is_deeply $an->{tool_use_stream}{ok}{input_keys}, ['query'], 'anthropic tools, streamed: input_json_delta read';
ok length($an->{bearer}{ok}{text} // ''), 'anthropic: authToken (Bearer) works';
is_deeply $an->{auth}{auth_token}, ['authorization'], '... sent as Authorization';
ok length($an->{x_api_key}{ok}{text} // ''), 'anthropic: an x-api-key header works';
is_deeply $an->{auth}{x_api_key}, ['x-api-key'], '... sent as x-api-key alone';
ok length($an->{auth}{api_key}[0] // ''), "anthropic: apiKey sent as the SDK sends it ($an->{sdk})";
is $an->{unknown_model}{error}, 'NotFoundError', 'anthropic: an unknown model is NotFoundError';
is $an->{unknown_model}{type}, 'not_found_error', "... in Anthropic's shape";
is $an->{bad_request}{error}, 'BadRequestError', 'anthropic: max_tokens 0 is BadRequestError';
is $an->{bad_request}{type}, 'invalid_request_error', "... in Anthropic's shape";

($p, $c, $n) = pool_usage($t->sim('local'));
$u = key_usage($ka);
is $n, 7, 'anthropic: seven answers from the pool';
is $u->{input_tokens}, $p, "anthropic: input settled = the pool's ($p)";
is $u->{output_tokens}, $c, "anthropic: output settled = the pool's ($c)";

# ---- ollama-js
$t->sim('local')->reset;
my $ko = $t->new_key(plan => 'developer');
my $l = run_client('ollama.js', $ko);

my $oc = $l->{chat}{ok} // {};
is $oc->{model}, 'qwen3:latest', 'ollama chat: the public name';
is $oc->{eval_count}, 4, 'ollama chat: num_predict 4 honoured';
my $og = $l->{generate_stream}{ok} // {};
ok $og->{done}, 'ollama generate stream: done';
is $og->{eval_count}, 6, 'ollama generate stream: its count';
is_deeply $og->{models}, ['qwen3:latest'], 'ollama generate stream: the public name on every line';
my $oe = $l->{embed}{ok} // {};
is $oe->{count}, 2, 'ollama embed: two';
is $oe->{prompt_eval_count}, 5 + 3, 'ollama embed: its count';
ok scalar(grep { $_ eq 'qwen3:latest' } @{ $l->{list}{ok} // [] }), 'ollama list: the models the key reaches';
ok !scalar(grep { $_ eq 'qwen3-vl:235b-cloud' } @{ $l->{list}{ok} // [] }), 'ollama list: not the others';
like $l->{version}{ok} // '', qr/^\d+\.\d+\.\d+$/, 'ollama version';
is_deeply $l->{ps}{ok}, [['nomic-embed-text:latest', 'nomic-embed-text:latest', 2048],
                         ['qwen3:latest', 'qwen3:latest', 32768]],
          'ollama ps: what it ran, public names, the catalog\'s context' or diag explain $l->{ps};
is_deeply $l->{show}{ok}{context}, [32768], "ollama show: the catalog's context";
is $l->{show}{ok}{from}, 'qwen/qwen3-coder:free', 'ollama show: the public name in the Modelfile';
is $l->{unknown_model}{error}, 'ResponseError', 'ollama: an unknown model is ResponseError';
is $l->{unknown_model}{status}, 404, '... 404';
like $l->{unknown_model}{message} // '', qr/^The model 'llama9:1b' does not exist/,
    "... whose message is ours: Ollama's shape read as Ollama's";
is $l->{pull}{status}, 403, 'ollama pull: 403';
like $l->{pull}{message} // '', qr/changes the model fleet/, '... said in words';
is $l->{delete}{status}, 403, 'ollama delete: 403';

($p, $c, $n) = pool_usage($t->sim('local'));
$u = key_usage($ko);
is $n, 5, 'ollama: five answers from the pool (show and ps among them)';
is $u->{input_tokens}, $p, "ollama: input settled = the pool's ($p)";
is $u->{output_tokens}, $c, "ollama: output settled = the pool's ($c)";

# ---- LangChain.js
$t->sim('local')->reset;
my $kc = $t->new_key(plan => 'developer');
my $lcr = run_client('langchain.js', $kc);

my $lc = $lcr->{openai_chat}{ok} // {};
ok length($lc->{text} // ''), 'langchain ChatOpenAI: a text' or diag explain $lcr->{openai_chat};
is $lc->{usage}{output_tokens}, 4, 'langchain ChatOpenAI: maxTokens honoured, usage read';
is $lc->{model}, 'qwen3:latest', 'langchain ChatOpenAI: the public name';
my $ls = $lcr->{openai_stream}{ok} // {};
ok length($ls->{text} // ''), 'langchain ChatOpenAI stream: a text' or diag explain $lcr->{openai_stream};
is $lcr->{openai_embed}{ok}{count}, 2, 'langchain OpenAIEmbeddings: two' or diag explain $lcr->{openai_embed};
is $lcr->{openai_embed}{ok}{dims}, 8, 'langchain OpenAIEmbeddings: their vectors';
ok length($lcr->{ollama_chat}{ok}{text} // ''), 'langchain ChatOllama: a text' or diag explain $lcr->{ollama_chat};
is $lcr->{ollama_chat}{ok}{usage}{output_tokens}, 3, 'langchain ChatOllama: numPredict honoured, usage read';
is $lcr->{ollama_embed}{ok}{dims}, 8, 'langchain OllamaEmbeddings: a vector' or diag explain $lcr->{ollama_embed};

($p, $c) = pool_usage($t->sim('local'));
$u = key_usage($kc);
is $u->{input_tokens}, $p, "langchain: input settled = the pool's ($p)";
is $u->{output_tokens}, $c, "langchain: output settled = the pool's ($c)";

$t->done;
