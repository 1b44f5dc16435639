import { describe, expect, test } from 'vitest';
import { parsePythonError } from '../../src/sandbox/python-error.js';

const ctx = { environment: 'bare', dependencies: [] };

describe('parsePythonError', () => {
  test('takes the deepest frame of the user script, not a library frame', () => {
    const stderr = [
      'Traceback (most recent call last):',
      '  File "/sandbox/main.py", line 7, in <module>',
      '    main()',
      '  File "/sandbox/main.py", line 4, in main',
      '    json.loads(x)',
      '  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads',
      '    return _default_decoder.decode(s)',
      'json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)',
    ].join('\n');
    expect(parsePythonError(stderr, ctx)).toMatchObject({ type: 'JSONDecodeError', message: 'Expecting value: line 1 column 1 (char 0)', line: 4 });
  });

  test('ModuleNotFoundError names the environment and what it has', () => {
    const e = parsePythonError('Traceback (most recent call last):\n  File "/sandbox/main.py", line 1, in <module>\n    import pandas\nModuleNotFoundError: No module named \'pandas\'\n', ctx);
    expect(e).toMatchObject({ type: 'ModuleNotFoundError', line: 1 });
    expect(e?.hint).toContain("'pandas'");
    expect(e?.hint).toContain("'bare'");
    expect(e?.hint).toContain('standard library');
  });

  test('SyntaxError without a traceback header points at the line', () => {
    const e = parsePythonError('  File "/sandbox/main.py", line 2\n    print(\n         ^\nSyntaxError: \'(\' was never closed\n', ctx);
    expect(e).toMatchObject({ type: 'SyntaxError', line: 2, message: "'(' was never closed" });
    expect(e?.hint).toContain('line 2');
  });

  test('FileNotFoundError hints at /workspace and uploads', () => {
    const e = parsePythonError("Traceback (most recent call last):\n  File \"/sandbox/main.py\", line 3, in <module>\nFileNotFoundError: [Errno 2] No such file or directory: 'data.csv'\n", ctx);
    expect(e?.hint).toContain('/workspace');
  });

  test('chained exceptions report the last one', () => {
    const e = parsePythonError('Traceback (most recent call last):\n  File "/sandbox/main.py", line 2, in <module>\nKeyError: \'a\'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File "/sandbox/main.py", line 4, in <module>\nValueError: bad\n', ctx);
    expect(e).toMatchObject({ type: 'ValueError', message: 'bad', line: 4 });
  });

  test('plain stderr is not an error', () => {
    expect(parsePythonError('warning: something\n', ctx)).toBeNull();
  });
});
