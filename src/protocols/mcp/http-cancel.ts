// Cancellation for stateless /mcp. A `notifications/cancelled` arrives as a POST of its own, which
// by itself reaches no running call. So an `initialize` answer carries a random Mcp-Session-Id
// that the client sends back on its later requests; it is only a correlation token (nothing is
// kept per token, any value is accepted, and a request without one works as before). A call is
// registered under (token, request id) while it runs, and a cancel with the same token closes
// the server running it, which aborts the call's signal and so its execution. Cancels reach only
// the calls on this instance.
import { randomUUID } from 'node:crypto';
import { isInitializeRequest, isJSONRPCNotification, isJSONRPCRequest } from '@modelcontextprotocol/sdk/types.js';

const SESSION_HEADER = 'mcp-session-id';

function messagesOf(body: unknown): unknown[] {
  return Array.isArray(body) ? body : [body];
}

export class CallRegistry {
  private readonly running = new Map<string, Set<() => void>>();

  /** The token of a request: the one it sent back, or a new one for an initialize (set on the answer). */
  tokenFor(headers: Record<string, string | string[] | undefined>, body: unknown, setHeader: (name: string, value: string) => void): string | null {
    const sent = headers[SESSION_HEADER];
    if (typeof sent === 'string' && sent.length > 0 && sent.length <= 128) return sent;
    if (!messagesOf(body).some((m) => isInitializeRequest(m))) return null;
    const token = randomUUID();
    setHeader(SESSION_HEADER, token);
    return token;
  }

  /** Registers the requests of a POST; the returned function unregisters them. */
  register(token: string | null, body: unknown, cancel: () => void): () => void {
    if (token === null) return () => undefined;
    const keys = messagesOf(body).filter((m) => isJSONRPCRequest(m)).map((m) => `${token} ${JSON.stringify(m.id)}`);
    for (const key of keys) {
      const set = this.running.get(key) ?? new Set();
      set.add(cancel);
      this.running.set(key, set);
    }
    return () => {
      for (const key of keys) {
        const set = this.running.get(key);
        set?.delete(cancel);
        if (set?.size === 0) this.running.delete(key);
      }
    };
  }

  /** Cancels the running calls that the POST's `notifications/cancelled` name. */
  cancelNamed(token: string | null, body: unknown): void {
    if (token === null) return;
    for (const m of messagesOf(body)) {
      if (!isJSONRPCNotification(m) || m.method !== 'notifications/cancelled') continue;
      const requestId = (m.params as { requestId?: unknown } | undefined)?.requestId;
      for (const cancel of this.running.get(`${token} ${JSON.stringify(requestId)}`) ?? []) cancel();
    }
  }
}
