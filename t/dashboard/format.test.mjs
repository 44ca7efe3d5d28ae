// dashboard/js/format.js, alone (it touches no DOM): numbers as people
// read them.  Prints "ok<TAB>what" or "not ok<TAB>what<TAB>got" per case.
import * as f from '../../dashboard/js/format.js';

const cases = [
  [f.tokens(0), '0'], [f.tokens(999), '999'], [f.tokens(1000), '1K'], [f.tokens(1234), '1.2K'],
  [f.tokens(32768), '32.8K'], [f.tokens(100000), '100K'], [f.tokens(1234567), '1.2M'], [f.tokens(15000000), '15M'],
  [f.tokens(100000000), '100M'], [f.tokens(2.5e9), '2.5B'],
  [f.quota(null), 'unlimited'], [f.quota(20000), '20K'],
  [f.usd(0), '$0'], [f.usd(0.0042), '$0.0042'], [f.usd(0.0000084), '$0.0000084'], [f.usd(0.0000168), '$0.000017'],
  [f.usd(0.1), '$0.10'], [f.usd(0.05), '$0.05'], [f.usd(12.5), '$12.50'], [f.usd(1234.567), '$1,234.57'],
  [f.perMillion('0.0000002'), '$0.20'], [f.perMillion('0.0000015'), '$1.50'], [f.perMillion('0'), 'Free'],
  [f.count(1234567), '1,234,567'], [f.percent(50, 200), 25], [f.percent(500, 200), 100], [f.percent(5, 0), 0],
  [f.ms(3), '3 ms'], [f.ms(null), '—'],
];
let bad = 0;
for (const [got, want] of cases) {
  const ok = got === want;
  if (!ok) bad++;
  console.log(`${ok ? 'ok' : 'not ok'}\tformat: ${JSON.stringify(want)}${ok ? '' : `\t${JSON.stringify(got)}`}`);
}
process.exit(bad ? 1 : 0);
