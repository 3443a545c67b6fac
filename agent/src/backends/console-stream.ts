/**
 * The console stream of one console device on a link: up to 4 readers polling the
 * native output ring (each replays from the oldest byte still in it) and one writer
 * at a time. Buffers never pass through JavaScript except the console bytes a reader
 * asks for.
 */
import type { ConsoleIo } from '../links/data-plane';

/** Error thrown when a second writer tries to attach to a console. */
export class ConsoleBusyError extends Error {
  readonly code = 'CONSOLE_BUSY';
  constructor(id: number) {
    super(`console ${id} already has a writer`);
    this.name = 'ConsoleBusyError';
  }
}

const CONSOLE_READERS = 4;

/** Console stream of one device: up to 4 readers, one writer at a time. */
export class ConsoleStream {
  private readonly readers = new Set<number>();
  private writer: symbol | null = null;

  constructor(
    private readonly io: ConsoleIo,
    readonly id: number,
  ) {}

  /**
   * Start reading console output: onData gets chunks (and how many bytes
   * were lost if this reader fell behind), polled every pollMs while
   * attached. Returns the detach function.
   */
  attachReader(onData: (chunk: Buffer, lost: bigint) => void, pollMs = 50): () => void {
    let slot = -1;
    for (let i = 0; i < CONSOLE_READERS; i++)
      if (!this.readers.has(i)) {
        slot = i;
        break;
      }
    if (slot < 0) throw new RangeError(`console ${this.id} has ${CONSOLE_READERS} readers already`);
    this.readers.add(slot);
    // skip what is already buffered? No: a new reader starts at the oldest byte still in the ring (replay).
    const timer = setInterval(() => {
      for (;;) {
        const r = this.io.read(slot, 65536);
        if (r.data.length === 0 && r.lost === 0n) return;
        onData(r.data, r.lost);
        if (r.data.length < 65536) return;
      }
    }, pollMs);
    timer.unref();
    return () => {
      clearInterval(timer);
      this.readers.delete(slot);
    };
  }

  /** Take the single writer role; throws ConsoleBusyError if taken. Returns write/release. */
  acquireWriter(): { write(data: Uint8Array): number; release(): void } {
    if (this.writer !== null) throw new ConsoleBusyError(this.id);
    const token = Symbol('writer');
    this.writer = token;
    return {
      write: (data) => {
        if (this.writer !== token) throw new ConsoleBusyError(this.id);
        return this.io.write(data);
      },
      release: () => {
        if (this.writer === token) this.writer = null;
      },
    };
  }
}
