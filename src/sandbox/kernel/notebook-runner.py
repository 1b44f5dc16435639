# Runs one notebook inside the session's sandbox with a real Jupyter kernel (nbclient starts
# ipykernel as a child; their ZMQ sockets are on 127.0.0.1 of the sandbox's own network
# namespace). Run as a script by POST /v1/sessions/{id}/notebooks/execute
# (src/sessions/session-notebooks.ts, its answer read by notebook-runner.ts), with its
# parameters as JSON on stdin: {input, output, cell_timeout, nonce, max_error_chars}.
# It executes the code cells in order and stops at the first failing one (the rest are
# 'skipped', as nbclient does). After each cell it writes the executed notebook to `output` (so a
# notebook cut off by the overall timeout is there as far as it got) and prints a line
# `<nonce>cell <JSON>` on stdout: {index, status: ok|error, execution_count, error}; at the end
# `<nonce>done <JSON>`: {status: ok|error|timeout, error} where `error` is for failures outside
# the cells (no kernel, unreadable notebook). The kernel's own output goes to the notebook.

import json
import os
import re
import sys

PARAMS = json.loads(sys.stdin.read())
NONCE = PARAMS['nonce']
LIMIT = int(PARAMS.get('max_error_chars') or 20000)
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')

# Jupyter's files (connection file, runtime, IPython profile) in the sandbox's private /tmp.
for name, sub in (('JUPYTER_RUNTIME_DIR', 'runtime'), ('JUPYTER_DATA_DIR', 'data'),
                  ('JUPYTER_CONFIG_DIR', 'config'), ('IPYTHONDIR', 'ipython')):
    os.environ[name] = os.path.join('/tmp/jupyter', sub)
os.environ['JUPYTER_PLATFORM_DIRS'] = '1'
# The sandbox sets MPLBACKEND=Agg for scripts; a notebook's figures belong inline in its outputs.
os.environ['MPLBACKEND'] = 'module://matplotlib_inline.backend_inline'


def clip(text):
    return text if len(text) <= LIMIT else text[:LIMIT] + '[... %d characters omitted ...]' % (len(text) - LIMIT)


def report(kind, obj):
    sys.stdout.flush()
    sys.stdout.write('\n%s%s %s\n' % (NONCE, kind, json.dumps(obj)))
    sys.stdout.flush()


def fail(ename, evalue):
    report('done', {'status': 'error', 'error': {'ename': ename, 'evalue': clip(str(evalue)), 'traceback': []}})
    sys.exit(0)


for path in (os.environ['JUPYTER_RUNTIME_DIR'], os.environ['IPYTHONDIR']):
    os.makedirs(path, exist_ok=True)
os.environ['PYDEVD_DISABLE_FILE_VALIDATION'] = '1'


try:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
except ImportError as exc:
    fail('KernelUnavailable', 'this environment does not ship nbclient and ipykernel (%s); use the jupyter environment' % exc)

try:
    nb = nbformat.read(PARAMS['input'], as_version=4)
except Exception as exc:
    fail('NotebookInvalid', '%s: %s' % (type(exc).__name__, exc))


def cell_error(cell, fallback_name, fallback_value):
    for out in cell.get('outputs', []):
        if out.get('output_type') == 'error':
            return {'ename': out.get('ename', ''), 'evalue': clip(out.get('evalue', '')),
                    'traceback': [clip(ANSI.sub('', line)) for line in out.get('traceback', [])][:200]}
    return {'ename': fallback_name, 'evalue': clip(fallback_value), 'traceback': []}


def write_output():
    nbformat.write(nb, PARAMS['output'])


def main():
    cell_timeout = max(1, int(PARAMS['cell_timeout']))  # traitlets Integer: whole seconds
    client = NotebookClient(
        nb, timeout=cell_timeout, startup_timeout=cell_timeout, kernel_name='python3',
        shutdown_kernel='immediate', allow_errors=False,
        resources={'metadata': {'path': os.path.dirname(os.path.abspath(PARAMS['input']))}},
    )
    status = 'ok'
    top_error = None
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != 'code':
                    continue
                entry = {'index': index, 'status': 'ok', 'execution_count': None, 'error': None}
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError as exc:
                    status = 'timeout'
                    entry['status'] = 'error'
                    entry['error'] = {'ename': 'CellTimeoutError', 'evalue': clip(str(exc).strip().split('\n')[0]), 'traceback': []}
                except CellExecutionError as exc:
                    status = 'error'
                    entry['status'] = 'error'
                    entry['error'] = cell_error(cell, getattr(exc, 'ename', 'CellExecutionError'), getattr(exc, 'evalue', str(exc)))
                except DeadKernelError as exc:
                    status = 'error'
                    entry['status'] = 'error'
                    entry['error'] = {'ename': 'DeadKernelError', 'evalue': clip(str(exc)), 'traceback': []}
                entry['execution_count'] = cell.get('execution_count')
                write_output()
                report('cell', entry)
                if status != 'ok':
                    break
    except Exception as exc:
        # The kernel did not start (or could not be shut down).
        # jupyter_client: RuntimeError("Kernel didn't respond in N seconds") past startup_timeout.
        message = str(exc).lower()
        timed_out = isinstance(exc, TimeoutError) or "didn't respond" in message or 'timed out' in message
        status = 'timeout' if timed_out else 'error'
        top_error = {'ename': type(exc).__name__, 'evalue': clip(str(exc)), 'traceback': []}
    try:
        write_output()
    except Exception as exc:
        if top_error is None:
            top_error = {'ename': type(exc).__name__, 'evalue': 'could not write the executed notebook: %s' % exc, 'traceback': []}
            status = 'error'
    report('done', {'status': status, 'error': top_error})


main()
