import { describe, expect, test } from 'vitest';
import { errorFromReport, hintFor } from '../../src/sandbox/python-error.js';

const ctx = { environment: 'bare', dependencies: [] };

describe('errorFromReport (the launcher\'s report of an uncaught exception)', () => {
  test('takes type, message and line as reported, and adds a hint', () => {
    expect(errorFromReport('{"type":"ZeroDivisionError","message":"division by zero","line":3}', ctx))
      .toEqual({ type: 'ZeroDivisionError', message: 'division by zero', line: 3, hint: expect.stringContaining('line 3') as unknown });
  });

  test('no report, or one that is not a report, is no error', () => {
    for (const text of ['', 'not json', '[]', '{"type":5,"message":"x"}', '{"type":"a b","message":"x"}', '{"message":"x"}']) {
      expect(errorFromReport(text, ctx), text).toBeNull();
    }
  });

  test('a line that is not a positive integer is null', () => {
    expect(errorFromReport('{"type":"ValueError","message":"m","line":"3"}', ctx)?.line).toBeNull();
    expect(errorFromReport('{"type":"ValueError","message":"m","line":-1}', ctx)?.line).toBeNull();
  });
});

describe('hintFor', () => {
  test('ModuleNotFoundError names the environment and what it has', () => {
    const hint = hintFor('ModuleNotFoundError', "No module named 'pandas'", 1, ctx);
    expect(hint).toContain("'pandas'");
    expect(hint).toContain("'bare'");
    expect(hint).toContain('standard library');
  });

  test('SyntaxError points at the line; FileNotFoundError at /workspace and uploads', () => {
    expect(hintFor('SyntaxError', "'(' was never closed", 2, ctx)).toContain('line 2');
    expect(hintFor('FileNotFoundError', "[Errno 2] No such file or directory: 'data.csv'", 3, ctx)).toContain('/workspace');
  });

  test('an exception without a hint of ours has none', () => {
    expect(hintFor('MyOwnError', 'x', 1, ctx)).toBeNull();
  });
});
