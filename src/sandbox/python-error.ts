// Turns a Python traceback on stderr into {type, message, line, hint}. The line is the deepest
// frame in the user's script, never a frame of a library or of the runner.
import { SANDBOX_PATHS } from './bwrap-args.js';

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

const EXCEPTION_LINE = /^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration)|[A-Za-z_][\w.]*)(?::\s?(.*))?$/;
const SCRIPT_FRAME = new RegExp(`^\\s*File "${SANDBOX_PATHS.script.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}", line (\\d+)`);

export function parsePythonError(stderr: string, ctx: HintContext): PythonError | null {
  const lines = stderr.split('\n');
  const tbStart = lines.findLastIndex((l) => l.startsWith('Traceback (most recent call last):'));
  const isSyntax = tbStart < 0 && lines.some((l) => SCRIPT_FRAME.test(l));
  if (tbStart < 0 && !isSyntax) return null;
  const from = tbStart < 0 ? 0 : tbStart;

  let line: number | null = null;
  let type: string | null = null;
  let message = '';
  for (let i = from; i < lines.length; i++) {
    const l = lines[i] ?? '';
    const frame = SCRIPT_FRAME.exec(l);
    if (frame) line = Number(frame[1]);
    if (l.length > 0 && !l.startsWith(' ') && !l.startsWith('Traceback') && !l.startsWith('During handling') && !l.startsWith('The above exception')) {
      const m = EXCEPTION_LINE.exec(l);
      if (m) {
        type = m[1] ?? null;
        message = m[2] ?? '';
      }
    }
  }
  if (type === null) return null;
  const shortType = type.split('.').pop() ?? type;
  return { type: shortType, message, line, hint: hintFor(shortType, message, line, ctx) };
}

function hintFor(type: string, message: string, line: number | null, ctx: HintContext): string | null {
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
