#!/usr/bin/perl
# "nebula metrics;" (issue 16, part 1): Prometheus's text format from
# counters every worker shares.  Four workers, concurrent clients: each
# count is exactly what was sent; the tokens and costs are exactly what
# the answers said; the counters survive a reload; pool errors and
# timeouts, a Redis outage and the reconnects that end it are counted;
# no label names a key or an account; promtool (Debian's prometheus)
# accepts the text.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Nebula::Test;
use POSIX ();
use IO::Handle;

my $promtool = '/usr/bin/promtool';
ok -x $promtool, 'promtool is installed (tools/install-deps installs prometheus)'
    or BAIL_OUT('no promtool: run make test, whose tools/install-deps installs it');

# the shipped configuration (leases on), four workers; a pool read
# timeout short enough to meet
my $t = Nebula::Test->new(lease => 1, workers => 4,
    patch_proxy => sub { $_[0] =~ s/proxy_read_timeout\s+300s;/proxy_read_timeout      1s;/r });

sub metrics {
    my $r = $t->get('/metrics', nokey => 1);
    is $r->{status}, 200, 'GET /metrics: 200' unless $_[0];
    my %v;
    for (split /\n/, $r->{body} // '') {
        next if /^#/ || !/\S/;
        my ($name, $value) = /^(\S+(?:\{.*\})?) (\S+)$/ or next;
        $v{$name} = $value;
    }
    return (\%v, $r);
}

