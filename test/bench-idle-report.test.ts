// The idle-memory figure the bench judges: for a Node target the RSS growth between readings
// taken after full collections, for a C proxy the growth as read.
import t from 'tap';
import { idlePerClientKiB, type IdleRow } from '../bench/report.js';

const row = (fields: Partial<IdleRow>): IdleRow => ({ name: 'sluice', role: 'sluice', opened: 5000, ...fields });

t.test('a Node target is judged on the readings after a full collection', async (t) => {
  // As read, garbage pending makes 5.6 KiB of what is 1.8 once collected.
  const sluice = row({ rssBeforeKiB: 90_000, rssAfterKiB: 118_000, rssBeforeCollectedKiB: 78_000, rssAfterCollectedKiB: 87_000 });
  t.equal(idlePerClientKiB(sluice), 1.8);
});

t.test('a target without a collector is judged as read', async (t) => {
  t.equal(idlePerClientKiB(row({ name: 'twemproxy', role: 'anchor', rssBeforeKiB: 4_000, rssAfterKiB: 5_500 })), 0.3);
});

t.test('no figure when RSS fell between the readings or nothing was opened', async (t) => {
  t.equal(idlePerClientKiB(row({ rssBeforeCollectedKiB: 80_000, rssAfterCollectedKiB: 79_000 })), undefined);
  t.equal(idlePerClientKiB(row({ opened: 0, rssBeforeKiB: 1, rssAfterKiB: 2 })), undefined);
  t.equal(idlePerClientKiB(row({ rssBeforeKiB: 1 })), undefined);
});
