// Postgres wire-protocol bytes, one table per direction: the same byte means different things
// each way ('D' is Describe from a client and DataRow from a server). PostgreSQL docs,
// "Frontend/Backend Protocol" → "Message Formats".

/** Message types a client (frontend) sends after startup. */
export const FrontendCode = {
  bind: 0x42, // B
  close: 0x43, // C
  copyData: 0x64, // d
  copyDone: 0x63, // c
  copyFail: 0x66, // f
  describe: 0x44, // D
  execute: 0x45, // E
  flush: 0x48, // H
  functionCall: 0x46, // F
  parse: 0x50, // P
  password: 0x70, // p (also SASLInitialResponse / SASLResponse / GSSResponse)
  query: 0x51, // Q
  sync: 0x53, // S
  terminate: 0x58, // X
} as const;

/** Message types a server (backend) sends. */
export const BackendCode = {
  authentication: 0x52, // R
  backendKeyData: 0x4b, // K
  bindComplete: 0x32, // 2
  closeComplete: 0x33, // 3
  commandComplete: 0x43, // C
  copyData: 0x64, // d
  copyDone: 0x63, // c
  copyInResponse: 0x47, // G
  copyOutResponse: 0x48, // H
  copyBothResponse: 0x57, // W
  dataRow: 0x44, // D
  emptyQueryResponse: 0x49, // I
  errorResponse: 0x45, // E
  functionCallResponse: 0x56, // V
  negotiateProtocolVersion: 0x76, // v
  noData: 0x6e, // n
  noticeResponse: 0x4e, // N
  notificationResponse: 0x41, // A
  parameterDescription: 0x74, // t
  parameterStatus: 0x53, // S
  parseComplete: 0x31, // 1
  portalSuspended: 0x73, // s
  readyForQuery: 0x5a, // Z
  rowDescription: 0x54, // T
} as const;

/** Authentication request subtypes (the int32 after 'R'). */
export const AuthCode = {
  ok: 0,
  cleartextPassword: 3,
  md5Password: 5,
  sasl: 10,
  saslContinue: 11,
  saslFinal: 12,
} as const;

/** Codes in the "protocol version" slot of an untagged startup packet. */
export const StartupCode = {
  protocol3: 196608, // 3.0
  cancelRequest: 80877102,
  sslRequest: 80877103,
  gssEncRequest: 80877104,
} as const;

/** ReadyForQuery transaction status bytes. */
export const TxStatus = {
  idle: 0x49, // I
  inTransaction: 0x54, // T
  failed: 0x45, // E
} as const;

/** PostgreSQL's own limit on a startup packet (src/include/libpq/pqcomm.h MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET_BYTES = 10_000;

/** A 256-entry lookup table with the given bytes set. */
export function byteSet(...codes: number[]): Uint8Array {
  const table = new Uint8Array(256);
  for (const code of codes) table[code] = 1;
  return table;
}

/** Every type a client may send after startup; anything else is a protocol violation. */
export const FRONTEND_TYPES = byteSet(...Object.values(FrontendCode));

/** Every type a server may send. */
export const BACKEND_TYPES = byteSet(...Object.values(BackendCode));
