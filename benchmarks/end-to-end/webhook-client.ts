/**
 * The end-to-end benchmark's load generator: one keep-alive HTTP/1.1 connection that posts a signed webhook and reads
 * the answer, on a plain socket. It shares the machine's two cores with the router and the sink, so what it costs is
 * taken from the router: undici's Pool spent about 130 µs of CPU per webhook here (its request and body objects,
 * streams, promises), this about 55 µs (benchmarks/RESULTS.md, 4 December). The request carries what undici sent
 * (the same headers, a fresh `x-github-delivery`, the 8.3 KB body), framed by hand.
 *
 * It understands exactly what the receiver answers (a status line, headers with Content-Length, a short body) and
 * nothing more: a chunked or unframed answer, or a closed connection, fails the request in hand.
 */
import { connect, type Socket } from 'node:net';

export interface Answer {
  readonly status: number;
  readonly body: string;
}

const HEAD_END = Buffer.from('\r\n\r\n');

export class WebhookConnection {
  readonly #socket: Socket;
  readonly #head: string;
  readonly #body: Buffer;
  #buffered: Buffer = Buffer.alloc(0);
  #waiting: { resolve: (a: Answer) => void; reject: (err: Error) => void } | undefined;
  #closed: Error | undefined;

  /** `headers` are sent on every request; `content-length` and the delivery id are added per request. */
  constructor(port: number, path: string, headers: Readonly<Record<string, string>>, body: Buffer) {
    this.#body = body;
    this.#head =
      `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-length: ${body.byteLength}\r\n` +
      Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
    this.#socket = connect({ port, host: '127.0.0.1', noDelay: true });
    this.#socket.on('data', (chunk: Buffer) => this.#read(chunk));
    const fail = (err: Error) => {
      this.#closed ??= err;
      this.#waiting?.reject(this.#closed);
      this.#waiting = undefined;
    };
    this.#socket.on('error', fail);
    this.#socket.on('close', () => fail(new Error('connection closed')));
  }

  /** One request at a time per connection, as a closed loop sends them. */
  post(deliveryId: string): Promise<Answer> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (this.#waiting) return Promise.reject(new Error('a request is already in flight on this connection'));
    const answer = new Promise<Answer>((resolve, reject) => {
      this.#waiting = { resolve, reject };
    });
    this.#socket.cork();
    this.#socket.write(`${this.#head}x-github-delivery: ${deliveryId}\r\n\r\n`);
    this.#socket.write(this.#body);
    this.#socket.uncork();
    return answer;
  }

  close(): void {
    this.#socket.destroy();
  }

  #read(chunk: Buffer): void {
    this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    const end = this.#buffered.indexOf(HEAD_END);
    if (end < 0) return;
    const head = this.#buffered.toString('latin1', 0, end);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!length) {
      this.#socket.destroy(new Error(`an answer without content-length: ${head.split('\r\n')[0]}`));
      return;
    }
    const bodyStart = end + HEAD_END.length;
    const bodyEnd = bodyStart + Number(length[1]);
    if (this.#buffered.length < bodyEnd) return;
    const answer = { status: Number(head.slice(9, 12)), body: this.#buffered.toString('utf8', bodyStart, bodyEnd) };
    this.#buffered = this.#buffered.subarray(bodyEnd);
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.resolve(answer);
  }
}
