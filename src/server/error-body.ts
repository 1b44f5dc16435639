// The shape of every error answer: Fastify's {statusCode, code, error, message}.
import { STATUS_CODES } from 'node:http';

export function errorBody(statusCode: number, code: string, message: string) {
  return { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message };
}
