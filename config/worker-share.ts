// One worker's share of the configured bounds when `workers` > 1: worker i of N gets
// floor(total / N), plus one while i < total % N, so the shares sum to exactly the configured
// total. That sum is what makes pool_size a hard global bound with no coordination at run time.
//
//   pool_size 10, workers 4:   worker 0: 3   worker 1: 3   worker 2: 2   worker 3: 2   (= 10)
import type { Config } from './schema.js';

/** Worker `index`'s share of `total` split over `count` workers. */
export function shareOf(total: number, index: number, count: number): number {
  return Math.floor(total / count) + (index < total % count ? 1 : 0);
}

/**
 * The config worker `index` of `count` runs: every per-process bound replaced by its share.
 * min_pool_size is split the same way, so a share of it never exceeds the share of pool_size.
 */
export function workerConfig(config: Config, index: number, count: number): Config {
  if (count <= 1) return config;
  const share = (total: number) => shareOf(total, index, count);
  return {
    ...config,
    postgres: config.postgres.map((pg) => ({
      ...pg,
      pool_size: share(pg.pool_size),
      min_pool_size: share(pg.min_pool_size),
      max_client_connections: share(pg.max_client_connections),
    })),
    redis: config.redis.map((rd) => ({
      ...rd,
      pool_size: share(rd.pool_size),
      max_dedicated_connections: share(rd.max_dedicated_connections),
      max_client_connections: share(rd.max_client_connections),
    })),
  };
}