sub chat {
    my ($key, %o) = @_;
    return $t->post('/v1/chat/completions',
                    { model => $o{model} // 'qwen3:latest', max_tokens => 20,
                      messages => [{ role => 'user', content => "hello $$" }],
                      ($o{stream} ? (stream => JSON::PP::true) : ()) },
                    headers => { Authorization => "Bearer $key->{key}", %{ $o{headers} // {} } },
                    timeout => 30);
}

my ($m0, $r0) = metrics();
like $r0->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'the text format, version 0.0.4';
# (each worker takes its slot as it starts: under a sanitizer, not at once)
for (1 .. 50 * $Nebula::Test::TIME_SCALE) {
    last if ($m0->{nebula_workers} // 0) == 4;
    select undef, undef, undef, 0.1;
    ($m0) = metrics(1);
}
is $m0->{nebula_workers}, 4, 'four workers count';

# ---- concurrent clients: 6 processes x 10 requests, two plans
my $dev = $t->new_key(plan => 'developer');
my $pro = $t->new_key(plan => 'pro');
pipe my $rd, my $wr or die;
my @kids;
for my $c (1 .. 6) {
    my $pid = fork // die;
    if ($pid == 0) {
        close $rd;
        $wr->autoflush(1);
        my $key = $c % 2 ? $dev : $pro;
        for (1 .. 10) {
            my $r = chat($key);
            my $u = $r->{json}{usage} // {};
            printf $wr "%s %d %d %d\n", ($c % 2 ? 'developer' : 'pro'), $r->{status},
                $u->{prompt_tokens} // 0, $u->{completion_tokens} // 0;
        }
        POSIX::_exit(0);    # not exit: the harness would stop nginx
    }
    push @kids, $pid;
}
close $wr;
my %sent;
while (<$rd>) {
    my ($plan, $status, $in, $out) = split;
    $sent{$plan}{$status}++;
    $sent{$plan}{in} += $in;
    $sent{$plan}{out} += $out;
}
waitpid $_, 0 for @kids;
is $sent{developer}{200} + $sent{pro}{200}, 60, '60 requests served';

# errors: an unknown model, no key
for (1 .. 3) { chat($dev, model => 'no-such-model') }
for (1 .. 2) { $t->post('/v1/chat/completions', { model => 'qwen3:latest', messages => [] }, nokey => 1) }

# usage settles within a second with leases
sleep 2;
my ($m) = metrics();
my $q = 'model="qwen3:latest",pool="ollama_local"';
for my $plan (qw(developer pro)) {
    is $m->{"nebula_requests_total{$q,plan=\"$plan\",status=\"200\"}"}, $sent{$plan}{200},
        "$plan: nebula_requests_total counts each of the $sent{$plan}{200} requests, over four workers";
    is $m->{"nebula_input_tokens_total{$q,plan=\"$plan\"}"}, $sent{$plan}{in},
        "$plan: input tokens, as the answers said ($sent{$plan}{in})";
    is $m->{"nebula_output_tokens_total{$q,plan=\"$plan\"}"}, $sent{$plan}{out},
        "$plan: output tokens ($sent{$plan}{out})";
    # qwen3:latest: $0.20 and $0.60 per 1M
    my $cost = ($sent{$plan}{in} * 0.20 + $sent{$plan}{out} * 0.60) / 1e6;
    ok abs($m->{"nebula_cost_usd_total{$q,plan=\"$plan\"}"} - $cost) < 1e-12,
        "$plan: the cost in USD ($cost)";
}
is $m->{'nebula_errors_total{code="model_not_found"}'}, 3, 'nebula_errors_total: model_not_found 3';
is $m->{'nebula_errors_total{code="invalid_api_key"}'}, 2, 'invalid_api_key 2';
is $m->{'nebula_requests_total{model="",pool="",plan="",status="401"}'}, 2, 'the 401s, with no model or plan';
is $m->{"nebula_request_duration_seconds_count{$q}"}, 60, 'the duration histogram counts the 60';
is $m->{"nebula_request_duration_seconds_bucket{$q,le=\"+Inf\"}"}, 60, 'its +Inf bucket is its count';
is $m->{"nebula_time_to_first_token_seconds_count{$q}"}, 60, 'time to first token: 60';
ok $m->{'nebula_redis_round_trip_seconds_count'} > 0, 'Redis round trips counted';

my ($body) = (metrics(1))[1]{body};
for my $k ($dev, $pro) {
    unlike $body, qr/\Q$k->{id}\E/, 'no label names a key';
}
unlike $body, qr/\b(key|account|key_id)="/, 'no key or account label at all';

# promtool reads it as Prometheus would
my $file = $t->dir . '/metrics.txt';
open my $f, '>', $file or die;
print $f $body;
close $f;
my $lint = `$promtool check metrics < $file 2>&1`;
is $? >> 8, 0, 'promtool check metrics: no problem' or diag $lint;

# ---- examples/: the alert rules pass promtool; they and the Grafana
# dashboard ask only for metrics the exposition has
my %have = map { $_ => 1 } $body =~ /^# TYPE (\S+)/mg;
my $rules = "$Nebula::Test::ROOT/examples/prometheus/nebula-alerts.yml";
my $check = `$promtool check rules $rules 2>&1`;
is $? >> 8, 0, 'promtool check rules examples/prometheus/nebula-alerts.yml' or diag $check;
my $grafana = Nebula::Test::json_decode(do {
    open my $g, '<', "$Nebula::Test::ROOT/examples/grafana/nebula-dashboard.json" or die $!;
    local $/;
    <$g>;
});
ok $grafana && @{ $grafana->{panels} } >= 10, 'the Grafana dashboard is JSON, with its panels';
my @exprs = ((map { map { $_->{expr} } @{ $_->{targets} } } @{ $grafana->{panels} // [] }),
             do { open my $y, '<', $rules or die; grep { /nebula_/ } <$y> });
my %asked = map { s/_(bucket|sum|count)$//r => 1 } map { /\b(nebula_[a-z_]+)/g } @exprs;
is_deeply [grep { !$have{$_} } sort keys %asked], [], 'every metric they name is served: ' . join(', ', sort keys %asked);

# ---- estimated usage: a pool that reports none
chat($dev, stream => 1, headers => { 'x-sim-no-usage' => 1 });
sleep 2;
($m) = metrics();
is $m->{"nebula_estimated_requests_total{$q}"}, 1, 'a request without usage: estimated, counted';

# ---- pool failures: a refused connection (the cloud pool's simulator
# gone), a timeout (an answer later than proxy_read_timeout)
$t->allow_error(qr/upstream timed out|connect\(\) failed|upstream prematurely closed/);
my $r = chat($dev, headers => { 'x-sim-delay-ms' => 2500 });
is $r->{status}, 504, 'an answer later than proxy_read_timeout: 504';
$t->sim('cloud')->stop;
$r = chat($dev, model => 'deepseek-v3.1:671b-cloud');
is $r->{status}, 502, 'the cloud pool gone: 502';
($m) = metrics();
is $m->{'nebula_pool_failures_total{pool="ollama_local",kind="timeout"}'}, 1, 'the local pool: one timeout';
is $m->{'nebula_pool_failures_total{pool="ollama_cloud",kind="error"}'}, 1, 'the cloud pool: one error';
is $m->{'nebula_errors_total{code="upstream_timeout"}'}, 1, 'upstream_timeout answered once';
is $m->{'nebula_errors_total{code="upstream_error"}'}, 1, 'upstream_error answered once';

# ---- a reload: the counters go on
my $before = $m->{"nebula_requests_total{$q,plan=\"developer\",status=\"200\"}"};
$t->reload;
sleep 1;
chat($dev) for 1 .. 2;
sleep 1;
($m) = metrics();
is $m->{"nebula_requests_total{$q,plan=\"developer\",status=\"200\"}"}, $before + 2,
    'after a reload the counters went on: two more';
ok $m->{nebula_workers} >= 4, 'the new workers count (and the old ones until they exit)';

# ---- Redis away and back: one outage, the workers reconnect
$t->allow_error(qr/nebula: redis at "[^"]+" unavailable/);
$t->redis->stop;
$r = chat($dev);
is $r->{status}, 503, 'Redis down: 503';
$t->redis->launch;
my $back = 0;
for (1 .. 50 * $Nebula::Test::TIME_SCALE) {
    $back = chat($dev)->{status} == 200 and last;
    select undef, undef, undef, 0.2;
}
ok $back, 'Redis back: served again';
sleep 1;
($m) = metrics();
is $m->{nebula_redis_outages_total}, 1, 'nebula_redis_outages_total: 1 (once an outage, not once a worker)';
ok $m->{nebula_redis_reconnects_total} >= 1, "nebula_redis_reconnects_total: $m->{nebula_redis_reconnects_total}";

# only GET
my $post = $t->request('POST', '/metrics', body => {}, nokey => 1);
is $post->{status}, 405, 'POST /metrics: 405';

$t->done;
