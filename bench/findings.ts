// What explains each kind of issue-8 target when a run misses it, and what would close it.
// Written from the profiles recorded in bench/README.md; RESULTS.md quotes the entry for every
// kind of target the run missed, next to that run's own numbers.
export type FindingKey = 'pg-throughput' | 'pg-cpu' | 'pg-prepared' | 'redis-throughput' | 'idle-postgres' | 'idle-redis' | 'tail-postgres' | 'tail-redis';

export const FINDINGS: Record<FindingKey, { title: string; text: string }> = {
  'pg-throughput': {
    title: 'Postgres TPS below PgBouncer',
    text: 'TODO',
  },
  'pg-cpu': {
    title: 'Postgres CPU per 1000 transactions above PgBouncer',
    text: 'TODO',
  },
  'pg-prepared': {
    title: '-M prepared below 0.9 × direct',
    text: 'TODO',
  },
  'redis-throughput': {
    title: 'Redis ops/s below twemproxy',
    text: 'TODO',
  },
  'idle-postgres': {
    title: 'Memory per idle Postgres client above 4 KiB',
    text: 'TODO',
  },
  'idle-redis': {
    title: 'Memory per idle Redis client above 3 KiB',
    text: 'TODO',
  },
  'tail-postgres': {
    title: 'Postgres p99 above 3 × p50 at 2 000 clients',
    text: 'TODO',
  },
  'tail-redis': {
    title: 'Redis p99 above 3 × p50 at 2 000 clients',
    text: 'TODO',
  },
};
