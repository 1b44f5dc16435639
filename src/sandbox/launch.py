# Runs an execution's script (/sandbox/main.py) the way `python /sandbox/main.py` would, and tells
# the service about an uncaught exception from the interpreter itself, on a pipe of its own,
# instead of leaving the service to guess it from stderr (a script may print anything there).
#
# Placed at /sandbox/launch.py and run as `python /sandbox/launch.py <report fd>`. The script sees
# what it would see when run directly: __name__ == '__main__', __file__ and sys.argv[0] naming
# /sandbox/main.py, /sandbox first on sys.path, the same traceback on stderr (the launcher's own
# frame left out) and exit status 1. SystemExit is a deliberate exit, not an error: it is not
# reported and ends the process as Python would.
#
# Report (one JSON object, then the pipe is closed): {"type": name, "message": str, "line": n|null}
# with the line of the deepest frame in main.py. Code in the sandbox can write to the pipe too;
# it only ever describes that code's own execution, and the service bounds what it reads.
import json
import os
import sys
import traceback
import types

SCRIPT = '/sandbox/main.py'
MAX_MESSAGE_CHARS = 2000


def report_fd():
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # programs the script starts do not get it
    return fd


def deepest_script_line(exc):
    if isinstance(exc, SyntaxError) and exc.filename == SCRIPT:
        return exc.lineno
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == SCRIPT:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def send(fd, exc):
    report = {
        'type': type(exc).__name__,
        'message': str(exc)[:MAX_MESSAGE_CHARS],
        'line': deepest_script_line(exc),
    }
    try:
        os.write(fd, json.dumps(report).encode('utf-8'))
        os.close(fd)
    except OSError:
        pass


def run(fd):
    """Runs /sandbox/main.py as __main__; its uncaught exception is reported on `fd`. Also used by
    warm-launch.py (a pre-started sandbox), so both paths run a script the same way."""
    with open(SCRIPT, 'rb') as f:
        source = f.read()
    module = types.ModuleType('__main__')
    module.__file__ = SCRIPT
    module.__builtins__ = __builtins__
    sys.modules['__main__'] = module
    sys.argv = [SCRIPT]
    sys.path[0] = os.path.dirname(SCRIPT)
    try:
        code = compile(source, SCRIPT, 'exec')
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        send(fd, exc)
        # As the interpreter prints it, without this launcher's frame.
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
        sys.stderr.flush()
        sys.exit(1)


if __name__ == '__main__':
    run(report_fd())
