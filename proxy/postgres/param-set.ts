// Interned ids for a client's settings (reported parameters plus the non-reported ones it
// brought at startup), so that giving a server to a client can skip comparing every setting
// when the server last carried the same set. With pgbench or an ORM, all clients of a pool
// share one set and transaction pooling hands servers around thousands of times a second:
// the comparison walk was the largest sluice function in the profile (bench/README.md).
const MAX_INTERNED = 4096;

const ids = new Map<string, number>();
let nextId = 1;

/** The id of this content; equal content gives an equal id (until the table is reset). */
export function paramSetId(reported: ReadonlyMap<string, string>, extra: ReadonlyMap<string, string>): number {
  let key = '';
  for (const [name, value] of reported) key += `${name}\0${value}\0`;
  key += '\u0001';
  for (const [name, value] of extra) key += `${name}\0${value}\0`;
  let id = ids.get(key);
  if (id === undefined) {
    // Bounded: a fleet with endless distinct application_names must not grow this forever.
    // After a reset, the same content gets a new id; servers holding old ids just compare once.
    if (ids.size >= MAX_INTERNED) ids.clear();
    id = nextId++;
    ids.set(key, id);
  }
  return id;
}
