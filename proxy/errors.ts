// The catalogue of every error sluice raises: a class per kind, a stable `code`, and where an
// operator can act on it, the config key to change. README.md "Errors" lists the same codes;
// test/errors.test.ts fails when the two differ.

export const ERROR_CODES = {
  SLUICE_CONFIG_INVALID: 'The config file failed validation; every problem is listed with its path.',
  SLUICE_LISTEN_FAILED: 'A listen address could not be bound (taken, or not an address of this host).',
  SLUICE_ACQUIRE_TIMEOUT: 'A client waited longer than timeouts.acquire for a server connection.',
  SLUICE_CONNECT_FAILED: 'Opening or logging in to an upstream server failed, or took longer than timeouts.connect.',
  SLUICE_UPSTREAM_LOST: 'An upstream connection closed or failed while a client depended on it.',
  SLUICE_POOL_CLOSED: 'The pool is shutting down or was removed by a reload.',
  SLUICE_PROTOCOL_VIOLATION: 'A client or server sent bytes that break the wire protocol, or a length over a limit.',
  SLUICE_AUTH_FAILED: 'A client failed authentication.',
  SLUICE_TOO_MANY_CLIENTS: 'max_client_connections was reached.',
  SLUICE_SHUTTING_DOWN: 'Sluice is draining after SIGTERM.',
  SLUICE_TIMEOUT: 'A per-connection timeout fired (client_idle, idle_in_transaction, query, command, client_login).',
  SLUICE_AUTH_THROTTLED: 'Passthrough: more logins waited for an upstream password check than passthrough.max_queued_verifications.',
  SLUICE_TOO_MANY_POOLS: 'A login would have created a pool past max_pools for its listener.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class SluiceError extends Error {
  override name = 'SluiceError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** The config key an operator would change, when there is one. */
    readonly configKey?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export class AcquireTimeoutError extends SluiceError {
  override name = 'AcquireTimeoutError';
  constructor(pool: string, timeoutMs: number) {
    super('SLUICE_ACQUIRE_TIMEOUT', `no server connection in pool "${pool}" within ${timeoutMs}ms (timeouts.acquire)`, 'timeouts.acquire');
  }
}

export class ConnectError extends SluiceError {
  override name = 'ConnectError';
  constructor(upstream: string, reason: string, options?: ErrorOptions) {
    super('SLUICE_CONNECT_FAILED', `cannot connect to upstream ${upstream}: ${reason}`, 'timeouts.connect', options);
  }
}

export class UpstreamLostError extends SluiceError {
  override name = 'UpstreamLostError';
  constructor(upstream: string, reason: string) {
    super('SLUICE_UPSTREAM_LOST', `upstream connection to ${upstream} lost (${reason})`);
  }
}

export class PoolClosedError extends SluiceError {
  override name = 'PoolClosedError';
  constructor(pool: string) {
    super('SLUICE_POOL_CLOSED', `pool "${pool}" is closed`);
  }
}

export class ProtocolError extends SluiceError {
  override name = 'ProtocolError';
  constructor(message: string) {
    super('SLUICE_PROTOCOL_VIOLATION', message);
  }
}

export class TimeoutError extends SluiceError {
  override name = 'TimeoutError';
  constructor(configKey: string, timeoutMs: number, what: string) {
    super('SLUICE_TIMEOUT', `${what} after ${timeoutMs}ms (${configKey})`, configKey);
  }
}

export class ListenError extends SluiceError {
  override name = 'ListenError';
  constructor(address: string, reason: string, options?: ErrorOptions) {
    super('SLUICE_LISTEN_FAILED', `cannot listen on ${address}: ${reason}`, undefined, options);
  }
}

export class AuthThrottledError extends SluiceError {
  override name = 'AuthThrottledError';
  constructor(waiting: number) {
    super(
      'SLUICE_AUTH_THROTTLED',
      `too many logins waiting for an upstream password check (${waiting} waiting; passthrough.max_queued_verifications)`,
      'passthrough.max_queued_verifications',
    );
  }
}

export class TooManyPoolsError extends SluiceError {
  override name = 'TooManyPoolsError';
  constructor(listener: string, maxPools: number) {
    super('SLUICE_TOO_MANY_POOLS', `listener "${listener}" already has ${maxPools} pools, one per (database, user) in use (max_pools)`, 'max_pools');
  }
}
