// The access log: one JSON line per answered request, written once the answer has gone out.
//
// Fastify's own request logging writes two lines per request ("incoming request", "request
// completed") and the routes that run code added a third; each is a synchronous write to stdout
// on the request's path. One line carries what the three did: method, path (never the query
// string, where access tokens may travel), route template, status, duration, request id (the
// logger's binding), the session id, and what the route adds with noteForLog (an execution's
// status and duration, output sizes). The "incoming request" line is kept at debug, for requests
// that never answer. Fastify's other lines (stream and serializer errors...) are unchanged.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /** Fields the route adds to its access-log line (see noteForLog). */
    logFields: Record<string, unknown> | null;
  }
}

/** Adds fields to the request's access-log line (merged, later calls win). */
export function noteForLog(request: FastifyRequest, fields: Record<string, unknown>): void {
  request.logFields = request.logFields === null ? fields : { ...request.logFields, ...fields };
}

/**
 * The outcome of the request's work: on its access line; or, when the client has gone (the
 * access line then may come early, or not at all), on a line of its own named `message`.
 */
export function logOutcome(request: FastifyRequest, clientGone: boolean, fields: Record<string, unknown>, message: string): void {
  if (!clientGone) {
    noteForLog(request, fields);
    return;
  }
  const params = request.params as Record<string, unknown> | undefined;
  request.log.info({ ...(typeof params?.id === 'string' ? { session_id: params.id } : {}), ...fields, client_gone: true }, message);
}

/** The path of a request URL without its query string. */
export function pathOf(url: string): string {
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

/** `:id` names a session in /v1/sessions/:id/... and in E2B's /sandboxes/:id, not everywhere. */
const SESSION_ROUTE = /\/(sessions|sandboxes)\/:id(\/|$)/;

/** Fastify's log controller with the access log above (pass as the `logController` option). */
export class AccessLog extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    // Not even the fields are built unless the line is written (the common case: info).
    if (request.log.level !== 'debug' && request.log.level !== 'trace') return;
    request.log.debug({ method: request.method, url: pathOf(request.url), remote_address: request.ip }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const route = request.routeOptions.url ?? 'unmatched';
    const params = request.params as Record<string, unknown> | undefined;
    const sessionId = typeof params?.id === 'string' && SESSION_ROUTE.test(route) ? params.id : undefined;
    const fields = {
      method: request.method,
      url: pathOf(request.url),
      route,
      status_code: reply.statusCode,
      duration_ms: Math.round(reply.elapsedTime * 100) / 100,
      remote_address: request.ip,
      ...(sessionId !== undefined ? { session_id: sessionId } : {}),
      ...request.logFields,
    };
    // An error here is the response's own (the socket failed while answering).
    if (error) reply.log.error({ ...fields, err: error }, 'request errored');
    else reply.log.info(fields, 'request completed');
  }
}

/** Declares the request field the access log reads; call once on the root instance. */
export function registerRequestLog(app: { decorateRequest(name: 'logFields', value: null): unknown }): void {
  app.decorateRequest('logFields', null);
}
