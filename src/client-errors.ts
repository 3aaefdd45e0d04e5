/**
 * Requests that node:http cannot parse (a request line and headers beyond its 16 KiB limit, a malformed head, a
 * head that never finishes) never reach a handler, and Node would answer them with a bare status line and no body.
 * Every listener of the router answers them like any other error instead: the usual JSON error body, then the
 * connection is closed, as it must be after a broken head.
 */
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';

const answers: Record<string, { status: string; message: string }> = {
  HPE_HEADER_OVERFLOW: { status: '431 Request Header Fields Too Large', message: 'the request line and headers exceed 16 KiB' },
  HPE_URI_TOO_LONG: { status: '414 URI Too Long', message: 'the request target is too long' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: '408 Request Timeout', message: 'the request did not arrive in time' },
};

export function answerClientErrors(server: Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // A peer that reset the connection, or a response already under way, leaves nothing to answer.
    if (err.code === 'ECONNRESET' || !socket.writable || (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
      socket.destroy();
      return;
    }
    const answer = answers[err.code ?? ''] ?? { status: '400 Bad Request', message: 'the request is not valid HTTP' };
    // The API's error shape (details, a request id of its own since no header could be read); a superset of the
    // receiver's, so one answer serves every listener.
    const requestId = randomUUID();
    const body = JSON.stringify({ error: { code: 'ROUTER_ERR_BAD_REQUEST', message: answer.message, details: [], requestId } });
    socket.end(
      `HTTP/1.1 ${answer.status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
        `x-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
}
