// Named contexts of sessions: each is a persistent interpreter of its own in the session's sandbox
// (same workspace, network namespace, uid and limits), run_code's `context_id`. The default
// context (no context_id) is the session's interpreter of the first wave and is not listed.
// Contexts live in memory only: a restart of the service ends every interpreter, so it forgets
// the contexts too (a later run_code with an old context_id is 404 CONTEXT_NOT_FOUND).
import { randomBytes } from 'node:crypto';
import { ContextNotFoundError, TooManyContextsError } from '../errors.js';

export type ContextLanguage = 'python';

export interface ContextInfo {
  context_id: string;
  language: ContextLanguage;
  created_at: string;
}

/** Keys of the interpreters of one session: the session id for the default context. */
export function kernelKey(sessionId: string, contextId?: string): string {
  return contextId === undefined ? sessionId : `${sessionId}\0${contextId}`;
}

export function sessionOfKernelKey(key: string): string {
  const at = key.indexOf('\0');
  return at < 0 ? key : key.slice(0, at);
}

export class SessionContexts {
  private readonly bySession = new Map<string, Map<string, ContextInfo>>();

  constructor(private readonly maxPerSession: number, private readonly now: () => number = Date.now) {}

  create(sessionId: string, language: ContextLanguage): ContextInfo {
    let contexts = this.bySession.get(sessionId);
    if (!contexts) {
      contexts = new Map();
      this.bySession.set(sessionId, contexts);
    }
    if (contexts.size >= this.maxPerSession) throw new TooManyContextsError(this.maxPerSession);
    const info: ContextInfo = { context_id: `ctx_${randomBytes(12).toString('hex')}`, language, created_at: new Date(this.now()).toISOString() };
    contexts.set(info.context_id, info);
    return info;
  }

  /** The session's contexts, oldest first. */
  list(sessionId: string): ContextInfo[] {
    return [...(this.bySession.get(sessionId)?.values() ?? [])];
  }

  /** Throws ContextNotFoundError unless the session has this context. */
  check(sessionId: string, contextId: string): ContextInfo {
    const info = this.bySession.get(sessionId)?.get(contextId);
    if (!info) throw new ContextNotFoundError(sessionId, contextId);
    return info;
  }

  remove(sessionId: string, contextId: string): void {
    this.check(sessionId, contextId);
    this.bySession.get(sessionId)?.delete(contextId);
  }

  /** The session is gone: so are its contexts. */
  dropSession(sessionId: string): void {
    this.bySession.delete(sessionId);
  }

  clear(): void {
    this.bySession.clear();
  }
}
