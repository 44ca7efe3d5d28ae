#!/usr/bin/perl
# Mistakes in the catalog are caught by nginx -t with a message that names
# the file and the line of the directive at fault.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test qw(nginx_test_conf);

sub conf { Nebula::Test::minimal_conf(@_) }

my $module = $Nebula::Test::MODULE;

my $model = 'pool=ollama_local upstream_model=m context=4096 input_price=0.1 output_price=0.2';

my ($rc, $out, $file) = nginx_test_conf(conf(<<"CONF"));
    nebula_model a $model group=basic;
    nebula_plan free input_tokens=10 output_tokens=10 groups=basic;
    server { listen 127.0.0.1:1; location / { nebula chat; } }
CONF
is $rc, 0, 'a good catalog passes nginx -t' or diag $out;

my @cases = (
    ['unknown pool', "    nebula_model a pool=nowhere upstream_model=m context=1 input_price=0 output_price=0 group=g;\n",
     qr/unknown pool "nowhere".* in \S+nginx\.conf:7/],
    ['duplicate model', "    nebula_model a $model group=g;\n    nebula_model a $model group=g;\n",
     qr/duplicate model "a" in \S+nginx\.conf:8/],
    ['bad number', "    nebula_model a pool=ollama_local upstream_model=m context=4k input_price=0 output_price=0 group=g;\n",
     qr/invalid parameter "context=4k" of model "a" in \S+nginx\.conf:7/],
    ['bad price', "    nebula_model a pool=ollama_local upstream_model=m context=1 input_price=\$1 output_price=0 group=g;\n",
     qr/invalid parameter "input_price=\$1" .* in \S+nginx\.conf:7/],
    ['a price past 64 bits of micro-USD', "    nebula_model a pool=ollama_local upstream_model=m context=1 input_price=99999999999999 output_price=0 group=g;\n",
     qr/invalid parameter "input_price=99999999999999" .* in \S+nginx\.conf:7/],
    ['a price of a million USD per 1M tokens', "    nebula_model a pool=ollama_local upstream_model=m context=1 input_price=0 output_price=1000000 group=g;\n",
     qr/invalid parameter "output_price=1000000" .* in \S+nginx\.conf:7/],
    ['a description past 200 bytes', "    nebula_model a pool=ollama_local upstream_model=m context=1 input_price=0 output_price=0 group=g \"description=" . ('x' x 201) . "\";\n",
     qr/invalid parameter "description=x+" .* in \S+nginx\.conf:7/],
    ['missing parameter', "    nebula_model a pool=ollama_local context=1 input_price=0 output_price=0 group=g;\n",
     qr/model "a" needs pool=, upstream_model=.* in \S+nginx\.conf:7/],
    ['plan with an unknown group', "    nebula_model a $model group=basic;\n"
     . "    nebula_plan free input_tokens=1 output_tokens=1 groups=basic,gold;\n",
     qr/plan "free" names unknown group "gold".* in \S+nginx\.conf:8/],
    ['plan with a bad number', "    nebula_model a $model group=basic;\n"
     . "    nebula_plan free input_tokens=-1 output_tokens=1 groups=basic;\n",
     qr/invalid parameter "input_tokens=-1" of plan "free" in \S+nginx\.conf:8/],
    ['embedding model with an output price', "    nebula_model e pool=ollama_local upstream_model=m context=1 input_price=1 output_price=1 kind=embedding group=g;\n",
     qr/embedding model "e" takes no output_price.* in \S+nginx\.conf:7/],
    ['an unknown kind', "    nebula_model e pool=ollama_local upstream_model=m context=1 input_price=1 output_price=1 kind=vision group=g;\n",
     qr/invalid parameter "kind=vision" of model "e" in \S+nginx\.conf:7/],
    ['embedding model without an input price', "    nebula_model e pool=ollama_local upstream_model=m context=1 kind=embedding group=g;\n",
     qr/model "e" needs pool=, upstream_model=, context=, input_price= in \S+nginx\.conf:7/],
    ['unknown endpoint', "    server { listen 127.0.0.1:1; location / { nebula chatt; } }\n",
     qr/unknown nebula endpoint "chatt".* in \S+nginx\.conf:7/],
    ['pool secret never echoed', "    upstream c { server 127.0.0.1:2; }\n"
     . "    nebula_pool c https api_key=sk-very-secret bogus=1;\n",
     qr/invalid parameter 3 of pool "c" in \S+nginx\.conf:8/],
    ['model directive outside http', undef, qr/"nebula_model" directive is not allowed here/],
    ['a cluster with a database', "    nebula_redis cluster 127.0.0.1:7000 password=sk-very-secret db=2;\n",
     qr/nebula_redis cluster: a cluster has one database, db= cannot apply in \S+nginx\.conf:7/],
    ['a cluster with no node', "    nebula_redis cluster password=sk-very-secret;\n",
     qr/nebula_redis cluster needs the address of at least one node of the cluster in \S+nginx\.conf:7/],
    ['a sentinel master with no sentinel', "    nebula_redis sentinel=main;\n",
     qr/nebula_redis sentinel=main needs the address of at least one sentinel in \S+nginx\.conf:7/],
    ['a sentinel password on a single Redis', "    nebula_redis 127.0.0.1:6379 sentinel_password=sk-very-secret;\n",
     qr/invalid parameter 1 of nebula_redis in \S+nginx\.conf:7/],
    ['a bad node address', "    nebula_redis cluster 127.0.0.1:7000 127.0.0.1:99999;\n",
     qr/invalid redis address "127\.0\.0\.1:99999".* in \S+nginx\.conf:7/],
    ['nebula_redis_wait of no replica', "    nebula_redis 127.0.0.1:6379;\n    nebula_redis_wait 0;\n",
     qr/"nebula_redis_wait" directive takes off, or a number of replicas from 1 to 16 in \S+nginx\.conf:8/],
    ['nebula_redis_wait past the command timeout', "    nebula_redis 127.0.0.1:6379;\n"
     . "    nebula_redis_timeout 500ms;\n    nebula_redis_wait 1 500ms;\n",
     qr/nebula_redis_wait's timeout must be shorter than nebula_redis_timeout/],
);

for my $c (@cases) {
    my ($name, $http, $want) = @$c;
    my $text = defined $http ? conf($http)
        : "load_module $module;\nevents { }\nnebula_model a $model group=g;\nhttp { }\n";
    ($rc, $out) = nginx_test_conf($text);
    isnt $rc, 0, "$name: nginx -t fails";
    like $out, $want, "$name: the message names the fault, file and line";
    unlike $out, qr/sk-very-secret/, "$name: no secret in the message";
}

# the three forms of nebula_redis, and nebula_redis_wait, pass
for my $line ("nebula_redis cluster 127.0.0.1:7000 127.0.0.1:7001 user=u password=p;",
              "nebula_redis sentinel=main 127.0.0.1:26379 127.0.0.1 db=1 password=p sentinel_password=s;",
              "nebula_redis unix:/run/redis.sock;\n    nebula_redis_wait 1 50ms;") {
    ($rc, $out) = nginx_test_conf(conf("    $line\n    server { listen 127.0.0.1:1; location / { nebula chat; } }\n"));
    is $rc, 0, "nginx -t passes: $line" or diag $out;
}

done_testing;
