#!/usr/bin/perl
# What a client may set on a shared fleet (issue 11, items 6 and 7).  Only
# generation options reach a pool; those that change how a model is loaded
# are dropped (one client's choice would reload or unload it for everyone
# on the node), num_ctx is capped at the catalog's context, keep_alive is
# the operator's, a generate without a prompt (it only loads a model) is
# refused, _debug_render_only never reaches a pool.  n above what a model
# honours is refused; within it, the reservation is n times the output.
# The simulator's record of each request is what the pool received.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;

my $t = Nebula::Test->new(
    patch => sub { $_[0] =~ s/(nebula_redis_failure\s+closed;)/$1\n    nebula_pass_options  num_thread;/r },
    patch_catalog => sub {
        $_[0] =~ s/(nebula_model\s+gemma3:1b\b[^;]*);/$1 keep_alive=10m;/r
             =~ s/(nebula_model\s+qwen\/qwen3-coder:free\b[^;]*);/$1 keep_alive=-1 choices=4;/r
    },
);
my $bad = 'invalid_request_error';
my $msgs = [{ role => 'user', content => 'hello there' }];

sub sent { $t->sim('local')->last }

# ---- native options: the generation ones, num_ctx capped, no keep_alive
{
    my $r = $t->post('/api/chat', {
        model => 'qwen3:latest', messages => $msgs, stream => JSON::PP::false,
        keep_alive => 0, Keep_Alive => -1,
        options => { temperature => 0.5, seed => 3, top_k => 20, stop => ['x'],
                     num_gpu => 99, main_gpu => 1, use_mmap => JSON::PP::false,
                     use_mlock => JSON::PP::true, numa => JSON::PP::true, low_vram => JSON::PP::true,
                     num_batch => 1, f16_kv => JSON::PP::true, vocab_only => JSON::PP::true,
                     num_thread => 8, num_ctx => 999999, made_up => 1 } });
    is $r->{status}, 200, 'a native request with every kind of option';
    my $got = sent()->{body};
    is_deeply [sort keys %{ $got->{options} }], [qw(num_ctx num_predict num_thread seed stop temperature top_k)],
        'the pool got the generation options, num_thread (nebula_pass_options), num_ctx and num_predict';
    is $got->{options}{num_ctx}, 32768, 'num_ctx capped at the catalog\'s context';
    is $got->{options}{temperature}, 0.5, 'temperature as sent';
    ok !exists $got->{keep_alive} && !exists $got->{Keep_Alive}, 'no keep_alive, in any spelling';
    is $r->{json}{model}, 'qwen3:latest', 'answered';

    $r = $t->post('/api/generate', { model => 'qwen3:latest', prompt => 'hi', stream => JSON::PP::false,
                                     options => { num_ctx => 4096, num_gpu => 1 } });
    is $r->{status}, 200, 'generate';
    is_deeply sent()->{body}{options}, { num_ctx => 4096, num_predict => 8192 },
        'a num_ctx within the context passes; num_gpu does not';
}

# ---- keep_alive: the operator's, for the model
{
    $t->post('/api/chat', { model => 'gemma3:1b', messages => $msgs, keep_alive => '0s', stream => JSON::PP::false });
    is sent()->{body}{keep_alive}, '10m', 'nebula_model keep_alive=10m: sent, the client\'s gone';
    $t->post('/api/generate', { model => 'qwen/qwen3-coder:free', prompt => 'hi', stream => JSON::PP::false });
    is sent()->{body}{keep_alive}, -1, 'keep_alive=-1: sent as the number Ollama reads';
    $t->post('/v1/chat/completions', { model => 'gemma3:1b', messages => $msgs });
    ok !exists sent()->{body}{keep_alive}, 'not on /v1, which has none';
}

# ---- _debug_render_only never reaches a pool
for my $path ('/v1/chat/completions', '/api/chat') {
    my $r = $t->post($path, { model => 'qwen3:latest', messages => $msgs, _debug_render_only => JSON::PP::true,
                              stream => JSON::PP::false });
    is $r->{status}, 200, "$path: served";
    ok !exists sent()->{body}{_debug_render_only}, "$path: without _debug_render_only";
}

# ---- a generate without a prompt only loads a model: refused
{
    my $before = scalar @{ $t->sim('local')->requests };
    for my $body ({ model => 'qwen3:latest' }, { model => 'qwen3:latest', prompt => '' },
                  { model => 'qwen3:latest', prompt => undef, keep_alive => 0 }) {
        my $r = $t->post('/api/generate', $body);
        is $r->{status}, 400, 'generate without a prompt: 400';
        like $r->{body}, qr/prompt/, 'which names the prompt';
    }
    is scalar @{ $t->sim('local')->requests }, $before, 'none reached the pool';
}

# ---- n: refused beyond what the model honours; within it, n times the output
{
    my $r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', messages => $msgs, n => 2 });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'n=2 on a model that answers one choice', 'n');
    like $r->{json}{error}{message}, qr/answers 1 choice at most/, 'in words';
    $r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', messages => $msgs, n => 1 });
    is $r->{status}, 200, 'n=1 is served';

    my $k = $t->new_key(plan => 'enterprise');
    $r = $t->post('/v1/chat/completions', { model => 'qwen/qwen3-coder:free', messages => $msgs, n => 3,
                                            max_tokens => 100 },
                  headers => { Authorization => "Bearer $k->{key}" });
    is $r->{status}, 200, 'n=3 on a model declared to honour 4';
    is sent()->{max_tokens}, 100, 'each choice asked for max_tokens';
    is $r->{headers}{'x-ratelimit-limit-output-tokens'} - $r->{headers}{'x-ratelimit-remaining-output-tokens'},
        300, 'three times the output reserved';
    $r = $t->post('/v1/chat/completions', { model => 'qwen/qwen3-coder:free', messages => $msgs, n => 5 },
                  headers => { Authorization => "Bearer $k->{key}" });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'n=5 past its 4', 'n');
    $r = $t->post('/v1/chat/completions', { model => 'qwen3:latest', messages => $msgs, n => 'two' });
    Nebula::Test::is_error($r, 400, $bad, 'invalid_value', 'n must be a positive integer', 'n');
}

$t->done;
