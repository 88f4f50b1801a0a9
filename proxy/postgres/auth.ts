// Password checks for both sides: SCRAM-SHA-256 (RFC 5802/7677) as server for clients and as
// client for upstream logins, md5, and parsing the secrets Postgres stores (pg_authid format).
// Every comparison of secret material is constant-time. Every field read from a peer is
// bounded (PgBouncer 1.25.2 CVEs: overflow in SCRAM parsing, an over-long server nonce).
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

const SCRAM_ITERATIONS = 4096;
const MAX_SCRAM_FIELD_BYTES = 1024;

export interface ScramSecret {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/** What sluice knows of a user's password: the plain text, or a secret Postgres would store. */
export type PasswordKnowledge = { kind: 'plain'; password: string } | { kind: 'scram'; secret: ScramSecret } | { kind: 'md5'; hash: string };

const hmac = (key: Buffer, data: string | Buffer) => createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

export function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

/** Constant-time equality of two byte strings (length is not secret). */
export function safeEqual(a: Buffer | string, b: Buffer | string): boolean {
  const x = typeof a === 'string' ? Buffer.from(a) : a;
  const y = typeof b === 'string' ? Buffer.from(b) : b;
  if (x.length !== y.length) {
    timingSafeEqual(x, x);
    return false;
  }
  return timingSafeEqual(x, y);
}

export function md5Hex(data: string | Buffer): string {
  return createHash('md5').update(data).digest('hex');
}

/** The md5 response a client sends: "md5" + md5(md5(password + user) + salt). */
export function md5Response(innerHash: string, salt: Buffer): string {
  return `md5${md5Hex(Buffer.concat([Buffer.from(innerHash), salt]))}`;
}

/** Reads a configured password: plain, "SCRAM-SHA-256$iter:salt$stored:server", or "md5" + 32 hex. */
export function parsePassword(text: string, user: string): PasswordKnowledge {
  const scram = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text);
  if (scram) {
    return {
      kind: 'scram',
      secret: {
        iterations: Number(scram[1]),
        salt: Buffer.from(scram[2], 'base64'),
        storedKey: Buffer.from(scram[3], 'base64'),
        serverKey: Buffer.from(scram[4], 'base64'),
      },
    };
  }
  if (/^md5[0-9a-f]{32}$/.test(text)) return { kind: 'md5', hash: text.slice(3) };
  void user;
  return { kind: 'plain', password: text };
}

/** Derives a SCRAM secret from a plain password (fresh salt). */
export function scramSecretFor(password: string, salt = randomBytes(16), iterations = SCRAM_ITERATIONS): ScramSecret {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  return { iterations, salt, storedKey: sha256(hmac(salted, 'Client Key')), serverKey: hmac(salted, 'Server Key') };
}

/** Splits "a=1,b=2" SCRAM attributes, bounded. */
function attributes(message: string): Map<string, string> {
  if (message.length > MAX_SCRAM_FIELD_BYTES * 4) throw new Error('SCRAM message too long');
  const out = new Map<string, string>();
  for (const part of message.split(',')) {
    if (part.length < 2 || part[1] !== '=') continue;
    out.set(part[0], part.slice(2));
  }
  return out;
}

/** The server side of one SCRAM-SHA-256 exchange with a client. */
export class ScramServer {
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';

  constructor(private readonly secret: ScramSecret) {}

  /** Client-first-message (gs2 header + bare) → server-first-message. Throws on malformed input. */
  first(clientFirst: string): string {
    // gs2 header: "n,," or "y,," (no channel binding) then the bare message.
    const match = /^[ny],(?:a=[^,]*)?,(.*)$/.exec(clientFirst);
    if (!match) throw new Error('malformed SCRAM client-first-message (channel binding is not supported)');
    this.clientFirstBare = match[1];
    const clientNonce = attributes(this.clientFirstBare).get('r');
    if (!clientNonce || clientNonce.length > MAX_SCRAM_FIELD_BYTES || !/^[\x21-\x2b\x2d-\x7e]+$/.test(clientNonce)) {
      throw new Error('malformed SCRAM client nonce');
    }
    this.nonce = clientNonce + randomBytes(18).toString('base64');
    this.serverFirst = `r=${this.nonce},s=${this.secret.salt.toString('base64')},i=${this.secret.iterations}`;
    return this.serverFirst;
  }

  /** Client-final-message → server-final-message, or undefined when the proof is wrong. */
  final(clientFinal: string): string | undefined {
    const attrs = attributes(clientFinal);
    const proofText = attrs.get('p');
    if (attrs.get('r') !== this.nonce || !proofText) return undefined;
    const withoutProof = clientFinal.slice(0, clientFinal.lastIndexOf(',p='));
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const proof = Buffer.from(proofText, 'base64');
    if (proof.length !== 32) return undefined;
    const clientSignature = hmac(this.secret.storedKey, authMessage);
    const clientKey = xor(proof, clientSignature);
    if (!safeEqual(sha256(clientKey), this.secret.storedKey)) return undefined;
    return `v=${hmac(this.secret.serverKey, authMessage).toString('base64')}`;
  }
}

/** The client side of one SCRAM-SHA-256 exchange with an upstream server. */
export class ScramClient {
  readonly clientNonce = randomBytes(18).toString('base64');
  private expectedServerSignature: Buffer | undefined;

  constructor(private readonly password: string) {}

  first(): string {
    return `n,,n=*,r=${this.clientNonce}`;
  }

  /** Server-first → client-final. Throws on a malformed or hostile server message. */
  final(serverFirst: string): string {
    const attrs = attributes(serverFirst);
    const nonce = attrs.get('r') ?? '';
    const saltText = attrs.get('s') ?? '';
    const iterations = Number(attrs.get('i'));
    if (!nonce.startsWith(this.clientNonce) || nonce.length > MAX_SCRAM_FIELD_BYTES) throw new Error('bad SCRAM server nonce');
    if (!saltText || saltText.length > MAX_SCRAM_FIELD_BYTES) throw new Error('bad SCRAM salt');
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > 10_000_000) throw new Error('bad SCRAM iteration count');
    const salted = pbkdf2Sync(this.password.normalize('NFKC'), Buffer.from(saltText, 'base64'), iterations, 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = sha256(clientKey);
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `n=*,r=${this.clientNonce},${serverFirst},${withoutProof}`;
    const proof = xor(clientKey, hmac(storedKey, authMessage));
    this.expectedServerSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Checks the server's signature, so a server that does not know the password is not trusted. */
  verify(serverFinal: string): boolean {
    const signature = attributes(serverFinal).get('v');
    return !!signature && !!this.expectedServerSignature && safeEqual(Buffer.from(signature, 'base64'), this.expectedServerSignature);
  }
}
