// Where an upstream socket's reads land. Node's default read path mallocs a 64 KiB buffer per
// read, shrinks it to what arrived, wraps it in a Buffer and pushes it through the Readable
// stream machinery before 'data' fires; at two reads per pgbench transaction that was a
// visible share of sluice's CPU (bench/README.md). With `onread`, the kernel writes straight
// into a region we hand out and our callback runs directly.
//
// Regions are carved from a slab front to back and never reused: a slice of an earlier read may
// still be queued for writing to a client (or held by a tap), so nothing already handed out is
// ever written again. A full slab is dropped for a new one and collected once no slice of it
// is referenced.
import type { OnReadOpts } from 'node:net';

const SLAB_BYTES = 32 * 1024;
/** A tail shorter than this is abandoned: reads would be cut too short. */
const MIN_READ_BYTES = 4 * 1024;

export type ReadHandler = (chunk: Buffer, length: number) => void;

export class ReadSlab {
  private slab = Buffer.allocUnsafe(SLAB_BYTES);
  private used = 0;
  private handler: ReadHandler | undefined;
  /** Reads that arrived before a handler was set (copied; rare: upstreams speak second). */
  private early: Buffer[] = [];

  /** The `onread` option for net.connect. */
  readonly options: OnReadOpts = {
    buffer: () => this.nextRegion(),
    callback: (length: number, region: Uint8Array): boolean => {
      this.used += length;
      const chunk = region as Buffer;
      if (this.handler) this.handler(chunk, length);
      else this.early.push(Buffer.from(chunk.subarray(0, length)));
      // false would pause reading; backpressure pauses through socket.pause() instead
      return true;
    },
  };

  /** Routes reads to `handler`, first replaying any that arrived before it. */
  setHandler(handler: ReadHandler): void {
    this.handler = handler;
    const early = this.early;
    this.early = [];
    for (const chunk of early) handler(chunk, chunk.length);
  }

  private nextRegion(): Buffer {
    if (SLAB_BYTES - this.used < MIN_READ_BYTES) {
      this.slab = Buffer.allocUnsafe(SLAB_BYTES);
      this.used = 0;
    }
    return this.slab.subarray(this.used);
  }
}
