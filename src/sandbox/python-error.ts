// The error of a Python execution as {type, message, line, hint}: type, message and line come from
// the interpreter (launch.py for scripts, the kernel driver for run_code), never from parsing
// stderr, which the program may write anything to. The line is the deepest frame in the user's
// code; the hint is ours.

export interface PythonError {
  type: string;
  message: string;
  line: number | null;
  hint: string | null;
}

export interface HintContext {
  environment: string;
  /** Top-level dependencies of the environment, for ModuleNotFoundError. */
  dependencies: readonly string[];
}

/**
 * The error of a script execution from the launcher's report (launch.py: the interpreter's own
 * view of the uncaught exception), with a hint; null when there was none or the report is not one.
 */
export function errorFromReport(report: string, ctx: HintContext): PythonError | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(report);
  } catch {
    return null;
  }
  const r = parsed as { type?: unknown; message?: unknown; line?: unknown };
  if (typeof r.type !== 'string' || !/^[A-Za-z_]\w{0,199}$/.test(r.type) || typeof r.message !== 'string') return null;
  const line = typeof r.line === 'number' && Number.isInteger(r.line) && r.line > 0 ? r.line : null;
  return { type: r.type, message: r.message, line, hint: hintFor(r.type, r.message, line, ctx) };
}

export function hintFor(type: string, message: string, line: number | null, ctx: HintContext): string | null {
  const at = line !== null ? ` on line ${line}` : '';
  switch (type) {
    case 'ModuleNotFoundError':
    case 'ImportError': {
      const mod = /No module named '([^']+)'/.exec(message)?.[1];
      const has = ctx.dependencies.length > 0 ? ctx.dependencies.join(', ') : 'only the Python standard library';
      return `${mod ? `Module '${mod}' is not installed` : 'An import failed'} in environment '${ctx.environment}', which has ${has}. Pick an environment that provides it (GET /v1/environments); there is no network to install packages.`;
    }
    case 'FileNotFoundError':
      return 'Paths are relative to the workspace, /workspace (the current directory). Upload input files to the session first and check the name with GET /v1/sessions/{id}/files.';
    case 'PermissionError':
      return 'Only /workspace, /tmp and read-write volumes are writable inside the sandbox.';
    case 'SyntaxError':
      return `The script has a syntax error${at}: check brackets, quotes and colons there.`;
    case 'IndentationError':
    case 'TabError':
      return `Indentation is inconsistent${at}: use 4 spaces per level and do not mix tabs and spaces.`;
    case 'NameError':
      return `A name is used before it is defined${at}: check spelling and that the import or assignment comes first.`;
    case 'KeyError':
      return `A key is missing${at}: for a DataFrame, check the column names (df.columns); for a dict, use .get() or check the keys.`;
    case 'IndexError':
      return `An index is out of range${at}: check the length before indexing.`;
    case 'TypeError':
      return `A value has the wrong type${at}: check the types of the arguments (e.g. str vs int).`;
    case 'ValueError':
      return `A value is not acceptable${at}: check the input data and its format.`;
    case 'AttributeError':
      return `An attribute or method does not exist on this object${at}: check the object's type and the spelling.`;
    case 'ZeroDivisionError':
      return `A division by zero happened${at}: guard the divisor.`;
    case 'MemoryError':
      return 'The script ran out of memory: process the data in chunks or lower its size.';
    case 'RecursionError':
      return 'The recursion went too deep: use iteration or a smaller input.';
    case 'UnicodeDecodeError':
      return "A file is not valid in the assumed encoding: open it with encoding='utf-8', errors='replace' or the right encoding.";
    default:
      return null;
  }
}
